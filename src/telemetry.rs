//! Logging set-up: readable lines by default, JSON for log shippers; and
//! [`Escaped`], the one way producer text enters a log line or a message.
//!
//! Everything logs through `tracing`; this module only decides the format and
//! the filter (`RUST_LOG`, default `info`). Text that a producer controls (a
//! command's id or fields, an AMQP property, a database error quoting them)
//! is wrapped in [`Escaped`] wherever it is logged or echoed: in the text
//! format a raw newline would let a producer forge a log line of its own.

use std::fmt;

use tracing_subscriber::{fmt as subscriber_fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Logs go to stderr so that commands which
/// print results (`call`, `show --json`) keep stdout clean for scripts.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = subscriber_fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// How many characters of producer text are shown by default: enough to
/// recognise a value, never enough to flood a log line or an event.
pub const SHOWN_CHARS: usize = 256;

/// The mark at the end of text that was cut.
pub const CUT_MARK: &str = "…[cut]";

/// Producer text made safe to show: one line, printable, bounded.
///
/// Control characters (a newline, a carriage return, ESC, NUL...) and the
/// invisible characters that reorder or break lines (U+2028/2029, bidi
/// overrides) are written as Rust escapes (`\n`, `\u{0}`); text longer than
/// the bound is cut and ends with [`CUT_MARK`]. The result never contains a
/// character that a text log, a terminal or PostgreSQL's `text` would treat
/// specially.
#[derive(Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max_chars: usize,
}

impl<'a> Escaped<'a> {
    pub fn new(text: &'a str) -> Escaped<'a> {
        Escaped {
            text,
            max_chars: SHOWN_CHARS,
        }
    }

    /// At most `max_chars` characters of the original are shown (escapes
    /// make the shown text longer; the bound is on what is taken).
    pub fn at_most(text: &'a str, max_chars: usize) -> Escaped<'a> {
        Escaped { text, max_chars }
    }

    /// Whether `c` must be escaped to show it safely.
    pub fn is_unsafe(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }

    /// Whether the text would be shown exactly as it is.
    pub fn is_clean(text: &str, max_chars: usize) -> bool {
        !text.chars().any(Escaped::is_unsafe) && text.chars().nth(max_chars).is_none()
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for (count, c) in self.text.chars().enumerate() {
            if count == self.max_chars {
                return f.write_str(CUT_MARK);
            }
            if Escaped::is_unsafe(c) {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_break_a_line() {
        let forged = "c1\n2026-12-03T10:00:00Z  INFO command succeeded id=c2\r\u{1b}[31m\u{0}";
        let shown = Escaped::new(forged).to_string();
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(shown.starts_with("c1\\n2026"), "{shown}");
        assert!(shown.contains("\\r\\u{1b}[31m\\u{0}"), "{shown}");
        assert_eq!(
            Escaped::new("\u{2028}\u{202e}").to_string(),
            "\\u{2028}\\u{202e}"
        );
    }

    #[test]
    fn long_text_is_cut_visibly() {
        let long = "x".repeat(1000);
        let shown = Escaped::new(&long).to_string();
        assert_eq!(shown.len(), SHOWN_CHARS + CUT_MARK.len());
        assert!(shown.ends_with(CUT_MARK));
        assert_eq!(Escaped::at_most("abc", 3).to_string(), "abc");
        assert_eq!(
            Escaped::at_most("abcd", 3).to_string(),
            format!("abc{CUT_MARK}")
        );
        assert_eq!(
            Escaped::new("plain text, ünïcode").to_string(),
            "plain text, ünïcode"
        );
        assert!(Escaped::is_clean("ok", 2));
        assert!(!Escaped::is_clean("okk", 2));
        assert!(!Escaped::is_clean("a\tb", 10));
    }
}
