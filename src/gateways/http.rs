//! The HTTP transport every gateway client shares.
//!
//! It owns the connection pool and the timeouts, and turns every way an HTTP
//! exchange can go wrong into a [`GatewayError`]. What a failure means for
//! retry safety is therefore decided here once, for all gateways, from what
//! the transport saw (did the connection open? did an answer start?), never
//! from error text.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::GatewayError;

/// Timeouts for gateway calls. `[http]` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// How long to wait for a TCP/TLS connection. Failing here means nothing was sent.
    pub connect_timeout: Duration,
    /// How long to wait for the whole answer once connected.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A completed HTTP exchange: the status and body, or the failure.
#[derive(Debug)]
pub struct HttpReply {
    pub started_at: OffsetDateTime,
    pub latency: Duration,
    pub result: Result<(u16, String), GatewayError>,
}

#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    settings: HttpSettings,
}

impl HttpTransport {
    pub fn new(settings: HttpSettings) -> HttpTransport {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .user_agent(concat!("backoffice-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client settings are static and valid");
        HttpTransport { client, settings }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn settings(&self) -> HttpSettings {
        self.settings
    }

    /// Sends a request and reads the whole body. Any status is returned as is;
    /// use [`status_error`] to decide what a non-2xx status means.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> HttpReply {
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let result = async {
            let response = request.send().await.map_err(|e| self.classify(e))?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| self.classify(e))?;
            Ok((status, body))
        }
        .await;
        HttpReply {
            started_at,
            latency: clock.elapsed(),
            result,
        }
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

/// What an HTTP status means when it is not a success. `None` for 2xx.
pub fn status_error(status: u16) -> Option<GatewayError> {
    match status {
        200..=299 => None,
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
        let error = reply.result.unwrap_err();
        assert_eq!(
            error.classification(),
            Classification::NotApplied,
            "{error}"
        );
    }
}
