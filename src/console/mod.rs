//! The operator console: server-rendered pages under `/console` and the same
//! data as JSON under `/api/`, on the admin listener (`src/admin.rs`), with
//! its assets embedded in the binary.
//!
//! It owns routing, access (`auth`: the two roles' tokens, login sessions,
//! the cross-site check), the pages (`pages`, maud templates that escape
//! every value), the JSON API (`api`) and the actions (`actions`: reconcile
//! now, requeue, release a hold; each audited in the transaction of its
//! effect). Its SQL is
//! in `store::console`, beside the queries the CLI shares with it.
//!
//! Access rules (shared/spec/config.md, "Listeners, the console,
//! notifications"): nothing without a token or a session (401; a page
//! redirects to the login form); a viewer's state-changing request is 403;
//! a cross-site state-changing request is 403. Every answer is marked
//! `no-store` and may not be framed; the pages load scripts and styles
//! from the console only (a content security policy without inline code).

mod actions;
mod api;
pub mod auth;
pub mod bench;
mod pages;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use time::OffsetDateTime;

use crate::config::Config;
use crate::listener::{self, Body};
use crate::pipeline::Worker;
use crate::snapshot::Snapshot;
use crate::store::console::OverviewFigures;
use crate::store::StoreError;

use auth::{Auth, Caller};

/// How often the overview's figures are read at most, for every viewer
/// together: pages refresh every [`LIVE_REFRESH`].
pub const OVERVIEW_REFRESH: Duration = Duration::from_secs(2);
/// How often an open overview asks for fresh figures.
pub const LIVE_REFRESH: Duration = Duration::from_secs(3);
/// How long the overview's load may take before the last figures are shown.
const OVERVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest form or JSON body an action takes.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Rows on one page of a list.
pub const PAGE_SIZE: i64 = 50;
/// The console's connections to the database: a few, so that however many
/// people look, the worker's own pool is not crowded out.
const CONNECTIONS: u32 = 4;
/// The longest a page's statement may run (a filter no index serves, on a
/// huge table): the page fails with 503 rather than hold a connection.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most dead letters one "requeue all that match" publishes.
pub const REQUEUE_CAP: i64 = 500;

/// What the console's handlers share.
pub struct Console {
    pub(crate) worker: Arc<Worker>,
    /// For the broker connection a requeue opens.
    pub(crate) config: Arc<Config>,
    pub(crate) auth: Auth,
    overview: Snapshot<OverviewFigures>,
    /// The console's own connections, with PostgreSQL's default planning.
    /// The worker's sessions force generic plans (`store::SESSION_SETTINGS`),
    /// right for its key lookups and wrong here: a generic plan of the
    /// command list does not know its `LIMIT`, and sorted a million rows
    /// (1 s a page) where the actual plan reads 51 index entries.
    pool: sqlx::PgPool,
}

/// Why a request could not be answered, classified once into a status.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    #[error("the database did not answer in time")]
    Timeout,
}

impl From<sqlx::Error> for ConsoleError {
    fn from(error: sqlx::Error) -> Self {
        ConsoleError::Store(error.into())
    }
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadInput(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Store(_) | ConsoleError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<crate::ops::OpsError> for ConsoleError {
    fn from(error: crate::ops::OpsError) -> Self {
        match error {
            crate::ops::OpsError::NotFound(why) => ConsoleError::NotFound(why),
            crate::ops::OpsError::Database(e) => ConsoleError::Store(e),
            other => ConsoleError::BadInput(other.to_string()),
        }
    }
}

impl Console {
    pub fn new(worker: Arc<Worker>, config: Arc<Config>) -> Result<Arc<Console>, StoreError> {
        use secrecy::ExposeSecret;
        use sqlx::ConnectOptions as _;
        use std::str::FromStr as _;
        let options =
            sqlx::postgres::PgConnectOptions::from_str(config.database.url.expose_secret())?
                .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
                .options([(
                    "statement_timeout",
                    STATEMENT_TIMEOUT.as_millis().to_string(),
                )]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(Arc::new(Console {
            auth: Auth::new(config.console.clone()),
            worker,
            config,
            overview: Snapshot::new(OVERVIEW_REFRESH, OVERVIEW_TIMEOUT),
            pool,
        }))
    }

    /// The overview's figures, shared by every viewer and script: the
    /// database is asked at most once per [`OVERVIEW_REFRESH`].
    pub(crate) async fn overview(&self) -> Option<crate::snapshot::Figures<OverviewFigures>> {
        self.overview
            .get(|| async {
                let mut conn = self.pool.acquire().await?;
                crate::store::console::overview(&mut conn).await
            })
            .await
    }

    /// How many times the overview's figures were read (for tests).
    pub fn overview_loads(&self) -> u64 {
        self.overview.loads()
    }

    /// A connection for one page's queries.
    pub(crate) async fn conn(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, ConsoleError> {
        Ok(self.pool.acquire().await?)
    }
}

/// Whether the console answers `path` (the admin listener asks).
pub fn owns(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/") || path.starts_with("/api/")
}

/// Answers one request under `/console` or `/api/`.
pub async fn handle(console: Arc<Console>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let api = path.starts_with("/api/");
    let mut response = if api {
        api::handle(&console, request, &path["/api/".len()..]).await
    } else {
        pages_route(&console, request, path.trim_start_matches("/console")).await
    };
    harden(&mut response);
    response
}

/// The console's paths that need no credentials, and the rest behind them.
async fn pages_route(
    console: &Arc<Console>,
    request: Request<Incoming>,
    rest: &str,
) -> Response<Body> {
    let rest = rest.trim_start_matches('/').to_string();
    let method = request.method().clone();
    match (method.clone(), rest.as_str()) {
        (Method::GET, "assets/console.css") => {
            return asset(
                "text/css; charset=utf-8",
                include_str!("assets/console.css"),
            )
        }
        (Method::GET, "assets/console.js") => {
            return asset(
                "text/javascript; charset=utf-8",
                include_str!("assets/console.js"),
            )
        }
        (Method::GET, "login") => return pages::login_page(None, StatusCode::OK),
        (Method::POST, "login") => return login(console, request).await,
        (Method::POST, "logout") => {
            if let Some(id) = auth::cookie(request.headers(), auth::COOKIE) {
                console.auth.close_session(&id);
            }
            let mut r = redirect("/console/login");
            r.headers_mut().insert(
                hyper::header::SET_COOKIE,
                auth::cleared_cookie().parse().expect("valid header"),
            );
            return r;
        }
        _ => {}
    }
    let Some(caller) = console.auth.caller(request.headers()) else {
        return match method {
            Method::GET | Method::HEAD => redirect("/console/login"),
            _ => listener::text(StatusCode::UNAUTHORIZED, "log in first\n".into()),
        };
    };
    if method == Method::POST {
        if let Err(refused) = may_change(&caller, request.headers()) {
            return pages::error_page(&caller, &refused);
        }
    }
    match pages::route(console, &caller, request, &rest).await {
        Ok(response) => response,
        Err(error) => pages::error_page(&caller, &error),
    }
}

/// The rules of every state-changing request: not cross-site (403), and
/// an operator's (403 for a viewer).
pub(crate) fn may_change(caller: &Caller, headers: &hyper::HeaderMap) -> Result<(), ConsoleError> {
    if let Some(why) = auth::cross_site(headers) {
        return Err(ConsoleError::Forbidden(format!(
            "refused: a cross-site request ({why})"
        )));
    }
    if !caller.role.may_act() {
        return Err(ConsoleError::Forbidden(
            "refused: a viewer may look, not act (log in with the operator token)".into(),
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
}

/// Exchanges a token for a session cookie. Cross-site logins are refused
/// too (login forgery would put a victim in the attacker's session).
async fn login(console: &Console, request: Request<Incoming>) -> Response<Body> {
    if let Some(why) = auth::cross_site(request.headers()) {
        return pages::login_page(
            Some(&format!("refused: a cross-site request ({why})")),
            StatusCode::FORBIDDEN,
        );
    }
    let form: LoginForm = match read_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    match console.auth.role_of_token(form.token.trim()) {
        Some(role) => {
            let actor = auth::actor_name(&form.name, role);
            tracing::info!(actor = %crate::telemetry::Escaped::new(&actor), "console login");
            let id = console.auth.open_session(role, &actor);
            let mut r = redirect("/console");
            r.headers_mut().insert(
                hyper::header::SET_COOKIE,
                auth::session_cookie(&id).parse().expect("valid header"),
            );
            r
        }
        None => pages::login_page(
            Some("That token opens nothing here."),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

/// Reads a form (or JSON, for the API) body into `T`.
pub(crate) async fn read_form<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let json = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = listener::read_body(request.into_body(), MAX_FORM_BYTES).await?;
    let parsed = if json {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    } else if body.is_empty() {
        serde_urlencoded::from_str("").map_err(|e| e.to_string())
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| listener::text(StatusCode::BAD_REQUEST, format!("unreadable form: {e}\n")))
}

fn asset(content_type: &str, body: &'static str) -> Response<Body> {
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid");
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        "private, max-age=300".parse().expect("valid header"),
    );
    r
}

/// A redirect after a form (303: the browser follows with a GET).
pub(crate) fn redirect(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(hyper::header::LOCATION, to)
        .body(Full::new(Bytes::new()))
        .expect("valid redirect")
}

/// Headers every console answer carries: nothing cached, nothing framed, no
/// code but the console's own, no referrer leaving it.
fn harden(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    let set = |headers: &mut hyper::HeaderMap, name: &'static str, value: &'static str| {
        if !headers.contains_key(name) {
            headers.insert(name, hyper::header::HeaderValue::from_static(value));
        }
    };
    set(headers, "cache-control", "no-store");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "same-origin");
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
}

/// Percent-encodes a path segment or query value (everything but the
/// unreserved characters).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded path segment; `None` when it is not UTF-8.
pub fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The query string's pairs.
pub(crate) fn query_pairs(request: &Request<Incoming>) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A time as the console shows it: UTC, to the second.
pub fn utc(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| at.to_string())
}

/// How long ago, in the largest unit that says it: `42 s`, `7 min`, `3 h`, `2 d`.
pub fn age(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - at).whole_seconds();
    let ago = |n: i64, unit: &str| format!("{n} {unit} ago");
    match secs {
        s if s < 0 => "in the future".into(),
        s if s < 90 => ago(s, "s"),
        s if s < 90 * 60 => ago(s / 60, "min"),
        s if s < 48 * 3600 => ago(s / 3600, "h"),
        s => ago(s / 86_400, "d"),
    }
}

/// A duration in seconds as people read it.
pub fn span(secs: f64) -> String {
    match secs {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 90.0 * 60.0 => format!("{:.0} min", s / 60.0),
        s if s < 48.0 * 3600.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_round_trip() {
        for id in ["order-1", "a/b c%d", "é_x.y~z", ""] {
            assert_eq!(decode(&encode(id)).as_deref(), Some(id));
        }
        assert_eq!(decode("%ff"), None);
        assert_eq!(decode("a%2").as_deref(), Some("a%2"));
    }

    #[test]
    fn ages_read_naturally() {
        let now = time::macros::datetime!(2026-12-04 12:00 UTC);
        assert_eq!(age(now - time::Duration::seconds(42), now), "42 s ago");
        assert_eq!(age(now - time::Duration::minutes(7), now), "7 min ago");
        assert_eq!(age(now - time::Duration::hours(3), now), "3 h ago");
        assert_eq!(age(now - time::Duration::days(3), now), "3 d ago");
        assert_eq!(utc(now), "2026-12-04 12:00:00Z");
    }
}
