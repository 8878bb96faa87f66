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
use crate::gateways::{Answer, Operation};
use crate::money::Amount;
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

/// The gateway's fields of a result event.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    pub gateway_status: Option<String>,
    pub gateway_code: Option<String>,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub response: Option<serde_json::Value>,
}

impl Reported {
    pub fn from_answer(answer: &Answer, operation: Operation) -> Reported {
        Reported {
            gateway_status: answer.gateway_status.clone(),
            gateway_code: answer.gateway_code.clone(),
            description: answer.description.clone(),
            // The contract's `reference` is the id of a NEW operation; a read
            // creates none (Praxis names the found transaction: that is in `response`).
            reference: operation
                .has_side_effect()
                .then(|| answer.reference.clone())
                .flatten(),
            response: match operation {
                Operation::Inquiry | Operation::TransactionList => answer.response.clone(),
                _ => None,
            },
        }
    }
}

/// The longest text of the gateway's own fields (`description`, `status`,
/// `code`, `reference`) kept in an event.
const MAX_REPORTED_CHARS: usize = 1024;

/// Builds the event of a command (or of a rejected message) from its stored
/// payload (JSON text, see [`crate::store::commands::NewCommand::payload`]).
///
/// Whatever ends up in the event is bounded and storable: the command's
/// fields were bounded when stored; the gateway's text fields are cut at
/// [`MAX_REPORTED_CHARS`], and a `\u0000` anywhere in them (or in
/// `response`) is written as text, since PostgreSQL's `jsonb`, which stores
/// every event, cannot hold it.
pub fn event_for(
    command_id: &str,
    payload: &str,
    outcome: Outcome,
    reason: Option<RejectReason>,
    amount: Option<Amount>,
    attempts: i32,
    reported: Reported,
) -> ResultEvent {
    let stored: crate::command::Command = serde_json::from_str(payload).unwrap_or_default();
    let bounded = |text: Option<String>| {
        text.map(|t| {
            if t.contains('\0') || t.chars().nth(MAX_REPORTED_CHARS).is_some() {
                let cut: String = t.chars().take(MAX_REPORTED_CHARS).collect();
                let mut cut = cut.replace('\0', "\\u{0}");
                if t.chars().nth(MAX_REPORTED_CHARS).is_some() {
                    cut.push_str(crate::telemetry::CUT_MARK);
                }
                cut
            } else {
                t
            }
        })
    };
    let mut response = reported.response.unwrap_or_else(|| serde_json::json!({}));
    without_nul(&mut response);
    ResultEvent {
        command_id: command_id.to_string(),
        gateway: stored.gateway.clone(),
        account: Some(stored.account_name().to_string()),
        operation: stored.operation,
        payment_id: stored.payment_id,
        outcome,
        reason,
        amount: amount.map(|a| a.to_string()).or(stored.amount),
        currency: stored.currency,
        gateway_status: bounded(reported.gateway_status),
        gateway_code: bounded(reported.gateway_code),
        description: bounded(reported.description),
        reference: bounded(reported.reference),
        attempts: attempts.max(0) as u32,
        replayed: false,
        reconciled: false,
        response,
        metadata: stored.metadata,
        origin: stored.origin,
        occurred_at: now_rfc3339(),
    }
}

/// Writes every `\u0000` in the strings (and keys) of `value` as text.
fn without_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\\u{0}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_nul),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                map.extend(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.replace('\0', "\\u{0}"), v)),
                );
            }
            map.values_mut().for_each(without_nul);
        }
        _ => {}
    }
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
