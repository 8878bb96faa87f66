//! The notification listener (`[notifications] listen`): the one HTTP server
//! of the worker that faces the internet, so it is a listener of its own,
//! never the admin one, served by [`crate::listener::serve`] (header and
//! request deadlines, a connection cap, accept back-off).
//!
//! `POST /notifications/{gateway}/{account}` for each configured account;
//! anything else is 404 (an unknown gateway or account) or 405 (another
//! method), and is not recorded. A body over `[notifications] max_body` is
//! 413 and is not read. Everything else is handed to
//! [`super::intake::receive`] as the raw bytes received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::intake::{self, Context};
use super::{NotificationReader, NotificationSettings};
use crate::config::{AccountSpec, ConfigError};
use crate::listener::{self, Body};

/// The readers of every configured account, by gateway and account name.
pub type Readers = BTreeMap<(&'static str, String), Arc<dyn NotificationReader>>;

/// One reader per configured account, from its table.
pub fn readers(accounts: &[AccountSpec]) -> Result<Readers, ConfigError> {
    let mut readers = Readers::new();
    for spec in accounts {
        let Some(kind) = crate::gateways::registry::find(&spec.gateway) else {
            continue;
        };
        readers.insert(
            (kind.name, spec.name.clone()),
            spec.settings.notifications(),
        );
    }
    Ok(readers)
}

struct Served {
    ctx: Arc<Context>,
    max_body: usize,
}

/// Binds now (a bad address fails start-up) and serves until `stop`.
pub async fn start(
    addr: SocketAddr,
    settings: &NotificationSettings,
    ctx: Arc<Context>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let (tcp, bound) = listener::bind(addr).await?;
    tracing::info!(%bound, "notification listener: POST /notifications/{{gateway}}/{{account}}");
    let served = Arc::new(Served {
        ctx,
        max_body: settings.max_body,
    });
    let task = listener::serve(
        "notifications",
        tcp,
        settings.limits,
        move |request| handle(served.clone(), request),
        stop,
    );
    Ok((bound, task))
}

async fn handle(served: Arc<Served>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(4, '/');
    let (Some("notifications"), Some(gateway), Some(account), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return listener::text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let Some(((gateway, account), reader)) = served
        .ctx
        .readers
        .iter()
        .find(|((g, a), _)| *g == gateway && a == account)
    else {
        return listener::text(StatusCode::NOT_FOUND, "no such gateway account\n".into());
    };
    if request.method() != Method::POST {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header("allow", "POST")
            .body(Body::from("POST only\n"))
            .expect("static response parts are valid");
    }
    let body = match listener::read_body(request.into_body(), served.max_body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let (status, text) =
        intake::receive(&served.ctx, gateway, account, reader.as_ref(), &body).await;
    listener::respond(
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        "application/json",
        text,
    )
}
