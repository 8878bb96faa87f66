//! One command's page: its facts, its recovery point, and a timeline of
//! everything that happened to it (attempts, decision, events, settlement,
//! console actions), with the notifications that touched it.

use hyper::{Response, StatusCode};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::super::auth::Caller;
use super::super::{encode, utc, Console, ConsoleError};
use super::render::*;
use super::{layout, page, Nav};
use crate::listener::Body;
use crate::store::attempts::AttemptRow;
use crate::store::commands::CommandRow;
use crate::store::console::{self as queries, AuditRow, EventRow};

enum Entry<'a> {
    Received,
    Attempt(usize, &'a AttemptRow),
    Decided,
    Event(&'a EventRow),
    Settled,
    Action(&'a AuditRow),
}

pub(super) async fn command(
    console: &Console,
    caller: &Caller,
    id: &str,
    done: Option<AuditRow>,
) -> Result<Response<Body>, ConsoleError> {
    let mut conn = console.conn().await?;
    let row = crate::store::commands::get(&mut conn, id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no command with id `{id}` (it was never received, or was unreadable and went to the dead letters)")))?;
    let attempts = crate::store::attempts::for_command(&mut conn, id).await?;
    let events = queries::command_events(&mut conn, id).await?;
    let actions = queries::audit_page(&mut conn, Some(id), None, 100).await?;
    let notifications = match (row.gateway.as_deref(), row.payment_id.as_deref()) {
        (Some(g), Some(p)) => {
            crate::store::notifications::for_payment(&mut conn, g, p, Some(id), 100).await?
        }
        _ => Vec::new(),
    };
    let now = OffsetDateTime::now_utc();
    let timeline = timeline(&row, &attempts, &events, &actions);
    let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
    let back = format!("/console/commands/{}", encode(id));
    Ok(page(
        StatusCode::OK,
        layout(
            &format!("Command {id}"),
            caller,
            Nav::Commands,
            html! {
                (banner(&done))
                h1 { "Command " span.mono { (id) } }
                (facts(&row, now))
                @if row.state.as_str() == "unsettled" {
                    form.action #reconcile method="post" action=(format!("/console/commands/{}/reconcile", encode(id))) {
                        input type="hidden" name="back" value=(back);
                        input type="text" name="reason" placeholder="why (optional, for the audit)" maxlength="1000";
                        button type="submit" title=(if caller.role.may_act() { "Inquire at the gateway now" } else { "operators only" }) { "Reconcile now" }
                        @if !caller.role.may_act() { span.note { " (operators only)" } }
                    }
                }
                (recovery_point(&row, now))
                @if let Some(snapshot) = &row.before_snapshot {
                    details { summary { "Payment before the attempt (before-snapshot)" } pre { (pretty(snapshot)) } }
                }
                h2 { "Timeline" }
                ol.timeline {
                    @for (at, _, entry) in &timeline {
                        @match entry {
                            Entry::Received => li.received { (when(*at, now)) " received" details { summary { "payload" } pre { (pretty(&payload)) } } },
                            Entry::Attempt(n, a) => li.attempt { (attempt(*n, a, now)) },
                            Entry::Decided => li.decided { (when(*at, now)) " decided: " strong { (row.outcome.map_or("-", |o| o.as_str())) } },
                            Entry::Settled => li.decided { (when(*at, now)) " settled by reconciliation: " strong { (row.settled_outcome.map_or("-", |o| o.as_str())) } },
                            Entry::Event(e) => li.event { (event(e, now)) },
                            Entry::Action(a) => li.action { (when(a.at, now)) " console: " strong { (a.action) } " by " (a.actor) ": " (a.result) @if let Some(r) = &a.reason { " · why: " (r) } },
                        }
                    }
                }
                h2 { "Notifications" }
                @if notifications.is_empty() { p.note #notifications { "No notification made or settled this command." } }
                @else { (notification_table(&notifications, now)) }
            },
        ),
    ))
}

/// Everything that happened to the command, in order (at the same instant:
/// received, attempt, decided or settled, event, console action).
fn timeline<'a>(
    row: &CommandRow,
    attempts: &'a [AttemptRow],
    events: &'a [EventRow],
    actions: &'a [AuditRow],
) -> Vec<(OffsetDateTime, u8, Entry<'a>)> {
    let mut timeline: Vec<(OffsetDateTime, u8, Entry)> =
        vec![(row.received_at, 0, Entry::Received)];
    for (n, a) in attempts.iter().enumerate() {
        timeline.push((a.started_at, 1, Entry::Attempt(n + 1, a)));
    }
    if let Some(at) = row.decided_at {
        timeline.push((at, 2, Entry::Decided));
    }
    for e in events {
        timeline.push((e.created_at, 3, Entry::Event(e)));
    }
    if let Some(at) = row.settled_at {
        timeline.push((at, 2, Entry::Settled));
    }
    for a in actions {
        timeline.push((a.at, 4, Entry::Action(a)));
    }
    timeline.sort_by_key(|(at, order, _)| (*at, *order));
    timeline
}

/// What the command is and where it stands.
fn facts(row: &CommandRow, now: OffsetDateTime) -> Markup {
    let result = row.settled_result.as_ref().or(row.result.as_ref());
    let said = |k: &str| {
        result
            .and_then(|r| r.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    html! {
    dl.facts {
        dt { "Outcome" } dd #outcome { (current_outcome(row.outcome, row.settled_outcome)) @if let Some(r) = &row.reason { " " span.note { (r) } } }
        dt { "State" } dd #state { (row.state) " (phase " (row.phase) ")" }
        dt { "Gateway" } dd { (row.gateway.as_deref().unwrap_or("-")) " · account " (row.account.as_deref().unwrap_or("-")) }
        dt { "Operation" } dd { (row.operation.as_deref().unwrap_or("-")) }
        dt { "Payment" } dd #payment { (payment_link(row.gateway.as_deref(), row.payment_id.as_deref())) }
        dt { "Amount" } dd { (amount(row.amount_minor, row.currency.as_deref())) }
        @if let Some(d) = said("description") { dt { "Gateway said" } dd { (d) @if let Some(s) = said("gateway_status") { " · status " (s) } @if let Some(c) = said("gateway_code") { " · code " (c) } } }
        dt { "Attempts" } dd { (row.attempts) @if row.reconcile_checks > 0 { " · " (row.reconcile_checks) " reconciliation checks" } }
        dt { "Received" } dd { (when(row.received_at, now)) }
        dt { "Decided" } dd { (maybe_when(row.decided_at, now)) }
        @if row.reply_to.is_some() { dt { "Reply to" } dd.mono { (row.reply_to.as_deref().unwrap_or("")) } }
    }
    }
}

/// Where a resumed command starts again, and when.
fn recovery_point(row: &CommandRow, now: OffsetDateTime) -> Markup {
    html! {
    h2 { "Recovery point" }
    p {
        @if row.phase.as_str() == "calling" { "phase " strong { "calling" } ": a call may be in flight; whoever resumes this command inquires before sending again." }
        @else { "phase ready: nothing is in flight for the current attempt." }
        @if let Some(at) = row.next_run_at { @if matches!(row.state.as_str(), "queued" | "unsettled") { " Next run " (when(at, now)) "." } }
        @if let Some(until) = row.lease_until { @if row.state.as_str() == "running" { " Leased until " (utc(until)) "." } }
        " Each attempt's intent below was committed before its call was sent."
    }
    }
}

pub(super) fn attempt(n: usize, a: &AttemptRow, now: OffsetDateTime) -> Markup {
    html! {
        div.head {
            (when(a.started_at, now)) " "
            strong { "#" (n) " " (a.kind) } " " (a.purpose.as_deref().unwrap_or(""))
            " · attempt " (a.attempt_no) " · " (a.status)
            @if let Some(s) = a.http_status { " · HTTP " (s) }
            @if let Some(ms) = a.latency_ms { " · " (format!("{ms:.0} ms")) }
            @if let Some(c) = &a.classification { " · " span class=(format!("badge class-{c}")) { (c) } }
        }
        dl.exchange {
            @if let (Some(m), Some(u)) = (&a.method, &a.url) { dt { "Request" } dd.mono { (m) " " (u) } }
            @if let Some(r) = &a.request { dt { "Sent (secrets removed)" } dd { pre { (pretty(r)) } } }
            @if let Some(s) = &a.signature_sent { dt { "Checksum / signature sent" } dd.mono { (s) } }
            @if let Some(b) = &a.response_body { dt { "Answer" } dd { pre { (b) } } }
            @if let Some(s) = &a.signature_received {
                dt { "Answer's signature" }
                dd.mono { (s) " " @match a.signature_verified { Some(true) => span.badge.ok { "verified" }, Some(false) => span.badge.bad { "DID NOT VERIFY" }, None => span.note { "not checked" } } }
            }
            @if let Some(e) = &a.error { dt { "Error" } dd { (e) } }
            @if a.request.is_none() && a.response_body.is_none() && a.error.is_none() { dt { "" } dd.note { "nothing recorded yet (in flight)" } }
        }
    }
}

pub(super) fn event(e: &EventRow, now: OffsetDateTime) -> Markup {
    let flag = |k: &str| e.body.get(k).and_then(|v| v.as_bool()) == Some(true);
    html! {
        div.head {
            (when(e.created_at, now)) " event "
            strong { (e.body.get("outcome").and_then(|v| v.as_str()).unwrap_or("-")) }
            " · routing key " span.mono { (e.routing_key) }
            @if flag("replayed") { " · " span.badge { "replayed" } }
            @if flag("reconciled") { " · " span.badge { "reconciled" } }
            @if let Some(r) = &e.reply_to { " · copy to " span.mono { (r) } }
            " · "
            @if let Some(at) = e.published_at { "published " (utc(at)) }
            @else if e.abandoned_at.is_some() { span.badge.bad { "abandoned" } " " (e.last_error.as_deref().unwrap_or("")) }
            @else { "not published yet (in the outbox)" }
        }
        details { summary { "message " span.mono { (e.message_id) } } pre { (pretty(&e.body)) } }
    }
}

// ---------------------------------------------------------------- a payment
