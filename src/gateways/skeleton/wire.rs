//! The Skeleton API's formats: endpoints, request bodies, and the record of
//! a request with its secrets removed (here there are none in the body: the
//! key travels in a header, which is never recorded).

use serde_json::{json, Value};

use crate::gateways::Operation;
use crate::money::Amount;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Capture,
    Cancel,
    Inquiry,
}

impl Endpoint {
    /// `None` for what the gateway does not offer: refused before sending.
    pub fn for_operation(operation: Operation) -> Option<Endpoint> {
        match operation {
            Operation::Capture => Some(Endpoint::Capture),
            Operation::Cancel => Some(Endpoint::Cancel),
            Operation::Inquiry => Some(Endpoint::Inquiry),
            Operation::Refund | Operation::TransactionList => None,
        }
    }

    pub fn path(self, payment_id: &str) -> String {
        match self {
            Endpoint::Capture => "/capture".into(),
            Endpoint::Cancel => "/cancel".into(),
            Endpoint::Inquiry => format!("/payments/{payment_id}"),
        }
    }

    /// The gateway's own name of the call, kept in `Exchange::purpose`.
    pub fn purpose(self) -> &'static str {
        match self {
            Endpoint::Capture => "capture",
            Endpoint::Cancel => "cancel",
            Endpoint::Inquiry => "payment",
        }
    }
}

/// Ids go into a URL path: digits only, so nothing can be injected there.
pub fn valid_payment_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit())
}

pub fn body(payment_id: &str, amount: Option<Amount>) -> Value {
    match amount {
        Some(amount) => json!({ "payment_id": payment_id, "amount": amount.to_string() }),
        None => json!({ "payment_id": payment_id }),
    }
}

/// The request as the attempt record keeps it: every secret field replaced
/// by `[redacted]` (none in this API's bodies).
pub fn record(body: &Value) -> Value {
    body.clone()
}
