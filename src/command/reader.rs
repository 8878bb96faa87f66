//! The strict reader: a message body to a [`Reading`], as strict as
//! `schemas/command.schema.json` and bounding everything it lets through
//! (see the parent module). `metadata` is measured with its numbers written
//! out, so that a short exponent cannot grow once stored.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::{Command, Reading, FIELDS, MAX_METADATA_BYTES, MAX_USABLE_ID_BYTES, SHOWN_NAME_CHARS};
use crate::events::Metadata;
use crate::outcome::Rejected;
use crate::telemetry::Escaped;

/// A JSON value seen as a command field.
enum FieldValue {
    Null,
    Text(String),
    /// A string that serde_json cannot read as text (a lone surrogate escape).
    BadText,
    Other(&'static str),
}

fn field_value(text: &str) -> FieldValue {
    match text.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(s) => FieldValue::Text(s),
            Err(_) => FieldValue::BadText,
        },
        Some(b'n') => FieldValue::Null,
        Some(b't' | b'f') => FieldValue::Other("a boolean"),
        Some(b'{') => FieldValue::Other("an object"),
        Some(b'[') => FieldValue::Other("an array"),
        _ => FieldValue::Other("a number"),
    }
}

/// A message body's fields, each as its JSON text.
type Fields = BTreeMap<String, Box<RawValue>>;

/// Reads a message body as a command. Never panics, whatever the bytes.
pub fn read(body: &[u8]) -> Reading {
    let fields: Fields = match serde_json::from_slice(body) {
        Ok(fields) => fields,
        Err(e) if e.is_data() => return Reading::Unreadable("not a JSON object".into()),
        Err(e) => {
            return Reading::Unreadable(format!("not JSON: {}", Escaped::new(&e.to_string())))
        }
    };
    let id = match usable_id(&fields) {
        Ok(id) => id,
        Err(why) => return Reading::Unreadable(why),
    };
    let mut command = Command {
        id: Some(id),
        ..Command::default()
    };
    let mut problems = Problems::default();
    unknown_fields(&fields, &mut problems);
    text_fields(&fields, &mut command, &mut problems);
    if let Some(raw) = fields.get("metadata") {
        if !matches!(field_value(raw.get()), FieldValue::Null) {
            match read_metadata(raw.get()) {
                Ok(metadata) => command.metadata = Some(metadata),
                Err(why) => problems.note("metadata", raw, || Rejected::invalid("metadata", why)),
            }
        }
    }
    let problem = problems.first.or_else(|| command.check().err());
    match problem {
        None => Reading::Command(Box::new(command)),
        Some(rejected) => Reading::Rejected {
            command: Box::new(command),
            rejected,
            extra: problems.extra,
        },
    }
}

/// The first problem found (the one reported), and the fields that are not
/// part of the command as their JSON text (for the fingerprint).
#[derive(Default)]
struct Problems {
    first: Option<Rejected>,
    extra: Vec<(String, String)>,
}

impl Problems {
    fn note(&mut self, name: &str, raw: &RawValue, rejected: impl FnOnce() -> Rejected) {
        self.first.get_or_insert_with(rejected);
        self.extra.push((name.to_string(), raw.get().to_string()));
    }
}

/// The `id`, when it can be answered: text, not empty, at most
/// [`MAX_USABLE_ID_BYTES`], no control character. Otherwise why not.
fn usable_id(fields: &Fields) -> Result<String, String> {
    let id = match fields.get("id").map(|raw| field_value(raw.get())) {
        None | Some(FieldValue::Null) => return Err("no `id` field".into()),
        Some(FieldValue::Other(_)) => return Err("`id` is not a string".into()),
        Some(FieldValue::BadText) => return Err("`id` is not valid Unicode text".into()),
        Some(FieldValue::Text(id)) => id,
    };
    if id.is_empty() {
        return Err("`id` is empty".into());
    }
    if id.len() > MAX_USABLE_ID_BYTES {
        return Err(format!(
            "`id` is longer than {MAX_USABLE_ID_BYTES} bytes ({} bytes)",
            id.len()
        ));
    }
    if id.chars().any(Escaped::is_unsafe) {
        return Err(format!(
            "`id` contains a control character: `{}`",
            Escaped::at_most(&id, SHOWN_NAME_CHARS)
        ));
    }
    Ok(id)
}

/// Any field that is not one of [`FIELDS`].
fn unknown_fields(fields: &Fields, problems: &mut Problems) {
    for (key, raw) in fields {
        if !FIELDS.contains(&key.as_str()) {
            problems.note(key, raw, || {
                let shown = match key.as_str() {
                    "" => "\"\"".to_string(),
                    key => Escaped::at_most(key, SHOWN_NAME_CHARS).to_string(),
                };
                Rejected::invalid(
                    &shown,
                    format!("unknown field (a command has only {})", FIELDS.join(", ")),
                )
            });
        }
    }
}

/// The fields that are text (all but `id` and `metadata`): a string, or
/// `null` for absent.
fn text_fields(fields: &Fields, command: &mut Command, problems: &mut Problems) {
    let Command {
        gateway,
        account,
        operation,
        payment_id,
        amount,
        currency,
        from,
        to,
        ..
    } = command;
    let slots: [(&str, &mut Option<String>); 8] = [
        ("gateway", gateway),
        ("account", account),
        ("operation", operation),
        ("payment_id", payment_id),
        ("amount", amount),
        ("currency", currency),
        ("from", from),
        ("to", to),
    ];
    for (name, slot) in slots {
        let Some(raw) = fields.get(name) else {
            continue;
        };
        match field_value(raw.get()) {
            FieldValue::Null => {}
            FieldValue::Text(text) => *slot = Some(text),
            FieldValue::BadText => problems.note(name, raw, || {
                Rejected::invalid(name, "is not valid Unicode text (a lone surrogate escape)")
            }),
            FieldValue::Other(kind) => problems.note(name, raw, || {
                Rejected::invalid(name, format!("must be a string, not {kind}"))
            }),
        }
    }
}

/// `metadata`: a JSON object that PostgreSQL's `jsonb` can store (no
/// `\u0000`), at most [`MAX_METADATA_BYTES`] written compactly with its
/// numbers in full. Kept as the producer's text without whitespace.
fn read_metadata(raw: &str) -> Result<Metadata, String> {
    if !raw.starts_with('{') {
        let kind = match field_value(raw) {
            FieldValue::Text(_) | FieldValue::BadText => "a string",
            FieldValue::Other(kind) => kind,
            FieldValue::Null => "null",
        };
        return Err(format!("must be a JSON object, not {kind}"));
    }
    let (compact, size) = compact_json(raw);
    if size > MAX_METADATA_BYTES {
        return Err(format!(
            "is {size} bytes (without whitespace, numbers written out); at most {MAX_METADATA_BYTES} allowed"
        ));
    }
    let value: serde_json::Value = serde_json::from_str(&compact)
        .map_err(|e| format!("is not storable JSON: {}", Escaped::new(&e.to_string())))?;
    if contains_nul(&value) {
        return Err("contains `\\u0000`, which cannot be stored".into());
    }
    Metadata::from_json(compact).map_err(|e| e.to_string())
}

fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v))
        }
        _ => false,
    }
}

/// `raw` (one valid JSON value) without whitespace outside strings, and the
/// size it takes with every number written out without an exponent (as
/// PostgreSQL's `jsonb` writes it back).
fn compact_json(raw: &str) -> (String, usize) {
    let mut out = String::with_capacity(raw.len());
    let mut size = 0usize;
    let mut chars = raw.char_indices().peekable();
    let mut in_string = false;
    let mut escaped = false;
    while let Some((at, c)) = chars.next() {
        if in_string {
            out.push(c);
            size += c.len_utf8();
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            '"' => {
                in_string = true;
                out.push(c);
                size += 1;
            }
            '-' | '0'..='9' => {
                let mut end = at + c.len_utf8();
                while let Some(&(next_at, next)) = chars.peek() {
                    if matches!(next, '0'..='9' | '.' | 'e' | 'E' | '+' | '-') {
                        end = next_at + next.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let number = &raw[at..end];
                out.push_str(number);
                size = size.saturating_add(written_out(number));
            }
            _ => {
                out.push(c);
                size += c.len_utf8();
            }
        }
    }
    (out, size)
}

/// How many characters a JSON number takes written without an exponent:
/// `1e3` is `1000`, `1.5e-3` is `0.0015`. Saturates for absurd exponents.
fn written_out(number: &str) -> usize {
    let (sign, rest) = match number.strip_prefix('-') {
        Some(rest) => (1i64, rest),
        None => (0, number),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let exponent: i64 = {
        let (negative, digits) = match exponent.as_bytes().first() {
            Some(b'-') => (true, &exponent[1..]),
            Some(b'+') => (false, &exponent[1..]),
            _ => (false, exponent),
        };
        let magnitude = digits
            .bytes()
            .filter(u8::is_ascii_digit)
            .fold(0i64, |n, d| {
                n.saturating_mul(10)
                    .saturating_add(i64::from(d - b'0'))
                    .min(1 << 40)
            });
        if negative {
            -magnitude
        } else {
            magnitude
        }
    };
    let (int_len, frac_len) = match mantissa.split_once('.') {
        Some((i, f)) => (i.len() as i64, f.len() as i64),
        None => (mantissa.len() as i64, 0),
    };
    let digits = int_len + frac_len;
    let point = int_len.saturating_add(exponent);
    let len = if point <= 0 {
        2i64.saturating_sub(point).saturating_add(digits)
    } else if point < digits {
        digits + 1
    } else {
        point
    };
    usize::try_from(sign.saturating_add(len)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_measured_written_out() {
        assert_eq!(written_out("0"), 1);
        assert_eq!(written_out("-12.50"), 6);
        assert_eq!(written_out("1e3"), 4);
        assert_eq!(written_out("1.5E+2"), 3);
        assert_eq!(written_out("1.5e-3"), 6);
        assert_eq!(written_out("12e-1"), 3);
        assert!(written_out("1e100000") > 100_000);
        assert!(written_out("1e99999999999999999999") > 1 << 30);
    }

    #[test]
    fn metadata_is_kept_as_sent_without_whitespace() {
        let raw = "{ \"a\" : [1, 2.50 ,\"x y\" ], \"big\": 123456789012345678901234567890 }";
        let metadata = read_metadata(raw).unwrap();
        assert_eq!(
            metadata.get(),
            r#"{"a":[1,2.50,"x y"],"big":123456789012345678901234567890}"#
        );
        assert!(read_metadata(r#"{"a":"\u0000"}"#)
            .unwrap_err()
            .contains("\\u0000"));
        assert!(read_metadata(r#"{"a\u0000":1}"#).is_err());
        assert!(read_metadata(r#"{"n":1e5000}"#)
            .unwrap_err()
            .starts_with("is 50"));
        assert_eq!(
            read_metadata("[1]").unwrap_err(),
            "must be a JSON object, not an array"
        );
        let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
        assert!(read_metadata(&deep).is_err());
    }

    #[test]
    fn the_reading_is_as_strict_as_the_schema() {
        let rejected = |body: &str| match read(body.as_bytes()) {
            Reading::Rejected { rejected, .. } => rejected.description,
            other => panic!("{body}: {other:?}"),
        };
        let base = r#""id":"c1","gateway":"paymentz","operation":"inquiry","payment_id":"1""#;
        assert!(rejected(&format!("{{{base},\"curency\":\"EUR\"}}"))
            .starts_with("curency: unknown field"));
        assert!(rejected(&format!("{{{base},\"\":1}}")).starts_with("\"\": unknown field"));
        assert!(rejected(&format!("{{{base},\"amount\":\" 10\"}}")).starts_with("amount: "));
        assert!(rejected(&format!("{{{base},\"currency\":\"E\\nR\"}}"))
            .starts_with("currency: contains a control character"));
        assert!(
            rejected(&format!("{{{base},\"account\":\"{}\"}}", "a".repeat(300)))
                .starts_with("account: is 300 characters")
        );
        assert!(rejected(&format!("{{{base},\"gateway\":\"\\ud800\"}}"))
            .starts_with("gateway: is not valid Unicode text"));
        let list = r#""id":"l1","gateway":"paymentz","operation":"transaction_list""#;
        assert!(rejected(&format!(
            r#"{{{list},"from":"2024-01-01","to":"2025-01-01"}}"#
        ))
        .starts_with("to: the list would cover 367 days"));
        assert!(rejected(&format!(
            r#"{{{list},"from":"1999-12-31","to":"2000-01-01"}}"#
        ))
        .starts_with("from: `1999-12-31` is outside the years 2000 to 2099"));
        assert!(rejected(&format!(
            r#"{{{list},"from":"+2024-01-01","to":"2024-01-02"}}"#
        ))
        .starts_with("from: `+2024-01-01` is not a date"));
        match read(
            format!(r#"{{{list},"from":"2024-01-01","to":"2024-12-31","currency":null}}"#)
                .as_bytes(),
        ) {
            Reading::Command(c) => assert_eq!(c.currency, None, "null means absent"),
            other => panic!("{other:?}"),
        }
    }
}
