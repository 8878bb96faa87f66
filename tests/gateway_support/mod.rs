//! Helpers shared by the gateway-client and `call` tests: a simulator per
//! test, the worker's own config text pointing at it, and checks that no
//! secret reached anything recorded or printed.
//!
//! Checksums and signatures are computed here with md-5 and sha2 directly,
//! from the spec's rules, never through the crate's own signing code, so a
//! client that signs wrongly cannot agree with itself.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backoffice_worker::config::Config;
use backoffice_worker::gateways::http::{HttpSettings, HttpTransport};
use backoffice_worker::gateways::registry::Accounts;
use backoffice_worker::gateways::{Gateway, GatewayCall};
use backoffice_worker::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use md5::{Digest as _, Md5};
use serde_json::{Map, Value};
use sha2::Sha384;

pub const PARTNER_ID: &str = "197";
pub const USERNAME: &str = "sandbox-merchant";
pub const MEMBER_ID: &str = "11359";
pub const SECURE_KEY: &str = "sandbox-secure-key";
pub const MERCHANT_ID: &str = "Test-Integration-Merchant";
pub const MERCHANT_SECRET: &str = "sandbox-merchant-secret";
pub const FRONTEND: &str = "Integration TEST USD";

/// The prefix of every simulator token (base64url of `{"`): any JWT-shaped
/// text in a record is a leaked token, whichever token it was.
pub const TOKEN_PREFIX: &str = "eyJ";

pub async fn start() -> RunningSimulator {
    Simulator::start(SimulatorConfig::sandbox())
        .await
        .expect("simulator starts")
}

/// Account credentials as a config file holds them.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub partner_id: String,
    pub username: String,
    pub member_id: String,
    pub secure_key: String,
    pub merchant_id: String,
    pub merchant_secret: String,
    pub frontend: String,
}

impl Credentials {
    pub fn sandbox() -> Credentials {
        Credentials {
            partner_id: PARTNER_ID.into(),
            username: USERNAME.into(),
            member_id: MEMBER_ID.into(),
            secure_key: SECURE_KEY.into(),
            merchant_id: MERCHANT_ID.into(),
            merchant_secret: MERCHANT_SECRET.into(),
            frontend: FRONTEND.into(),
        }
    }

    /// `[accounts.paymentz.<account>]` and `[accounts.praxis.<account>]` at `base_url`.
    pub fn tables(&self, account: &str, base_url: &str) -> String {
        format!(
            r#"
[accounts.paymentz.{account}]
base_url = "{base_url}"
partner_id = "{}"
username = "{}"
member_id = "{}"
secure_key = "{}"

[accounts.praxis.{account}]
base_url = "{base_url}"
merchant_id = "{}"
merchant_secret = "{}"
frontend = "{}"
"#,
            self.partner_id,
            self.username,
            self.member_id,
            self.secure_key,
            self.merchant_id,
            self.merchant_secret,
            self.frontend
        )
    }

    pub fn secrets(&self) -> Vec<String> {
        vec![self.secure_key.clone(), self.merchant_secret.clone()]
    }
}

/// The config text the worker would read, both accounts at `base_url`.
pub fn config_text(base_url: &str) -> String {
    Credentials::sandbox().tables("default", base_url)
}

/// Builds the accounts exactly as the worker does: parse the text, then
/// `Config::clients` with the text's `[http]` settings but 1 s timeouts.
pub fn accounts_from(text: &str) -> Accounts {
    let config = Config::parse(Path::new("gateway-test.toml"), text, |_| None)
        .expect("the test config is valid");
    let transport = HttpTransport::new(HttpSettings {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..config.http.clone()
    });
    config.clients(&transport)
}

pub fn client(accounts: &Accounts, gateway: &str) -> Arc<dyn Gateway> {
    accounts
        .get(gateway, "default")
        .unwrap_or_else(|| panic!("no default {gateway} account"))
        .clone()
}

pub fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

pub fn sha384_hex(text: &str) -> String {
    hex::encode(Sha384::digest(text.as_bytes()))
}

/// The spec's Paymentz checksum: `memberId|secureKey|parts...`.
pub fn paymentz_checksum(parts: &[&str]) -> String {
    let mut text = format!("{MEMBER_ID}|{SECURE_KEY}");
    for part in parts {
        text.push('|');
        text.push_str(part);
    }
    md5_hex(&text)
}

/// The spec's Praxis rule: values of every field but `signature`, keys in
/// byte order, concatenated, plus the secret, SHA-384, lowercase hex.
pub fn praxis_signature(fields: &Map<String, Value>, secret: &str) -> String {
    let mut keys: Vec<&String> = fields.keys().filter(|k| *k != "signature").collect();
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut text = String::new();
    for key in keys {
        match &fields[key.as_str()] {
            Value::Null => {}
            Value::String(s) => text.push_str(s),
            other => text.push_str(&other.to_string()),
        }
    }
    text.push_str(secret);
    sha384_hex(&text)
}

/// Fails when any secret, or anything shaped like a token, appears in the
/// serialized exchanges, in the answer's description and response, or in
/// the call's `Debug` output.
pub fn assert_no_secrets(call: &GatewayCall, secrets: &[String]) {
    let exchanges = serde_json::to_string(&call.exchanges).expect("exchanges serialize");
    let answer = format!(
        "{:?} {}",
        call.answer.description,
        call.answer
            .response
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
    );
    let debug = format!("{call:?}");
    for (what, text) in [
        ("exchanges", &exchanges),
        ("answer", &answer),
        ("debug", &debug),
    ] {
        for secret in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} leaks a secret: {text}"
            );
        }
        assert!(!text.contains(TOKEN_PREFIX), "{what} leaks a token: {text}");
    }
}

/// A real TCP listener that stands where a redirect or a proxy would send a
/// request, counts every connection, keeps each request's first line, and
/// answers 503: proof of what reached it (or that nothing did).
pub struct Bystander {
    pub port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    request_lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Bystander {
    pub async fn start() -> Bystander {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let request_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, lines) = (connections.clone(), request_lines.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let lines = lines.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    if let Some(line) = text.lines().next().filter(|l| !l.is_empty()) {
                        lines.lock().unwrap().push(line.to_string());
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        Bystander {
            port,
            connections,
            request_lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn request_lines(&self) -> Vec<String> {
        self.request_lines.lock().unwrap().clone()
    }
}
