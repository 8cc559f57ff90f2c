//! What the fuzz targets share: how an input divides into the payload a target parses and
//! the control bytes that choose split points and options.
//!
//! An input is its *payload* up to the first `0xFF` byte, then *control* bytes. `0xFF`
//! never occurs in UTF-8, so a plain text, JSON body or SSE stream is a seed as it is (the
//! corpora are seeded from the test fixtures by `seed.mjs`), and the fuzzer learns the rest.
//! Control bytes that run out read as 0: no split, default options.

use std::borrow::Cow;

/// A fuzz input: a payload and the control bytes after it.
pub struct Input<'a> {
    /// What the target parses.
    pub payload: &'a [u8],
    control: &'a [u8],
}

impl<'a> Input<'a> {
    /// Divides `data` at its first `0xFF` byte.
    pub fn new(data: &'a [u8]) -> Self {
        match data.iter().position(|&b| b == 0xFF) {
            Some(at) => Input {
                payload: &data[..at],
                control: &data[at + 1..],
            },
            None => Input {
                payload: data,
                control: &[],
            },
        }
    }

    /// The payload as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.payload)
    }

    /// The payload as an answer's text and, after a NUL, its separate reasoning.
    pub fn answer(&self) -> (String, Option<String>) {
        let text = self.text();
        match text.split_once('\0') {
            Some((content, reasoning)) => (content.to_string(), Some(reasoning.to_string())),
            None => (text.into_owned(), None),
        }
    }

    /// The next control byte; 0 once they have run out.
    pub fn byte(&mut self) -> u8 {
        match self.control.split_first() {
            Some((&b, rest)) => {
                self.control = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two control bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next eight control bytes as an `f64`: any value, NaN and infinities included.
    pub fn f64(&mut self) -> f64 {
        f64::from_bits(u64::from_le_bytes(std::array::from_fn(|_| self.byte())))
    }

    /// Up to `max` cut points in `0..=len`, ascending.
    pub fn cuts(&mut self, len: usize, max: usize) -> Vec<usize> {
        let count = usize::from(self.byte()) % (max + 1);
        let mut cuts: Vec<usize> = (0..count)
            .map(|_| usize::from(self.u16()) % (len + 1))
            .collect();
        cuts.sort_unstable();
        cuts
    }
}

/// `bytes` cut at `cuts` (ascending, each at most `bytes.len()`).
pub fn pieces<'b>(bytes: &'b [u8], cuts: &[usize]) -> Vec<&'b [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        out.push(&bytes[start..cut]);
        start = cut;
    }
    out.push(&bytes[start..]);
    out
}

/// `text` cut at `cuts`, each moved down to a character boundary.
pub fn str_pieces<'b>(text: &'b str, cuts: &[usize]) -> Vec<&'b str> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        let mut end = cut.min(text.len()).max(start);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out.push(&text[start..]);
    out
}
