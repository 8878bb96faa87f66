//! The admin HTTP listener (`[admin] listen`, `--admin-listen`): Prometheus
//! `/metrics`, `/healthz` (the process is alive) and `/readyz` (broker and
//! database reachable, migrations applied); and, when `[console]` has
//! tokens, the operator console under `/console` and `/api/` (`crate::console`).
//!
//! It runs from start-up, before the database is reachable, so that an
//! orchestrator can see a worker that is alive but not yet ready. It is
//! served by [`crate::listener`] (timeouts, a connection cap), and the
//! durable figures of `/metrics` come from a [`Snapshot`]: however many
//! scrapers, the database is asked at most once per [`DURABLE_REFRESH`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::listener::{self, Body, ListenerSettings};
use crate::metrics::Durable;
use crate::pipeline::Worker;
use crate::snapshot::Snapshot;

/// How long a readiness or metrics probe waits for the database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the durable figures are read at most. Prometheus scrapes every
/// 15-60 s; a few seconds of staleness is what a gauge of a backlog can bear.
pub const DURABLE_REFRESH: Duration = Duration::from_secs(5);

/// How often readiness is checked against the database at most.
const READINESS_REFRESH: Duration = Duration::from_secs(1);

/// What the admin handlers share.
struct Admin {
    worker: Arc<Worker>,
    durable: Snapshot<Durable>,
    /// The database's part of readiness: `None` when ready, else why not.
    database: Snapshot<Option<String>>,
    /// The operator console, when `[console]` configures tokens.
    console: Option<Arc<crate::console::Console>>,
}

/// Binds the listener now (so a bad address fails start-up) and serves until
/// `stop`; the task ends when every connection is closed.
pub async fn start(
    addr: SocketAddr,
    limits: ListenerSettings,
    worker: Arc<Worker>,
    console: Option<Arc<crate::console::Console>>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let (tcp, bound) = listener::bind(addr).await?;
    tracing::info!(%bound, "admin listener: /metrics /healthz /readyz");
    let admin = Arc::new(Admin {
        worker,
        durable: Snapshot::new(DURABLE_REFRESH, PROBE_TIMEOUT),
        // The probe's own timeout answers first: a slow database is "not ready".
        database: Snapshot::new(READINESS_REFRESH, PROBE_TIMEOUT * 2),
        console,
    });
    let served = listener::serve(
        "admin",
        tcp,
        limits,
        move |request| handle(admin.clone(), request),
        stop,
    );
    Ok((bound, served))
}

async fn handle(admin: Arc<Admin>, request: Request<Incoming>) -> Response<Body> {
    let worker = &admin.worker;
    if let Some(console) = &admin.console {
        if crate::console::owns(request.uri().path()) {
            return crate::console::handle(console.clone(), request).await;
        }
    }
    match request.uri().path() {
        "/healthz" => listener::text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let (ready, body) = readiness(&admin).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            listener::respond(status, "application/json", body.to_string())
        }
        "/metrics" => {
            worker.metrics.set_in_flight(worker.driving());
            let durable = admin
                .durable
                .get(|| {
                    worker.metrics.durable_read();
                    crate::store::durable_figures(worker.store.pool())
                })
                .await;
            if let Some(figures) = durable {
                worker.metrics.set_durable(&figures.value, figures.age);
            }
            listener::respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                worker.metrics.render(),
            )
        }
        _ => listener::text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Ready when the broker session is up and the database answers with every
/// migration applied (checked at most once per [`READINESS_REFRESH`]). The
/// body says which part is missing.
async fn readiness(admin: &Admin) -> (bool, serde_json::Value) {
    let worker = &admin.worker;
    let broker = worker.broker_connected();
    let database = admin
        .database
        .get(|| async {
            let problem = match tokio::time::timeout(PROBE_TIMEOUT, worker.store.ready()).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            Ok::<_, std::convert::Infallible>(problem)
        })
        .await
        .map(|figures| figures.value)
        .unwrap_or_else(|| Some("not checked yet".into()));
    let ready = broker && database.is_none();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "broker": if broker { "connected" } else { "not connected" },
        "database": database.as_deref().unwrap_or("ok"),
    });
    (ready, body)
}
