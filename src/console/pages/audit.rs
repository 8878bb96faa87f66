//! The audit: every console action, newest first.

use hyper::{Response, StatusCode};
use maud::html;
use time::OffsetDateTime;

use super::super::auth::Caller;
use super::super::{Console, ConsoleError, PAGE_SIZE};
use super::render::*;
use super::{layout, page, Nav};
use crate::listener::Body;
use crate::store::console::{self as queries, AuditRow};

pub(super) async fn audit(
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
