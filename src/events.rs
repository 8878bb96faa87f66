//! The result event of the message contract, and the routing key it travels under.
//!
//! An event is built once, when its outcome is decided, and stored whole (in
//! `commands.result` and in the outbox) so that a replay or a re-publish sends
//! exactly what was decided, never a re-computation.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::gateways::registry;
use crate::gateways::Operation;
use crate::outcome::{Outcome, RejectReason};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultEvent {
    pub command_id: String,
    pub gateway: Option<String>,
    pub account: Option<String>,
    pub operation: Option<String>,
    pub payment_id: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub gateway_status: Option<String>,
    pub gateway_code: Option<String>,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub attempts: u32,
    pub replayed: bool,
    #[serde(default)]
    pub reconciled: bool,
    pub response: serde_json::Value,
    pub metadata: Option<Metadata>,
    /// Where a command the worker made itself came from (a notification and
    /// the rule that decided); absent for a producer's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub occurred_at: String,
}

/// `origin` of a command made from a notification (`shared/spec/notifications.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `notification`.
    pub kind: String,
    pub notification_id: String,
    /// The rule's name, or `deadline`, or `operator`.
    pub rule: String,
}

/// A command's `metadata`, kept as the JSON text the producer sent (without
/// its whitespace), so that it is echoed unchanged: a number is never read
/// into a float and written back rounded. Compared by its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(Box<RawValue>);

impl Metadata {
    /// Wraps JSON text that is known to be one valid JSON value.
    pub fn from_json(text: String) -> Result<Metadata, serde_json::Error> {
        RawValue::from_string(text).map(Metadata)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// As a serde_json::Value: for reading it, never for echoing it (a
    /// Value rounds numbers that do not fit a float).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.get() == other.get()
    }
}

impl ResultEvent {
    /// `{gateway}.{operation}.{outcome}`. A name that is not a known gateway or
    /// operation (a rejected command can carry anything) becomes `unknown`, so a
    /// producer's typo cannot create stray routing-key segments.
    pub fn routing_key(&self) -> String {
        let gateway = self
            .gateway
            .as_deref()
            .filter(|g| registry::find(g).is_some())
            .unwrap_or("unknown");
        let operation = self
            .operation
            .as_deref()
            .and_then(Operation::parse)
            .map(Operation::as_str)
            .unwrap_or("unknown");
        format!("{gateway}.{operation}.{}", self.outcome)
    }

    /// The same event, published again for a duplicate command.
    pub fn replay(&self) -> ResultEvent {
        ResultEvent {
            replayed: true,
            occurred_at: now_rfc3339(),
            ..self.clone()
        }
    }
}

/// UTC, millisecond precision, `Z`: `2026-11-22T10:15:03.120Z`.
pub fn now_rfc3339() -> String {
    format_timestamp(OffsetDateTime::now_utc())
}

pub fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ResultEvent {
        ResultEvent {
            command_id: "c1".into(),
            gateway: Some("paymentz".into()),
            account: Some("default".into()),
            operation: Some("refund".into()),
            payment_id: Some("55361".into()),
            outcome: Outcome::Succeeded,
            reason: None,
            amount: Some("10.00".into()),
            currency: Some("EUR".into()),
            gateway_status: Some("reversed".into()),
            gateway_code: Some("00001".into()),
            description: None,
            reference: Some("55362".into()),
            attempts: 1,
            replayed: false,
            reconciled: false,
            response: serde_json::json!({}),
            metadata: Some(Metadata::from_json(r#"{"order_id":"8812"}"#.into()).unwrap()),
            origin: None,
            occurred_at: now_rfc3339(),
        }
    }

    #[test]
    fn routing_keys_follow_the_contract() {
        assert_eq!(event().routing_key(), "paymentz.refund.succeeded");
        let odd = ResultEvent {
            gateway: Some("pay.mentz".into()),
            operation: None,
            outcome: Outcome::Rejected,
            ..event()
        };
        assert_eq!(odd.routing_key(), "unknown.unknown.rejected");
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let at = time::macros::datetime!(2026-11-22 10:15:03.120456 UTC);
        assert_eq!(format_timestamp(at), "2026-11-22T10:15:03.120Z");
        let text = now_rfc3339();
        assert!(text.ends_with('Z'), "{text}");
    }

    #[test]
    fn a_replay_is_marked_and_otherwise_identical() {
        let original = event();
        let replay = original.replay();
        assert!(replay.replayed);
        assert_eq!(replay.command_id, original.command_id);
        assert_eq!(replay.outcome, original.outcome);
        assert_eq!(replay.reference, original.reference);
    }

    #[test]
    fn metadata_numbers_survive_serialization_exactly() {
        let text = r#"{"n":123456789012345678901234567890,"x":0.10000000000000000555,"y":1.50}"#;
        let event = ResultEvent {
            metadata: Some(Metadata::from_json(text.into()).unwrap()),
            ..event()
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(text), "{json}");
        let back: ResultEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back.metadata.unwrap().get(), text);
    }
}
