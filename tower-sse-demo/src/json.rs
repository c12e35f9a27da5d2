//! JSON text for the handlers and the event log (the demo writes its few shapes by hand).

use std::fmt::Write as _;

/// A JSON string literal: quotes, backslashes and control characters escaped.
pub(crate) fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                write!(out, "\\u{:04x}", u32::from(c)).ok();
            }
            // Valid in JSON, but not in JavaScript string literals before ES2019.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(json_str("plain"), r#""plain""#);
        assert_eq!(json_str(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(json_str("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(json_str("\u{0}\u{1f}\u{7f}é"), r#""\u0000\u001f\u007fé""#);
    }
}
