//! What a Skeleton reply means for retry safety: the one place that decides
//! it for this gateway. Anything not positively known to have failed before
//! taking effect is `Ambiguous`, never `NotApplied`; transport failures were
//! already classified by the shared transport (`GatewayError::classification`).

use serde::Deserialize;

use super::wire::Endpoint;
use crate::gateways::http::status_error;
use crate::gateways::{Answer, Classification, PaymentSnapshot, PaymentState};

/// `{"status": ..., "reference": ...}`: for an operation, its result; for an
/// inquiry, the payment's state.
#[derive(Debug, Deserialize)]
struct Reply {
    status: String,
    reference: Option<String>,
}

pub fn classify(endpoint: Endpoint, http_status: u16, body: &str) -> Answer {
    if let Some(error) = status_error(http_status) {
        return Answer::from_error(error);
    }
    let Ok(reply) = serde_json::from_str::<Reply>(body) else {
        // A 2xx we cannot read may have been applied.
        let mut answer = Answer::classified(Classification::Ambiguous);
        answer.description = Some("unreadable answer".into());
        return answer;
    };
    match endpoint {
        Endpoint::Inquiry => inquiry(reply, body),
        Endpoint::Capture | Endpoint::Cancel => operation(reply),
    }
}

fn operation(reply: Reply) -> Answer {
    let classification = match reply.status.as_str() {
        "ok" => Classification::Succeeded,
        "declined" => Classification::Declined,
        _ => Classification::Ambiguous,
    };
    let mut answer = Answer::classified(classification);
    answer.gateway_status = Some(reply.status);
    answer.reference = reply.reference;
    answer
}

fn inquiry(reply: Reply, body: &str) -> Answer {
    let state = match reply.status.as_str() {
        "not_found" => {
            // The gateway's own "no such payment": evidence for reconciliation.
            let mut answer = Answer::classified(Classification::Declined);
            answer.gateway_status = Some(reply.status);
            answer.not_found = true;
            return answer;
        }
        "authorized" => PaymentState::Authorized,
        "captured" => PaymentState::Captured,
        "cancelled" => PaymentState::Cancelled,
        _ => PaymentState::Other,
    };
    let mut answer = Answer::classified(Classification::Succeeded);
    answer.gateway_status = Some(reply.status.clone());
    answer.response = serde_json::from_str(body).ok();
    answer.snapshot = Some(PaymentSnapshot {
        state,
        status: reply.status,
        amount: None,
        captured: None,
        refunded: None,
        currency: None,
    });
    answer
}
