//! Helpers for the simulator's integration tests: clients that speak the two
//! wire formats from the spec, with checksums and signatures computed here
//! with md-5 and sha2 directly (never through the simulator's own code).

#![allow(dead_code)]

use std::time::Duration;

use backoffice_worker::simulator::{
    RunningSimulator, Simulator, SimulatorConfig, PAYMENTZ_BASE_PATH, SANDBOX_FRONTEND,
    SANDBOX_MEMBER_ID, SANDBOX_MERCHANT_ID, SANDBOX_MERCHANT_SECRET, SANDBOX_PARTNER_ID,
    SANDBOX_SECURE_KEY, SANDBOX_USERNAME,
};
use md5::{Digest as _, Md5};
use serde_json::{json, Map, Value};
use sha2::Sha384;

pub async fn start() -> RunningSimulator {
    start_with(SimulatorConfig::sandbox()).await
}

pub async fn start_with(config: SimulatorConfig) -> RunningSimulator {
    Simulator::start(config).await.expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

pub fn sha384_hex(text: &str) -> String {
    hex::encode(Sha384::digest(text.as_bytes()))
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `GET`/`POST`/`PUT` on the admin API, answering (status, JSON).
pub async fn admin(
    sim: &RunningSimulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method, format!("{}{path}", sim.base_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

pub async fn create_payment(sim: &RunningSimulator, body: Value) -> Value {
    let (status, value) = admin(sim, reqwest::Method::POST, "/admin/payments", Some(body)).await;
    assert_eq!(status, 201, "{value}");
    value
}

/// A Paymentz merchant, as a client would hold it.
pub struct Paymentz {
    pub base: String,
    pub client: reqwest::Client,
    pub partner_id: String,
    pub username: String,
    pub member_id: String,
    pub key: String,
}

impl Paymentz {
    pub fn sandbox(sim: &RunningSimulator) -> Paymentz {
        Paymentz::with_client(sim, client())
    }

    pub fn with_client(sim: &RunningSimulator, client: reqwest::Client) -> Paymentz {
        Paymentz {
            base: format!("{}{PAYMENTZ_BASE_PATH}", sim.base_url()),
            client,
            partner_id: SANDBOX_PARTNER_ID.into(),
            username: SANDBOX_USERNAME.into(),
            member_id: SANDBOX_MEMBER_ID.into(),
            key: SANDBOX_SECURE_KEY.into(),
        }
    }

    pub fn checksum(&self, parts: &[&str]) -> String {
        let mut text = format!("{}|{}", self.member_id, self.key);
        for part in parts {
            text.push('|');
            text.push_str(part);
        }
        md5_hex(&text)
    }

    pub async fn post_form(
        &self,
        path: &str,
        token: Option<&str>,
        fields: &[(&str, &str)],
    ) -> reqwest::Result<(u16, String)> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap());
        if let Some(token) = token {
            request = request.header("AuthToken", token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    pub async fn token_answer(&self, key: &str) -> Value {
        let (status, body) = self
            .post_form(
                "/authToken",
                None,
                &[
                    ("authentication.partnerId", &self.partner_id),
                    ("merchant.username", &self.username),
                    ("authentication.sKey", key),
                ],
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    pub async fn token(&self) -> String {
        let answer = self.token_answer(&self.key).await;
        assert_eq!(answer["result"]["code"], "200", "{answer}");
        answer["AuthToken"].as_str().unwrap().to_string()
    }

    /// A `payments/{id}` call with the right checksum for its type.
    pub async fn operation(
        &self,
        token: &str,
        payment_type: &str,
        id: &str,
        amount: Option<&str>,
    ) -> reqwest::Result<(u16, String)> {
        let checksum = match amount {
            Some(amount) => self.checksum(&[id, amount]),
            None => self.checksum(&[id]),
        };
        let mut fields = vec![
            ("authentication.memberId", self.member_id.as_str()),
            ("authentication.checksum", checksum.as_str()),
            ("paymentType", payment_type),
        ];
        if let Some(amount) = amount {
            fields.push(("amount", amount));
        }
        self.post_form(&format!("/payments/{id}"), Some(token), &fields)
            .await
    }

    /// Like [`Paymentz::operation`], asserting HTTP 200 and parsing JSON.
    pub async fn op(
        &self,
        token: &str,
        payment_type: &str,
        id: &str,
        amount: Option<&str>,
    ) -> Value {
        let (status, body) = self
            .operation(token, payment_type, id, amount)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn inquiry(&self, token: &str, id: &str) -> Value {
        self.op(token, "IN", id, None).await
    }
}

/// A Praxis merchant, as a client would hold it.
pub struct Praxis {
    pub base: String,
    pub client: reqwest::Client,
    pub merchant_id: String,
    pub secret: String,
    pub frontend: String,
}

impl Praxis {
    pub fn sandbox(sim: &RunningSimulator) -> Praxis {
        Praxis {
            base: sim.base_url(),
            client: client(),
            merchant_id: SANDBOX_MERCHANT_ID.into(),
            secret: SANDBOX_MERCHANT_SECRET.into(),
            frontend: SANDBOX_FRONTEND.into(),
        }
    }

    /// The spec's rule, spelled out: values of every field but `signature`,
    /// keys in byte order, concatenated, plus the secret, SHA-384.
    pub fn sign(&self, fields: &Map<String, Value>, scalars_only: bool) -> String {
        let mut keys: Vec<&String> = fields
            .iter()
            .filter(|(k, v)| {
                k.as_str() != "signature" && (!scalars_only || !(v.is_object() || v.is_array()))
            })
            .map(|(k, _)| k)
            .collect();
        keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut text = String::new();
        for key in keys {
            match &fields[key.as_str()] {
                Value::Null => {}
                Value::String(s) => text.push_str(s),
                other => text.push_str(&other.to_string()),
            }
        }
        text.push_str(&self.secret);
        sha384_hex(&text)
    }

    pub fn request(&self, trace_id: i64, timestamp: i64) -> Map<String, Value> {
        let mut fields = json!({
            "merchant_id": self.merchant_id,
            "frontend": self.frontend,
            "trace_id": trace_id,
            "timestamp": timestamp,
            "version": "1.1",
        })
        .as_object()
        .unwrap()
        .clone();
        let signature = self.sign(&fields, false);
        fields.insert("signature".into(), json!(signature));
        fields
    }

    pub async fn post(
        &self,
        endpoint: &str,
        body: &Map<String, Value>,
    ) -> reqwest::Result<(u16, Value)> {
        let response = self
            .client
            .post(format!("{}/api/{endpoint}", self.base))
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// A correctly signed, fresh call; asserts HTTP 200.
    pub async fn call(&self, endpoint: &str, trace_id: i64) -> Value {
        let (status, value) = self
            .post(endpoint, &self.request(trace_id, now()))
            .await
            .unwrap();
        assert_eq!(status, 200, "{value}");
        value
    }

    /// Whether an answer's signature verifies under the client rule.
    pub fn answer_verifies(&self, answer: &Value) -> bool {
        let map = answer.as_object().unwrap();
        map.get("signature").and_then(Value::as_str) == Some(self.sign(map, true).as_str())
    }
}

/// Whether an error's source chain holds an I/O error of this kind.
pub fn has_io_error(error: &reqwest::Error, kind: std::io::ErrorKind) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == kind {
                return true;
            }
        }
        source = e.source();
    }
    false
}
