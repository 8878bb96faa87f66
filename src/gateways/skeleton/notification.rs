//! The skeleton's notifications: reading the body a new gateway POSTs to
//! `/notifications/skeleton/{account}`, and the answers in its format.
//!
//! Copy it and write the gateway's own signature rule into `read`. Until
//! that rule exists every notification is `BadSignature`: recorded, never
//! acted on from its body; the worker asks the gateway instead, which is the
//! safe default for a gateway whose signing is not known yet.

use crate::money::Amount;
use crate::notifications::{
    raw_object, text_of, Answer, Meaning, Notice, NotificationReader, Reading, Verification,
};

/// One `[accounts.skeleton.<name>]` account's notification reader.
pub struct SkeletonNotifications;

/// The meaning of the gateway's status word: only these three drive the
/// worker (rules for `Authorized`, evidence for the other two).
pub fn meaning(status: &str) -> Meaning {
    match status {
        "authorized" => Meaning::Authorized,
        "captured" => Meaning::Captured,
        "cancelled" => Meaning::Cancelled,
        _ => Meaning::Other,
    }
}

impl NotificationReader for SkeletonNotifications {
    fn read(&self, body: &[u8]) -> Reading {
        let fields = match raw_object(body) {
            Ok(fields) => fields,
            Err(why) => return Reading::unreadable(why),
        };
        let text = |key: &str| text_of(fields.get(key).map(|r| &**r));
        let notice = match (text("payment_id"), text("status")) {
            (Some(payment_id), Some(status)) if !payment_id.is_empty() => {
                let amount = text("amount").and_then(|a| Amount::parse(&a).ok());
                Some(Notice {
                    meaning: meaning(&status),
                    payment_id,
                    status,
                    amount_text: amount.map(|a| a.to_string()),
                    amount,
                    currency: text("currency"),
                    mismatch: None,
                    frontend: None,
                    payment_method: None,
                    metadata: serde_json::Map::new(),
                })
            }
            _ => None,
        };
        let verification = match notice {
            None => Verification::Unreadable("no usable payment_id or status".into()),
            Some(_) => Verification::BadSignature(
                "the skeleton has no signature rule: write the gateway's here".into(),
            ),
        };
        Reading {
            fields: serde_json::from_slice(body).ok(),
            notice,
            verification,
        }
    }

    fn answer(&self, answer: Answer) -> (u16, String) {
        match answer {
            Answer::Recorded => (200, r#"{"status":"recorded"}"#.into()),
            Answer::Retry => (503, r#"{"status":"not recorded"}"#.into()),
            Answer::BadSignature => (401, r#"{"status":"signature does not verify"}"#.into()),
            Answer::Refused => (400, r#"{"status":"refused"}"#.into()),
        }
    }
}
