//! The gateway layer: what the rest of the worker knows about payment gateways.
//!
//! The worker talks to every gateway through the [`Gateway`] trait and never
//! learns which one it holds. Each gateway lives in its own folder (wire types,
//! signing, client, and the mapping of its answers to a [`Classification`]);
//! [`registry`] is the one list that names them. A call returns an [`Answer`]
//! plus every HTTP [`Exchange`] it made, so the caller can record each attempt
//! exactly as it happened.

pub mod call_log;
pub mod error;
pub mod exchange;
pub mod http;
pub mod paymentz;
pub mod praxis;
pub mod registry;
pub mod request;
/// A gateway to copy (`docs/adding-a-gateway.md`): compiled with the tests, never registered.
#[cfg(test)]
pub mod skeleton;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use call_log::CallLog;
pub use error::GatewayError;
pub use exchange::{Exchange, ExchangeKind};
pub use request::{ListRequest, OperationRequest, PaymentOperation, PaymentRequest};

use crate::money::Amount;

/// A back-office operation, named as in the message contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Capture,
    Refund,
    Cancel,
    Inquiry,
    TransactionList,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Capture,
        Operation::Refund,
        Operation::Cancel,
        Operation::Inquiry,
        Operation::TransactionList,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Capture => "capture",
            Operation::Refund => "refund",
            Operation::Cancel => "cancel",
            Operation::Inquiry => "inquiry",
            Operation::TransactionList => "transaction_list",
        }
    }

    pub fn parse(text: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// Whether running this operation moves money or changes a payment's state.
    /// Only these are subject to the at-most-once rule; reads may be repeated freely.
    pub fn has_side_effect(self) -> bool {
        matches!(
            self,
            Operation::Capture | Operation::Refund | Operation::Cancel
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a single gateway answer means for retry safety. This is decided in one
/// place per gateway (its `classify` module) and read everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// The gateway confirmed the operation.
    Succeeded,
    /// A definite refusal: the operation did not and will not take effect.
    Declined,
    /// Known not to have taken effect: safe to send again.
    NotApplied,
    /// It may have taken effect: find out before sending again.
    Ambiguous,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Succeeded => "succeeded",
            Classification::Declined => "declined",
            Classification::NotApplied => "not_applied",
            Classification::Ambiguous => "ambiguous",
        }
    }

    pub fn parse(text: &str) -> Option<Classification> {
        [
            Classification::Succeeded,
            Classification::Declined,
            Classification::NotApplied,
            Classification::Ambiguous,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request cannot be sent to a gateway at all. Becomes a `rejected` result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{gateway} does not offer {operation}")]
    UnsupportedOperation {
        gateway: &'static str,
        operation: Operation,
    },
    #[error("{field}: {problem}")]
    InvalidField {
        field: &'static str,
        problem: String,
    },
}

impl Rejection {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Rejection {
        Rejection::InvalidField {
            field,
            problem: problem.into(),
        }
    }

    /// The `reason` of the `rejected` result event.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::UnsupportedOperation { .. } => "unsupported_operation",
            Rejection::InvalidField { .. } => "invalid_command",
        }
    }
}

/// A gateway-neutral view of a payment's state, read from an inquiry. It is what
/// reconciliation compares before and after an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSnapshot {
    pub state: PaymentState,
    /// The gateway's own status word, as received.
    pub status: String,
    /// The authorised (or original) amount, where the gateway reports it.
    pub amount: Option<Amount>,
    /// How much has been captured, where the gateway reports it.
    pub captured: Option<Amount>,
    /// How much has been refunded so far, where the gateway reports it.
    pub refunded: Option<Amount>,
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Started but not yet authorised.
    Pending,
    /// Authorised and waiting for a capture or a cancel.
    Authorized,
    /// A capture (or a cancel, or a refund) has been requested and is in progress.
    InProgress,
    /// Captured, settled or charged: money moved.
    Captured,
    /// The authorisation was cancelled or reversed before capture.
    Cancelled,
    /// Refunded in part or in full.
    Refunded,
    /// Failed, declined or charged back: nothing more can be done by us.
    Failed,
    /// A status this worker does not know. Kept verbatim in `status`.
    Other,
}

/// The answer to one operation, after any transparent re-authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub classification: Classification,
    /// The gateway's status word for the operation or payment (Paymentz long status).
    pub gateway_status: Option<String>,
    /// The gateway's result code (`result.code`, Praxis `status`).
    pub gateway_code: Option<String>,
    pub description: Option<String>,
    /// The id the gateway gave the new operation, where it gives one.
    pub reference: Option<String>,
    /// The gateway's answer with secrets removed, for `inquiry` and `transaction_list`.
    pub response: Option<serde_json::Value>,
    /// For an inquiry that found the payment: its state, gateway-neutral.
    pub snapshot: Option<PaymentSnapshot>,
    /// For an inquiry (classified `Declined`): the gateway answered, in its
    /// own words for "no such payment", that it does not know the payment.
    /// Reconciliation reads that as proof nothing was ever applied to it.
    pub not_found: bool,
    /// When the answer comes from a transport failure rather than a gateway reply.
    pub error: Option<GatewayError>,
}

impl Answer {
    /// An answer built from a failure to get a usable reply.
    pub fn from_error(error: GatewayError) -> Answer {
        Answer {
            classification: error.classification(),
            gateway_status: None,
            gateway_code: None,
            description: Some(error.to_string()),
            reference: None,
            response: None,
            snapshot: None,
            not_found: false,
            error: Some(error),
        }
    }

    /// The answer to a request refused before anything was sent: sending it
    /// as given would never work, so it is `declined`. Every gateway words it
    /// the same way.
    pub fn not_sent(rejection: &Rejection) -> Answer {
        let mut answer = Answer::classified(Classification::Declined);
        answer.description = Some(format!("not sent: {rejection}"));
        answer
    }

    pub fn classified(classification: Classification) -> Answer {
        Answer {
            classification,
            gateway_status: None,
            gateway_code: None,
            description: None,
            reference: None,
            response: None,
            snapshot: None,
            not_found: false,
            error: None,
        }
    }
}

/// Everything one `execute` did: the final answer and each HTTP exchange it took
/// to get there (a token fetch, the call, a re-authentication and its retry).
#[derive(Debug, Clone)]
pub struct GatewayCall {
    pub answer: Answer,
    pub exchanges: Vec<Exchange>,
}

/// A configured merchant account on one gateway, ready to run operations.
#[async_trait::async_trait]
pub trait Gateway: Send + Sync + 'static {
    /// The gateway's name as commands spell it (`paymentz`, `praxis`).
    fn name(&self) -> &'static str;

    /// The account name this client was configured as.
    fn account(&self) -> &str;

    /// Whether this gateway offers `operation` at all.
    fn supports(&self, operation: Operation) -> bool;

    /// Refuses, before anything is sent, a request this gateway cannot run as
    /// given (an operation it does not offer, an amount where none is allowed).
    fn check(&self, request: &OperationRequest) -> Result<(), Rejection>;

    /// Whether the worker must record the payment's state before sending
    /// `operation`, because afterwards the status alone cannot tell whether
    /// this attempt took effect (a refund among several, a partial capture).
    fn snapshot_before(&self, _operation: Operation) -> bool {
        false
    }

    /// Runs one operation. Never panics and never returns early without an
    /// answer: every failure is an [`Answer`] with its classification, so the
    /// caller always has something to record.
    async fn execute(&self, request: &OperationRequest) -> GatewayCall;
}
