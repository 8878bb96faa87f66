//! "Needs a person": unknown outcomes not settled, held authorizations,
//! failed and rejected commands, dead letters waiting (and one dead
//! letter's page).

use hyper::{Response, StatusCode};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::super::auth::Caller;
use super::super::{encode, Console, ConsoleError, PAGE_SIZE, REQUEUE_CAP};
use super::render::*;
use super::{layout, page, Nav};
use crate::listener::Body;
use crate::store::console::AuditRow;

pub(super) async fn attention(
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
                @if unknown.is_empty() { p.note { "None." } } @else { (commands_table(&unknown, true, now)) }
                h2 #held { "Held authorizations" }
                p.note { "Authorizations a rule held for a person: " strong { "release" } " makes the capture or cancel command (rule \"operator\"), as `notifications release` does; a reason is required. At its deadline the rule's own action runs." (operator_note(caller)) }
                @if holds.is_empty() { p.note { "None." } } @else {
                    (holds_table(&holds, now))
                }
                h2 #failed { "Failed (" (failed.len()) @if failed.len() as i64 == PAGE_SIZE { "+" } ")" }
                @if failed.is_empty() { p.note { "None." } } @else { (commands_table(&failed, false, now)) }
                p { a href="/console/commands?outcome=failed" { "all failed commands →" } }
                h2 #rejected { "Rejected (" (rejected.len()) @if rejected.len() as i64 == PAGE_SIZE { "+" } ")" }
                @if rejected.is_empty() { p.note { "None." } } @else { (commands_table(&rejected, false, now)) }
                p { a href="/console/commands?outcome=rejected" { "all rejected commands →" } }
                h2 #dead-letters { "Dead letters waiting (" (dead.len()) @if dead.len() as i64 == PAGE_SIZE { "+" } ")" }
                p.note { "Messages the worker could not read as a command. Requeue puts one back on the command queue as it arrived." (operator_note(caller)) }
                form.action #requeue-matching method="post" action="/console/dead-letters/requeue" {
                    input type="hidden" name="back" value="/console/attention";
                    input type="text" name="matching" placeholder="reason contains (empty: all)" maxlength="200";
                    input type="text" name="reason" placeholder="why (for the audit)" maxlength="1000";
                    button type="submit" { "Requeue all that match (at most " (REQUEUE_CAP) ")" }
                }
                @if dead.is_empty() { p.note { "None." } } @else {
                    (dead_letters_table(&dead, now))
                }
            },
        ),
    ))
}

fn operator_note(caller: &Caller) -> Markup {
    html! { @if !caller.role.may_act() { span.note { " (operators only)" } } }
}

/// Commands needing a person, with "reconcile now" for the unknown ones.
fn commands_table(
    list: &[crate::store::reports::AttentionRow],
    reconcile: bool,
    now: OffsetDateTime,
) -> Markup {
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
}

/// Held authorizations, each with its release form.
fn holds_table(
    holds: &[crate::store::notifications::NotificationRow],
    now: OffsetDateTime,
) -> Markup {
    html! {
        table #holds {
            thead { tr { th { "Notification" } th { "Gateway" } th { "Account" } th { "Payment" } th.num { "Amount" } th { "Why held" } th { "Rule" } th { "Received" } th { "Deadline" } th {} } }
            tbody {
                @for h in holds {
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
}

/// Dead letters waiting, each with its requeue button.
fn dead_letters_table(
    dead: &[crate::store::dead_letters::DeadLetterSummary],
    now: OffsetDateTime,
) -> Markup {
    html! {
        table #dead-letters-table {
            thead { tr { th { "Id" } th { "Received" } th { "Reason" } th.num { "Size" } th { "Body (start)" } th {} } }
            tbody {
                @for d in dead {
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
}

pub(super) async fn dead_letter(
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
