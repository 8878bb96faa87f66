//! The accept loop and connections: hyper 1 HTTP/1.1 with keep-alive, one
//! task per connection, graceful shutdown, and real connection resets.
//!
//! A reset is asked for by the dispatcher returning [`Abort`] with `reset`
//! set. The service then fails, hyper drops the connection without writing
//! an answer, and [`ConnStream`]'s `Drop` sets SO_LINGER 0 just before the
//! socket closes, so the kernel sends RST instead of FIN: the client sees
//! "connection reset by peer", exactly as when a load balancer kills a
//! connection. Idle keep-alive connections are kept until the client closes
//! them (no header-read timeout), so a client never races an idle close.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::dispatch;
use super::simulation::Simulation;

/// Serves until the simulation's shutdown signal, then lets open
/// connections finish their current request for up to `grace`.
pub async fn run(listener: TcpListener, sim: Arc<Simulation>, grace: Duration) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = sim.stopping() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, sim.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning; the listener itself is still fine.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still busy after the grace period; closing them"
        );
        connections.shutdown().await;
    }
}

async fn connection(stream: TcpStream, sim: Arc<Simulation>) {
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ConnStream {
        inner: stream,
        reset: reset.clone(),
    });
    let service_sim = sim.clone();
    let service = service_fn(move |request| {
        let sim = service_sim.clone();
        let reset = reset.clone();
        async move {
            match dispatch::handle(&sim, request).await {
                Ok(response) => Ok(response),
                Err(abort) => {
                    if abort.reset {
                        reset.store(true, Ordering::SeqCst);
                    }
                    Err(abort)
                }
            }
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        _ = sim.stopping() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

/// A TCP stream that can be made to close with RST.
struct ConnStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl ConnStream {
    fn resetting(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }
}

impl Drop for ConnStream {
    fn drop(&mut self) {
        if self.resetting() {
            // Linger 0: close() discards unsent data and sends RST.
            let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.resetting() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.resetting() {
            // No FIN: the RST at drop must be the first thing the peer sees.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.resetting() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
