//! The five outcomes of the message contract and how an answer becomes one.
//!
//! A gateway answer has a [`Classification`] (what it means for retry safety);
//! a command has an [`Outcome`] (what the producer is told). The mapping is
//! here so that the worker, `call` and reconciliation all agree on it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::gateways::Classification;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Declined,
    Failed,
    Unknown,
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Succeeded,
        Outcome::Declined,
        Outcome::Failed,
        Outcome::Unknown,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Declined => "declined",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
            Outcome::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// The outcome of a command whose last answer had this classification and
    /// whose budget (retries or reconciliation) is spent.
    pub fn when_budget_spent(classification: Classification) -> Outcome {
        match classification {
            Classification::Succeeded => Outcome::Succeeded,
            Classification::Declined => Outcome::Declined,
            Classification::NotApplied => Outcome::Failed,
            Classification::Ambiguous => Outcome::Unknown,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a command was `rejected`: the `reason` field of its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    InvalidCommand,
    UnsupportedOperation,
    UnknownAccount,
    IdempotencyConflict,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidCommand => "invalid_command",
            RejectReason::UnsupportedOperation => "unsupported_operation",
            RejectReason::UnknownAccount => "unknown_account",
            RejectReason::IdempotencyConflict => "idempotency_conflict",
        }
    }
}

/// A command refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason:?}: {description}")]
pub struct Rejected {
    pub reason: RejectReason,
    pub description: String,
}

impl Rejected {
    pub fn new(reason: RejectReason, description: impl Into<String>) -> Rejected {
        Rejected {
            reason,
            description: description.into(),
        }
    }

    pub fn invalid(field: &str, problem: impl fmt::Display) -> Rejected {
        Rejected::new(RejectReason::InvalidCommand, format!("{field}: {problem}"))
    }
}
