-- Batches in the shape of OpenAI's Batch API, the files they read and write, and the
-- answer each stored row gives to a batch's line. Rows stored before keep working: their
-- batch_id and custom_id are NULL.
ALTER TABLE responses ADD COLUMN batch_id TEXT;
ALTER TABLE responses ADD COLUMN custom_id TEXT;
ALTER TABLE invalid_responses ADD COLUMN batch_id TEXT;
ALTER TABLE invalid_responses ADD COLUMN custom_id TEXT;
-- One stored answer per line of a batch, whatever a queue delivers twice.
CREATE UNIQUE INDEX responses_batch_item ON responses (batch_id, custom_id) WHERE batch_id IS NOT NULL;
CREATE UNIQUE INDEX invalid_responses_batch_item ON invalid_responses (batch_id, custom_id) WHERE batch_id IS NOT NULL;

-- Files: uploaded batch inputs (their bytes in file_parts), and the output and error files of
-- batches (their lines are the batch's items', read from batch_items).
CREATE TABLE files (
    id TEXT PRIMARY KEY NOT NULL,       -- file-…
    purpose TEXT NOT NULL,              -- batch | batch_output
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,        -- seconds since the epoch
    requests INTEGER,                   -- an input file: its lines
    batch_id TEXT,                      -- an output or error file: its batch
    kind TEXT                           -- an output or error file: 'output' | 'error'
);
CREATE INDEX files_created ON files (created_at, id);

-- An input file's bytes, in order, in parts within D1's row limit.
CREATE TABLE file_parts (
    file_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (file_id, seq)
);

CREATE TABLE batches (
    id TEXT PRIMARY KEY NOT NULL,       -- batch_…
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,               -- failed, in_progress, finalizing, completed, cancelling, cancelled, expired
    metadata TEXT,                      -- JSON object, or NULL
    errors TEXT,                        -- JSON list of errors, or NULL
    output_file_id TEXT,
    error_file_id TEXT,
    created_at INTEGER NOT NULL,        -- seconds since the epoch, as each *_at below
    in_progress_at INTEGER,
    expires_at INTEGER,
    finalizing_at INTEGER,
    completed_at INTEGER,
    failed_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER,
    expired_at INTEGER,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,   -- items answered
    failed INTEGER NOT NULL DEFAULT 0,      -- items that failed for good
    cancelled INTEGER NOT NULL DEFAULT 0,   -- items never started because of a cancel
    progressed_at REAL                      -- milliseconds: the last item finished or sent out
);
CREATE INDEX batches_created ON batches (created_at, id);
CREATE INDEX batches_active ON batches (status) WHERE status IN ('in_progress', 'finalizing', 'cancelling');

-- A batch's lines, each through pending → queued → running → done | failed (or cancelled).
CREATE TABLE batch_items (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,              -- 1-based line of the input file
    custom_id TEXT NOT NULL,
    request TEXT NOT NULL,              -- the line's body: a chat completion request, JSON
    state TEXT NOT NULL,                -- pending | queued | running | done | failed | cancelled
    attempt INTEGER NOT NULL DEFAULT 0, -- runs claimed so far: a run stores only while it is the latest
    claimed_at REAL,                    -- milliseconds: when queued or running began
    response_id TEXT,                   -- the stored row (responses or invalid_responses)
    output TEXT,                        -- the line of the output (done) or error (failed) file
    PRIMARY KEY (batch_id, line),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX batch_items_state ON batch_items (batch_id, state, line);
