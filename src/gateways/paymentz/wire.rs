//! What goes over the wire to Paymentz and what comes back, below the level
//! of meaning: request forms (which know their secret fields), the paths, the
//! date and amount formats, lenient readers for answer fields, and the
//! redaction of tokens from recorded bodies.
//!
//! What an answer *means* is decided in `classify`, not here.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use time::macros::format_description;
use time::Date;

use crate::gateways::exchange::REDACTED;
use crate::gateways::ListRequest;
use crate::money::Amount;

/// Every REST path hangs off this, under the configured base URL.
pub const API_PATH: &str = "/transactionServices/REST/v1";

/// Rows asked for per `getTransactionList` page. A page with fewer is the last.
pub const PAGE_SIZE: usize = 100;

/// The back-office call a `POST /payments/{id}` makes, as `paymentType` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentType {
    Capture,
    Refund,
    Cancel,
    Inquiry,
}

impl PaymentType {
    pub fn code(self) -> &'static str {
        match self {
            PaymentType::Capture => "CP",
            PaymentType::Refund => "RF",
            PaymentType::Cancel => "RV",
            PaymentType::Inquiry => "IN",
        }
    }
}

/// What the `{id}` of an inquiry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdType {
    /// The gateway's `paymentId` (the default).
    Pid,
    /// Our `merchantTransactionId`.
    Mid,
}

impl IdType {
    pub fn code(self) -> &'static str {
        match self {
            IdType::Pid => "PID",
            IdType::Mid => "MID",
        }
    }
}

enum FieldValue<'a> {
    Plain(String),
    Secret(&'a SecretString),
}

/// A form-urlencoded request body that knows which of its fields are secret,
/// so the same value produces both the wire text and the redacted record.
pub struct Form<'a> {
    fields: Vec<(&'static str, FieldValue<'a>)>,
}

impl<'a> Form<'a> {
    fn new() -> Form<'a> {
        Form { fields: Vec::new() }
    }

    fn plain(mut self, name: &'static str, value: impl Into<String>) -> Form<'a> {
        self.fields.push((name, FieldValue::Plain(value.into())));
        self
    }

    fn secret(mut self, name: &'static str, value: &'a SecretString) -> Form<'a> {
        self.fields.push((name, FieldValue::Secret(value)));
        self
    }

    /// The body as sent. It holds secrets: hand it to the HTTP client and drop it.
    pub fn encode(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.fields {
            let text = match value {
                FieldValue::Plain(text) => text.as_str(),
                FieldValue::Secret(secret) => secret.expose_secret(),
            };
            out.append_pair(name, text);
        }
        out.finish()
    }

    /// The fields as the exchange record shows them: secrets replaced by [`REDACTED`].
    pub fn record(&self) -> Value {
        let mut map = Map::new();
        for (name, value) in &self.fields {
            let text = match value {
                FieldValue::Plain(text) => text.clone(),
                FieldValue::Secret(_) => REDACTED.to_string(),
            };
            map.insert((*name).to_string(), Value::String(text));
        }
        Value::Object(map)
    }

    /// A non-secret field's value (secret ones read as `None`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find_map(|(n, v)| match v {
            FieldValue::Plain(text) if *n == name => Some(text.as_str()),
            _ => None,
        })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.fields.iter().map(|(n, _)| *n).collect()
    }
}

impl fmt::Debug for Form<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Form({})", self.record())
    }
}

/// `POST /authToken`.
pub fn token_form<'a>(partner_id: &str, username: &str, secure_key: &'a SecretString) -> Form<'a> {
    Form::new()
        .plain("authentication.partnerId", partner_id)
        .plain("merchant.username", username)
        .secret("authentication.sKey", secure_key)
}

/// `POST /payments/{id}`. `amount` only for CP and RF, `id_type` only for IN;
/// the caller computes the checksum over the same amount text.
pub fn payment_form(
    member_id: &str,
    checksum: &str,
    payment_type: PaymentType,
    amount: Option<Amount>,
    id_type: Option<IdType>,
) -> Form<'static> {
    let mut form = Form::new()
        .plain("authentication.memberId", member_id)
        .plain("authentication.checksum", checksum)
        .plain("paymentType", payment_type.code());
    if let Some(amount) = amount {
        form = form.plain("amount", amount.to_string());
    }
    if let Some(id_type) = id_type {
        form = form.plain("idType", id_type.code());
    }
    form
}

/// `POST /getTransactionList`, one page (numbered from 1).
pub fn list_form(member_id: &str, checksum: &str, query: &ListRequest, page: u32) -> Form<'static> {
    let mut form = Form::new()
        .plain("authentication.memberId", member_id)
        .plain("authentication.checksum", checksum)
        .plain("pagination.fromdate", list_date(query.from()))
        .plain("pagination.todate", list_date(query.to()))
        .plain("pagination.pageno", page.to_string())
        .plain("pagination.records", PAGE_SIZE.to_string());
    if let Some(payment_id) = &query.payment_id {
        form = form.plain("paymentId", payment_id.clone());
    }
    if let Some(currency) = &query.currency {
        form = form.plain("currency", currency.clone());
    }
    form
}

/// `dd/MM/yyyy`, the only date form `getTransactionList` takes.
pub fn list_date(date: Date) -> String {
    date.format(format_description!("[day]/[month]/[year]"))
        .expect("a calendar date always formats")
}

/// Whether `id` can stand alone as the `{id}` path segment: unreserved URL
/// characters only, so it can neither leave the segment (`/`, `..`) nor
/// smuggle a query or fragment (`?`, `#`) or an escape (`%`).
pub fn safe_path_segment(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// `result.code` as text, whether the gateway sent it as a string or a number.
pub fn result_code(answer: &Value) -> Option<String> {
    scalar_text(answer.get("result")?.get("code")?)
}

pub fn result_description(answer: &Value) -> Option<String> {
    scalar_text(answer.get("result")?.get("description")?)
}

/// A string or number field as text; `None` for absent, null, empty or structured values.
pub fn text_field(answer: &Value, name: &str) -> Option<String> {
    scalar_text(answer.get(name)?)
}

fn scalar_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// What the token endpoint answered, read leniently.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    pub code: Option<String>,
    pub description: Option<String>,
    pub token: Option<String>,
}

impl fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("code", &self.code)
            .field("description", &self.description)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// Reads an `/authToken` answer. The token field is `AuthToken`; other
/// spellings are accepted because the key's case is not something to fail on.
pub fn parse_token_answer(body: &str) -> Result<TokenAnswer, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("token answer is not a JSON object")?;
    let token = object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authtoken"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string)
        .filter(|t| !t.is_empty());
    Ok(TokenAnswer {
        code: result_code(&value),
        description: result_description(&value),
        token,
    })
}

/// Keys whose string values never reach a record, matched case-insensitively.
pub const SECRET_KEYS: &[&str] = &["authtoken", "authentication.skey", "skey", "securekey"];

/// Replaces the string value of every `SECRET_KEYS` member in a JSON text by
/// [`REDACTED`], keeping everything else byte for byte. It works on the text,
/// not on a parsed value, so that a body that is not valid JSON is still
/// cleaned and a valid one keeps its exact form.
pub fn redact_body(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let key_end = string_end(bytes, i);
        let terminated = key_end > i + 1 && bytes[key_end - 1] == b'"';
        let key = if terminated {
            &raw[i + 1..key_end - 1]
        } else {
            ""
        };
        i = key_end;
        if !SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        let mut j = skip_space(bytes, i);
        if j >= bytes.len() || bytes[j] != b':' {
            continue;
        }
        j = skip_space(bytes, j + 1);
        if j >= bytes.len() || bytes[j] != b'"' {
            continue;
        }
        let value_end = string_end(bytes, j);
        out.push_str(&raw[copied..=j]);
        out.push_str(REDACTED);
        out.push('"');
        copied = value_end;
        i = value_end;
    }
    out.push_str(&raw[copied..]);
    out
}

/// The same redaction on a parsed answer kept in a result's `response`.
pub fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) && inner.is_string() {
                    *inner = Value::String(REDACTED.to_string());
                } else {
                    redact_value(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// Index just past the string literal opening at `start` (or the end of input).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn decode(body: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn token_form_sends_the_key_and_records_it_redacted() {
        let key = SecretString::from("sk-very-secret");
        let form = token_form("197", "merchant-login", &key);
        assert_eq!(
            decode(&form.encode()),
            vec![
                ("authentication.partnerId".into(), "197".into()),
                ("merchant.username".into(), "merchant-login".into()),
                ("authentication.sKey".into(), "sk-very-secret".into()),
            ]
        );
        let record = form.record();
        assert_eq!(record["authentication.sKey"], REDACTED);
        assert_eq!(record["merchant.username"], "merchant-login");
        assert!(!record.to_string().contains("sk-very-secret"));
        assert!(!format!("{form:?}").contains("sk-very-secret"));
        assert_eq!(form.get("authentication.sKey"), None);
    }

    #[test]
    fn capture_and_refund_forms_carry_a_two_decimal_amount() {
        for (kind, code) in [(PaymentType::Capture, "CP"), (PaymentType::Refund, "RF")] {
            let form = payment_form("11359", "abc", kind, Some(Amount::from_minor(1050)), None);
            assert_eq!(
                form.names(),
                vec![
                    "authentication.memberId",
                    "authentication.checksum",
                    "paymentType",
                    "amount"
                ]
            );
            assert_eq!(form.get("paymentType"), Some(code));
            assert_eq!(form.get("amount"), Some("10.50"));
            assert_eq!(form.get("authentication.memberId"), Some("11359"));
            assert_eq!(form.get("authentication.checksum"), Some("abc"));
        }
        let whole = payment_form(
            "1",
            "c",
            PaymentType::Capture,
            Some(Amount::from_minor(5000)),
            None,
        );
        assert_eq!(whole.get("amount"), Some("50.00"));
        let cents = payment_form(
            "1",
            "c",
            PaymentType::Refund,
            Some(Amount::from_minor(7)),
            None,
        );
        assert_eq!(cents.get("amount"), Some("0.07"));
    }

    #[test]
    fn cancel_and_inquiry_forms_have_no_amount() {
        let cancel = payment_form("1", "c", PaymentType::Cancel, None, None);
        assert_eq!(cancel.get("paymentType"), Some("RV"));
        assert!(!cancel.names().contains(&"amount"));
        let inquiry = payment_form("1", "c", PaymentType::Inquiry, None, Some(IdType::Pid));
        assert_eq!(inquiry.get("paymentType"), Some("IN"));
        assert_eq!(inquiry.get("idType"), Some("PID"));
        assert!(!inquiry.names().contains(&"amount"));
        let by_mid = payment_form("1", "c", PaymentType::Inquiry, None, Some(IdType::Mid));
        assert_eq!(by_mid.get("idType"), Some("MID"));
    }

    #[test]
    fn form_values_are_url_encoded() {
        let form = payment_form("a b&c", "x=y", PaymentType::Cancel, None, None);
        let body = form.encode();
        assert!(body.contains("authentication.memberId=a+b%26c"), "{body}");
        assert!(body.contains("authentication.checksum=x%3Dy"), "{body}");
        assert_eq!(decode(&body)[0].1, "a b&c");
    }

    #[test]
    fn list_dates_are_day_month_year() {
        assert_eq!(list_date(date!(2026 - 11 - 02)), "02/11/2026");
        assert_eq!(list_date(date!(2026 - 01 - 31)), "31/01/2026");
        let mut query = ListRequest::new(date!(2026 - 11 - 01), date!(2026 - 11 - 22)).unwrap();
        query.currency = Some("EUR".into());
        let form = list_form("11359", "sum", &query, 3);
        assert_eq!(
            form.names(),
            vec![
                "authentication.memberId",
                "authentication.checksum",
                "pagination.fromdate",
                "pagination.todate",
                "pagination.pageno",
                "pagination.records",
                "currency"
            ]
        );
        assert_eq!(form.get("pagination.fromdate"), Some("01/11/2026"));
        assert_eq!(form.get("pagination.todate"), Some("22/11/2026"));
        assert_eq!(form.get("pagination.pageno"), Some("3"));
        assert_eq!(form.get("pagination.records"), Some("100"));
        assert_eq!(form.get("currency"), Some("EUR"));
        let mut no_currency = query.clone();
        no_currency.currency = None;
        assert!(!list_form("1", "s", &no_currency, 1)
            .names()
            .contains(&"currency"));
    }

    #[test]
    fn path_segments_cannot_escape() {
        for good in ["54279", "ORDER-1001", "a_b.c~d"] {
            assert!(safe_path_segment(good), "{good}");
        }
        for bad in [
            "", "1/2", "1?x=2", "1#f", "1 2", "1\t", "..", ".", "a..b", "%2F", "1\n", "é",
        ] {
            assert!(!safe_path_segment(bad), "{bad:?}");
        }
    }

    #[test]
    fn token_answers_are_read_leniently() {
        let answer = parse_token_answer(
            r#"{"partnerId":"197","memberId":"11359","result":{"code":"200","description":"Token generated successfully"},"timestamp":"2026-11-22 10:15:03","LoginName":"merchant-login","AuthToken":"eyJ.abc.def"}"#,
        )
        .unwrap();
        assert_eq!(answer.code.as_deref(), Some("200"));
        assert_eq!(
            answer.description.as_deref(),
            Some("Token generated successfully")
        );
        assert_eq!(answer.token.as_deref(), Some("eyJ.abc.def"));
        assert!(!format!("{answer:?}").contains("eyJ.abc.def"));

        let numeric = parse_token_answer(r#"{"result":{"code":403},"authToken":""}"#).unwrap();
        assert_eq!(numeric.code.as_deref(), Some("403"));
        assert_eq!(numeric.token, None);

        assert!(parse_token_answer("<html>").is_err());
        assert!(parse_token_answer("[1]").is_err());
    }

    #[test]
    fn result_codes_may_be_strings_or_numbers() {
        let v: Value = serde_json::from_str(r#"{"result":{"code":"00001"}}"#).unwrap();
        assert_eq!(result_code(&v).as_deref(), Some("00001"));
        let v: Value = serde_json::from_str(r#"{"result":{"code":401}}"#).unwrap();
        assert_eq!(result_code(&v).as_deref(), Some("401"));
        let v: Value = serde_json::from_str(r#"{"result":{"code":null}}"#).unwrap();
        assert_eq!(result_code(&v), None);
        let v: Value = serde_json::from_str(r#"{"result":"oops"}"#).unwrap();
        assert_eq!(result_code(&v), None);
    }

    #[test]
    fn tokens_are_redacted_from_bodies_exactly_where_they_are() {
        let raw = r#"{"result":{"code":"200"},"AuthToken" : "eyJ.a\"b.c","LoginName":"m"}"#;
        let clean = redact_body(raw);
        assert_eq!(
            clean,
            format!(r#"{{"result":{{"code":"200"}},"AuthToken" : "{REDACTED}","LoginName":"m"}}"#)
        );
        assert!(serde_json::from_str::<Value>(&clean).is_ok());

        // Not JSON at all, and a different spelling of the key: still cleaned.
        let broken = r#"oops {"authtoken":"secret-jwt" ... "#;
        assert!(!redact_body(broken).contains("secret-jwt"));

        // A value that is not a string is left alone; other fields are untouched.
        let other = r#"{"paymentId":"55361","AuthToken":null}"#;
        assert_eq!(redact_body(other), other);

        // An unterminated value is cut off rather than leaked.
        assert!(!redact_body(r#"{"AuthToken":"eyJ-unterminated"#).contains("eyJ"));
    }
}
