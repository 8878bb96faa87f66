//! The one way the worker serves HTTP: every listener it runs (the admin
//! listener today; the notification listener and the console tomorrow) goes
//! through [`serve`], so that none of them can be held open by a client.
//!
//! What a client cannot do here, and what stops it:
//! - hold a connection with a request head that never ends (slowloris), or an
//!   idle keep-alive connection: hyper's header-read timer, which only runs
//!   with a [`TokioTimer`] (without one the setting is silently ignored);
//! - send a body, or wait for an answer, for ever: each request has a deadline
//!   (`request_timeout`) covering its body and its handler;
//! - stop reading its answer: a write that makes no progress for
//!   `request_timeout` fails the connection ([`StallGuard`]);
//! - open connections without end: at most `max_connections` are served at
//!   once; the next ones get a short 503 and are closed at once;
//! - send a body larger than the handler wants: [`read_body`] answers 413.
//!
//! And the listener itself never spins: an accept error (out of file
//! descriptors, say) is logged once per burst and retried after a growing
//! pause ([`AcceptBackoff`]). Stopping ([`CancellationToken`]) stops accepting,
//! lets requests in progress finish within their deadline, and returns when
//! every connection is closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// Every response body the listeners send: small, built in memory.
pub type Body = Full<Bytes>;

/// What a caller decides for its listener. The defaults suit an internal
/// endpoint scraped every few seconds; an internet-facing listener should
/// pass tighter ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSettings {
    /// Connections served at once; the next ones get 503 and are closed.
    pub max_connections: usize,
    /// How long a client has to send a complete request head, and how long
    /// an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// How long one request may take, body and handler included; also how
    /// long a write to the client may make no progress.
    pub request_timeout: Duration,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Where connections come from: a TCP listener in production, anything that
/// yields connections (or errors) in tests.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Any stream of connections (or errors) as a source of connections; it ends
/// when the stream ends.
pub struct StreamAccept<S>(pub S);

impl<S, T> Accept for StreamAccept<S>
where
    S: futures::Stream<Item = io::Result<T>> + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = T;

    async fn accept(&mut self) -> io::Result<T> {
        use futures::StreamExt;
        match self.0.next().await {
            Some(next) => next,
            // A finished source behaves like a listener nobody connects to.
            None => std::future::pending().await,
        }
    }
}

/// Binds `addr` now, so that a bad address fails start-up rather than later.
pub async fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// The pause after an accept error, and whether to log it.
///
/// Accept errors come in bursts (the process is out of file descriptors
/// until some connections close); retrying at once would spin a core and
/// flood the log. The pause doubles from 5 ms to 1 s, and only the first
/// error of a burst is logged at `warn` (with the count when it ends).
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    pub const FIRST: Duration = Duration::from_millis(5);
    pub const MAX: Duration = Duration::from_secs(1);

    /// Records a failure: how long to wait, and whether it starts a burst
    /// (the one to log loudly).
    pub fn failed(&mut self) -> (Duration, bool) {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        let delay = Self::FIRST.saturating_mul(1 << doublings).min(Self::MAX);
        (delay, self.failures == 1)
    }

    /// Records a success; returns the length of the burst that just ended.
    pub fn succeeded(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }
}

/// Serves connections from `source` with `handler` until `stop`; the task
/// ends once every connection is closed. `name` labels the logs.
pub fn serve<A, H, F>(
    name: &'static str,
    mut source: A,
    settings: ListenerSettings,
    handler: H,
    stop: CancellationToken,
) -> JoinHandle<()>
where
    A: Accept,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                accepted = source.accept() => accepted,
                _ = stop.cancelled() => break,
            };
            let io = match accepted {
                Ok(io) => {
                    let burst = backoff.succeeded();
                    if burst > 1 {
                        tracing::info!(
                            listener = name,
                            failures = burst,
                            "accepting connections again"
                        );
                    }
                    io
                }
                Err(error) => {
                    let (delay, first) = backoff.failed();
                    if first {
                        tracing::warn!(listener = name, %error, "accept failed; backing off");
                    } else {
                        tracing::debug!(listener = name, %error, ?delay, "accept failed again");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refuse(io).await;
                continue;
            };
            let handler = handler.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                connection(io, settings, handler, stop).await;
                drop(slot);
            });
        }
        // Every slot back means every connection closed.
        let _ = slots
            .acquire_many(settings.max_connections as u32)
            .await
            .map(|all| all.forget());
    })
}

/// Over the cap: a short 503 (a fresh socket's buffer always takes it, but
/// the wait is bounded anyway) and close.
async fn refuse<T: AsyncWrite + Unpin>(mut io: T) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections";
    let _ = tokio::time::timeout(Duration::from_millis(50), async {
        io.write_all(BUSY).await?;
        io.shutdown().await
    })
    .await;
}

async fn connection<T, H, F>(io: T, settings: ListenerSettings, handler: H, stop: CancellationToken)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let deadline = settings.request_timeout;
    let service = service_fn(move |request: Request<Incoming>| {
        let answer = handler(request);
        async move {
            Ok::<_, Infallible>(match tokio::time::timeout(deadline, answer).await {
                Ok(response) => response,
                Err(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no answer within {deadline:?}\n"),
                ),
            })
        }
    });
    let io = TokioIo::new(StallGuard::new(io, settings.request_timeout));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(settings.request_timeout, conn).await;
        }
    }
}

/// Reads a request body of at most `max` bytes: 413 when larger (by its
/// `content-length` before reading anything, or once it passes `max`), 400
/// when the client breaks off. The request's deadline bounds how long it takes.
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Response<Body>> {
    use hyper::body::Body as _;
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max} bytes\n"),
        )
    };
    if body.size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(text(
            StatusCode::BAD_REQUEST,
            "request body could not be read\n".into(),
        )),
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

/// A response with a body of the given type.
pub fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Fails a write that makes no progress for `stall`: a client that stops
/// reading cannot keep a connection (and its slot) once the socket's buffer
/// is full. Reads are bounded by hyper's header timer and the request deadline.
pub struct StallGuard<T> {
    inner: T,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, stall: Duration) -> StallGuard<T> {
        StallGuard {
            inner,
            stall,
            timer: None,
        }
    }

    /// Progress resets the timer; no progress arms it, and an expired timer
    /// turns the pending write into an error.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                ready!(timer.as_mut().poll(cx));
                self.timer = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading",
                )))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_grows_to_a_second_and_logs_once_per_burst() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<(Duration, bool)> = (0..10).map(|_| backoff.failed()).collect();
        assert_eq!(delays[0], (Duration::from_millis(5), true));
        assert_eq!(delays[1], (Duration::from_millis(10), false));
        assert_eq!(delays[7], (Duration::from_millis(640), false));
        assert_eq!(delays[8], (Duration::from_secs(1), false));
        assert_eq!(delays[9], (Duration::from_secs(1), false));
        assert_eq!(backoff.succeeded(), 10);
        assert_eq!(backoff.failed(), (Duration::from_millis(5), true));
        for _ in 0..100 {
            backoff.failed();
        }
        assert_eq!(backoff.failed().0, Duration::from_secs(1), "no overflow");
    }
}
