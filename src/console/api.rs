//! The console's data as JSON under `/api/`, for scripts: a bearer token
//! (`Authorization: Bearer ...`) or a console session. The minimum that
//! deployments rely on (shared/spec/config.md) is `GET /api/commands/{id}`
//! (the command with its `attempts` and `events`), `GET /api/dead-letters`
//! (an array of objects with an `id`), `POST /api/dead-letters/{id}/requeue`
//! and `POST /api/commands/{id}/reconcile`; the rest mirrors the pages.
//!
//! Errors are `{"error": "..."}` with the status that classifies them: 401
//! without credentials, 403 for a viewer's or a cross-site action, 404, 409
//! for an action refused (already requeued, not unknown), 503 when the
//! database does not answer.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::actions;
use super::auth::Caller;
use super::pages::{filter_from_query, CommandsPage};
use super::{decode, may_change, query_pairs, read_form, Console, ConsoleError, PAGE_SIZE};
use crate::listener::{self, Body};

fn answer(status: StatusCode, value: &Value) -> Response<Body> {
    listener::respond(
        status,
        "application/json",
        serde_json::to_string_pretty(value).expect("JSON serializes"),
    )
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    answer(status, &json!({ "error": message }))
}

pub async fn handle(console: &Console, request: Request<Incoming>, rest: &str) -> Response<Body> {
    let Some(caller) = console.auth.caller(request.headers()) else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "credentials required: Authorization: Bearer <token>",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            "Bearer realm=\"backoffice console\""
                .parse()
                .expect("valid header"),
        );
        return r;
    };
    if request.method() == Method::POST {
        if let Err(refused) = may_change(&caller, request.headers()) {
            return error(StatusCode::FORBIDDEN, &refused.to_string());
        }
    }
    match route(console, &caller, request, rest).await {
        Ok(response) => response,
        Err(e) => error(e.status(), &e.to_string()),
    }
}

#[derive(Deserialize, Default)]
struct ActionBody {
    reason: Option<String>,
    /// For "requeue all that match": the text the reason must contain.
    matching: Option<String>,
    /// For a hold's release: `capture` or `cancel`.
    action: Option<String>,
}

fn notifications_json(rows: &[crate::store::notifications::NotificationRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|n| {
                serde_json::to_value(crate::ops::notifications::shown(n, None, false))
                    .expect("JSON serializes")
            })
            .collect(),
    )
}

/// One open hold as `/api/holds` lists it.
pub(crate) fn hold_json(row: &crate::store::notifications::NotificationRow) -> Value {
    json!({
        "id": row.id,
        "gateway": row.gateway,
        "account": row.account,
        "payment_id": row.payment_id,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "status": row.status,
        "reason": row.reason,
        "rule": row.rule,
        "received_at": crate::events::format_timestamp(row.received_at),
        "hold_deadline": row.hold_deadline.map(crate::events::format_timestamp),
    })
}

async fn route(
    console: &Console,
    caller: &Caller,
    request: Request<Incoming>,
    rest: &str,
) -> Result<Response<Body>, ConsoleError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let method = request.method().clone();
    let query = query_pairs(&request);
    let value = match (method, segments.as_slice()) {
        (Method::GET, ["overview"]) => overview(console).await?,
        (Method::GET, ["commands"]) => commands(console, &query).await?,
        (Method::GET, ["commands", id]) => command(console, &segment(id)?).await?,
        (Method::POST, ["commands", id, "reconcile"]) => {
            let id = segment(id)?;
            let body: ActionBody = body(request).await?;
            let reason = actions::reason(body.reason.as_deref());
            return Ok(done_answer(
                &actions::reconcile(console, caller, &id, reason).await?,
            ));
        }
        (Method::GET, ["payments", gateway, payment_id]) => {
            payment(console, &segment(gateway)?, &segment(payment_id)?).await?
        }
        (Method::GET, ["holds"]) => {
            let mut conn = console.conn().await?;
            let rows = crate::store::notifications::open_hold_rows(&mut conn, 1000).await?;
            Value::Array(rows.iter().map(hold_json).collect())
        }
        (Method::GET, ["notifications", id]) => notification(console, number(id)?).await?,
        (Method::POST, ["holds", id, "release"]) => {
            let id = number(id)?;
            let body: ActionBody = body(request).await?;
            let action = body.action.as_deref().unwrap_or("");
            let reason = actions::reason(body.reason.as_deref());
            return Ok(done_answer(
                &actions::release(console, caller, id, action, reason).await?,
            ));
        }
        (Method::GET, ["dead-letters"]) => dead_letters(console, &query).await?,
        (Method::GET, ["dead-letters", id]) => dead_letter(console, number(id)?).await?,
        (Method::POST, ["dead-letters", id, "requeue"]) => {
            let id = number(id)?;
            let body: ActionBody = body(request).await?;
            let reason = actions::reason(body.reason.as_deref());
            return Ok(done_answer(
                &actions::requeue(console, caller, id, reason).await?,
            ));
        }
        (Method::POST, ["dead-letters", "requeue"]) => {
            let body: ActionBody = body(request).await?;
            let bulk = actions::requeue_matching(
                console,
                caller,
                actions::reason(body.matching.as_deref()),
                actions::reason(body.reason.as_deref()),
            )
            .await?;
            json_of(bulk)
        }
        (Method::GET, ["audit"]) => audit(console, &query).await?,
        _ => return Err(ConsoleError::NotFound("no such API path".into())),
    };
    Ok(answer(StatusCode::OK, &value))
}

fn json_of(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("JSON serializes")
}

/// `?name=<number>` (a page's `before`), when present and a number.
fn query_number(query: &[(String, String)], name: &str) -> Option<i64> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

async fn overview(console: &Console) -> Result<Value, ConsoleError> {
    let figures = console.overview().await.ok_or(ConsoleError::Timeout)?;
    Ok(json!({
        "age_ms": figures.age.as_millis() as u64,
        "held_authorizations": figures.value.holds_open,
        "figures": figures.value,
    }))
}

async fn commands(console: &Console, query: &[(String, String)]) -> Result<Value, ConsoleError> {
    let (filter, after) = filter_from_query(query)?;
    let mut conn = console.conn().await?;
    let page = CommandsPage::load(&mut conn, &filter, after.as_ref()).await?;
    Ok(json!({
        "commands": page.rows,
        "next": page.next_cursor(),
    }))
}

async fn command(console: &Console, id: &str) -> Result<Value, ConsoleError> {
    let mut conn = console.conn().await?;
    let report = crate::ops::show::report(&mut conn, id).await?;
    let events = crate::store::console::command_events(&mut conn, id).await?;
    let mut value = json_of(&report);
    // The events with their routing keys and publication state.
    value["events"] = json_of(&events);
    // The notifications that made or settled it, as `/api/notifications/{id}`.
    let touched = match (
        &report.command.asked.gateway,
        &report.command.asked.payment_id,
    ) {
        (Some(g), Some(p)) => {
            crate::store::notifications::for_payment(&mut conn, g, p, Some(id), 100).await?
        }
        _ => Vec::new(),
    };
    value["notifications"] = notifications_json(&touched);
    Ok(value)
}

async fn payment(
    console: &Console,
    gateway: &str,
    payment_id: &str,
) -> Result<Value, ConsoleError> {
    let mut conn = console.conn().await?;
    let commands =
        crate::store::console::payment_commands(&mut conn, gateway, payment_id, 1000).await?;
    let touched =
        crate::store::notifications::for_payment(&mut conn, gateway, payment_id, None, 1000)
            .await?;
    let totals = super::pages::PaymentTotals::of(&commands);
    Ok(json!({
        "gateway": gateway,
        "payment_id": payment_id,
        "totals": totals,
        "commands": commands,
        "notifications": notifications_json(&touched),
    }))
}

async fn notification(console: &Console, id: i64) -> Result<Value, ConsoleError> {
    let mut conn = console.conn().await?;
    let row = crate::store::notifications::get(&mut conn, id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no notification {id}")))?;
    // As `notifications show --json`, without the raw body.
    Ok(json_of(crate::ops::notifications::shown(&row, None, false)))
}

async fn dead_letters(
    console: &Console,
    query: &[(String, String)],
) -> Result<Value, ConsoleError> {
    let all = query.iter().any(|(k, v)| k == "all" && v != "0");
    let before = query_number(query, "before");
    let mut conn = console.conn().await?;
    let rows = crate::store::dead_letters::list(&mut conn, all, before, PAGE_SIZE, 1024).await?;
    let listed: Vec<_> = rows
        .iter()
        .map(crate::ops::dead_letters::Listed::of_summary)
        .collect();
    Ok(json_of(listed))
}

async fn dead_letter(console: &Console, id: i64) -> Result<Value, ConsoleError> {
    let mut conn = console.conn().await?;
    let row = crate::store::dead_letters::get(&mut conn, id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no dead letter with id {id}")))?;
    Ok(json_of(crate::ops::dead_letters::Listed::of_row(&row)))
}

async fn audit(console: &Console, query: &[(String, String)]) -> Result<Value, ConsoleError> {
    let before = query_number(query, "before");
    let target = query
        .iter()
        .find(|(k, _)| k == "target")
        .map(|(_, v)| v.as_str());
    let mut conn = console.conn().await?;
    let rows = crate::store::console::audit_page(&mut conn, target, before, PAGE_SIZE).await?;
    Ok(json_of(rows))
}

fn done_answer(done: &actions::Done) -> Response<Body> {
    let status = if done.ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    answer(
        status,
        &serde_json::to_value(done).expect("JSON serializes"),
    )
}

async fn body<T: serde::de::DeserializeOwned + Default>(
    request: Request<Incoming>,
) -> Result<T, ConsoleError> {
    let empty = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0");
    if empty {
        return Ok(T::default());
    }
    read_form(request)
        .await
        .map_err(|_| ConsoleError::BadInput("the body is neither a form nor JSON".into()))
}

fn segment(text: &str) -> Result<String, ConsoleError> {
    decode(text).ok_or_else(|| ConsoleError::BadInput("a path segment is not UTF-8".into()))
}

fn number(text: &str) -> Result<i64, ConsoleError> {
    text.parse()
        .map_err(|_| ConsoleError::BadInput(format!("`{text}` is not a numeric id")))
}
