//! Text a peer chose, as the CLI prints it: a status's message and reason, a goaway's, and
//! the answers `interop-client` quotes in a failure.
//!
//! The library hands a peer's text over as it came (a caller may want all of it), so the
//! terminal is the CLI's to protect: a server's message is printed on one line, its control
//! characters escaped as Rust writes them (`\u{1b}`, `\n`), for a terminal obeys them (an
//! escape sequence retitles or clears it, or rewrites what was printed before; a newline
//! forges a line of ours such as `hint:`), and so are the characters that reorder text
//! (bidirectional overrides). Printable text of any script is printed as it is. A message
//! is cut after [`SHOWN`] bytes, with its length: a server's error of 64 MiB is not printed
//! whole.

use std::fmt::{self, Write};

/// How many bytes of a peer's text are printed (as the library keeps of a goaway's).
pub const SHOWN: usize = 1024;

/// `text` on one line, escaped and cut (see the module docs).
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(SHOWN) + 16);
    for (at, c) in text.char_indices() {
        if at >= SHOWN {
            let _ = write!(out, "… ({} bytes)", text.len());
            break;
        }
        if c.is_control() || reorders(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `{:?}` of something a peer sent, cut after [`SHOWN`] bytes (marked `…`). Formatting
/// stops there: the `Debug` of a 4 MiB binary answer is 12 MiB, and it is never made.
pub fn debug(v: &impl fmt::Debug) -> String {
    bunite_rpc::wire::text::format_capped(SHOWN, format_args!("{v:?}"))
}

/// The characters that reorder the text around them (Unicode's bidirectional marks,
/// embeddings, overrides and isolates): printed raw they make a line read otherwise than
/// it is.
fn reorders(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_of_any_script_is_printed_as_it_is() {
        assert_eq!(
            shown("héllo ☃ 日本 \"quoted\" \\"),
            "héllo ☃ 日本 \"quoted\" \\"
        );
    }

    #[test]
    fn controls_and_reordering_characters_are_escaped() {
        assert_eq!(
            shown("a\u{1b}[2J\tb\nc\u{7f}\u{9b}\u{202e}d"),
            "a\\u{1b}[2J\\tb\\nc\\u{7f}\\u{9b}\\u{202e}d"
        );
    }

    #[test]
    fn a_large_value_is_formatted_only_up_to_the_cut() {
        let v = vec![7u8; 4 << 20];
        let out = debug(&v);
        assert!(out.starts_with("[7, 7, "), "{out}");
        assert!(out.ends_with('…') && out.len() <= SHOWN + '…'.len_utf8());
        assert_eq!(debug(&"short"), "\"short\"");
    }

    #[test]
    fn long_text_is_cut_at_a_character_with_its_length() {
        let text = format!("{}é{}", "x".repeat(SHOWN - 1), "y".repeat(5000));
        let out = shown(&text);
        assert_eq!(
            out,
            format!("{}é… ({} bytes)", "x".repeat(SHOWN - 1), text.len())
        );
        assert_eq!(shown(&"z".repeat(SHOWN)), "z".repeat(SHOWN));
    }
}
