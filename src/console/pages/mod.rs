//! The console's pages, rendered on the server with maud (every value is
//! escaped by the template; nothing is inserted as raw HTML but the
//! templates' own markup). Times are UTC, with their age beside them.
//!
//! Held authorizations (the overview's card, "needs a person" with release)
//! and the notifications that touched a command or a payment are read from
//! `store::notifications`, the tables the notifications feature writes.

mod attention;
mod audit;
mod command;
mod commands;
mod overview;
mod payment;
mod render;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::actions;
use super::auth::Caller;
use super::{encode, query_pairs, read_form, redirect, Console, ConsoleError};
use crate::listener::{self, Body};
use crate::store::console::{self as queries, AuditRow};

pub use commands::{filter_from_query, CommandsPage};
pub use payment::PaymentTotals;

use attention::{attention, dead_letter};
use audit::audit;
use command::command;
use commands::{commands, find};
use overview::{live, overview};
use payment::payment;

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

/// Every page's head: its title, the console's stylesheet and script.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · backoffice console" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

fn layout(title: &str, caller: &Caller, nav: Nav, body: Markup) -> Markup {
    let item = |to: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == to).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
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
                (head("Log in"))
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
        (Method::GET, ["payments", gateway, payment_id]) => {
            payment(console, caller, &segment(gateway)?, &segment(payment_id)?).await
        }
        (Method::GET, ["attention"]) => attention(console, caller, banner).await,
        (Method::GET, ["dead-letters", id]) => {
            dead_letter(console, caller, number(id)?, banner).await
        }
        (Method::GET, ["audit"]) => audit(console, caller, &query, banner).await,
        (Method::POST, path) => act(console, caller, request, path).await,
        _ => Err(ConsoleError::NotFound("no such page".into())),
    }
}

/// The actions (POST): each goes back to the page it was asked from.
async fn act(
    console: &Console,
    caller: &Caller,
    request: Request<Incoming>,
    path: &[&str],
) -> Result<Response<Body>, ConsoleError> {
    match path {
        ["commands", id, "reconcile"] => {
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
        ["dead-letters", id, "requeue"] => {
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
        ["dead-letters", "requeue"] => {
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
        ["holds", id, "release"] => {
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

#[cfg(test)]
mod tests {
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
}
