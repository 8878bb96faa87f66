//! Rendering pieces every page shares: times with their age, amounts,
//! outcome badges, links to a command or a payment, the action banner and
//! the notifications table.

use maud::{html, Markup};
use time::OffsetDateTime;

use super::super::{age, encode, utc};
use crate::money::Amount;
use crate::outcome::Outcome;
use crate::store::console::AuditRow;

pub(super) fn banner(row: &Option<AuditRow>) -> Markup {
    html! {
        @if let Some(row) = row {
            p.banner.done[row.ok].refused[!row.ok] {
                strong { (row.action) " " (row.target.as_deref().unwrap_or("")) ": " }
                (row.result)
            }
        }
    }
}

pub(super) fn when(at: OffsetDateTime, now: OffsetDateTime) -> Markup {
    html! { time datetime=(crate::events::format_timestamp(at)) title=(crate::events::format_timestamp(at)) { (utc(at)) " " span.age { "(" (age(at, now)) ")" } } }
}

/// How long until a deadline (or how long past it).
pub(super) fn deadline_in(at: OffsetDateTime, now: OffsetDateTime) -> String {
    if at >= now {
        format!("in {}", crate::console::span((at - now).as_seconds_f64()))
    } else {
        format!("{} past", crate::console::span((now - at).as_seconds_f64()))
    }
}

pub(super) fn maybe_when(at: Option<OffsetDateTime>, now: OffsetDateTime) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { "-" },
    }
}

pub(super) fn current_outcome(outcome: Option<Outcome>, settled: Option<Outcome>) -> Markup {
    let shown = settled.or(outcome).map_or("pending", Outcome::as_str);
    html! {
        span class=(format!("badge outcome-{shown}")) { (shown) }
        @if let (Some(first), Some(_)) = (outcome, settled) { " " span.note { "(was " (first) ")" } }
    }
}

pub(super) fn amount(minor: Option<i64>, currency: Option<&str>) -> String {
    match minor.and_then(|m| u64::try_from(m).ok()) {
        Some(m) => format!("{} {}", Amount::from_minor(m), currency.unwrap_or_default())
            .trim()
            .to_string(),
        None => "-".into(),
    }
}

pub(super) fn command_link(id: &str) -> Markup {
    html! { a.mono href=(format!("/console/commands/{}", encode(id))) { (id) } }
}

pub(super) fn payment_link(gateway: Option<&str>, payment_id: Option<&str>) -> Markup {
    match (gateway, payment_id) {
        (Some(g), Some(p)) => html! {
            a.mono href=(format!("/console/payments/{}/{}", encode(g), encode(p))) { (p) }
        },
        _ => html! { "-" },
    }
}

/// Notifications as a command's timeline and a payment show them, each
/// linking to its JSON under `/api/`.
pub(super) fn notification_table(
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

pub(super) fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
