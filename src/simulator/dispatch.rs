//! One HTTP request, start to end: read the body, find the endpoint, count
//! it, apply the fault decision around the gateway handler, count the answer.
//!
//! The order is what makes the faults mean what they say: `*_before` faults,
//! `rate_limit` and `redirect` strike before the handler runs (nothing
//! applied); `*_after` faults, `huge_answer` and `bad_signature` strike after
//! it ran (applied, answer lost or spoiled). Latency is added before the handler.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};

use super::answers::HugeBody;
use super::faults::{FaultKind, Target};
use super::simulation::Simulation;
use super::state::GatewayId;
use super::{admin, paymentz, praxis};

/// Requests bodies above this are refused with 413.
const MAX_BODY: usize = 1 << 20;

/// Every answer is one buffer, except the streamed `huge_answer`.
pub type Body = Either<Full<Bytes>, HugeBody>;

/// The connection must end without an answer. `reset` asks for an RST
/// (SO_LINGER 0) rather than an orderly close.
#[derive(Debug, thiserror::Error)]
#[error("connection aborted on purpose (reset: {reset})")]
pub struct Abort {
    pub reset: bool,
}

/// A gateway handler's answer, before faults may replace it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    /// Paymentz `result.code` / Praxis `status`, for the stats.
    pub code: Option<String>,
    /// A redirect's `Location`.
    location: Option<HeaderValue>,
    /// Pad the body out to this many bytes (the `huge_answer` fault).
    padded_to: Option<u64>,
}

impl Reply {
    pub fn json(value: &serde_json::Value, code: Option<String>) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Bytes::from(value.to_string()),
            code,
            location: None,
            padded_to: None,
        }
    }

    fn plain(status: StatusCode, text: &'static str) -> Reply {
        Reply {
            status,
            body: Bytes::from_static(text.as_bytes()),
            code: None,
            location: None,
            padded_to: None,
        }
    }

    fn redirect(location: &str) -> Reply {
        let mut reply = Reply::plain(StatusCode::TEMPORARY_REDIRECT, "Temporary Redirect");
        // Checked when the setting was made; an unusable one redirects nowhere.
        reply.location = Some(
            HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/moved")),
        );
        reply
    }

    /// The same answer under a signature that is not its own. Only answers
    /// that carry a `signature` (Praxis) change.
    fn with_bad_signature(mut self) -> Reply {
        if let Ok(serde_json::Value::Object(mut map)) =
            serde_json::from_slice::<serde_json::Value>(&self.body)
        {
            if let Some(serde_json::Value::String(signature)) = map.get_mut("signature") {
                // Same length and alphabet, different digest.
                *signature = signature
                    .chars()
                    .map(|c| if c == '0' { '1' } else { '0' })
                    .collect();
                self.body = Bytes::from(serde_json::Value::Object(map).to_string());
            }
        }
        self
    }

    fn into_response(self) -> Response<Body> {
        let content_type = if self.body.first() == Some(&b'{') {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        let body = match self.padded_to {
            Some(total) => Either::Right(HugeBody::new(&self.body, total)),
            None => Either::Left(Full::new(self.body)),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(location) = self.location {
            response.headers_mut().insert(LOCATION, location);
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// JSON answer with a status, for the admin API and routing errors.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A gateway call, parsed enough to name its operation.
enum Call {
    Paymentz(paymentz::Call),
    Praxis(praxis::Call),
}

impl Call {
    fn target(&self) -> Target<'_> {
        match self {
            Call::Paymentz(c) => c.target(),
            Call::Praxis(c) => c.target(),
        }
    }

    fn handle(&self, sim: &Simulation, request_no: u64) -> Reply {
        match self {
            Call::Paymentz(c) => c.handle(sim, request_no),
            Call::Praxis(c) => c.handle(sim, request_no),
        }
    }
}

pub async fn handle(sim: &Simulation, request: Request<Incoming>) -> Result<Response<Body>, Abort> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    if path == "/admin" || path.starts_with("/admin/") {
        sim.stats.admin();
        return Ok(admin::handle(
            sim,
            &parts.method,
            &path,
            parts.uri.query(),
            &body,
        ));
    }
    let Some((gateway, call)) = gateway_call(&path, &parts.headers, &body) else {
        sim.stats.request("other", "not_found");
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no endpoint at {path}")}),
        ));
    };
    if parts.method != Method::POST {
        sim.stats.request("other", "method_not_allowed");
        return Ok(json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "gateway endpoints take POST only"}),
        ));
    }
    let reply = answer(sim, gateway, &call, &path).await?;
    sim.stats.answer(
        gateway.as_str(),
        reply.status.as_u16(),
        reply.code.as_deref(),
    );
    Ok(reply.into_response())
}

/// The request's body, at most [`MAX_BODY`]; or the answer that refuses it.
async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            Err(if too_large {
                json_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &serde_json::json!({"error": "request body too large"}),
                )
            } else {
                // The client went away mid-body; nobody reads this.
                json_response(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "incomplete request body"}),
                )
            })
        }
    }
}

/// The gateway endpoint at `path`, with its call parsed; `None` when no
/// gateway has one there.
fn gateway_call(path: &str, headers: &hyper::HeaderMap, body: &[u8]) -> Option<(GatewayId, Call)> {
    if let Some(rest) = path.strip_prefix(paymentz::BASE_PATH) {
        paymentz::route(rest).map(|endpoint| {
            (
                GatewayId::Paymentz,
                Call::Paymentz(paymentz::Call::parse(endpoint, headers, body)),
            )
        })
    } else {
        praxis::route(path).map(|endpoint| {
            (
                GatewayId::Praxis,
                Call::Praxis(praxis::Call::parse(endpoint, body)),
            )
        })
    }
}

/// The call's reply, with the fault the configuration decides for it: some
/// instead of answering, some after the simulation did what was asked.
async fn answer(
    sim: &Simulation,
    gateway: GatewayId,
    call: &Call,
    path: &str,
) -> Result<Reply, Abort> {
    let request_no = sim.next_request_no();
    let target = call.target();
    sim.stats.request(gateway.as_str(), target.wire_op);
    let decision = sim.faults.decide(&target);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let fault = decision.fault;
    if let Some(kind) = fault {
        sim.stats.fault(kind);
        tracing::debug!(
            request_no,
            gateway = gateway.as_str(),
            operation = target.wire_op,
            fault = kind.as_str(),
            "injecting fault"
        );
    }
    Ok(match fault {
        Some(FaultKind::ResetBefore) => return Err(Abort { reset: true }),
        Some(FaultKind::ErrorBefore) => {
            Reply::plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Some(FaultKind::RateLimit) => {
            Reply::plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
        }
        Some(FaultKind::Redirect) => Reply::redirect(&sim.answer_settings().location_for(path)),
        _ => {
            let reply = call.handle(sim, request_no);
            match fault {
                Some(FaultKind::ErrorAfter) => {
                    Reply::plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                }
                Some(FaultKind::ResetAfter) => return Err(Abort { reset: true }),
                Some(FaultKind::TimeoutAfter) => {
                    hang(sim, decision.hang).await;
                    return Err(Abort { reset: false });
                }
                Some(FaultKind::BadSignature) => reply.with_bad_signature(),
                Some(FaultKind::HugeAnswer) => Reply {
                    padded_to: Some(sim.answer_settings().huge_answer_bytes),
                    ..reply
                },
                _ => reply,
            }
        }
    })
}

/// Holds a connection without answering, until the hang time is up or the
/// simulator shuts down.
async fn hang(sim: &Simulation, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = sim.stopping() => {}
    }
}
