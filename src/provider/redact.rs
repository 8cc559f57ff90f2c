//! Taking a provider's key out of text quoted from its upstream, before the text reaches an
//! error.
//!
//! A server may echo the key back: as it is, JSON-escaped inside a string of a body quoted
//! as text (`sk-ab\"cd`), or cut short by the server or by the quote limit. So the key has
//! several *forms* (the key, trimmed; its JSON escaping as `JSON.stringify` and serde_json
//! write it; with `\/` too, as PHP writes it), and after [`redact_key`]:
//!
//! - no form of the key occurs in the text, and neither does any prefix of a form of
//!   [`MIN_KEY_BYTES`] bytes or more (the start of a key the quote limit cut);
//! - the marker put in its place cannot make a new one with the text around it.
//!
//! How: every occurrence of every form (overlapping ones too) is covered and each run of
//! covered text becomes one marker; at the first prefix of a form that starts outside the
//! covered text, the text is cut and ends with the marker and `…`. What is left of the text
//! lies between markers, unchanged, and holds no occurrence (it would have been covered or
//! cut). A form could still straddle a marker, or lie inside it, if it held the marker's
//! characters, so the marker depends on the key: `[redacted]`, unless a form holds a bracket
//! or starts with `redacted`; then three of a character that no form holds. Keys shorter
//! than [`MIN_KEY_BYTES`] are not redacted: they would redact ordinary words, and real keys
//! are far longer.

/// The shortest key (trimmed) that is redacted, and the shortest key prefix that counts.
const MIN_KEY_BYTES: usize = 8;

/// What replaces the key when it cannot overlap the key (see the module docs).
const MARKER: &str = "[redacted]";

/// `text` with every trace of `key` replaced, as the module docs describe.
pub(super) fn redact_key(text: &str, key: &str) -> String {
    let key = key.trim();
    if key.len() < MIN_KEY_BYTES {
        return text.to_string();
    }
    let forms = forms_of(key);
    let Some(marker) = marker_for(&forms) else {
        // Only a key holding every character there is gets here: nothing of the text is
        // safe to show.
        return String::new();
    };
    // Which bytes of the text an occurrence of a form covers. (A flag a byte, rather than
    // sorted ranges: the quoted text is short, and a sort would add kilobytes of wasm.)
    let mut covered = vec![false; text.len()];
    for form in &forms {
        for at in occurrences(text, form) {
            covered[at..at + form.len()].fill(true);
        }
    }
    let cut = forms
        .iter()
        .filter_map(|form| occurrences(text, shortest_prefix(form)).find(|&at| !covered[at]))
        .min();
    let end = cut.unwrap_or(text.len());
    let mut out = String::with_capacity(end + marker.len());
    // Runs of uncovered text as they are, each run of covered text as one marker. Runs
    // start and end where occurrences do, on characters; one that starts before the cut
    // ends by it, since the cut is uncovered.
    let mut at = 0;
    while at < end {
        let run_end = covered[at..end]
            .iter()
            .position(|&c| c != covered[at])
            .map_or(end, |n| at + n);
        out.push_str(if covered[at] {
            &marker
        } else {
            &text[at..run_end]
        });
        at = run_end;
    }
    if cut.is_some() {
        out.push_str(&marker);
        out.push('…');
    }
    out
}

/// The forms the key may be echoed in, each once.
fn forms_of(key: &str) -> Vec<String> {
    let mut forms = vec![key.to_string()];
    let quoted = serde_json::to_string(key).unwrap_or_default();
    if let Some(escaped) = quoted.get(1..quoted.len().saturating_sub(1)) {
        for form in [escaped.to_string(), escaped.replace('/', "\\/")] {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms
}

/// The marker for these forms: one no form can straddle or lie inside. `None` only if the
/// forms hold every character.
fn marker_for(forms: &[String]) -> Option<String> {
    let fits = |f: &String| !f.contains(['[', ']']) && !f.starts_with("redacted");
    if forms.iter().all(fits) {
        return Some(MARKER.to_string());
    }
    ['*', '#', '~']
        .into_iter()
        .chain('\u{2580}'..=char::MAX)
        .find(|&c| forms.iter().all(|f| !f.contains(c)))
        .map(|c| c.to_string().repeat(3))
}

/// The form's first [`MIN_KEY_BYTES`] bytes, or a little more to end on a character.
fn shortest_prefix(form: &str) -> &str {
    let end = (MIN_KEY_BYTES..form.len())
        .find(|&n| form.is_char_boundary(n))
        .unwrap_or(form.len());
    &form[..end]
}

/// Where `pattern` occurs in `text`, overlapping occurrences included.
fn occurrences<'a>(text: &'a str, pattern: &'a str) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = from + text.get(from..)?.find(pattern)?;
        from = at + text[at..].chars().next().map_or(1, char::len_utf8);
        Some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_of_a_key_are_its_escapings() {
        assert_eq!(forms_of("sk-abcdefgh"), ["sk-abcdefgh"]);
        assert_eq!(
            forms_of(r#"a"b\c/d"#),
            [r#"a"b\c/d"#, r#"a\"b\\c/d"#, r#"a\"b\\c\/d"#]
        );
    }

    #[test]
    fn the_marker_avoids_the_characters_of_the_key() {
        let marker = |key: &str| marker_for(&forms_of(key)).unwrap();
        assert_eq!(marker("sk-abcdefgh"), "[redacted]");
        assert_eq!(marker("]AAAAAAA"), "***");
        assert_eq!(marker("redacted-key"), "***");
        assert_eq!(marker("[*#~abcdef"), "▀▀▀");
    }

    #[test]
    fn a_prefix_ends_on_a_character() {
        assert_eq!(shortest_prefix("abcdefghij"), "abcdefgh");
        assert_eq!(shortest_prefix("abcdefgé-rest"), "abcdefgé");
        assert_eq!(shortest_prefix("abcdefgh"), "abcdefgh");
    }

    #[test]
    fn occurrences_overlap() {
        assert_eq!(occurrences("aaaa", "aa").collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(occurrences("éaé", "é").collect::<Vec<_>>(), [0, 3]);
    }

    #[test]
    fn overlapping_and_touching_occurrences_make_one_marker() {
        assert_eq!(redact_key("x aaaaaaaaaaaa y", "aaaaaaaa"), "x [redacted] y");
        assert_eq!(
            redact_key("sk-abcdefghsk-abcdefgh!", "sk-abcdefgh"),
            "[redacted]!"
        );
    }
}
