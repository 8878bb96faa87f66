//! Praxis Cashier Agent API 1.1 on the wire: the three endpoints, the signed
//! request body, and a lenient reading of the answers.
//!
//! Requests are built as a JSON object so that exactly the object that is
//! signed is the one that is sent and recorded. Answers are read loosely
//! (a status may come as a number or a numeric string; unknown fields are
//! kept) because only the 1.2 answer format is documented: what is required
//! is checked, everything else is carried along as received.

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::signing::{self, SIGNATURE_FIELD};
use crate::gateways::{GatewayError, Operation};
use crate::money::Amount;

/// The only API version this client speaks, sent in every request.
pub const API_VERSION: &str = "1.1";

/// One Agent API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    DepositCapture,
    DepositCancel,
    FindTransaction,
}

impl Endpoint {
    /// The call that runs `operation`, if Praxis 1.1 has one.
    pub fn for_operation(operation: Operation) -> Option<Endpoint> {
        match operation {
            Operation::Capture => Some(Endpoint::DepositCapture),
            Operation::Cancel => Some(Endpoint::DepositCancel),
            Operation::Inquiry => Some(Endpoint::FindTransaction),
            Operation::Refund | Operation::TransactionList => None,
        }
    }

    /// The name recorded as the exchange's purpose.
    pub fn purpose(self) -> &'static str {
        match self {
            Endpoint::DepositCapture => "deposit-capture",
            Endpoint::DepositCancel => "deposit-cancel",
            Endpoint::FindTransaction => "find-transaction",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::DepositCapture => "/api/deposit-capture",
            Endpoint::DepositCancel => "/api/deposit-cancel",
            Endpoint::FindTransaction => "/api/find-transaction",
        }
    }
}

/// Reads a command's `payment_id` as a Praxis `trace_id`.
///
/// Only plain decimal digits are accepted, without a leading zero, so that one
/// trace id has exactly one spelling: `"007"` and `"7"` would otherwise be two
/// payment ids (two locks, two idempotency scopes) for the same payment. The
/// upper bound is the gateway's signed 64-bit integer.
pub fn parse_trace_id(payment_id: &str) -> Option<u64> {
    if payment_id.is_empty()
        || payment_id.starts_with('0')
        || !payment_id.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    payment_id
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0 && n <= i64::MAX as u64)
}

/// The fields of one request, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFields<'a> {
    pub merchant_id: &'a str,
    pub frontend: &'a str,
    pub trace_id: u64,
    /// Unix seconds. The gateway refuses anything more than 60 s off, so this
    /// is taken anew for every attempt.
    pub timestamp: i64,
}

impl RequestFields<'_> {
    /// The body without its signature.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("merchant_id".into(), Value::from(self.merchant_id));
        map.insert("frontend".into(), Value::from(self.frontend));
        map.insert("trace_id".into(), Value::from(self.trace_id));
        map.insert("timestamp".into(), Value::from(self.timestamp));
        map.insert("version".into(), Value::from(API_VERSION));
        map
    }

    /// The body to send, with its signature in it.
    pub fn sign(&self, secret: &SecretString) -> SignedRequest {
        let mut body = self.to_map();
        let signature = signing::sign(&body, secret);
        body.insert(SIGNATURE_FIELD.into(), Value::String(signature.clone()));
        SignedRequest { body, signature }
    }
}

/// A request body ready to send. It holds no secret: the secret is only in the hash.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedRequest {
    pub body: Map<String, Value>,
    pub signature: String,
}

/// An Agent API answer, read leniently.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentAnswer {
    /// 0 ok; negative: internal or network error, may be retried; positive: final refusal.
    pub status: i64,
    pub description: Option<String>,
    pub version: Option<String>,
    pub signature: Option<String>,
    /// The transaction in notification form, when the answer carries one,
    /// nested under `transaction` or flat at the top level.
    pub transaction: Option<Transaction>,
    /// The whole answer as received, unknown fields included.
    pub fields: Map<String, Value>,
}

/// A transaction in Praxis notification form. Every field is optional: the
/// 1.1 `find-transaction` answer is only inferred from the 1.2 documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub transaction_type: Option<String>,
    pub transaction_status: Option<String>,
    pub transaction_id: Option<String>,
    /// As received; checked against the trace id asked for.
    pub trace_id: Option<Value>,
    /// Integer minor units.
    pub amount: Option<Amount>,
    pub currency: Option<String>,
}

/// Fields that only a transaction has (the answer's own `status` is not one
/// of them): any of these at the top level is a transaction in flat form.
const TRANSACTION_KEYS: &[&str] = &[
    "transaction_status",
    "transaction_id",
    "transaction_type",
    "trace_id",
];

/// Reads a 2xx answer body.
pub fn parse_answer(body: &str) -> Result<AgentAnswer, GatewayError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| GatewayError::Unreadable(format!("answer is not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(GatewayError::Unreadable(
            "answer is not a JSON object".into(),
        ));
    };
    let status = match fields.get("status") {
        None => return Err(GatewayError::Unreadable("answer has no `status`".into())),
        Some(value) => lenient_int(value).ok_or_else(|| {
            GatewayError::Unreadable(format!("answer `status` is not an integer: {value}"))
        })?,
    };
    // The 1.2 documentation nests the transaction under `transaction`; the
    // notification form (and, it seems, some 1.1 answers) puts its fields at
    // the top level next to `status`. Either is the same transaction; the
    // nested one wins when both are there.
    let transaction = match fields.get("transaction") {
        Some(Value::Object(tx)) => Some(Transaction::read(tx)),
        _ if TRANSACTION_KEYS.iter().any(|key| fields.contains_key(*key)) => {
            Some(Transaction::read(&fields))
        }
        _ => None,
    };
    Ok(AgentAnswer {
        status,
        description: fields.get("description").and_then(text),
        version: fields.get("version").and_then(text),
        signature: fields.get(SIGNATURE_FIELD).and_then(text),
        transaction,
        fields,
    })
}

impl Transaction {
    fn read(tx: &Map<String, Value>) -> Transaction {
        Transaction {
            transaction_type: tx.get("transaction_type").and_then(text),
            transaction_status: tx.get("transaction_status").and_then(text),
            transaction_id: tx.get("transaction_id").and_then(text),
            trace_id: tx.get("trace_id").filter(|v| !v.is_null()).cloned(),
            amount: tx
                .get("amount")
                .and_then(lenient_int)
                .and_then(|minor| u64::try_from(minor).ok())
                .map(Amount::from_minor),
            currency: tx.get("currency").and_then(text),
        }
    }
}

/// An integer sent as a JSON number (integral) or as a numeric string.
pub fn lenient_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A scalar as text; `null` and empty strings count as absent.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Object(_) | Value::Array(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_offered_operation_has_its_endpoint() {
        let capture = Endpoint::for_operation(Operation::Capture).unwrap();
        assert_eq!(capture.path(), "/api/deposit-capture");
        assert_eq!(capture.purpose(), "deposit-capture");
        let cancel = Endpoint::for_operation(Operation::Cancel).unwrap();
        assert_eq!(cancel.path(), "/api/deposit-cancel");
        let find = Endpoint::for_operation(Operation::Inquiry).unwrap();
        assert_eq!(find.path(), "/api/find-transaction");
        assert_eq!(find.purpose(), "find-transaction");
        assert_eq!(Endpoint::for_operation(Operation::Refund), None);
        assert_eq!(Endpoint::for_operation(Operation::TransactionList), None);
    }

    #[test]
    fn trace_ids_are_positive_integers_with_one_spelling() {
        assert_eq!(parse_trace_id("752856"), Some(752856));
        assert_eq!(parse_trace_id("1"), Some(1));
        assert_eq!(parse_trace_id("9223372036854775807"), Some(i64::MAX as u64));
        for bad in [
            "",
            "0",
            "007",
            "-1",
            "+1",
            "1.0",
            "1e3",
            "abc",
            " 1",
            "9223372036854775808",
        ] {
            assert_eq!(parse_trace_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_carries_every_field_and_an_integer_trace_id() {
        let fields = RequestFields {
            merchant_id: "Test-Integration-Merchant",
            frontend: "Integration TEST USD",
            trace_id: 752856,
            timestamp: 1568763080,
        };
        let signed = fields.sign(&SecretString::from("MerchantSecretKey"));
        assert_eq!(
            Value::Object(signed.body.clone()),
            json!({
                "merchant_id": "Test-Integration-Merchant",
                "frontend": "Integration TEST USD",
                "trace_id": 752856,
                "timestamp": 1568763080,
                "version": "1.1",
                "signature": "1dc661c002e4335fa8554e6fe9d9d64ac29bc4a214817391faffa64ffeff8169457913a8c161153179d889703758d725",
            })
        );
        assert_eq!(signed.body["signature"], Value::String(signed.signature));
    }

    #[test]
    fn a_fresh_timestamp_gives_a_fresh_signature() {
        let secret = SecretString::from("MerchantSecretKey");
        let at = |timestamp| RequestFields {
            merchant_id: "m",
            frontend: "f",
            trace_id: 5,
            timestamp,
        };
        let first = at(1_700_000_000).sign(&secret);
        let second = at(1_700_000_001).sign(&secret);
        assert_ne!(first.signature, second.signature);
        assert_eq!(first.body["timestamp"], json!(1_700_000_000));
        assert_eq!(second.body["timestamp"], json!(1_700_000_001));
        // Same inputs, same signature: nothing random goes in.
        assert_eq!(at(1_700_000_000).sign(&secret), first);
    }

    #[test]
    fn answers_are_read_leniently() {
        let answer = parse_answer(
            r#"{"status":"-1","description":"Internal error","version":"1.1","extra":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(answer.status, -1);
        assert_eq!(answer.description.as_deref(), Some("Internal error"));
        assert_eq!(answer.signature, None);
        assert!(answer.fields.contains_key("extra"));

        let answer = parse_answer(
            r#"{"status":0,"description":"Ok","version":"1.1","signature":"ab",
                "transaction":{"transaction_type":"authorize","transaction_status":"authorized",
                "transaction_id":13042,"trace_id":"752856","amount":"1050","currency":"USD"}}"#,
        )
        .unwrap();
        assert_eq!(answer.status, 0);
        assert_eq!(answer.signature.as_deref(), Some("ab"));
        let tx = answer.transaction.unwrap();
        assert_eq!(tx.transaction_id.as_deref(), Some("13042"));
        assert_eq!(tx.transaction_status.as_deref(), Some("authorized"));
        assert_eq!(tx.amount, Some(Amount::from_minor(1050)));
        assert_eq!(tx.trace_id, Some(json!("752856")));

        let answer = parse_answer(r#"{"status":2.0,"transaction":null}"#).unwrap();
        assert_eq!(answer.status, 2);
        assert_eq!(answer.transaction, None);
    }

    #[test]
    fn a_flat_transaction_is_read_like_a_nested_one() {
        let nested = parse_answer(
            r#"{"status":0,"description":"Ok","version":"1.1","signature":"ab",
                "transaction":{"transaction_type":"authorize","transaction_status":"authorized",
                "transaction_id":13042,"trace_id":752856,"amount":1050,"currency":"USD"}}"#,
        )
        .unwrap();
        let flat = parse_answer(
            r#"{"status":0,"description":"Ok","version":"1.1","signature":"ab",
                "transaction_type":"authorize","transaction_status":"authorized",
                "transaction_id":13042,"trace_id":752856,"amount":1050,"currency":"USD",
                "card":{"card_type":"VISA"}}"#,
        )
        .unwrap();
        assert_eq!(flat.transaction, nested.transaction);
        assert_eq!(flat.status, 0);
        assert_eq!(
            flat.transaction.unwrap().transaction_status.as_deref(),
            Some("authorized")
        );
        // One transaction field is enough to be read as one.
        let sparse = parse_answer(r#"{"status":0,"transaction_status":"approved"}"#).unwrap();
        assert_eq!(
            sparse.transaction.unwrap().transaction_status.as_deref(),
            Some("approved")
        );
        // An answer with neither shape has no transaction.
        assert_eq!(
            parse_answer(r#"{"status":0,"description":"Ok"}"#)
                .unwrap()
                .transaction,
            None
        );
        // Both: the nested one is the transaction.
        let both = parse_answer(
            r#"{"status":0,"transaction_status":"cancelled","transaction":{"transaction_status":"approved"}}"#,
        )
        .unwrap();
        assert_eq!(
            both.transaction.unwrap().transaction_status.as_deref(),
            Some("approved")
        );
    }

    #[test]
    fn answers_without_a_usable_status_are_unreadable() {
        for body in [
            "",
            "<html>502</html>",
            "[]",
            "{}",
            r#"{"status":"ok"}"#,
            r#"{"status":1.5}"#,
            r#"{"status":null}"#,
        ] {
            assert!(
                matches!(parse_answer(body), Err(GatewayError::Unreadable(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn negative_or_fractional_amounts_are_not_amounts() {
        for amount in [json!(-5), json!(10.5), json!("ten")] {
            let tx = Transaction::read(&Map::from_iter([("amount".to_string(), amount)]));
            assert_eq!(tx.amount, None);
        }
    }
}
