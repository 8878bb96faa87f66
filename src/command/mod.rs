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

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::events::Metadata;
use crate::gateways::{Gateway, OperationRequest};
use crate::outcome::Rejected;
use crate::telemetry::Escaped;

mod check;
mod reader;

pub use reader::read;

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

impl Command {
    pub fn account_name(&self) -> &str {
        self.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
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
}
