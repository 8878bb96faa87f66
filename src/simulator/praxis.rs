//! The Praxis Cashier Agent API 1.1 side of the wire: `deposit-capture`,
//! `deposit-cancel` and `find-transaction`, with signature and timestamp
//! checks, state rules, and signed answers.
//!
//! Every answer is HTTP 200 with `status` (0 ok, positive: a final
//! application error), `description`, `version` and `signature`. The
//! signature covers the answer's top-level scalar fields (see
//! [`super::signing::praxis_signature`]); an answer to an unknown merchant
//! carries none, since there is no secret to sign with. The positive codes
//! are the simulator's choice (the spec does not list them):
//! 1001 malformed request, 1002 unsupported version, 1003 unknown merchant,
//! 1004 invalid signature, 1005 timestamp out of window, 1006 unknown front
//! end, 1007 transaction not found, 1008 transaction not in a state that
//! allows the operation.

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::answers::TransactionShape;
use super::config::PraxisMerchant;
use super::dispatch::Reply;
use super::faults::Target;
use super::signing::{ct_eq, praxis_signature, Fields};
use super::simulation::Simulation;
use super::state::{Effect, GatewayId, NewEntry, Payment, PxStatus, Status};

pub const VERSION: &str = "1.1";

/// Status codes and their descriptions.
pub mod codes {
    pub const OK: i64 = 0;
    pub const MALFORMED: i64 = 1001;
    pub const UNSUPPORTED_VERSION: i64 = 1002;
    pub const UNKNOWN_MERCHANT: i64 = 1003;
    pub const BAD_SIGNATURE: i64 = 1004;
    pub const BAD_TIMESTAMP: i64 = 1005;
    pub const UNKNOWN_FRONTEND: i64 = 1006;
    pub const NOT_FOUND: i64 = 1007;
    pub const WRONG_STATE: i64 = 1008;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Capture,
    Cancel,
    Find,
}

impl Endpoint {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Endpoint::Capture => ("deposit-capture", "capture"),
            Endpoint::Cancel => ("deposit-cancel", "cancel"),
            Endpoint::Find => ("find-transaction", "inquiry"),
        }
    }
}

pub fn route(path: &str) -> Option<Endpoint> {
    match path {
        "/api/deposit-capture" => Some(Endpoint::Capture),
        "/api/deposit-cancel" => Some(Endpoint::Cancel),
        "/api/find-transaction" => Some(Endpoint::Find),
        _ => None,
    }
}

/// One Praxis request, parsed.
#[derive(Debug)]
pub struct Call {
    endpoint: Endpoint,
    /// The JSON object sent, or why it is not one.
    body: Result<Map<String, Value>, String>,
    /// `trace_id` in decimal when it is an integer, for fault filters.
    trace_id: Option<String>,
}

/// An error answer, signed when the merchant is known.
struct Refusal {
    status: i64,
    description: String,
}

fn refuse(status: i64, description: impl Into<String>) -> Refusal {
    Refusal {
        status,
        description: description.into(),
    }
}

impl Call {
    pub fn parse(endpoint: Endpoint, body: &[u8]) -> Call {
        let body = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("the body is not a JSON object".to_string()),
            Err(e) => Err(format!("the body is not JSON: {e}")),
        };
        let trace_id = body
            .as_ref()
            .ok()
            .and_then(|m| m.get("trace_id"))
            .and_then(Value::as_i64)
            .map(|t| t.to_string());
        Call {
            endpoint,
            body,
            trace_id,
        }
    }

    pub fn target(&self) -> Target<'_> {
        let (wire_op, generic_op) = self.endpoint.names();
        Target {
            gateway: GatewayId::Praxis,
            wire_op,
            generic_op,
            payment_id: self.trace_id.as_deref(),
            operation_call: true,
        }
    }

    pub fn handle(&self, sim: &Simulation, request_no: u64) -> Reply {
        let map = match &self.body {
            Ok(map) => map,
            Err(problem) => return answer(None, codes::MALFORMED, problem, None),
        };
        let Some(merchant_id) = map.get("merchant_id").and_then(Value::as_str) else {
            return answer(None, codes::MALFORMED, "merchant_id must be a string", None);
        };
        let Some(merchant) = sim
            .config
            .praxis_merchants
            .iter()
            .find(|m| m.merchant_id == merchant_id)
        else {
            return answer(None, codes::UNKNOWN_MERCHANT, "Unknown merchant", None);
        };
        match self.checked(sim, merchant, map, request_no) {
            Ok((description, transaction)) => {
                let shape = sim.answer_settings().praxis_transaction;
                answer(
                    Some(merchant),
                    codes::OK,
                    &description,
                    Some((transaction, shape)),
                )
            }
            Err(refusal) => answer(Some(merchant), refusal.status, &refusal.description, None),
        }
    }

    fn checked(
        &self,
        sim: &Simulation,
        merchant: &PraxisMerchant,
        map: &Map<String, Value>,
        request_no: u64,
    ) -> Result<(String, Value), Refusal> {
        let (frontend, trace_id) = authentic(sim, merchant, map)?;
        let trace = trace_id.to_string();
        sim.with_praxis(&trace, &merchant.merchant_id, frontend, |payment| {
            let payment =
                payment.ok_or_else(|| refuse(codes::NOT_FOUND, "Transaction not found"))?;
            let description = match self.endpoint {
                Endpoint::Find => "Transaction found",
                Endpoint::Capture => {
                    apply(
                        sim,
                        payment,
                        Effect::Capture,
                        PxStatus::Approved,
                        request_no,
                    )?;
                    "Deposit captured"
                }
                Endpoint::Cancel => {
                    apply(
                        sim,
                        payment,
                        Effect::Cancel,
                        PxStatus::Cancelled,
                        request_no,
                    )?;
                    "Deposit cancelled"
                }
            };
            Ok((description.to_string(), transaction(payment, frontend)))
        })
    }
}

/// A request the merchant signed, in this API's version, fresh, from one of
/// its frontends: its frontend and trace id. Checked in this order; the
/// first failure is the answer.
fn authentic<'m>(
    sim: &Simulation,
    merchant: &PraxisMerchant,
    map: &'m Map<String, Value>,
) -> Result<(&'m str, i64), Refusal> {
    let signature = map
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse(codes::MALFORMED, "signature must be a string"))?;
    let expected = praxis_signature(map, Fields::All, &merchant.merchant_secret);
    if !ct_eq(&expected, signature) {
        return Err(refuse(codes::BAD_SIGNATURE, "Invalid signature"));
    }
    let version = map
        .get("version")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse(codes::MALFORMED, "version must be a string"))?;
    if version != VERSION {
        return Err(refuse(
            codes::UNSUPPORTED_VERSION,
            format!("Unsupported API version `{version}` (this endpoint speaks 1.1)"),
        ));
    }
    let frontend = map
        .get("frontend")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse(codes::MALFORMED, "frontend must be a string"))?;
    let trace_id = map
        .get("trace_id")
        .and_then(Value::as_i64)
        .filter(|t| *t > 0)
        .ok_or_else(|| refuse(codes::MALFORMED, "trace_id must be a positive integer"))?;
    let timestamp = map
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            refuse(
                codes::MALFORMED,
                "timestamp must be an integer (unix seconds)",
            )
        })?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let max_age = sim.config.praxis_max_age.as_secs() as i64;
    let skew = sim.config.praxis_future_skew.as_secs() as i64;
    if timestamp < now - max_age {
        return Err(refuse(
            codes::BAD_TIMESTAMP,
            "Request expired: timestamp too old",
        ));
    }
    if timestamp > now + skew {
        return Err(refuse(
            codes::BAD_TIMESTAMP,
            "Invalid timestamp: in the future",
        ));
    }
    if !merchant.frontends.iter().any(|f| f == frontend) {
        return Err(refuse(codes::UNKNOWN_FRONTEND, "Unknown frontend"));
    }
    Ok((frontend, trace_id))
}

/// Capture and cancel act only on an `authorized` transaction, in full.
fn apply(
    sim: &Simulation,
    p: &mut Payment<PxStatus>,
    effect: Effect,
    next: PxStatus,
    request_no: u64,
) -> Result<(), Refusal> {
    if p.status != PxStatus::Authorized {
        return Err(refuse(
            codes::WRONG_STATE,
            format!(
                "Transaction is {}, only authorized transactions can be {}",
                p.status.as_str(),
                if effect == Effect::Capture {
                    "captured"
                } else {
                    "cancelled"
                }
            ),
        ));
    }
    p.status = next;
    if effect == Effect::Capture {
        p.captured = p.amount;
    }
    p.updated_at = OffsetDateTime::now_utc();
    sim.ledger.append(NewEntry {
        gateway: GatewayId::Praxis,
        payment_id: &p.id,
        operation: effect,
        amount: p.amount,
        currency: &p.currency,
        transaction_id: p.transaction_id.map(|t| t.to_string()).unwrap_or_default(),
        status_after: next.as_str(),
        request_no,
    });
    sim.stats
        .applied(GatewayId::Praxis.as_str(), effect.as_str());
    sim.notify(&p.view(GatewayId::Praxis));
    Ok(())
}

/// The transaction in notification form.
fn transaction(p: &Payment<PxStatus>, caller_frontend: &str) -> Value {
    let minor = p.amount.minor();
    json!({
        "transaction_type": "authorize",
        "transaction_status": p.status.as_str(),
        "transaction_id": p.transaction_id,
        "trace_id": p.id.parse::<i64>().unwrap_or_default(),
        "order_id": p.reference,
        "frontend": p.frontend.as_deref().unwrap_or(caller_frontend),
        "pin": format!("customer-{}", p.id),
        "amount": minor,
        "currency": p.currency,
        "charge_amount": minor,
        "charge_currency": p.currency,
        "payment_method": "Credit Card",
        "payment_processor": "SimulatorProcessor",
        "card": {
            "card_number": "411111******1111",
            "card_type": "VISA",
            "card_exp": "12/2030",
        },
        "created_at": p.created_at.unix_timestamp(),
    })
}

/// An answer, with the transaction nested under `transaction` or its fields
/// at the top level, as the simulator's answer settings say.
fn answer(
    merchant: Option<&PraxisMerchant>,
    status: i64,
    description: &str,
    transaction: Option<(Value, TransactionShape)>,
) -> Reply {
    let mut map = Map::new();
    map.insert("status".into(), json!(status));
    map.insert("description".into(), json!(description));
    map.insert("version".into(), json!(VERSION));
    match transaction {
        Some((t, TransactionShape::Nested)) => {
            map.insert("transaction".into(), t);
        }
        Some((Value::Object(fields), TransactionShape::Flat)) => {
            for (key, value) in fields {
                map.entry(key).or_insert(value);
            }
        }
        Some((other, TransactionShape::Flat)) => {
            map.insert("transaction".into(), other);
        }
        None => {}
    }
    if let Some(merchant) = merchant {
        let signature = praxis_signature(&map, Fields::Scalars, &merchant.merchant_secret);
        map.insert("signature".into(), json!(signature));
    }
    Reply::json(&Value::Object(map), Some(status.to_string()))
}
