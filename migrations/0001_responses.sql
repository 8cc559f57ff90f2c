-- Every answer the Worker gets: valid ones in responses, invalid ones (and calls that got
-- no answer) in invalid_responses with the reason. Ids are time-ordered (rsp_<ms hex>…),
-- so `ORDER BY id` is newest-first order and the id is the pagination cursor.
CREATE TABLE responses (
    id TEXT PRIMARY KEY NOT NULL,
    created_at REAL NOT NULL,           -- milliseconds since the epoch
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,              -- messages and generation config, JSON
    content TEXT NOT NULL,              -- the answer without its thinking
    thinking TEXT,
    reasoning TEXT,                     -- the provider's separate reasoning field
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    total_tokens INTEGER,
    response_time_ms REAL NOT NULL,
    upstream_id TEXT,                   -- the provider's response id
    truncated INTEGER NOT NULL DEFAULT 0 -- a field was cut to fit D1's row limit
);

CREATE TABLE invalid_responses (
    id TEXT PRIMARY KEY NOT NULL,
    created_at REAL NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    content TEXT NOT NULL,
    thinking TEXT,
    reasoning TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    total_tokens INTEGER,
    response_time_ms REAL NOT NULL,
    upstream_id TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL                -- code: explanation (finish_reason, unclosed_thinking, …)
);

CREATE INDEX responses_created_at ON responses (created_at);
CREATE INDEX responses_provider ON responses (provider, id);
CREATE INDEX responses_model ON responses (model, id);
CREATE INDEX invalid_responses_created_at ON invalid_responses (created_at);
CREATE INDEX invalid_responses_provider ON invalid_responses (provider, id);
CREATE INDEX invalid_responses_model ON invalid_responses (model, id);
