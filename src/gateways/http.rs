//! The HTTP transport every gateway client shares.
//!
//! It owns the connection pool, the timeouts and what the worker is willing
//! to accept from the other end, and turns every way an HTTP exchange can go
//! wrong into a [`GatewayError`]. What a failure means for retry safety is
//! therefore decided here once, for all gateways, from what the transport saw
//! (did the connection open? did an answer start? was it too large, or a
//! redirect?), never from error text.
//!
//! A gateway is trusted with its answer, not with where our requests go or
//! how much we read: redirects are never followed (the signed request and the
//! secure key would be re-sent to whatever host a `Location` names), the
//! environment's `HTTP(S)_PROXY` is ignored (a proxy is used only when
//! `[http] proxy` names one), and no more than `[http] max_answer_bytes` of
//! an answer is read.

use std::fmt;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use url::Url;

use super::GatewayError;
use crate::config::reader::{ConfigError, Section};

/// Big enough for a `getTransactionList` page of 100 rows many times over,
/// small enough that a thousand answers in flight cannot exhaust memory.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The text appended to a body cut at the cap, so that nobody reading the
/// attempt record mistakes the stored prefix for the whole answer.
pub fn truncation_marker(limit: usize) -> String {
    format!("\n[truncated by backoffice-worker: the answer exceeded max_answer_bytes ({limit} bytes); the rest was not read]")
}

/// The longest `Location` kept in a record: enough to show where a redirect
/// pointed, not a way for a gateway to write megabytes into our database.
const MAX_LOCATION_CHARS: usize = 512;

/// The transport's settings: `[http]` in the config file.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// How long to wait for a TCP/TLS connection. Failing here means nothing was sent.
    pub connect_timeout: Duration,
    /// How long to wait for the whole answer once connected.
    pub request_timeout: Duration,
    /// Whether a base URL may be plain `http` to a host that is not this
    /// machine. Loopback `http` (the simulator) is always allowed.
    pub allow_http: bool,
    /// The only proxy ever used; `None` means direct connections, whatever
    /// the environment says.
    pub proxy: Option<ProxyUrl>,
    /// The most bytes of one answer that are read; a longer answer is unreadable.
    pub max_answer_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            allow_http: false,
            proxy: None,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("allow_http", &self.allow_http)
            .field("proxy", &self.proxy.as_ref().map(ProxyUrl::as_str))
            .field("max_answer_bytes", &self.max_answer_bytes)
            .finish()
    }
}

/// A proxy URL that the HTTP client is sure to accept: `http` or `https`,
/// with a host, without credentials (nothing secret ends up in settings that
/// are printed), path, query or fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(Url);

impl ProxyUrl {
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("malformed URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "proxy URL scheme must be http or https, not `{}`",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("proxy URL has no host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "must not contain credentials (proxy authentication is not supported)".into(),
            );
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(
                "must be scheme://host:port only, without a path, query or fragment".into(),
            );
        }
        Ok(ProxyUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `url` points at this machine: `localhost`, a loopback address, or
/// an unspecified one (`0.0.0.0`, `::`), which connects to this machine too.
/// Plain `http` there never leaves the host, so it needs no opt-in.
pub fn is_local(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        None => false,
    }
}

/// Why a base URL may not be used with these settings, if it may not.
pub fn refuse_base_url(url: &Url, settings: &HttpSettings) -> Option<String> {
    match url.scheme() {
        "https" => None,
        "http" if is_local(url) || settings.allow_http => None,
        "http" => Some(format!(
            "plain http to `{}` would send credentials and payment data unencrypted: use https, \
             or set `allow_http = true` in [http] (loopback addresses are always allowed)",
            url.host_str().unwrap_or_default()
        )),
        other => Some(format!("URL scheme must be http or https, not `{other}`")),
    }
}

/// A gateway account's base URL (`key` of its table, read with
/// [`Section::base_url`]), refused when it is plain `http` to another machine
/// and `[http] allow_http` is not set.
pub fn base_url(
    section: &Section<'_>,
    key: &str,
    settings: &HttpSettings,
) -> Result<String, ConfigError> {
    let text = section.base_url(key)?;
    let url = Url::parse(&text).map_err(|e| section.error(key, format!("malformed URL: {e}")))?;
    match refuse_base_url(&url, settings) {
        Some(problem) => Err(section.error(key, problem)),
        None => Ok(text),
    }
}

/// One HTTP exchange as it ended.
#[derive(Debug)]
pub struct HttpReply {
    pub started_at: OffsetDateTime,
    pub latency: Duration,
    /// The status and the body as received, whenever an answer started: cut
    /// at the cap and marked when it was longer (see [`truncation_marker`]).
    pub received: Option<(u16, String)>,
    /// Why the answer cannot be read as the gateway's reply: the connection
    /// failed, it was a redirect, or it was too large. `None` when `received`
    /// is for the gateway's classifier to read.
    pub failure: Option<GatewayError>,
}

impl HttpReply {
    /// The status and whole body for the classifier, or the failure.
    pub fn answer(&self) -> Result<(u16, &str), GatewayError> {
        match (&self.failure, &self.received) {
            (Some(error), _) => Err(error.clone()),
            (None, Some((status, body))) => Ok((*status, body)),
            (None, None) => Err(GatewayError::Dropped("no answer".into())),
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        self.received.as_ref().map(|(status, _)| *status)
    }

    pub fn body(&self) -> Option<&str> {
        self.received.as_ref().map(|(_, body)| body.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    settings: HttpSettings,
}

impl HttpTransport {
    pub fn new(settings: HttpSettings) -> HttpTransport {
        let builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            // At most 512 idle connections per host, under the 2,000 in
            // flight: with no cap the pool kept every connection of a burst,
            // and peak RSS at 300 ms gateway latency rose from 130-134 to
            // 144-150 MiB (the limit is 150); the cap costs ~60 reconnects
            // a second at saturation (docs/performance.md, seventh session).
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            // A redirect is an answer to record, never a place to send the
            // request (with its key or signature) again.
            .redirect(reqwest::redirect::Policy::none())
            // The environment's HTTP(S)_PROXY and ALL_PROXY are ignored.
            .no_proxy()
            .user_agent(concat!("backoffice-worker/", env!("CARGO_PKG_VERSION")));
        let builder = match &settings.proxy {
            Some(proxy) => builder.proxy(
                reqwest::Proxy::all(proxy.0.clone())
                    .expect("a ProxyUrl is an http(s) URL with a host"),
            ),
            None => builder,
        };
        let client = builder
            .build()
            .expect("the HTTP client settings are static and valid");
        HttpTransport { client, settings }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Sends a request and reads at most `max_answer_bytes` of the answer.
    /// Any status other than a redirect is returned for the classifier; use
    /// [`status_error`] to decide what a non-2xx status means.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> HttpReply {
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let (received, failure) = match request.send().await {
            Err(error) => (None, Some(self.classify(error))),
            Ok(response) => self.read(response).await,
        };
        HttpReply {
            started_at,
            latency: clock.elapsed(),
            received,
            failure,
        }
    }

    /// Reads the body chunk by chunk, stopping at the cap: memory per answer
    /// is bounded by the cap whatever the gateway sends or claims to send.
    async fn read(
        &self,
        mut response: reqwest::Response,
    ) -> (Option<(u16, String)>, Option<GatewayError>) {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|value| printable(&String::from_utf8_lossy(value.as_bytes())));
        let limit = self.settings.max_answer_bytes;
        let mut body: Vec<u8> = Vec::new();
        let mut oversized = false;
        let mut broken = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = limit - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        oversized = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => {
                    broken = Some(self.classify(error));
                    break;
                }
            }
        }
        // Dropping the response here closes the connection of an answer not
        // read to its end, so the rest is never buffered anywhere.
        drop(response);
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if oversized {
            text.push_str(&truncation_marker(limit));
        }
        let failure = if (300..400).contains(&status) {
            Some(GatewayError::Redirected { status, location })
        } else if oversized {
            Some(GatewayError::Oversized { limit })
        } else {
            broken
        };
        (Some((status, text)), failure)
    }

    fn classify(&self, error: reqwest::Error) -> GatewayError {
        // Order matters: a connect timeout is both `is_connect` and `is_timeout`,
        // and it is safe to resend because nothing left this process.
        if error.is_connect() {
            GatewayError::Connect(describe(&error))
        } else if error.is_timeout() {
            GatewayError::Timeout(self.settings.request_timeout)
        } else {
            GatewayError::Dropped(describe(&error))
        }
    }
}

/// A header value fit for a record: control characters replaced, length bounded.
fn printable(text: &str) -> String {
    text.chars()
        .take(MAX_LOCATION_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// What an HTTP status means when it is not a success. `None` for 2xx.
pub fn status_error(status: u16) -> Option<GatewayError> {
    match status {
        200..=299 => None,
        300..=399 => Some(GatewayError::Redirected {
            status,
            location: None,
        }),
        408 | 429 => Some(GatewayError::NotProcessed { status }),
        500..=599 => Some(GatewayError::ServerError { status }),
        _ => Some(GatewayError::ClientError { status }),
    }
}

/// The error and its causes on one line, without the URL (it may carry ids we
/// would rather keep out of logs; the exchange record has the URL anyway).
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = error.without_url_ref().to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(&format!(" ({url})"), "");
            text = text.replace(url.as_str(), "<url>");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateways::Classification;

    #[test]
    fn statuses_are_classified_by_what_they_say_about_processing() {
        assert!(status_error(200).is_none());
        assert!(status_error(204).is_none());
        assert_eq!(
            status_error(429).unwrap().classification(),
            Classification::NotApplied
        );
        assert_eq!(
            status_error(408).unwrap().classification(),
            Classification::NotApplied
        );
        for s in [500, 502, 503, 504] {
            assert_eq!(
                status_error(s).unwrap().classification(),
                Classification::Ambiguous
            );
        }
        for s in [400, 401, 403, 404] {
            assert_eq!(
                status_error(s).unwrap().classification(),
                Classification::Declined
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_applied() {
        // Bind and drop to get a port that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let transport = HttpTransport::new(HttpSettings::default());
        let reply = transport
            .send(
                transport
                    .client()
                    .post(format!("http://127.0.0.1:{port}/x")),
            )
            .await;
        let error = reply.answer().unwrap_err();
        assert_eq!(
            error.classification(),
            Classification::NotApplied,
            "{error}"
        );
        assert_eq!(reply.received, None);
    }

    #[test]
    fn redirects_are_never_a_success() {
        for s in [300, 301, 302, 303, 304, 307, 308, 399] {
            let error = status_error(s).unwrap();
            assert!(
                matches!(error, GatewayError::Redirected { status, .. } if status == s),
                "{s}"
            );
            assert_ne!(error.classification(), Classification::Succeeded);
        }
    }

    #[test]
    fn plain_http_is_for_this_machine_unless_allowed() {
        let strict = HttpSettings::default();
        let open = HttpSettings {
            allow_http: true,
            ..HttpSettings::default()
        };
        let url = |text: &str| Url::parse(text).unwrap();
        for local in [
            "http://127.0.0.1:8099",
            "http://127.8.9.10/",
            "http://localhost:1",
            "http://LOCALHOST",
            "http://[::1]:80",
            "http://0.0.0.0:8099",
            "https://gw.example.com",
        ] {
            assert_eq!(refuse_base_url(&url(local), &strict), None, "{local}");
        }
        for remote in [
            "http://gw.example.com",
            "http://10.0.0.5:8080",
            "http://localhost.example.com",
            "http://[2001:db8::1]/",
        ] {
            let problem = refuse_base_url(&url(remote), &strict).expect(remote);
            assert!(problem.contains("allow_http = true"), "{problem}");
            assert_eq!(refuse_base_url(&url(remote), &open), None, "{remote}");
        }
        assert!(refuse_base_url(&url("ftp://gw.example.com"), &open).is_some());
    }

    #[test]
    fn proxy_urls_are_checked_before_the_client_sees_them() {
        let proxy = ProxyUrl::parse("http://proxy.internal:3128").unwrap();
        assert_eq!(proxy.as_str(), "http://proxy.internal:3128/");
        assert!(ProxyUrl::parse("https://proxy.internal").is_ok());
        for bad in [
            "proxy.internal:3128",
            "socks5://proxy.internal:1080",
            "http://user:pass@proxy.internal:3128",
            "http://proxy.internal:3128/path",
            "http://proxy.internal:3128?x=1",
            "not a url",
        ] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad}");
        }
        // Building a client with it never panics.
        let _ = HttpTransport::new(HttpSettings {
            proxy: Some(proxy),
            ..HttpSettings::default()
        });
    }
}
