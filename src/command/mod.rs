//! A command as producers publish it: reading it from a message body, and
//! its validation.
//!
//! The field names follow `shared/spec/messages.md` exactly. [`read`] turns
//! a message body into one of three things: a well-formed [`Command`], a
//! command with a usable `id` that is [`Rejected`] (so the producer hears
//! why), or an unreadable message (dead-lettered with the reason). It is as
//! strict as `schemas/command.schema.json` (one tolerance: `null` means
//! absent) and it bounds everything, because whatever it lets through is
//! stored, echoed in events and written to logs: no text longer than its
//! limit, no control character, no `\u0000` that PostgreSQL cannot store, and
//! `metadata` kept as the producer's JSON text so that it is echoed unchanged.
//! Validation then turns a [`Command`] into a [`ValidCommand`] (a ready
//! gateway client and an [`OperationRequest`]). Generic rules live here; what
//! only one gateway cares about (Praxis refusing an amount on capture) is
//! asked of the gateway through [`Gateway::check`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::events::Metadata;
use crate::gateways::registry::{self, Accounts};
use crate::gateways::{Gateway, Operation, OperationRequest, Rejection};
use crate::money::Amount;
use crate::outcome::{RejectReason, Rejected};
use crate::telemetry::Escaped;

/// The largest `metadata` object accepted: its JSON text without whitespace,
/// with every number counted as written out in full (so that `1e100000`
/// cannot grow into 100 KB once stored).
pub const MAX_METADATA_BYTES: usize = 4096;
/// The contract's longest `id`.
pub const MAX_ID_CHARS: usize = 128;
/// The longest `id` the worker stores (as a `rejected` command) at all: it
/// still fits the AMQP `correlation_id` of its event. A longer one, or one
/// with a control character, cannot be answered and is dead-lettered.
pub const MAX_USABLE_ID_BYTES: usize = 255;
/// The longest text any other field may have (each has a stricter rule of
/// its own, except `account`'s).
pub const MAX_TEXT_CHARS: usize = 256;
/// The longest account name.
pub const MAX_ACCOUNT_CHARS: usize = 64;
/// The most days one `transaction_list` covers, `from` and `to` included.
pub const MAX_LIST_DAYS: i64 = 366;
/// The years a `transaction_list` may name.
pub const LIST_YEARS: std::ops::RangeInclusive<i32> = 2000..=2099;
/// How much of a name a producer invented (an unknown field, gateway,
/// operation) is echoed in a rejection.
const SHOWN_NAME_CHARS: usize = 64;

/// The fields of a command; any other is refused.
pub const FIELDS: [&str; 10] = [
    "id",
    "gateway",
    "account",
    "operation",
    "payment_id",
    "amount",
    "currency",
    "from",
    "to",
    "metadata",
];

/// A command's fields, as they arrived. Every field is optional here so that
/// a command with a usable `id` but a bad field can still be answered with a
/// `rejected` result. Serialized, it is the command as stored: the contract's
/// fields only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Set only by the worker itself, for a command it made (from a
    /// notification): [`read`] never takes it from a producer's message (it is
    /// not one of [`FIELDS`]), and it is not part of the fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::events::Origin>,
}

/// A command that passed validation, with its gateway client resolved.
#[derive(Clone)]
pub struct ValidCommand {
    pub id: String,
    pub gateway: Arc<dyn Gateway>,
    pub account: String,
    pub request: OperationRequest,
}

pub const DEFAULT_ACCOUNT: &str = "default";

pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// What a message body turned out to be: exactly one of three.
#[derive(Debug)]
pub enum Reading {
    /// Every field well-formed: it goes on to [`Command::validate`].
    Command(Box<Command>),
    /// A usable `id`, but the command breaks a rule: answered `rejected`.
    /// `extra` holds the fields that are not part of `command` (unknown, or
    /// of the wrong JSON type) as their JSON text, for the fingerprint.
    Rejected {
        command: Box<Command>,
        rejected: Rejected,
        extra: Vec<(String, String)>,
    },
    /// Not a command at all (no usable `id`): the reason goes in the
    /// dead-letter header. Printable and bounded.
    Unreadable(String),
}

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

/// Reads a message body as a command. Never panics, whatever the bytes.
pub fn read(body: &[u8]) -> Reading {
    let fields: BTreeMap<String, Box<RawValue>> = match serde_json::from_slice(body) {
        Ok(fields) => fields,
        Err(e) if e.is_data() => return Reading::Unreadable("not a JSON object".into()),
        Err(e) => {
            return Reading::Unreadable(format!("not JSON: {}", Escaped::new(&e.to_string())))
        }
    };
    let id = match fields.get("id").map(|raw| field_value(raw.get())) {
        None | Some(FieldValue::Null) => return Reading::Unreadable("no `id` field".into()),
        Some(FieldValue::Other(_)) => return Reading::Unreadable("`id` is not a string".into()),
        Some(FieldValue::BadText) => {
            return Reading::Unreadable("`id` is not valid Unicode text".into())
        }
        Some(FieldValue::Text(id)) => id,
    };
    if id.is_empty() {
        return Reading::Unreadable("`id` is empty".into());
    }
    if id.len() > MAX_USABLE_ID_BYTES {
        return Reading::Unreadable(format!(
            "`id` is longer than {MAX_USABLE_ID_BYTES} bytes ({} bytes)",
            id.len()
        ));
    }
    if id.chars().any(Escaped::is_unsafe) {
        return Reading::Unreadable(format!(
            "`id` contains a control character: `{}`",
            Escaped::at_most(&id, SHOWN_NAME_CHARS)
        ));
    }

    let mut command = Command {
        id: Some(id),
        ..Command::default()
    };
    let mut problem: Option<Rejected> = None;
    let mut extra = Vec::new();
    for (key, raw) in &fields {
        if !FIELDS.contains(&key.as_str()) {
            problem.get_or_insert_with(|| {
                let shown = match key.as_str() {
                    "" => "\"\"".to_string(),
                    key => Escaped::at_most(key, SHOWN_NAME_CHARS).to_string(),
                };
                Rejected::invalid(
                    &shown,
                    format!("unknown field (a command has only {})", FIELDS.join(", ")),
                )
            });
            extra.push((key.clone(), raw.get().to_string()));
        }
    }
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
    } = &mut command;
    let text_fields: [(&str, &mut Option<String>); 8] = [
        ("gateway", gateway),
        ("account", account),
        ("operation", operation),
        ("payment_id", payment_id),
        ("amount", amount),
        ("currency", currency),
        ("from", from),
        ("to", to),
    ];
    for (name, slot) in text_fields {
        let Some(raw) = fields.get(name) else {
            continue;
        };
        match field_value(raw.get()) {
            FieldValue::Null => {}
            FieldValue::Text(text) => *slot = Some(text),
            FieldValue::BadText => {
                problem.get_or_insert_with(|| {
                    Rejected::invalid(name, "is not valid Unicode text (a lone surrogate escape)")
                });
                extra.push((name.to_string(), raw.get().to_string()));
            }
            FieldValue::Other(kind) => {
                problem.get_or_insert_with(|| {
                    Rejected::invalid(name, format!("must be a string, not {kind}"))
                });
                extra.push((name.to_string(), raw.get().to_string()));
            }
        }
    }
    if let Some(raw) = fields.get("metadata") {
        if !matches!(field_value(raw.get()), FieldValue::Null) {
            match read_metadata(raw.get()) {
                Ok(metadata) => command.metadata = Some(metadata),
                Err(why) => {
                    problem.get_or_insert_with(|| Rejected::invalid("metadata", why));
                    extra.push(("metadata".into(), raw.get().to_string()));
                }
            }
        }
    }
    let problem = problem.or_else(|| command.check().err());
    match problem {
        None => Reading::Command(Box::new(command)),
        Some(rejected) => Reading::Rejected {
            command: Box::new(command),
            rejected,
            extra,
        },
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

impl Command {
    pub fn account_name(&self) -> &str {
        self.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
    }

    /// The rules that need no configuration, in a fixed order; the first
    /// problem found is the one reported. Every text field is first checked
    /// to be short and printable, so that what a rejection echoes is bounded.
    pub fn check(&self) -> Result<(), Rejected> {
        let text_fields = [
            ("id", &self.id),
            ("gateway", &self.gateway),
            ("account", &self.account),
            ("operation", &self.operation),
            ("payment_id", &self.payment_id),
            ("amount", &self.amount),
            ("currency", &self.currency),
            ("from", &self.from),
            ("to", &self.to),
        ];
        for (name, value) in text_fields {
            let Some(text) = value else { continue };
            let chars = text.chars().count();
            if chars > MAX_TEXT_CHARS {
                return Err(Rejected::invalid(
                    name,
                    format!("is {chars} characters long; at most {MAX_TEXT_CHARS} allowed"),
                ));
            }
            if text.chars().any(Escaped::is_unsafe) {
                return Err(Rejected::invalid(
                    name,
                    format!(
                        "contains a control character: `{}`",
                        Escaped::at_most(text, SHOWN_NAME_CHARS)
                    ),
                ));
            }
        }

        let id = self
            .id
            .as_deref()
            .ok_or_else(|| Rejected::invalid("id", "missing"))?;
        if !valid_id(id) {
            return Err(Rejected::invalid(
                "id",
                "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let gateway_name = self
            .gateway
            .as_deref()
            .ok_or_else(|| Rejected::invalid("gateway", "missing"))?;
        if registry::find(gateway_name).is_none() {
            let known: Vec<_> = registry::GATEWAYS.iter().map(|k| k.name).collect();
            return Err(Rejected::invalid(
                "gateway",
                format!(
                    "unknown gateway `{}` (known: {})",
                    Escaped::at_most(gateway_name, SHOWN_NAME_CHARS),
                    known.join(", ")
                ),
            ));
        }
        let operation = self.operation()?;
        let account = self.account_name();
        if account.is_empty() {
            return Err(Rejected::invalid("account", "must not be empty"));
        }
        if account.chars().count() > MAX_ACCOUNT_CHARS {
            return Err(Rejected::invalid(
                "account",
                format!("must be at most {MAX_ACCOUNT_CHARS} characters"),
            ));
        }
        match (&self.payment_id, operation) {
            (None, Operation::TransactionList) => {}
            (None, _) => return Err(Rejected::invalid("payment_id", "missing")),
            (Some(p), _) if p.is_empty() || p.len() > 64 => {
                return Err(Rejected::invalid(
                    "payment_id",
                    "must be 1 to 64 characters",
                ))
            }
            (Some(p), _) if !p.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(Rejected::invalid(
                    "payment_id",
                    "must be printable ASCII without spaces",
                ))
            }
            (Some(_), _) => {}
        }
        if let Some(text) = &self.amount {
            Amount::parse_positive(text).map_err(|e| Rejected::invalid("amount", e))?;
        }
        if let Some(currency) = &self.currency {
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Rejected::invalid(
                    "currency",
                    "must be an ISO 4217 code such as EUR",
                ));
            }
        }
        self.list_span(operation)?;
        Ok(())
    }

    fn operation(&self) -> Result<Operation, Rejected> {
        let name = self
            .operation
            .as_deref()
            .ok_or_else(|| Rejected::invalid("operation", "missing"))?;
        Operation::parse(name).ok_or_else(|| {
            Rejected::invalid(
                "operation",
                format!(
                    "unknown operation `{}` (known: capture, refund, cancel, inquiry, transaction_list)",
                    Escaped::at_most(name, SHOWN_NAME_CHARS)
                ),
            )
        })
    }

    /// `from` and `to`: both for a transaction list (in sane years, in order,
    /// at most [`MAX_LIST_DAYS`] apart), neither for anything else.
    fn list_span(
        &self,
        operation: Operation,
    ) -> Result<Option<(time::Date, time::Date)>, Rejected> {
        if operation != Operation::TransactionList {
            if self.from.is_some() || self.to.is_some() {
                return Err(Rejected::invalid(
                    "from",
                    "only allowed for transaction_list",
                ));
            }
            return Ok(None);
        }
        let from = parse_date("from", self.from.as_deref())?;
        let to = parse_date("to", self.to.as_deref())?;
        if from > to {
            return Err(Rejected::invalid("from", "must not be after `to`"));
        }
        let days = (to - from).whole_days() + 1;
        if days > MAX_LIST_DAYS {
            return Err(Rejected::invalid(
                "to",
                format!(
                    "the list would cover {days} days; one list covers at most {MAX_LIST_DAYS} (from and to included)"
                ),
            ));
        }
        Ok(Some((from, to)))
    }

    /// Checks every field; the first problem found is the one reported.
    pub fn validate(&self, accounts: &Accounts) -> Result<ValidCommand, Rejected> {
        self.check()?;
        let id = self.id.as_deref().expect("checked");
        let gateway_name = self.gateway.as_deref().expect("checked");
        let operation = self.operation()?;
        let account = self.account_name();
        let amount = self
            .amount
            .as_deref()
            .map(Amount::parse_positive)
            .transpose()
            .map_err(|e| Rejected::invalid("amount", e))?;
        let (from, to) = match self.list_span(operation)? {
            Some((from, to)) => (Some(from), Some(to)),
            None => (None, None),
        };
        let gateway = accounts
            .get(gateway_name, account)
            .cloned()
            .ok_or_else(|| {
                Rejected::new(
                    RejectReason::UnknownAccount,
                    format!(
                        "no account `{}` is configured for {gateway_name}",
                        Escaped::at_most(account, SHOWN_NAME_CHARS)
                    ),
                )
            })?;
        let request = OperationRequest {
            operation,
            payment_id: self.payment_id.clone(),
            amount,
            currency: self.currency.clone(),
            from,
            to,
        };
        gateway
            .check(&request)
            .map_err(|rejection| match rejection {
                Rejection::UnsupportedOperation { .. } => {
                    Rejected::new(RejectReason::UnsupportedOperation, rejection.to_string())
                }
                Rejection::InvalidField { field, problem } => Rejected::invalid(field, problem),
            })?;
        Ok(ValidCommand {
            id: id.to_string(),
            gateway,
            account: account.to_string(),
            request,
        })
    }

    /// The command as stored and echoed: its text fields bounded and escaped
    /// (a no-op for every command that is not rejected for them).
    pub fn bounded(&self) -> Command {
        let bound = |v: &Option<String>| {
            v.as_deref().map(|text| {
                if Escaped::is_clean(text, MAX_TEXT_CHARS) {
                    text.to_string()
                } else {
                    Escaped::at_most(text, MAX_TEXT_CHARS).to_string()
                }
            })
        };
        Command {
            id: bound(&self.id),
            gateway: bound(&self.gateway),
            account: bound(&self.account),
            operation: bound(&self.operation),
            payment_id: bound(&self.payment_id),
            amount: bound(&self.amount),
            currency: bound(&self.currency),
            from: bound(&self.from),
            to: bound(&self.to),
            metadata: self.metadata.clone(),
            origin: self.origin.clone(),
        }
    }
}

fn parse_date(field: &str, text: Option<&str>) -> Result<time::Date, Rejected> {
    let text = text.ok_or_else(|| Rejected::invalid(field, "missing"))?;
    let shown = || Escaped::at_most(text, SHOWN_NAME_CHARS);
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    let date = shaped
        .then(|| {
            time::Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()
        })
        .flatten()
        .ok_or_else(|| {
            Rejected::invalid(
                field,
                format!("`{}` is not a date of the form YYYY-MM-DD", shown()),
            )
        })?;
    if !LIST_YEARS.contains(&date.year()) {
        return Err(Rejected::invalid(
            field,
            format!(
                "`{}` is outside the years {} to {}",
                shown(),
                LIST_YEARS.start(),
                LIST_YEARS.end()
            ),
        ));
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_contract_alphabet() {
        assert!(valid_id("order-8812-refund-1"));
        assert!(valid_id("a.b_c:d-E9"));
        assert!(valid_id(&"x".repeat(128)));
        assert!(!valid_id(""));
        assert!(!valid_id(&"x".repeat(129)));
        assert!(!valid_id("has space"));
        assert!(!valid_id("slash/no"));
        assert!(!valid_id("ünï"));
    }

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

    #[test]
    fn generic_rules_reject_before_looking_up_accounts() {
        let accounts = Accounts::default();
        let base = Command {
            id: Some("c1".into()),
            gateway: Some("paymentz".into()),
            operation: Some("refund".into()),
            payment_id: Some("55361".into()),
            amount: Some("10.00".into()),
            ..Command::default()
        };
        let cases: Vec<(Command, &str)> = vec![
            (
                Command {
                    id: None,
                    ..base.clone()
                },
                "id: missing",
            ),
            (
                Command {
                    gateway: Some("stripe".into()),
                    ..base.clone()
                },
                "gateway: unknown gateway `stripe`",
            ),
            (
                Command {
                    operation: Some("void".into()),
                    ..base.clone()
                },
                "operation: unknown operation",
            ),
            (
                Command {
                    payment_id: None,
                    ..base.clone()
                },
                "payment_id: missing",
            ),
            (
                Command {
                    amount: Some("-1".into()),
                    ..base.clone()
                },
                "amount:",
            ),
            (
                Command {
                    amount: Some("1.005".into()),
                    ..base.clone()
                },
                "amount:",
            ),
            (
                Command {
                    amount: Some("0".into()),
                    ..base.clone()
                },
                "amount: amount must be positive",
            ),
            (
                Command {
                    currency: Some("eur".into()),
                    ..base.clone()
                },
                "currency:",
            ),
            (
                Command {
                    operation: Some("transaction_list".into()),
                    payment_id: None,
                    from: Some("2026-13-01".into()),
                    to: Some("2026-01-02".into()),
                    amount: None,
                    ..base.clone()
                },
                "from: `2026-13-01` is not a date",
            ),
            (
                Command {
                    operation: Some("transaction_list".into()),
                    payment_id: None,
                    from: Some("2026-02-01".into()),
                    to: Some("2026-01-02".into()),
                    amount: None,
                    ..base.clone()
                },
                "from: must not be after `to`",
            ),
        ];
        for (command, expected) in cases {
            let rejected = command.validate(&accounts).err().expect("must be rejected");
            assert_eq!(rejected.reason, RejectReason::InvalidCommand, "{command:?}");
            assert!(
                rejected.description.starts_with(expected),
                "{} does not start with {expected}",
                rejected.description
            );
        }
        let unknown = base.validate(&accounts).err().unwrap();
        assert_eq!(unknown.reason, RejectReason::UnknownAccount);
    }
}
