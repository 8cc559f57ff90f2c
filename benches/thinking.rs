//! Throughput of thinking extraction on a ~100 KB answer: one-shot, and streamed in 64-byte
//! chunks. Run with `cargo bench --bench thinking`; prints a table of MB/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use llm_distiller::thinking::{extract_thinking, StreamOptions, ThinkingDelta, ThinkingExtractor};

const SAMPLES: usize = 15;
/// Each sample runs the work this many times, so it lasts well above the clock's resolution.
const REPEAT: usize = 20;
const CHUNK: usize = 64;

/// Prose with a few thinking blocks, some `<` in the text (maths, inline HTML), multibyte
/// characters and blank lines: roughly what a reasoning model answers.
fn answer(target_len: usize) -> String {
    let paragraphs = [
        "The function grows slowly: for n < 10 it stays under 3, and if a < b then f(a) <= f(b). ",
        "Wrap the heading in <b>bold</b> and keep the <br/> tags where the layout needs them. ",
        "Die Übersetzung ist fertig — naïve café résumé, 日本語のテキスト, and an emoji 🦀 or two. ",
        "In practice the cache hit rate stays above 90 % once the working set fits in memory. ",
    ];
    let mut text = String::with_capacity(target_len + 1024);
    text.push_str("<think>\nThe user asks for a long explanation. Plan: define, give examples, ");
    text.push_str("check the edge cases where x < 0.\n</think>\n\n");
    let mut i = 0;
    while text.len() < target_len {
        text.push_str(paragraphs[i % paragraphs.len()]);
        if i % 8 == 7 {
            text.push_str("\n\n");
        }
        if i % 300 == 299 {
            text.push_str("<thinking id=\"check\">\nIs the bound right? 2 < 3, yes.\n</thinking>");
        }
        i += 1;
    }
    text
}

/// Splits `text` into chunks of about `size` bytes, on char boundaries.
fn chunks(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

/// Median throughput in MB/s (10^6 bytes per second) and the fastest and slowest samples.
fn measure(bytes: usize, mut run: impl FnMut()) -> (f64, f64, f64) {
    run(); // warm up
    let mut times: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..REPEAT {
                run();
            }
            start.elapsed()
        })
        .collect();
    times.sort();
    let mbps = |t: Duration| (bytes * REPEAT) as f64 / t.as_secs_f64() / 1e6;
    (
        mbps(times[SAMPLES / 2]),
        mbps(times[SAMPLES - 1]),
        mbps(times[0]),
    )
}

fn main() {
    let text = answer(100_000);
    let pieces = chunks(&text, CHUNK);
    let extractor = ThinkingExtractor::default();

    // The streamed result must be the one-shot result, or the figures mean nothing.
    let expected = extract_thinking(&text, None);
    let mut stream = extractor.stream(StreamOptions::default());
    let mut all = ThinkingDelta::default();
    for piece in &pieces {
        stream.push_into(piece, &mut all);
    }
    let last = stream.finish();
    all.content.push_str(&last.content);
    all.thinking.push_str(&last.thinking);
    assert_eq!(all.content, expected.content);
    assert_eq!(Some(all.thinking), expected.thinking);

    let one_shot = measure(text.len(), || {
        black_box(extract_thinking(black_box(&text), None));
    });

    let mut out = ThinkingDelta::default();
    let stream_into = measure(text.len(), || {
        let mut stream = extractor.stream(StreamOptions::default());
        for piece in &pieces {
            out.content.clear();
            out.thinking.clear();
            stream.push_into(black_box(piece), &mut out);
            black_box(&out);
        }
        black_box(stream.finish());
    });

    let single_chars = chunks(&text, 1);
    let stream_bytes = measure(text.len(), || {
        let mut stream = extractor.stream(StreamOptions::default());
        for piece in &single_chars {
            out.content.clear();
            out.thinking.clear();
            stream.push_into(black_box(piece), &mut out);
            black_box(&out);
        }
        black_box(stream.finish());
    });

    let stream_push = measure(text.len(), || {
        let mut stream = extractor.stream(StreamOptions::default());
        for piece in &pieces {
            black_box(stream.push(black_box(piece)));
        }
        black_box(stream.finish());
    });

    println!(
        "thinking extraction, {} bytes, {} chunks of ~{CHUNK} B, median of {SAMPLES} samples x {REPEAT} runs",
        text.len(),
        pieces.len()
    );
    println!(
        "{:<30} {:>10} {:>10} {:>10}",
        "case", "MB/s", "slowest", "fastest"
    );
    for (name, (median, slowest, fastest)) in [
        ("one-shot extract_thinking", one_shot),
        ("stream 64 B, push_into", stream_into),
        ("stream 64 B, push", stream_push),
        ("stream 1 char, push_into", stream_bytes),
    ] {
        println!("{name:<30} {median:>10.0} {slowest:>10.0} {fastest:>10.0}");
    }
}
