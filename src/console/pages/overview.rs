//! The overview: the cards that say what needs looking at, the commands
//! received per minute and the gateways' latency, refreshed by itself.

use hyper::{Response, StatusCode};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::super::auth::Caller;
use super::super::{age, span, utc, Console, ConsoleError, LIVE_REFRESH};
use super::commands::OUTCOMES;
use super::render::*;
use super::{layout, page, Nav};
use crate::listener::Body;
use crate::store::console::{
    self as queries, AuditRow, OverviewFigures, CHART_MINUTES, LATENCY_MINUTES,
};

pub(super) async fn overview(
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
pub(super) fn live(figures: Option<&crate::snapshot::Figures<OverviewFigures>>) -> Markup {
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
pub(super) fn chart(rows: &[queries::MinuteCount], now: OffsetDateTime) -> Markup {
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
