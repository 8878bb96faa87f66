//! Praxis API 1.1 notifications: reading the body, checking its SHA-384
//! signature, and the signed answer (`shared/spec/notifications.md`).
//!
//! The signature is checked over the raw body's own values: every top-level
//! field except `signature`, keys sorted by byte order, values concatenated
//! as they appear in the JSON text (strings decoded, numbers as written,
//! `null` as nothing), the merchant secret appended, SHA-384, lowercase hex,
//! compared in constant time. Nothing is re-serialized before the check, so
//! a field Praxis adds tomorrow is signed like the others. A notification's
//! `timestamp` is not a reason to refuse it: re-sends may carry the original.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::money::Amount;
use crate::notifications::{
    currency, raw_object, signed_text, text_of, Answer, Meaning, Notice, NotificationReader,
    Reading, Verification,
};

/// One `[accounts.praxis.<name>]` account's notification reader.
pub struct PraxisNotifications {
    merchant_id: String,
    frontend: String,
    secret: SecretString,
}

impl PraxisNotifications {
    pub fn new(merchant_id: &str, frontend: &str, secret: SecretString) -> PraxisNotifications {
        PraxisNotifications {
            merchant_id: merchant_id.to_string(),
            frontend: frontend.to_string(),
            secret,
        }
    }
}

/// The text the signature is computed over (the secret not yet appended).
pub fn concatenation(fields: &BTreeMap<String, Box<RawValue>>) -> String {
    let mut text = String::new();
    for (key, raw) in fields {
        if key == super::signing::SIGNATURE_FIELD {
            continue;
        }
        if let Some(value) = signed_text(raw) {
            text.push_str(&value);
        }
    }
    text
}

/// The Praxis meaning of a `transaction_status`.
pub fn meaning(status: &str) -> Meaning {
    match status.to_ascii_lowercase().as_str() {
        "authorized" => Meaning::Authorized,
        "approved" => Meaning::Captured,
        "cancelled" | "canceled" => Meaning::Cancelled,
        _ => Meaning::Other,
    }
}

impl NotificationReader for PraxisNotifications {
    fn read(&self, body: &[u8]) -> Reading {
        let fields = match raw_object(body) {
            Ok(fields) => fields,
            Err(why) => return Reading::unreadable(why),
        };
        let value = serde_json::from_slice::<serde_json::Value>(body).ok();
        let text = |key: &str| text_of(fields.get(key).map(|r| &**r));
        let notice = read_notice(&fields);
        let verification = match text("signature") {
            None => Verification::BadSignature("no signature".into()),
            Some(received) => {
                let expected = super::signing::digest(&concatenation(&fields), &self.secret);
                let received = received.trim().to_ascii_lowercase();
                if bool::from(expected.as_bytes().ct_eq(received.as_bytes())) {
                    Verification::Verified
                } else {
                    Verification::BadSignature("the signature does not verify".into())
                }
            }
        };
        // A signed body for another merchant or front end is still not ours.
        let verification = match (text("merchant_id"), text("frontend")) {
            (Some(m), _) if m != self.merchant_id => {
                Verification::WrongAccount("merchant_id is not this account's".into())
            }
            (_, Some(f)) if f != self.frontend => {
                Verification::WrongAccount("frontend is not this account's".into())
            }
            _ if notice.is_none() => {
                Verification::Unreadable("no usable trace_id or transaction_status".into())
            }
            _ => verification,
        };
        Reading {
            fields: value,
            notice,
            verification,
        }
    }

    fn answer(&self, answer: Answer) -> (u16, String) {
        let (status, description) = match answer {
            Answer::Recorded => (0, "Ok"),
            Answer::Retry => (-1, "not recorded, send again"),
            Answer::BadSignature => (1, "signature does not verify"),
            Answer::Refused => (1, "refused"),
        };
        (200, signed_answer(status, description, &self.secret))
    }
}

/// `{"status","description","version","signature"}`, signed over
/// `description`, `status` and `version` (sorted) plus the secret.
pub fn signed_answer(status: i32, description: &str, secret: &SecretString) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("status".into(), status.into());
    fields.insert("description".into(), description.into());
    fields.insert("version".into(), "1.1".into());
    let signature = super::signing::sign(&fields, secret);
    fields.insert("signature".into(), signature.into());
    serde_json::Value::Object(fields).to_string()
}

fn read_notice(fields: &BTreeMap<String, Box<RawValue>>) -> Option<Notice> {
    let text = |key: &str| text_of(fields.get(key).map(|r| &**r)).filter(|t| !t.is_empty());
    let payment_id =
        text("trace_id").filter(|t| t.len() <= 32 && t.bytes().all(|b| b.is_ascii_digit()))?;
    let status = text("transaction_status")
        .filter(|s| s.len() <= 64 && !s.chars().any(crate::telemetry::Escaped::is_unsafe))?;
    let amount_text =
        text("amount").filter(|a| a.len() <= 20 && a.bytes().all(|b| b.is_ascii_digit()));
    let amount = amount_text
        .as_deref()
        .and_then(|a| a.parse::<u64>().ok())
        .map(Amount::from_minor);
    let currency = text("currency").filter(|c| currency::is_code(c));
    let mismatch = {
        let charge_amount = text("charge_amount");
        let charge_currency = text("charge_currency");
        let mut why = Vec::new();
        if let (Some(charged), Some(authorized)) = (&charge_amount, &amount_text) {
            if charged != authorized {
                why.push(format!(
                    "charge_amount {} differs from amount {authorized}",
                    crate::telemetry::Escaped::at_most(charged, 32)
                ));
            }
        }
        if let (Some(charged), Some(authorized)) = (&charge_currency, &currency) {
            if charged != authorized {
                why.push(format!(
                    "charge_currency {} differs from currency {authorized}",
                    crate::telemetry::Escaped::at_most(charged, 8)
                ));
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    };
    let mut metadata = serde_json::Map::new();
    if let Some(order) = text("order_id") {
        metadata.insert(
            "order_id".into(),
            crate::telemetry::Escaped::at_most(&order, 128)
                .to_string()
                .into(),
        );
    }
    if let Ok(trace) = payment_id.parse::<u64>() {
        metadata.insert("trace_id".into(), trace.into());
    }
    Some(Notice {
        meaning: meaning(&status),
        payment_id,
        status,
        amount_text,
        amount,
        currency,
        mismatch,
        frontend: text("frontend"),
        payment_method: text("payment_method"),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "MerchantSecretKey";

    fn reader() -> PraxisNotifications {
        PraxisNotifications::new(
            "Test-Integration-Merchant",
            "Integration TEST USD",
            SecretString::from(SECRET),
        )
    }

    /// A body signed by the rule, with `extra` fields in it.
    fn signed_body(extra: &str) -> String {
        let unsigned = format!(
            r#"{{"merchant_id":"Test-Integration-Merchant","frontend":"Integration TEST USD","transaction_type":"authorize","transaction_status":"authorized","trace_id":752856,"order_id":"order-1","amount":1050,"currency":"USD","charge_amount":1050,"charge_currency":"USD","payment_method":"Credit Card","timestamp":1568763080,"version":"1.1"{extra}}}"#
        );
        let fields = raw_object(unsigned.as_bytes()).unwrap();
        let signature =
            super::super::signing::digest(&concatenation(&fields), &SecretString::from(SECRET));
        format!(
            "{},\"signature\":\"{signature}\"}}",
            &unsigned[..unsigned.len() - 1]
        )
    }

    #[test]
    fn the_answer_vector_of_the_spec() {
        // sha384("Ok01.1MerchantSecretKey")
        let answer = signed_answer(0, "Ok", &SecretString::from(SECRET));
        let value: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(value["status"], 0);
        assert_eq!(value["version"], "1.1");
        assert_eq!(
            value["signature"],
            "bcf9a2dd85f4e5a1b027f31a82ac0087bedcadecb1f3afaf0790c6353147ff53674eadcbeeeb33b123bf84cf645b8030"
        );
    }

    #[test]
    fn the_request_vectors_of_the_spec_sign_the_same_way() {
        let body = r#"{"frontend":"Integration TEST USD","merchant_id":"Test-Integration-Merchant","timestamp":1568763080,"trace_id":752856,"version":"1.1"}"#;
        let fields = raw_object(body.as_bytes()).unwrap();
        assert_eq!(
            super::super::signing::digest(&concatenation(&fields), &SecretString::from(SECRET)),
            "1dc661c002e4335fa8554e6fe9d9d64ac29bc4a214817391faffa64ffeff8169457913a8c161153179d889703758d725"
        );
    }

    #[test]
    fn a_signed_authorization_is_verified_and_read() {
        let reading = reader().read(signed_body("").as_bytes());
        assert_eq!(reading.verification, Verification::Verified);
        let notice = reading.notice.unwrap();
        assert_eq!(notice.payment_id, "752856");
        assert_eq!(notice.meaning, Meaning::Authorized);
        assert_eq!(notice.amount, Some(Amount::from_minor(1050)));
        assert_eq!(notice.currency.as_deref(), Some("USD"));
        assert_eq!(notice.mismatch, None);
        assert_eq!(notice.metadata["trace_id"], 752856);
        assert_eq!(notice.metadata["order_id"], "order-1");
    }

    #[test]
    fn unknown_fields_are_signed_like_the_others() {
        let body = signed_body(r#","new_field":"x","ratio":1.50,"nested":{"a":1}"#);
        assert_eq!(
            reader().read(body.as_bytes()).verification,
            Verification::Verified
        );
        // The number as written: 1.50, not 1.5.
        let tampered = body.replace("1.50", "1.5");
        assert!(matches!(
            reader().read(tampered.as_bytes()).verification,
            Verification::BadSignature(_)
        ));
    }

    #[test]
    fn a_changed_amount_does_not_verify() {
        let body = signed_body("").replace("\"amount\":1050", "\"amount\":1051");
        let reading = reader().read(body.as_bytes());
        assert!(matches!(
            reading.verification,
            Verification::BadSignature(_)
        ));
        assert!(reading.notice.is_some(), "still read, for the inquiry");
    }

    #[test]
    fn another_merchant_is_refused_even_when_signed() {
        let other = PraxisNotifications::new(
            "Other-Merchant",
            "Integration TEST USD",
            SecretString::from(SECRET),
        );
        assert!(matches!(
            other.read(signed_body("").as_bytes()).verification,
            Verification::WrongAccount(_)
        ));
    }

    #[test]
    fn a_processed_amount_that_differs_is_a_mismatch() {
        let body = signed_body("").replace("\"charge_amount\":1050", "\"charge_amount\":1000");
        let fields = raw_object(body.as_bytes()).unwrap();
        let notice = read_notice(&fields).unwrap();
        assert!(notice.mismatch.unwrap().contains("charge_amount"));
    }

    #[test]
    fn anything_is_read_without_panicking() {
        for body in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            b"{\"trace_id\":null}",
            b"{\"trace_id\":\"abc\",\"transaction_status\":\"authorized\"}",
            b"\xff\xfe",
        ] {
            let reading = reader().read(body);
            assert!(!reading.verification.verified());
        }
    }

    #[test]
    fn statuses_mean_what_the_spec_says() {
        assert_eq!(meaning("authorized"), Meaning::Authorized);
        assert_eq!(meaning("approved"), Meaning::Captured);
        assert_eq!(meaning("canceled"), Meaning::Cancelled);
        assert_eq!(meaning("cancelled"), Meaning::Cancelled);
        assert_eq!(meaning("chargeback"), Meaning::Other);
    }

    proptest::proptest! {
        /// No input panics the reader, and nothing unsigned verifies.
        #[test]
        fn any_body_is_read_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let reading = PraxisNotifications::new("Test-Integration-Merchant", "Integration TEST USD", SecretString::from(SECRET)).read(&body);
            proptest::prop_assert!(!reading.verification.verified());
        }

        /// JSON objects with arbitrary fields, too.
        #[test]
        fn any_json_object_is_read_without_panicking(fields in proptest::collection::btree_map("[a-zA-Z_]{1,12}", "[ -~]{0,24}", 0..12)) {
            let body = serde_json::to_vec(&fields).unwrap();
            let reading = PraxisNotifications::new("Test-Integration-Merchant", "Integration TEST USD", SecretString::from(SECRET)).read(&body);
            proptest::prop_assert!(!reading.verification.verified());
        }
    }
}
