//! How some answers look: the shape of a Praxis transaction in an answer,
//! and the bodies of the `redirect` and `huge_answer` faults.
//!
//! The Praxis 1.1 `find-transaction` answer is only inferred: the 1.2
//! documentation nests the transaction under `transaction`, the notification
//! form puts its fields at the top level. The simulator answers either way
//! ([`TransactionShape`]) so a client can be shown to read both. The huge
//! answer is streamed from one static buffer: a simulator that built a
//! 300 MiB body in memory would be the thing that runs out of it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};

/// The default size of a `huge_answer` body: larger than any sane cap, and
/// what a client that reads answers whole would have to hold.
pub const DEFAULT_HUGE_ANSWER_BYTES: u64 = 300 * 1024 * 1024;

/// Where a Praxis answer puts the transaction's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionShape {
    /// `{"status":0,...,"transaction":{"transaction_status":...}}` (API 1.2 documentation).
    #[default]
    Nested,
    /// `{"status":0,...,"transaction_status":...}` (the notification form).
    Flat,
}

/// The answer settings of a simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerSettings {
    pub praxis_transaction: TransactionShape,
    /// The `Location` of the `redirect` fault; `None` points back at this
    /// simulator under `/moved` plus the original path.
    pub redirect_location: Option<String>,
    /// The body size of the `huge_answer` fault.
    pub huge_answer_bytes: u64,
}

impl Default for AnswerSettings {
    fn default() -> Self {
        AnswerSettings {
            praxis_transaction: TransactionShape::Nested,
            redirect_location: None,
            huge_answer_bytes: DEFAULT_HUGE_ANSWER_BYTES,
        }
    }
}

/// The JSON form (`GET` / `PUT /admin/answers`); every field optional for updates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSettingsView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub praxis_transaction: Option<TransactionShape>,
    /// An empty string goes back to the default (this simulator, `/moved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_answer_bytes: Option<u64>,
}

impl AnswerSettings {
    pub fn view(&self) -> AnswerSettingsView {
        AnswerSettingsView {
            praxis_transaction: Some(self.praxis_transaction),
            redirect_location: Some(self.redirect_location.clone().unwrap_or_default()),
            huge_answer_bytes: Some(self.huge_answer_bytes),
        }
    }

    /// Applies a partial update; a location must be a valid header value.
    pub fn updated(&self, update: &AnswerSettingsView) -> Result<AnswerSettings, String> {
        let mut next = self.clone();
        if let Some(shape) = update.praxis_transaction {
            next.praxis_transaction = shape;
        }
        if let Some(location) = &update.redirect_location {
            if HeaderValue::from_str(location).is_err() {
                return Err(format!(
                    "redirect_location `{location}` is not a valid header value"
                ));
            }
            next.redirect_location = (!location.is_empty()).then(|| location.clone());
        }
        if let Some(bytes) = update.huge_answer_bytes {
            next.huge_answer_bytes = bytes;
        }
        Ok(next)
    }

    /// The `Location` for a redirected request to `path`.
    pub fn location_for(&self, path: &str) -> String {
        match &self.redirect_location {
            Some(location) => location.clone(),
            None => format!("/moved{path}"),
        }
    }
}

/// 64 KiB of padding, the unit the huge body is streamed in.
static PADDING: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A JSON answer padded out to exactly `total` bytes (or to the answer's own
/// length when that is larger): `{...the answer's fields...,"padding":"xxx...x"}`.
/// A client that read it whole would find a perfectly good answer in it.
#[derive(Debug)]
pub struct HugeBody {
    head: Option<Bytes>,
    padding_left: u64,
    tail: Option<Bytes>,
}

impl HugeBody {
    pub fn new(answer: &Bytes, total: u64) -> HugeBody {
        let text = String::from_utf8_lossy(answer);
        let inner = text.trim().trim_end_matches('}');
        let head = if inner.trim_start_matches('{').trim().is_empty() {
            "{\"padding\":\"".to_string()
        } else {
            format!("{inner},\"padding\":\"")
        };
        let tail = "\"}";
        let fixed = (head.len() + tail.len()) as u64;
        HugeBody {
            head: Some(Bytes::from(head)),
            padding_left: total.saturating_sub(fixed),
            tail: Some(Bytes::from_static(tail.as_bytes())),
        }
    }

    pub fn len(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.len() as u64)
            + self.padding_left
            + self.tail.as_ref().map_or(0, |t| t.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Body for HugeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.padding_left > 0 {
            let n = self.padding_left.min(PADDING.len() as u64) as usize;
            self.padding_left -= n as u64;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PADDING[..n])))));
        }
        Poll::Ready(self.tail.take().map(|tail| Ok(Frame::data(tail))))
    }

    fn is_end_stream(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_huge_body_is_the_answer_padded_to_size() {
        let answer = Bytes::from_static(br#"{"status":0,"description":"Ok"}"#);
        let body = HugeBody::new(&answer, 200_000);
        assert_eq!(body.len(), 200_000);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 200_000);
        let value: serde_json::Value = serde_json::from_slice(&collected).unwrap();
        assert_eq!(value["status"], 0);
        assert_eq!(value["padding"].as_str().unwrap().len(), 200_000 - 44);

        // Smaller than the answer itself: the answer, still well-formed.
        let small = HugeBody::new(&answer, 1)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert!(serde_json::from_slice::<serde_json::Value>(&small).is_ok());
    }

    #[test]
    fn settings_update_and_validate() {
        let settings = AnswerSettings::default();
        assert_eq!(settings.location_for("/api/x"), "/moved/api/x");
        let next = settings
            .updated(&AnswerSettingsView {
                praxis_transaction: Some(TransactionShape::Flat),
                redirect_location: Some("http://127.0.0.1:9/elsewhere".into()),
                huge_answer_bytes: Some(10),
            })
            .unwrap();
        assert_eq!(next.praxis_transaction, TransactionShape::Flat);
        assert_eq!(next.location_for("/api/x"), "http://127.0.0.1:9/elsewhere");
        assert_eq!(next.huge_answer_bytes, 10);
        assert!(settings
            .updated(&AnswerSettingsView {
                redirect_location: Some("bad\nvalue".into()),
                ..AnswerSettingsView::default()
            })
            .is_err());
        let cleared = next
            .updated(&AnswerSettingsView {
                redirect_location: Some(String::new()),
                ..AnswerSettingsView::default()
            })
            .unwrap();
        assert_eq!(cleared.redirect_location, None);
    }
}
