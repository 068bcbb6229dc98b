//! Making untrusted bytes safe to print.
//!
//! Request targets and header values come from the client. Before they go
//! into a log line or a JSON error body they are cut to a bounded length and
//! every byte outside printable ASCII is shown as `\xNN`, so that a hostile
//! request can neither forge log lines nor break the JSON.

use std::fmt::Write as _;

/// The most bytes of a client-supplied value that a message shows.
const SHOWN_BYTES: usize = 256;

/// Shows `bytes` as printable ASCII, escaping every other byte, and the
/// backslash itself, as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let mut out = String::with_capacity(shown.len() + 8);
    for &b in shown {
        match b {
            0x20..=0x7e if b != b'\\' => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    if bytes.len() > SHOWN_BYTES {
        out.push_str("...");
    }
    out
}

/// Quotes `text` for a `key="value"` log field: the double quote becomes
/// `\x22`, so the field always ends at the next quote.
pub fn log_quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\\x22"))
}

/// Writes `text` as the inside of a JSON string. `text` is expected to come
/// from [`printable`] or from the proxy itself, but any character is escaped
/// correctly.
pub fn json_escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_bytes_backslashes_and_high_bytes() {
        assert_eq!(printable(b"/a\r\nb\"\\\xff"), "/a\\x0d\\x0ab\"\\x5c\\xff");
    }

    #[test]
    fn printable_cuts_long_values() {
        let long = vec![b'a'; 1000];
        let shown = printable(&long);
        assert_eq!(shown.len(), SHOWN_BYTES + 3);
        assert!(shown.ends_with("..."));
    }

    #[test]
    fn log_quoted_never_contains_an_inner_quote() {
        assert_eq!(log_quoted("a\"b"), "\"a\\x22b\"");
    }

    #[test]
    fn json_escape_handles_quotes_backslashes_and_controls() {
        let mut out = String::new();
        json_escape_into(&mut out, "a\"b\\c\u{1}");
        assert_eq!(out, "a\\\"b\\\\c\\u0001");
    }
}
