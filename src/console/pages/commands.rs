//! The command list: its filters (the same query names as the API's), its
//! cursor pages, and the search box.

use hyper::{Response, StatusCode};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::super::auth::Caller;
use super::super::{encode, redirect, Console, ConsoleError, PAGE_SIZE};
use super::render::*;
use super::{layout, page, Nav};
use crate::listener::Body;
use crate::store::console::{self as queries, CommandFilter, Cursor, ListedCommand};

pub(super) const OUTCOMES: [&str; 6] = [
    "succeeded",
    "declined",
    "failed",
    "unknown",
    "rejected",
    "pending",
];
pub(super) const STATES: [&str; 4] = ["queued", "running", "unsettled", "done"];

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
pub(super) async fn find(
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

pub(super) async fn commands(
    console: &Console,
    caller: &Caller,
    query: &[(String, String)],
) -> Result<Response<Body>, ConsoleError> {
    let (filter, after) = filter_from_query(query)?;
    let mut conn = console.conn().await?;
    let page_rows = CommandsPage::load(&mut conn, &filter, after.as_ref()).await?;
    let now = OffsetDateTime::now_utc();
    let next = page_rows
        .next_cursor()
        .map(|cursor| list_url(query, Some(cursor)));
    Ok(page(
        StatusCode::OK,
        layout(
            "Commands",
            caller,
            Nav::Commands,
            html! {
                h1 { "Commands" }
                (filters_form(query))
                @if page_rows.rows.is_empty() {
                    p.note { "No command matches." }
                } @else {
                    (commands_table(&page_rows.rows, now))
                }
                p.pager {
                    @if after.is_some() { a href=(list_url(query, None)) { "← first page" } " " }
                    @if let Some(next) = next { a #next href=(next) { "next page →" } }
                }
            },
        ),
    ))
}

/// The filters, as the query asked them.
fn filters_form(query: &[(String, String)]) -> Markup {
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
    let gateways: Vec<&str> = crate::gateways::registry::GATEWAYS
        .iter()
        .map(|g| g.name)
        .collect();
    let operations: Vec<&str> = crate::gateways::Operation::ALL
        .iter()
        .map(|o| o.as_str())
        .collect();
    html! {
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
    }
}

fn commands_table(rows: &[ListedCommand], now: OffsetDateTime) -> Markup {
    html! {
    table #commands {
        thead { tr { th { "Id" } th { "Gateway" } th { "Operation" } th { "Payment" } th.num { "Amount" } th { "State" } th { "Outcome" } th.num { "Attempts" } th { "Received" } } }
        tbody {
            @for c in rows {
                tr data-id=(c.id) {
                    td { (command_link(&c.id)) }
                    td { (c.gateway.as_deref().unwrap_or("-")) " " span.note { (c.account.as_deref().unwrap_or("")) } }
                    td { (c.operation.as_deref().unwrap_or("-")) }
                    td { (payment_link(c.gateway.as_deref(), c.payment_id.as_deref())) }
                    td.num { (amount(c.amount_minor, c.currency.as_deref())) }
                    td { (c.state) }
                    td.outcome { (current_outcome(c.outcome, c.settled_outcome)) }
                    td.num { (c.attempts) }
                    td { (when(c.received_at, now)) }
                }
            }
        }
    }
    }
}

/// The same filters, from the first page or from `after`.
fn list_url(query: &[(String, String)], after: Option<String>) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "after" && k != "done")
        .cloned()
        .collect();
    pairs.extend(after.map(|cursor| ("after".to_string(), cursor)));
    format!(
        "/console/commands?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
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
}
