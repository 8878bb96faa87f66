//! The console's pages, rendered on the server with maud (every value is
//! escaped by the template; nothing is inserted as raw HTML but the
//! templates' own markup). Times are UTC, with their age beside them.
//!
//! Held authorizations (the overview's card, "needs a person" with release)
//! and the notifications that touched a command or a payment are read from
//! `store::notifications`, the tables the notifications feature writes.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use time::OffsetDateTime;

use super::actions;
use super::auth::Caller;
use super::{
    age, encode, query_pairs, read_form, redirect, span, utc, Console, ConsoleError, LIVE_REFRESH,
    PAGE_SIZE,
};
use crate::listener::{self, Body};
use crate::money::Amount;
use crate::store::attempts::AttemptRow;
use crate::store::console::{
    self as queries, AuditRow, CommandFilter, Cursor, EventRow, ListedCommand, OverviewFigures,
    CHART_MINUTES, LATENCY_MINUTES,
};

const OUTCOMES: [&str; 6] = [
    "succeeded",
    "declined",
    "failed",
    "unknown",
    "rejected",
    "pending",
];
const STATES: [&str; 4] = ["queued", "running", "unsettled", "done"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Commands,
    Attention,
    Audit,
    None,
}

fn page(status: StatusCode, markup: Markup) -> Response<Body> {
    listener::respond(status, "text/html; charset=utf-8", markup.into_string())
}

fn layout(title: &str, caller: &Caller, nav: Nav, body: Markup) -> Markup {
    let item = |to: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == to).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · backoffice console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/console" { "backoffice" }
                    nav {
                        (item(Nav::Overview, "/console", "Overview"))
                        (item(Nav::Commands, "/console/commands", "Commands"))
                        (item(Nav::Attention, "/console/attention", "Needs a person"))
                        (item(Nav::Audit, "/console/audit", "Audit"))
                    }
                    form.find method="get" action="/console/find" {
                        input type="search" name="q" placeholder="command id or prefix" aria-label="Find a command";
                    }
                    div.who {
                        span { (caller.actor) }
                        form method="post" action="/console/logout" { button type="submit" { "Log out" } }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login_page(message: Option<&str>, status: StatusCode) -> Response<Body> {
    page(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Log in · backoffice console" }
                    link rel="stylesheet" href="/console/assets/console.css";
                    script src="/console/assets/console.js" defer {}
                }
                body.login {
                    main {
                        h1 { "backoffice console" }
                        @if let Some(message) = message { p.banner.refused { (message) } }
                        form #login method="post" action="/console/login" {
                            label { "Token" input type="password" name="token" id="token" autocomplete="off" required; }
                            label { "Your name (for the audit)" input type="text" name="name" id="name" maxlength="64"; }
                            button type="submit" { "Log in" }
                        }
                        p.hint { "A viewer token opens every page; an operator token also lets you act (reconcile, requeue). The tokens are in the worker's configuration, [console]." }
                    }
                }
            }
        },
    )
}

pub fn error_page(caller: &Caller, error: &ConsoleError) -> Response<Body> {
    page(
        error.status(),
        layout(
            "Error",
            caller,
            Nav::None,
            html! {
                h1 { (error.status().as_u16()) " " (error.status().canonical_reason().unwrap_or("")) }
                p.banner.refused { (error.to_string()) }
                p { a href="/console" { "Back to the overview" } }
            },
        ),
    )
}

/// The routes behind a login.
pub async fn route(
    console: &Console,
    caller: &Caller,
    request: Request<Incoming>,
    rest: &str,
) -> Result<Response<Body>, ConsoleError> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method().clone();
    let query = query_pairs(&request);
    let banner = done_banner(console, &query).await?;
    match (method, segments.as_slice()) {
        (Method::GET, []) | (Method::GET, ["overview"]) => overview(console, caller, banner).await,
        (Method::GET, ["live"]) => {
            let figures = console.overview().await;
            Ok(page(StatusCode::OK, live(figures.as_ref())))
        }
        (Method::GET, ["find"]) => find(console, &query).await,
        (Method::GET, ["commands"]) => commands(console, caller, &query).await,
        (Method::GET, ["commands", id]) => command(console, caller, &segment(id)?, banner).await,
        (Method::POST, ["commands", id, "reconcile"]) => {
            let id = segment(id)?;
            let form: ActionForm = form(request).await?;
            let done = actions::reconcile(
                console,
                caller,
                &id,
                actions::reason(form.reason.as_deref()),
            )
            .await?;
            Ok(back(
                &form.back,
                &format!("/console/commands/{}", encode(&id)),
                done.audit_id,
            ))
        }
        (Method::GET, ["payments", gateway, payment_id]) => {
            payment(console, caller, &segment(gateway)?, &segment(payment_id)?).await
        }
        (Method::GET, ["attention"]) => attention(console, caller, banner).await,
        (Method::GET, ["dead-letters", id]) => {
            dead_letter(console, caller, number(id)?, banner).await
        }
        (Method::POST, ["dead-letters", id, "requeue"]) => {
            let id = number(id)?;
            let form: ActionForm = form(request).await?;
            let done =
                actions::requeue(console, caller, id, actions::reason(form.reason.as_deref()))
                    .await?;
            Ok(back(
                &form.back,
                &format!("/console/dead-letters/{id}"),
                done.audit_id,
            ))
        }
        (Method::POST, ["dead-letters", "requeue"]) => {
            let form: ActionForm = form(request).await?;
            let bulk = actions::requeue_matching(
                console,
                caller,
                actions::reason(form.matching.as_deref()),
                actions::reason(form.reason.as_deref()),
            )
            .await?;
            Ok(back(&form.back, "/console/attention", bulk.audit_id))
        }
        (Method::POST, ["holds", id, "release"]) => {
            let id = number(id)?;
            let form: ActionForm = form(request).await?;
            let done = actions::release(
                console,
                caller,
                id,
                form.action.as_deref().unwrap_or(""),
                actions::reason(form.reason.as_deref()),
            )
            .await?;
            Ok(back(&form.back, "/console/attention", done.audit_id))
        }
        (Method::GET, ["audit"]) => audit(console, caller, &query, banner).await,
        _ => Err(ConsoleError::NotFound("no such page".into())),
    }
}

#[derive(Deserialize, Default)]
struct ActionForm {
    reason: Option<String>,
    matching: Option<String>,
    /// A hold's release: `capture` or `cancel`.
    action: Option<String>,
    /// The page to return to (a console path only).
    #[serde(default)]
    back: String,
}

async fn form<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, ConsoleError> {
    read_form(request)
        .await
        .map_err(|_| ConsoleError::BadInput("the form could not be read".into()))
}

/// After an action, back to where it was asked, with its audit row to show.
fn back(requested: &str, default: &str, audit_id: i64) -> Response<Body> {
    let path = if requested.starts_with("/console") && !requested.contains("//") {
        requested
    } else {
        default
    };
    let path = path.split('?').next().unwrap_or(default);
    redirect(&format!("{path}?done={audit_id}"))
}

fn segment(text: &str) -> Result<String, ConsoleError> {
    super::decode(text).ok_or_else(|| ConsoleError::BadInput("a path segment is not UTF-8".into()))
}

fn number(text: &str) -> Result<i64, ConsoleError> {
    text.parse()
        .map_err(|_| ConsoleError::BadInput(format!("`{text}` is not a dead letter id")))
}

/// The result of the action just taken (`?done=<audit id>`), as a banner.
async fn done_banner(
    console: &Console,
    query: &[(String, String)],
) -> Result<Option<AuditRow>, ConsoleError> {
    let Some(id) = query
        .iter()
        .find(|(k, _)| k == "done")
        .and_then(|(_, v)| v.parse::<i64>().ok())
    else {
        return Ok(None);
    };
    let mut conn = console.conn().await?;
    Ok(queries::audit_row(&mut conn, id).await?)
}

fn banner(row: &Option<AuditRow>) -> Markup {
    html! {
        @if let Some(row) = row {
            p.banner.done[row.ok].refused[!row.ok] {
                strong { (row.action) " " (row.target.as_deref().unwrap_or("")) ": " }
                (row.result)
            }
        }
    }
}

fn when(at: OffsetDateTime, now: OffsetDateTime) -> Markup {
    html! { time datetime=(crate::events::format_timestamp(at)) title=(crate::events::format_timestamp(at)) { (utc(at)) " " span.age { "(" (age(at, now)) ")" } } }
}

/// How long until a deadline (or how long past it).
fn deadline_in(at: OffsetDateTime, now: OffsetDateTime) -> String {
    if at >= now {
        format!("in {}", crate::console::span((at - now).as_seconds_f64()))
    } else {
        format!("{} past", crate::console::span((now - at).as_seconds_f64()))
    }
}

fn maybe_when(at: Option<OffsetDateTime>, now: OffsetDateTime) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { "-" },
    }
}

fn current_outcome(outcome: Option<&str>, settled: Option<&str>) -> Markup {
    let shown = settled.or(outcome).unwrap_or("pending");
    html! {
        span class=(format!("badge outcome-{shown}")) { (shown) }
        @if let (Some(first), Some(_)) = (outcome, settled) { " " span.note { "(was " (first) ")" } }
    }
}

fn amount(minor: Option<i64>, currency: Option<&str>) -> String {
    match minor.and_then(|m| u64::try_from(m).ok()) {
        Some(m) => format!("{} {}", Amount::from_minor(m), currency.unwrap_or_default())
            .trim()
            .to_string(),
        None => "-".into(),
    }
}

fn command_link(id: &str) -> Markup {
    html! { a.mono href=(format!("/console/commands/{}", encode(id))) { (id) } }
}

fn payment_link(gateway: Option<&str>, payment_id: Option<&str>) -> Markup {
    match (gateway, payment_id) {
        (Some(g), Some(p)) => html! {
            a.mono href=(format!("/console/payments/{}/{}", encode(g), encode(p))) { (p) }
        },
        _ => html! { "-" },
    }
}

// ---------------------------------------------------------------- overview

async fn overview(
    console: &Console,
    caller: &Caller,
    done: Option<AuditRow>,
) -> Result<Response<Body>, ConsoleError> {
    let figures = console.overview().await;
    Ok(page(
        StatusCode::OK,
        layout(
            "Overview",
            caller,
            Nav::Overview,
            html! {
                (banner(&done))
                h1 { "Overview" }
                div #live data-refresh="/console/live" data-every=(LIVE_REFRESH.as_millis()) {
                    (live(figures.as_ref()))
                }
            },
        ),
    ))
}

/// The part of the overview that refreshes by itself: one shared snapshot.
fn live(figures: Option<&crate::snapshot::Figures<OverviewFigures>>) -> Markup {
    let Some(figures) = figures else {
        return html! { p.banner.refused { "The database has not answered yet; the figures appear when it does." } };
    };
    let f = &figures.value;
    let now = OffsetDateTime::now_utc();
    let card = |label: &str, value: String, detail: Markup, href: &str, alert: bool| {
        html! {
            a.card.alert[alert] href=(href) {
                span.label { (label) }
                span.value { (value) }
                span.detail { (detail) }
            }
        }
    };
    html! {
        div.cards {
            (card("In flight", f.running.to_string(), html!{ (f.queued) " queued (retry or busy payment)" }, "/console/commands?state=running", false))
            (card("Unknown, open", f.unknown_open.to_string(),
                html!{ @if let Some(at) = f.oldest_unknown_at { "oldest decided " (age(at, now)) } @else { "none" } },
                "/console/attention#unknown", f.unknown_open > 0))
            (card("Outbox backlog", f.outbox_backlog.to_string(),
                html!{ @if f.outbox_backlog > 0 { "oldest " (span(f.outbox_oldest_secs)) } @else { "all published" } },
                "/console/commands", f.outbox_oldest_secs > 60.0))
            (card("Dead letters", f.dead_letters_waiting.to_string(), html!{ "waiting for a person" },
                "/console/attention#dead-letters", f.dead_letters_waiting > 0))
            (card("Held authorizations", f.holds_open.to_string(),
                html!{ @if let Some(d) = f.nearest_hold_deadline { "nearest deadline " (utc(d)) " (" (deadline_in(d, now)) ")" } @else { "none held" } },
                "/console/attention#held", f.holds_open > 0))
        }
        h2 { "Commands received per minute, last " (CHART_MINUTES / 60) " hours, by outcome" }
        (chart(&f.per_minute, now))
        h2 { "Gateway latency, last " (LATENCY_MINUTES) " minutes" }
        @if f.latency.is_empty() {
            p.note { "No gateway exchanges in that time." }
        } @else {
            table {
                thead { tr { th { "Gateway" } th { "Operation" } th.num { "p50" } th.num { "p95" } th.num { "Exchanges" } } }
                tbody {
                    @for l in &f.latency {
                        tr { td { (l.gateway) } td { (l.operation) } td.num { (format!("{:.0} ms", l.p50_ms)) } td.num { (format!("{:.0} ms", l.p95_ms)) } td.num { (l.exchanges) } }
                    }
                }
            }
        }
        p.note.updated { "Figures read " (span(figures.age.as_secs_f64())) " ago, shared by every viewer; this part refreshes every " (LIVE_REFRESH.as_secs()) " s." }
    }
}

/// Stacked bars, one per minute, as an inline SVG drawn here: no chart
/// library, no script, and readable without either.
fn chart(rows: &[queries::MinuteCount], now: OffsetDateTime) -> Markup {
    const W: i64 = 900;
    const H: i64 = 180;
    let minutes = CHART_MINUTES;
    let start = now - time::Duration::minutes(minutes);
    let bar = W as f64 / minutes as f64;
    let mut per: std::collections::BTreeMap<i64, Vec<(&str, i64)>> = Default::default();
    for r in rows {
        let slot = (r.minute - start).whole_minutes().clamp(0, minutes - 1);
        per.entry(slot)
            .or_default()
            .push((r.outcome.as_str(), r.count));
    }
    let max = per
        .values()
        .map(|v| v.iter().map(|(_, n)| n).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let total: i64 = rows.iter().map(|r| r.count).sum();
    let scale = (H - 20) as f64 / max as f64;
    // Each minute's outcomes stacked from the axis up, in a fixed order.
    let mut bars = Vec::new();
    for (slot, counts) in &per {
        let mut y = (H - 20) as f64;
        for outcome in OUTCOMES {
            if let Some((_, n)) = counts.iter().find(|(o, _)| *o == outcome) {
                let h = *n as f64 * scale;
                y -= h;
                bars.push((*slot, outcome, *n, y, h));
            }
        }
    }
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(format!("{total} commands received in the last {minutes} minutes")) {
                line.axis x1="0" y1=(H - 20) x2=(W) y2=(H - 20) {}
                @for (slot, outcome, n, y, h) in &bars {
                    rect class=(format!("o-{outcome}")) x=(format!("{:.1}", *slot as f64 * bar)) y=(format!("{y:.1}")) width=(format!("{:.1}", (bar - 0.5).max(0.5))) height=(format!("{h:.1}")) {
                        title { (utc(start + time::Duration::minutes(*slot))) ": " (n) " " (outcome) }
                    }
                }
                @for mark in (0..=minutes).step_by(30) {
                    text.tick x=(format!("{:.0}", (mark as f64 * bar).min(W as f64 - 40.0))) y=(H - 4) {
                        @if mark == minutes { "now" } @else { "-" (minutes - mark) " min" }
                    }
                }
                text.tick x="4" y="12" { "max " (max) "/min" }
            }
            figcaption {
                (total) @if total == 1 { " command. " } @else { " commands. " }
                @for outcome in OUTCOMES { span class=(format!("key o-{outcome}")) { (outcome) } " " }
            }
        }
    }
}

// ---------------------------------------------------------------- commands

/// Reads the command list's filters and cursor from a query string; the
/// same names in the pages' URLs and the API's.
pub fn filter_from_query(
    query: &[(String, String)],
) -> Result<(CommandFilter, Option<Cursor>), ConsoleError> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let metadata = match get("metadata") {
        None => None,
        Some(text) => match text.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Some((k.trim().to_string(), v.trim().to_string()))
            }
            _ => {
                return Err(ConsoleError::BadInput(
                    "metadata: write it as key=value".into(),
                ))
            }
        },
    };
    let time = |name: &str| -> Result<Option<OffsetDateTime>, ConsoleError> {
        get(name)
            .map(|t| parse_time(&t).map_err(|e| ConsoleError::BadInput(format!("{name}: {e}"))))
            .transpose()
    };
    let filter = CommandFilter {
        outcome: get("outcome"),
        state: get("state"),
        gateway: get("gateway"),
        account: get("account"),
        operation: get("operation"),
        payment_id: get("payment_id"),
        id_prefix: get("id"),
        metadata,
        from: time("from")?,
        to: time("to")?,
    };
    let after = match get("after") {
        None => None,
        Some(text) => {
            let (at, id) = text
                .split_once('|')
                .ok_or_else(|| ConsoleError::BadInput("after: not a page cursor".into()))?;
            let received_at =
                OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| ConsoleError::BadInput("after: not a page cursor".into()))?;
            Some(Cursor {
                received_at,
                id: id.to_string(),
            })
        }
    };
    Ok((filter, after))
}

/// A time as people type it: RFC 3339, a date, a date and time (UTC: what
/// a `datetime-local` field sends), or a duration back from now (`2h`).
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let text_t = text.replace(' ', "T");
    for format in [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(t) = time::PrimitiveDateTime::parse(&text_t, format) {
            return Ok(t.assume_utc());
        }
    }
    if let Ok(d) = time::Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc());
    }
    if let Ok(d) = crate::config::parse_duration(text) {
        return Ok(OffsetDateTime::now_utc() - d);
    }
    Err(format!(
        "`{text}` is not a time (2026-12-04T10:00:00Z, 2026-12-04 10:00, 2026-12-04, or 2h for two hours ago)"
    ))
}

pub struct CommandsPage {
    pub rows: Vec<ListedCommand>,
    pub more: bool,
}

impl CommandsPage {
    pub async fn load(
        conn: &mut sqlx::PgConnection,
        filter: &CommandFilter,
        after: Option<&Cursor>,
    ) -> Result<CommandsPage, ConsoleError> {
        let mut rows = queries::list_commands(conn, filter, after, PAGE_SIZE + 1).await?;
        let more = rows.len() as i64 > PAGE_SIZE;
        rows.truncate(PAGE_SIZE as usize);
        Ok(CommandsPage { rows, more })
    }

    /// The `after` value of the next page, when there is one.
    pub fn next_cursor(&self) -> Option<String> {
        let last = self.rows.last().filter(|_| self.more)?;
        Some(format!(
            "{}|{}",
            last.received_at
                .format(&time::format_description::well_known::Rfc3339)
                .ok()?,
            last.id
        ))
    }
}

/// The search box: an exact id opens its command, anything else lists the
/// commands whose id starts with it.
async fn find(
    console: &Console,
    query: &[(String, String)],
) -> Result<Response<Body>, ConsoleError> {
    let q = query
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    if q.is_empty() {
        return Ok(redirect("/console/commands"));
    }
    let mut conn = console.conn().await?;
    if crate::store::commands::get(&mut conn, &q).await?.is_some() {
        return Ok(redirect(&format!("/console/commands/{}", encode(&q))));
    }
    Ok(redirect(&format!("/console/commands?id={}", encode(&q))))
}

async fn commands(
    console: &Console,
    caller: &Caller,
    query: &[(String, String)],
) -> Result<Response<Body>, ConsoleError> {
    let (filter, after) = filter_from_query(query)?;
    let mut conn = console.conn().await?;
    let page_rows = CommandsPage::load(&mut conn, &filter, after.as_ref()).await?;
    let now = OffsetDateTime::now_utc();
    let value = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let select = |name: &str, options: &[&str]| {
        let chosen = value(name);
        html! {
            select name=(name) id=(format!("f-{name}")) {
                option value="" { "any" }
                @for o in options { option value=(o) selected[chosen == *o] { (o) } }
            }
        }
    };
    let next = page_rows.next_cursor().map(|cursor| {
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k != "after" && k != "done")
            .cloned()
            .collect();
        pairs.push(("after".into(), cursor));
        format!(
            "/console/commands?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    });
    let gateways: Vec<&str> = crate::gateways::registry::GATEWAYS
        .iter()
        .map(|g| g.name)
        .collect();
    let operations: Vec<&str> = crate::gateways::Operation::ALL
        .iter()
        .map(|o| o.as_str())
        .collect();
    Ok(page(
        StatusCode::OK,
        layout(
            "Commands",
            caller,
            Nav::Commands,
            html! {
                h1 { "Commands" }
                form.filters method="get" action="/console/commands" {
                    label { "Outcome" (select("outcome", &OUTCOMES)) }
                    label { "State" (select("state", &STATES)) }
                    label { "Gateway" (select("gateway", &gateways)) }
                    label { "Operation" (select("operation", &operations)) }
                    label { "Account" input type="text" name="account" value=(value("account")); }
                    label { "Payment id" input type="text" name="payment_id" value=(value("payment_id")); }
                    label { "Id or prefix" input type="text" name="id" id="f-id" value=(value("id")); }
                    label { "Metadata key=value" input type="text" name="metadata" value=(value("metadata")) placeholder="order_ref=A-17"; }
                    label { "Received from (UTC)" input type="text" name="from" value=(value("from")) placeholder="2026-12-04 10:00 or 2h"; }
                    label { "to" input type="text" name="to" value=(value("to")) placeholder="2026-12-04 12:00"; }
                    button type="submit" { "Filter" }
                    a href="/console/commands" { "clear" }
                }
                @if page_rows.rows.is_empty() {
                    p.note { "No command matches." }
                } @else {
                    table #commands {
                        thead { tr { th { "Id" } th { "Gateway" } th { "Operation" } th { "Payment" } th.num { "Amount" } th { "State" } th { "Outcome" } th.num { "Attempts" } th { "Received" } } }
                        tbody {
                            @for c in &page_rows.rows {
                                tr data-id=(c.id) {
                                    td { (command_link(&c.id)) }
                                    td { (c.gateway.as_deref().unwrap_or("-")) " " span.note { (c.account.as_deref().unwrap_or("")) } }
                                    td { (c.operation.as_deref().unwrap_or("-")) }
                                    td { (payment_link(c.gateway.as_deref(), c.payment_id.as_deref())) }
                                    td.num { (amount(c.amount_minor, c.currency.as_deref())) }
                                    td { (c.state) }
                                    td.outcome { (current_outcome(c.outcome.as_deref(), c.settled_outcome.as_deref())) }
                                    td.num { (c.attempts) }
                                    td { (when(c.received_at, now)) }
                                }
                            }
                        }
                    }
                }
                p.pager {
                    @if after.is_some() { a href=(first_page(query)) { "← first page" } " " }
                    @if let Some(next) = next { a #next href=(next) { "next page →" } }
                }
            },
        ),
    ))
}

/// The same filters, from the first page.
fn first_page(query: &[(String, String)]) -> String {
    let pairs: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "after" && k != "done")
        .collect();
    format!(
        "/console/commands?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

// ---------------------------------------------------------------- a command

enum Entry<'a> {
    Received,
    Attempt(usize, &'a AttemptRow),
    Decided,
    Event(&'a EventRow),
    Settled,
    Action(&'a AuditRow),
}

async fn command(
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
    let mut timeline: Vec<(OffsetDateTime, u8, Entry)> =
        vec![(row.received_at, 0, Entry::Received)];
    for (n, a) in attempts.iter().enumerate() {
        timeline.push((a.started_at, 1, Entry::Attempt(n + 1, a)));
    }
    if let Some(at) = row.decided_at {
        timeline.push((at, 2, Entry::Decided));
    }
    for e in &events {
        timeline.push((e.created_at, 3, Entry::Event(e)));
    }
    if let Some(at) = row.settled_at {
        timeline.push((at, 2, Entry::Settled));
    }
    for a in &actions {
        timeline.push((a.at, 4, Entry::Action(a)));
    }
    timeline.sort_by_key(|(at, order, _)| (*at, *order));
    let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
    let result = row.settled_result.as_ref().or(row.result.as_ref());
    let said = |k: &str| {
        result
            .and_then(|r| r.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
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
                dl.facts {
                    dt { "Outcome" } dd #outcome { (current_outcome(row.outcome.map(|o| o.as_str()), row.settled_outcome.map(|o| o.as_str()))) @if let Some(r) = &row.reason { " " span.note { (r) } } }
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
                @if row.state.as_str() == "unsettled" {
                    form.action #reconcile method="post" action=(format!("/console/commands/{}/reconcile", encode(id))) {
                        input type="hidden" name="back" value=(back);
                        input type="text" name="reason" placeholder="why (optional, for the audit)" maxlength="1000";
                        button type="submit" title=(if caller.role.may_act() { "Inquire at the gateway now" } else { "operators only" }) { "Reconcile now" }
                        @if !caller.role.may_act() { span.note { " (operators only)" } }
                    }
                }
                h2 { "Recovery point" }
                p {
                    @if row.phase.as_str() == "calling" { "phase " strong { "calling" } ": a call may be in flight; whoever resumes this command inquires before sending again." }
                    @else { "phase ready: nothing is in flight for the current attempt." }
                    @if let Some(at) = row.next_run_at { @if matches!(row.state.as_str(), "queued" | "unsettled") { " Next run " (when(at, now)) "." } }
                    @if let Some(until) = row.lease_until { @if row.state.as_str() == "running" { " Leased until " (utc(until)) "." } }
                    " Each attempt's intent below was committed before its call was sent."
                }
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

/// Notifications as a command's timeline and a payment show them, each
/// linking to its JSON under `/api/`.
fn notification_table(
    rows: &[crate::store::notifications::NotificationRow],
    now: OffsetDateTime,
) -> Markup {
    html! {
        table #notifications {
            thead { tr { th { "Id" } th { "Received" } th { "Status" } th.num { "Amount" } th { "Verified" } th { "Decision" } th { "Rule" } th { "Command" } th.num { "Repeats" } } }
            tbody {
                @for n in rows {
                    tr data-id=(n.id) {
                        td { a href=(format!("/api/notifications/{}", n.id)) { (n.id) } }
                        td { (when(n.received_at, now)) }
                        td { (n.status.as_deref().unwrap_or("-")) }
                        td.num { (amount(n.amount_minor, n.currency.as_deref())) }
                        td { @if n.verified { "yes" } @else { "no" } @if let Some(p) = &n.problem { span.note { " (" (p) ")" } } }
                        td {
                            (n.decision)
                            @if let Some(by) = &n.hold_closed_by { " (hold closed by " (by) ")" }
                            @else if n.decision == "held" { " (open hold)" }
                            @if let Some(r) = &n.reason { span.note { " " (r) } }
                        }
                        td { (n.rule.as_deref().unwrap_or("-")) }
                        td { @if let Some(c) = &n.command_id { (command_link(c)) } @else { "-" } }
                        td.num { (n.repeats) }
                    }
                }
            }
        }
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn attempt(n: usize, a: &AttemptRow, now: OffsetDateTime) -> Markup {
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

fn event(e: &EventRow, now: OffsetDateTime) -> Markup {
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

/// What a payment's commands add up to (only those that succeeded count).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PaymentTotals {
    pub currency: Option<String>,
    pub captured: String,
    /// A capture without an amount (the whole authorization) succeeded.
    pub captured_in_full: bool,
    pub refunded: String,
    pub cancelled: bool,
}

impl PaymentTotals {
    pub fn of(commands: &[ListedCommand]) -> PaymentTotals {
        let succeeded = |c: &&ListedCommand| {
            c.settled_outcome.as_deref().or(c.outcome.as_deref()) == Some("succeeded")
        };
        let sum = |op: &str| -> u64 {
            commands
                .iter()
                .filter(succeeded)
                .filter(|c| c.operation.as_deref() == Some(op))
                .filter_map(|c| c.amount_minor.and_then(|m| u64::try_from(m).ok()))
                .sum()
        };
        PaymentTotals {
            currency: commands.iter().find_map(|c| c.currency.clone()),
            captured: Amount::from_minor(sum("capture")).to_string(),
            captured_in_full: commands
                .iter()
                .filter(succeeded)
                .any(|c| c.operation.as_deref() == Some("capture") && c.amount_minor.is_none()),
            refunded: Amount::from_minor(sum("refund")).to_string(),
            cancelled: commands
                .iter()
                .filter(succeeded)
                .any(|c| c.operation.as_deref() == Some("cancel")),
        }
    }
}

async fn payment(
    console: &Console,
    caller: &Caller,
    gateway: &str,
    payment_id: &str,
) -> Result<Response<Body>, ConsoleError> {
    let mut conn = console.conn().await?;
    let commands = queries::payment_commands(&mut conn, gateway, payment_id, 1000).await?;
    let notifications =
        crate::store::notifications::for_payment(&mut conn, gateway, payment_id, None, 1000)
            .await?;
    let totals = PaymentTotals::of(&commands);
    let now = OffsetDateTime::now_utc();
    let currency = totals.currency.clone().unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        layout(
            &format!("Payment {payment_id}"),
            caller,
            Nav::Commands,
            html! {
                h1 { "Payment " span.mono { (payment_id) } " " span.note { "on " (gateway) } }
                div.cards {
                    div.card { span.label { "Captured" } span.value #captured { (totals.captured) " " (currency) } span.detail { @if totals.captured_in_full { "and a capture of the whole authorization" } @else { "by succeeded captures" } } }
                    div.card { span.label { "Refunded" } span.value #refunded { (totals.refunded) " " (currency) } span.detail { "by succeeded refunds" } }
                    div.card { span.label { "Cancelled" } span.value #cancelled { @if totals.cancelled { "yes" } @else { "no" } } span.detail { "by a succeeded cancel" } }
                }
                h2 { "Commands, in order" }
                @if commands.is_empty() { p.note { "No command on this payment." } }
                @else {
                    table #payment-commands {
                        thead { tr { th { "Received" } th { "Id" } th { "Operation" } th.num { "Amount" } th { "State" } th { "Outcome" } th { "Decided" } } }
                        tbody {
                            @for c in &commands {
                                tr { td { (when(c.received_at, now)) } td { (command_link(&c.id)) } td { (c.operation.as_deref().unwrap_or("-")) } td.num { (amount(c.amount_minor, c.currency.as_deref())) } td { (c.state) } td { (current_outcome(c.outcome.as_deref(), c.settled_outcome.as_deref())) } td { (maybe_when(c.decided_at, now)) } }
                            }
                        }
                    }
                }
                h2 { "Notifications" }
                @if notifications.is_empty() { p.note #notifications { "No notification on this payment." } }
                @else { (notification_table(&notifications, now)) }
            },
        ),
    ))
}

// ---------------------------------------------------------------- needs a person

async fn attention(
    console: &Console,
    caller: &Caller,
    done: Option<AuditRow>,
) -> Result<Response<Body>, ConsoleError> {
    use crate::store::reports::needing_attention;
    let mut conn = console.conn().await?;
    let unknown = needing_attention(&mut conn, "unknown", None, PAGE_SIZE).await?;
    let failed = needing_attention(&mut conn, "failed", None, PAGE_SIZE).await?;
    let rejected = needing_attention(&mut conn, "rejected", None, PAGE_SIZE).await?;
    let dead = crate::store::dead_letters::list(&mut conn, false, None, PAGE_SIZE, 200).await?;
    let holds = crate::store::notifications::open_hold_rows(&mut conn, PAGE_SIZE).await?;
    let now = OffsetDateTime::now_utc();
    let operator_note = |caller: &Caller| {
        html! { @if !caller.role.may_act() { span.note { " (operators only)" } } }
    };
    let rows = |list: &[crate::store::reports::AttentionRow], reconcile: bool| {
        html! {
            table {
                thead { tr { th { "Id" } th { "Gateway" } th { "Operation" } th { "Payment" } th.num { "Amount" } th { "Reason / gateway said" } th { "Decided" } @if reconcile { th {} } } }
                tbody {
                    @for c in list {
                        @let said = c.settled_result.as_ref().or(c.result.as_ref()).and_then(|r| r.get("description")).and_then(|v| v.as_str());
                        tr data-id=(c.id) {
                            td { (command_link(&c.id)) }
                            td { (c.gateway.as_deref().unwrap_or("-")) }
                            td { (c.operation.as_deref().unwrap_or("-")) }
                            td { (payment_link(c.gateway.as_deref(), c.payment_id.as_deref())) }
                            td.num { (amount(c.amount_minor, c.currency.as_deref())) }
                            td { (c.reason.as_deref().unwrap_or("")) " " (said.unwrap_or("")) }
                            td { (maybe_when(c.settled_at.or(c.decided_at), now)) }
                            @if reconcile {
                                td {
                                    form.inline method="post" action=(format!("/console/commands/{}/reconcile", encode(&c.id))) {
                                        input type="hidden" name="back" value="/console/attention";
                                        button type="submit" { "Reconcile now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        layout(
            "Needs a person",
            caller,
            Nav::Attention,
            html! {
                (banner(&done))
                h1 { "Needs a person" }
                h2 #unknown { "Unknown, not settled (" (unknown.len()) @if unknown.len() as i64 == PAGE_SIZE { "+" } ")" }
                p.note { "The gateway may or may not have done these; reconciliation inquires on its schedule. " strong { "Reconcile now" } " inquires at once and records the inquiry." (operator_note(caller)) }
                @if unknown.is_empty() { p.note { "None." } } @else { (rows(&unknown, true)) }
                h2 #held { "Held authorizations" }
                p.note { "Authorizations a rule held for a person: " strong { "release" } " makes the capture or cancel command (rule \"operator\"), as `notifications release` does; a reason is required. At its deadline the rule's own action runs." (operator_note(caller)) }
                @if holds.is_empty() { p.note { "None." } } @else {
                    table #holds {
                        thead { tr { th { "Notification" } th { "Gateway" } th { "Account" } th { "Payment" } th.num { "Amount" } th { "Why held" } th { "Rule" } th { "Received" } th { "Deadline" } th {} } }
                        tbody {
                            @for h in &holds {
                                tr data-id=(h.id) {
                                    td { a href=(format!("/api/notifications/{}", h.id)) { (h.id) } }
                                    td { (h.gateway) }
                                    td { (h.account) }
                                    td { (payment_link(Some(&h.gateway), h.payment_id.as_deref())) }
                                    td.num { (amount(h.amount_minor, h.currency.as_deref())) }
                                    td { (h.reason.as_deref().unwrap_or("")) }
                                    td { (h.rule.as_deref().unwrap_or("-")) }
                                    td { (when(h.received_at, now)) }
                                    td { (maybe_when(h.hold_deadline, now)) }
                                    td {
                                        form.inline method="post" action=(format!("/console/holds/{}/release", h.id)) {
                                            input type="hidden" name="back" value="/console/attention";
                                            input type="text" name="reason" required placeholder="reason (required)";
                                            button type="submit" name="action" value="capture" { "Release as capture" }
                                            button type="submit" name="action" value="cancel" { "Release as cancel" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                h2 #failed { "Failed (" (failed.len()) @if failed.len() as i64 == PAGE_SIZE { "+" } ")" }
                @if failed.is_empty() { p.note { "None." } } @else { (rows(&failed, false)) }
                p { a href="/console/commands?outcome=failed" { "all failed commands →" } }
                h2 #rejected { "Rejected (" (rejected.len()) @if rejected.len() as i64 == PAGE_SIZE { "+" } ")" }
                @if rejected.is_empty() { p.note { "None." } } @else { (rows(&rejected, false)) }
                p { a href="/console/commands?outcome=rejected" { "all rejected commands →" } }
                h2 #dead-letters { "Dead letters waiting (" (dead.len()) @if dead.len() as i64 == PAGE_SIZE { "+" } ")" }
                p.note { "Messages the worker could not read as a command. Requeue puts one back on the command queue as it arrived." (operator_note(caller)) }
                form.action #requeue-matching method="post" action="/console/dead-letters/requeue" {
                    input type="hidden" name="back" value="/console/attention";
                    input type="text" name="matching" placeholder="reason contains (empty: all)" maxlength="200";
                    input type="text" name="reason" placeholder="why (for the audit)" maxlength="1000";
                    button type="submit" { "Requeue all that match (at most " (super::REQUEUE_CAP) ")" }
                }
                @if dead.is_empty() { p.note { "None." } } @else {
                    table #dead-letters-table {
                        thead { tr { th { "Id" } th { "Received" } th { "Reason" } th.num { "Size" } th { "Body (start)" } th {} } }
                        tbody {
                            @for d in &dead {
                                tr data-id=(d.id) {
                                    td { a href=(format!("/console/dead-letters/{}", d.id)) { (d.id) } }
                                    td { (when(d.received_at, now)) }
                                    td { (d.reason) }
                                    td.num { (d.body_size) }
                                    td.mono.clip { (String::from_utf8_lossy(&d.preview)) }
                                    td {
                                        form.inline method="post" action=(format!("/console/dead-letters/{}/requeue", d.id)) {
                                            input type="hidden" name="back" value="/console/attention";
                                            button type="submit" { "Requeue" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        ),
    ))
}

async fn dead_letter(
    console: &Console,
    caller: &Caller,
    id: i64,
    done: Option<AuditRow>,
) -> Result<Response<Body>, ConsoleError> {
    let mut conn = console.conn().await?;
    let row = crate::store::dead_letters::get(&mut conn, id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no dead letter with id {id}")))?;
    let listed = crate::ops::dead_letters::Listed::of_row(&row);
    let now = OffsetDateTime::now_utc();
    Ok(page(
        StatusCode::OK,
        layout(
            &format!("Dead letter {id}"),
            caller,
            Nav::Attention,
            html! {
                (banner(&done))
                h1 { "Dead letter " (id) }
                dl.facts {
                    dt { "Received" } dd { (when(row.received_at, now)) }
                    dt { "Requeued" } dd #requeued { (maybe_when(row.requeued_at, now)) }
                    dt { "Reason" } dd { (row.reason) }
                    dt { "Size" } dd { (row.body_size) " bytes" @if listed.body_cut { " (only its start was kept; the dead-letter queue has it whole)" } }
                    dt { "Properties" } dd { pre { (pretty(&row.properties)) } }
                }
                h2 { "Body" }
                @match (&listed.body, &listed.body_hex) {
                    (Some(text), _) => pre.body { (text) },
                    (None, Some(hex)) => pre.body { "(binary, hex) " (hex) },
                    _ => p.note { "empty" },
                }
                @if row.requeued_at.is_none() {
                    form.action method="post" action=(format!("/console/dead-letters/{id}/requeue")) {
                        input type="hidden" name="back" value=(format!("/console/dead-letters/{id}"));
                        input type="text" name="reason" placeholder="why (optional, for the audit)" maxlength="1000";
                        button type="submit" { "Requeue" }
                        @if !caller.role.may_act() { span.note { " (operators only)" } }
                    }
                }
            },
        ),
    ))
}

// ---------------------------------------------------------------- audit

async fn audit(
    console: &Console,
    caller: &Caller,
    query: &[(String, String)],
    done: Option<AuditRow>,
) -> Result<Response<Body>, ConsoleError> {
    let before = query
        .iter()
        .find(|(k, _)| k == "before")
        .and_then(|(_, v)| v.parse().ok());
    let mut conn = console.conn().await?;
    let rows = queries::audit_page(&mut conn, None, before, PAGE_SIZE).await?;
    let now = OffsetDateTime::now_utc();
    Ok(page(
        StatusCode::OK,
        layout(
            "Audit",
            caller,
            Nav::Audit,
            html! {
                (banner(&done))
                h1 { "Audit" }
                p.note { "Every action taken in the console, written in the same transaction as its effect." }
                @if rows.is_empty() { p.note { "No action yet." } } @else {
                    table #audit {
                        thead { tr { th { "When" } th { "Who" } th { "What" } th { "On" } th { "Why" } th { "Result" } } }
                        tbody {
                            @for r in &rows {
                                tr.refused[!r.ok] {
                                    td { (when(r.at, now)) }
                                    td { (r.actor) }
                                    td { (r.action) }
                                    td.mono { @match r.target.as_deref() {
                                        Some(t) if r.action == "reconcile" => (command_link(t)),
                                        Some(t) => @if let Some(dl) = t.strip_prefix("dead-letter:") { a href=(format!("/console/dead-letters/{dl}")) { (t) } } @else { (t) },
                                        None => "-",
                                    } }
                                    td { (r.reason.as_deref().unwrap_or("")) }
                                    td { @if r.ok { span.badge.ok { "done" } } @else { span.badge.bad { "refused" } } " " (r.result) }
                                }
                            }
                        }
                    }
                    @if rows.len() as i64 == PAGE_SIZE {
                        @if let Some(last) = rows.last() { p.pager { a href=(format!("/console/audit?before={}", last.id)) { "older →" } } }
                    }
                }
            },
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_and_cursors_are_read_from_the_query() {
        let (filter, after) = filter_from_query(&pairs(&[
            ("outcome", "failed"),
            ("gateway", " praxis "),
            ("account", ""),
            ("metadata", "order_ref = A-17"),
            ("from", "2026-12-04 10:00"),
            ("after", "2026-12-04T10:00:00.5Z|cmd-1|x"),
        ]))
        .unwrap();
        assert_eq!(filter.outcome.as_deref(), Some("failed"));
        assert_eq!(filter.gateway.as_deref(), Some("praxis"));
        assert_eq!(filter.account, None, "an empty field is no filter");
        assert_eq!(
            filter.metadata,
            Some(("order_ref".to_string(), "A-17".to_string()))
        );
        assert_eq!(
            filter.from,
            Some(time::macros::datetime!(2026-12-04 10:00 UTC))
        );
        let after = after.unwrap();
        assert_eq!(after.id, "cmd-1|x", "an id may contain the separator");
        assert_eq!(
            after.received_at,
            time::macros::datetime!(2026-12-04 10:00:00.5 UTC)
        );
        for bad in [
            ("metadata", "no-equals"),
            ("to", "yesterday"),
            ("after", "x"),
        ] {
            assert!(
                matches!(
                    filter_from_query(&pairs(&[bad])),
                    Err(ConsoleError::BadInput(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn times_are_read_as_people_type_them() {
        let utc = |t: &str| parse_time(t).unwrap();
        assert_eq!(
            utc("2026-12-04T10:00:00+01:00"),
            time::macros::datetime!(2026-12-04 09:00 UTC)
        );
        assert_eq!(
            utc("2026-12-04T10:00"),
            time::macros::datetime!(2026-12-04 10:00 UTC)
        );
        assert_eq!(
            utc("2026-12-04"),
            time::macros::datetime!(2026-12-04 0:00 UTC)
        );
        let ago = OffsetDateTime::now_utc() - utc("2h");
        assert!((ago.whole_seconds() - 7200).abs() < 5, "{ago}");
    }

    #[test]
    fn an_action_returns_only_to_a_console_page() {
        let to = |back: &str| back_location(back);
        assert_eq!(to("/console/attention"), "/console/attention?done=7");
        assert_eq!(
            to("/console/commands/a?done=3"),
            "/console/commands/a?done=7"
        );
        assert_eq!(to("https://evil.example/"), "/console?done=7");
        assert_eq!(to("//evil.example/console"), "/console?done=7");
        assert_eq!(to("/console//evil"), "/console?done=7");
    }

    fn back_location(back: &str) -> String {
        let r = super::back(back, "/console", 7);
        r.headers()["location"].to_str().unwrap().to_string()
    }

    #[test]
    fn payment_totals_count_only_what_succeeded() {
        let command =
            |op: &str, minor: Option<i64>, outcome: &str, settled: Option<&str>| ListedCommand {
                id: "c".into(),
                gateway: Some("paymentz".into()),
                account: None,
                operation: Some(op.into()),
                payment_id: Some("p".into()),
                amount_minor: minor,
                currency: Some("EUR".into()),
                state: "done".into(),
                outcome: Some(outcome.into()),
                settled_outcome: settled.map(str::to_string),
                reason: None,
                attempts: 1,
                received_at: OffsetDateTime::now_utc(),
                decided_at: None,
            };
        let totals = PaymentTotals::of(&[
            command("capture", Some(10_000), "succeeded", None),
            command("refund", Some(2_500), "unknown", Some("succeeded")),
            command("refund", Some(1_000), "declined", None),
            command("refund", Some(500), "unknown", None),
            command("cancel", None, "failed", None),
        ]);
        assert_eq!(totals.captured, "100.00");
        assert_eq!(totals.refunded, "25.00");
        assert!(!totals.cancelled);
        assert!(!totals.captured_in_full);
        assert_eq!(totals.currency.as_deref(), Some("EUR"));
    }
}
