//! The admin HTTP listener (`--admin-listen`): Prometheus `/metrics`,
//! `/healthz` (the process is alive) and `/readyz` (broker and database
//! reachable, migrations applied).
//!
//! It runs from start-up, before the database is reachable, so that an
//! orchestrator can see a worker that is alive but not yet ready.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Worker;

/// How long a readiness or metrics probe waits for the database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the listener now (so a bad address fails start-up) and serves until `stop`.
pub async fn start(
    addr: SocketAddr,
    worker: Arc<Worker>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "admin listener: /metrics /healthz /readyz");
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "admin listener accept failed");
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let worker = worker.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(worker.clone(), request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn handle(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (ready, body) = readiness(&worker).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "application/json", body.to_string())
        }
        "/metrics" => {
            worker.metrics.set_in_flight(worker.driving());
            match tokio::time::timeout(
                PROBE_TIMEOUT,
                crate::store::durable_figures(worker.store.pool()),
            )
            .await
            {
                Ok(Ok(durable)) => worker.metrics.set_durable(&durable),
                Ok(Err(error)) => tracing::debug!(%error, "metrics: database figures unavailable"),
                Err(_) => tracing::debug!("metrics: database figures timed out"),
            }
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                worker.metrics.render(),
            )
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    Ok(response)
}

/// Ready when the broker session is up and the database answers with every
/// migration applied. The body says which part is missing.
async fn readiness(worker: &Worker) -> (bool, serde_json::Value) {
    let broker = worker.broker_connected();
    let database = match tokio::time::timeout(PROBE_TIMEOUT, worker.store.ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    let ready = broker && database.is_ok();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "broker": if broker { "connected".to_string() } else { "not connected".to_string() },
        "database": match &database { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
    });
    (ready, body)
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
