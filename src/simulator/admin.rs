//! The admin HTTP API under `/admin/`: JSON in, JSON out, each route a thin
//! wrapper over a [`Simulation`] method (see the table in the
//! [`crate::simulator`] docs). Errors are `{"error": "..."}` with 400, 404,
//! 405 or 409.

use hyper::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::answers::AnswerSettingsView;
use super::dispatch::{json_response, Body};
use super::faults::{FaultScript, FaultSettingsView};
use super::simulation::{AdminError, NewPayment, Simulation};
use super::state::{GatewayId, LedgerQuery};

pub fn handle(
    sim: &Simulation,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Response<Body> {
    match route(sim, method, path, query, body) {
        Ok((status, value)) => json_response(status, &value),
        Err(Refused::Admin(error)) => {
            let status = match &error {
                AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
                AdminError::NotFound(_) => StatusCode::NOT_FOUND,
                AdminError::Conflict(_) => StatusCode::CONFLICT,
            };
            json_response(status, &json!({"error": error.to_string()}))
        }
        Err(Refused::Method) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{method} is not allowed on {path}")}),
        ),
    }
}

enum Refused {
    Admin(AdminError),
    Method,
}

impl From<AdminError> for Refused {
    fn from(e: AdminError) -> Self {
        Refused::Admin(e)
    }
}

impl From<super::faults::FaultError> for Refused {
    fn from(e: super::faults::FaultError) -> Self {
        Refused::Admin(e.into())
    }
}

type Routed = Result<(StatusCode, serde_json::Value), Refused>;

fn route(
    sim: &Simulation,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Routed {
    let segments: Vec<&str> = path
        .trim_start_matches("/admin")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let ok = |value: serde_json::Value| Ok((StatusCode::OK, value));
    match (segments.as_slice(), method) {
        (["health"], &Method::GET) => ok(json!({"status": "ok"})),
        (["stats"], &Method::GET) => ok(to_json(&sim.stats())),
        (["ledger"], &Method::GET) => ok(ledger(sim, query)?),
        (["payments"], &Method::POST) => {
            let new: NewPayment = parse(body)?;
            let view = sim.create_payment(new)?;
            Ok((StatusCode::CREATED, to_json(&view)))
        }
        (["payments", gateway, id], &Method::GET) => ok(payment(sim, gateway, id)?),
        (["faults"], &Method::GET) => ok(faults_view(sim)),
        (["faults"], &Method::PUT) => {
            let update: FaultSettingsView = parse(body)?;
            sim.update_faults(&update)?;
            ok(faults_view(sim))
        }
        (["faults", "script"], &Method::POST) => {
            let script: FaultScript = parse(body)?;
            let status = sim.script_fault(script)?;
            Ok((StatusCode::CREATED, to_json(&status)))
        }
        (["faults", "script"], &Method::GET) => ok(to_json(&sim.fault_scripts())),
        (["faults", "script"], &Method::DELETE) => {
            ok(json!({"cleared": sim.clear_fault_scripts()}))
        }
        (["answers"], &Method::GET) => ok(to_json(&sim.answer_settings().view())),
        (["answers"], &Method::PUT) => {
            let update: AnswerSettingsView = parse(body)?;
            let next = sim.update_answers(&update)?;
            ok(to_json(&next.view()))
        }
        (["auto-payments"], &Method::PUT) => ok(auto_payments(sim, body)?),
        (["reset"], &Method::POST) => {
            sim.reset();
            ok(json!({"reset": true}))
        }
        (["tokens", "expire"], &Method::POST) => ok(json!({"expired": sim.expire_tokens()})),
        (["notifications"], &Method::GET) => ok(json!({
            "settings": sim.notify_settings(),
            "stats": sim.notify_stats(),
        })),
        (["notifications"], &Method::PUT) => {
            let settings: super::notify::NotifySettings = parse(body)?;
            sim.set_notify_settings(settings)?;
            ok(json!({"settings": sim.notify_settings()}))
        }
        (["notifications", "send"], &Method::POST) => {
            let request: super::notify::SendRequest = parse(body)?;
            let view = sim.send_notification(&request)?;
            Ok((StatusCode::ACCEPTED, to_json(&view)))
        }
        (path, _) if known(path) => Err(Refused::Method),
        _ => Err(AdminError::NotFound(format!("no admin endpoint at {path}")).into()),
    }
}

/// The paths that exist (with other methods than the one asked).
fn known(path: &[&str]) -> bool {
    matches!(
        path,
        ["health"]
            | ["stats"]
            | ["ledger"]
            | ["payments"]
            | ["payments", _, _]
            | ["faults"]
            | ["faults", "script"]
            | ["answers"]
            | ["notifications"]
            | ["notifications", "send"]
            | ["auto-payments"]
            | ["reset"]
            | ["tokens", "expire"]
    )
}

fn ledger(sim: &Simulation, query: Option<&str>) -> Result<serde_json::Value, AdminError> {
    let query: LedgerQuery = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| AdminError::BadRequest(format!("ledger query: {e}")))?;
    let entries = sim.ledger(&query);
    Ok(json!({"count": entries.len(), "entries": entries}))
}

fn payment(sim: &Simulation, gateway: &str, id: &str) -> Result<serde_json::Value, AdminError> {
    let gateway = GatewayId::parse(gateway).ok_or_else(|| {
        AdminError::NotFound(format!("unknown gateway `{gateway}` (paymentz, praxis)"))
    })?;
    let view = sim
        .payment(gateway, id)
        .ok_or_else(|| AdminError::NotFound(format!("no {} payment {id}", gateway.as_str())))?;
    Ok(to_json(&view))
}

fn auto_payments(sim: &Simulation, body: &[u8]) -> Result<serde_json::Value, AdminError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Toggle {
        enabled: bool,
    }
    let toggle: Toggle = parse(body)?;
    sim.set_auto_payments(toggle.enabled);
    Ok(json!({"enabled": sim.auto_payments()}))
}

fn faults_view(sim: &Simulation) -> serde_json::Value {
    json!({
        "seed": sim.seed(),
        "settings": sim.fault_settings().view(),
        "scripts": sim.fault_scripts(),
        "auto_payments": sim.auto_payments(),
    })
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| AdminError::BadRequest(format!("request body: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("admin views serialize")
}
