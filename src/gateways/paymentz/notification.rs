//! Paymentz notifications: reading the body, checking its MD5 checksum, and
//! the answer (`shared/spec/notifications.md`).
//!
//! The checksum is `md5(paymentId|merchantTransactionId|amount|transactionStatus|secureKey)`
//! over the values exactly as sent (the amount's text, never a re-formatted
//! number), lowercase hex, compared in constant time. The short
//! `transactionStatus` is signed but unreliable: what happened is decided
//! by the long `status`. Paymentz reads only the HTTP status of the answer
//! and does not retry by itself.

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::money::Amount;
use crate::notifications::{
    currency, raw_object, text_of, Answer, Meaning, Notice, NotificationReader, Reading,
    Verification,
};

/// One `[accounts.paymentz.<name>]` account's notification reader.
pub struct PaymentzNotifications {
    secure_key: SecretString,
}

impl PaymentzNotifications {
    pub fn new(secure_key: SecretString) -> PaymentzNotifications {
        PaymentzNotifications { secure_key }
    }
}

/// `md5(paymentId|merchantTransactionId|amount|transactionStatus|secureKey)`.
pub fn checksum(parts: [&str; 4], secure_key: &SecretString) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"|");
    }
    hasher.update(secure_key.expose_secret().as_bytes());
    hex::encode(hasher.finalize())
}

/// The meaning of a long `status`.
///
/// `reversed` is not proof of a cancel, although notifications.md lists it
/// among the cancelled statuses: Paymentz says `reversed` after a *refund*
/// (gateways.md: "refunded, fully or partly"; a reversed authorization is
/// `authcancelled`), and a refund needs a capture, so our cancel cannot have
/// applied. Taken as evidence it would settle an `unknown` cancel as
/// `succeeded` when it failed. It is recorded and ignored; an inquiry settles
/// such a command.
pub fn meaning(status: &str) -> Meaning {
    match status {
        "authsuccessful" => Meaning::Authorized,
        "capturesuccess" => Meaning::Captured,
        "authcancelled" | "cancelled" => Meaning::Cancelled,
        _ => Meaning::Other,
    }
}

impl NotificationReader for PaymentzNotifications {
    fn read(&self, body: &[u8]) -> Reading {
        let fields = match raw_object(body) {
            Ok(fields) => fields,
            Err(why) => return Reading::unreadable(why),
        };
        let value = serde_json::from_slice::<serde_json::Value>(body).ok();
        let text = |key: &str| text_of(fields.get(key).map(|r| &**r));
        let payment_id = text("paymentId")
            .filter(|p| !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_digit()));
        let status = text("status").filter(|s| {
            !s.is_empty() && s.len() <= 64 && !s.chars().any(crate::telemetry::Escaped::is_unsafe)
        });
        let amount_text = text("amount");
        let amount = amount_text
            .as_deref()
            .and_then(|a| Amount::parse(a).ok())
            .filter(|_| {
                // Exactly two decimals, as Paymentz writes amounts.
                amount_text
                    .as_deref()
                    .is_some_and(|a| a.split_once('.').is_some_and(|(_, f)| f.len() == 2))
            });
        let notice = match (payment_id, status) {
            (Some(payment_id), Some(status)) => {
                let mut metadata = serde_json::Map::new();
                if let Some(reference) = text("merchantTransactionId").filter(|r| !r.is_empty()) {
                    metadata.insert(
                        "order_id".into(),
                        crate::telemetry::Escaped::at_most(&reference, 128)
                            .to_string()
                            .into(),
                    );
                }
                Some(Notice {
                    meaning: meaning(&status),
                    payment_id,
                    status,
                    amount_text: amount.map(|a| a.to_string()),
                    amount,
                    currency: text("currency").filter(|c| currency::is_code(c)),
                    mismatch: None,
                    frontend: None,
                    payment_method: text("paymentMode").or_else(|| text("paymentBrand")),
                    metadata,
                })
            }
            _ => None,
        };
        let verification = match (text("checksum"), &notice) {
            (_, None) => Verification::Unreadable("no usable paymentId or status".into()),
            (None, _) => Verification::BadSignature("no checksum".into()),
            (Some(received), Some(_)) => {
                let part = |key: &str| text(key).unwrap_or_default();
                let expected = checksum(
                    [
                        &part("paymentId"),
                        &part("merchantTransactionId"),
                        &part("amount"),
                        &part("transactionStatus"),
                    ],
                    &self.secure_key,
                );
                if bool::from(expected.as_bytes().ct_eq(received.trim().as_bytes())) {
                    Verification::Verified
                } else {
                    Verification::BadSignature("the checksum does not verify".into())
                }
            }
        };
        Reading {
            fields: value,
            notice,
            verification,
        }
    }

    fn answer(&self, answer: Answer) -> (u16, String) {
        match answer {
            Answer::Recorded => (200, r#"{"status":"recorded"}"#.into()),
            Answer::Retry => (503, r#"{"status":"not recorded"}"#.into()),
            Answer::BadSignature => (401, r#"{"status":"checksum does not verify"}"#.into()),
            Answer::Refused => (400, r#"{"status":"refused"}"#.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ExampleSecureKey0123456789ABCDEF";

    #[test]
    fn the_checksum_vector_of_the_spec() {
        assert_eq!(
            checksum(
                ["77251", "011E1D8A5C034", "156.00", "N"],
                &SecretString::from(KEY)
            ),
            "3807afa726dd08ef87003afd035c49e6"
        );
    }

    fn body(status: &str, amount: &str, sum: Option<&str>) -> String {
        let sum = sum.map(str::to_string).unwrap_or_else(|| {
            checksum(
                ["77251", "011E1D8A5C034", amount, "Y"],
                &SecretString::from(KEY),
            )
        });
        format!(
            r#"{{"paymentId":"77251","status":"{status}","transactionStatus":"Y","amount":"{amount}","currency":"EUR","merchantTransactionId":"011E1D8A5C034","timestamp":"2026-12-04 05:00:00","result":{{"code":"00001","description":"ok"}},"card":{{"last4":"1111"}},"checksum":"{sum}"}}"#
        )
    }

    #[test]
    fn a_signed_authorization_is_verified_and_read() {
        let reading = PaymentzNotifications::new(SecretString::from(KEY))
            .read(body("authsuccessful", "156.00", None).as_bytes());
        assert_eq!(reading.verification, Verification::Verified);
        let notice = reading.notice.unwrap();
        assert_eq!(notice.meaning, Meaning::Authorized);
        assert_eq!(notice.amount, Some(Amount::from_minor(15600)));
        assert_eq!(notice.amount_text.as_deref(), Some("156.00"));
        assert_eq!(notice.metadata["order_id"], "011E1D8A5C034");
    }

    #[test]
    fn a_wrong_checksum_does_not_verify() {
        let reading = PaymentzNotifications::new(SecretString::from(KEY)).read(
            body(
                "authsuccessful",
                "156.00",
                Some("3807afa726dd08ef87003afd035c49e6"),
            )
            .as_bytes(),
        );
        assert!(matches!(
            reading.verification,
            Verification::BadSignature(_)
        ));
    }

    #[test]
    fn the_long_status_decides() {
        assert_eq!(meaning("authsuccessful"), Meaning::Authorized);
        assert_eq!(meaning("capturesuccess"), Meaning::Captured);
        assert_eq!(meaning("authcancelled"), Meaning::Cancelled);
        // A refund's status, not a cancel's (see `meaning`).
        assert_eq!(meaning("reversed"), Meaning::Other);
        assert_eq!(meaning("settled"), Meaning::Other);
    }

    #[test]
    fn anything_is_read_without_panicking() {
        let reader = PaymentzNotifications::new(SecretString::from(KEY));
        for body in [&b""[..], b"x", b"[]", b"{}", b"{\"paymentId\":1}", b"\xff"] {
            assert!(!reader.read(body).verification.verified());
        }
    }

    proptest::proptest! {
        /// No input panics the reader, and nothing unsigned verifies.
        #[test]
        fn any_body_is_read_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let reading = PaymentzNotifications::new(SecretString::from(KEY)).read(&body);
            proptest::prop_assert!(!reading.verification.verified());
        }

        /// JSON objects with arbitrary fields, too.
        #[test]
        fn any_json_object_is_read_without_panicking(fields in proptest::collection::btree_map("[a-zA-Z_]{1,12}", "[ -~]{0,24}", 0..12)) {
            let body = serde_json::to_vec(&fields).unwrap();
            let reading = PaymentzNotifications::new(SecretString::from(KEY)).read(&body);
            proptest::prop_assert!(!reading.verification.verified());
        }
    }
}
