//! Properties of the Paymentz answer classifiers, over arbitrary input:
//! HTTP statuses, arbitrary bytes, arbitrary JSON, and JSON shaped like real
//! answers with arbitrary values in the fields that matter.
//!
//! Whatever comes in, each classifier returns (never panics) exactly one
//! reading, whose classification agrees with its error, and it says
//! `Succeeded` only when the answer itself says so: a 2xx whose `result.code`
//! is a success code for that call (checked here independently of the
//! client's own code comparison).

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::classify::{
    classify_inquiry, classify_list_page, classify_payment, classify_token, Page, Verdict,
};
use super::wire::PaymentType;
use crate::gateways::http::status_error;
use crate::gateways::{Answer, Classification};

/// Codes the spec names, plus a few near misses.
const KNOWN_CODES: &[&str] = &[
    "00001", "00004", "00005", "00006", "00026", "00029", "10001", "10004", "10005", "10006",
    "10007", "10026", "200", "401", "403", "30086", "30091", "1", "0", "00000", "000401", "",
];

const LONG_STATUSES: &[&str] = &[
    "begun",
    "authstarted",
    "authsuccessful",
    "authfailed",
    "authcancelled",
    "cancelstarted",
    "cancelled",
    "capturestarted",
    "capturesuccess",
    "capturefailed",
    "settled",
    "markedforreversal",
    "reversed",
    "chargeback",
    "failed",
    "Y",
    "",
    " ",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A `result.code` as a gateway might send it: a known code as text or as a
/// number, any number, any text, or anything at all.
fn code() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(KNOWN_CODES).prop_map(Value::from),
        2 => prop::sample::select(KNOWN_CODES)
            .prop_filter_map("numeric", |c| c.parse::<i64>().ok())
            .prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => "[0-9 ]{0,7}".prop_map(Value::String),
        1 => json(),
    ]
}

fn text_or_any(choices: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(choices).prop_map(Value::from),
        1 => json(),
    ]
}

fn amount() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[0-9]{1,12}(\\.[0-9]{0,3})?".prop_map(Value::String),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        json(),
    ]
}

/// JSON shaped like a Paymentz answer (CP/RF/RV, IN, a list page or a token
/// answer), every field optional and every value arbitrary.
fn shaped() -> impl Strategy<Value = String> {
    (
        (
            prop::option::of(code()),
            prop::option::of(json()),
            prop::option::of(text_or_any(LONG_STATUSES)),
            prop::option::of(text_or_any(&["Y", "N", "P"])),
        ),
        (
            prop::option::of(amount()),
            prop::option::of(amount()),
            prop::option::of(json()),
            prop::option::of(prop::collection::vec(json(), 0..4)),
            prop::option::of(".{0,40}"),
        ),
    )
        .prop_map(
            |((code, description, long, short), (amount, refund, payment_id, rows, token))| {
                let mut map = Map::new();
                if code.is_some() || description.is_some() {
                    let mut result = Map::new();
                    if let Some(code) = code {
                        result.insert("code".into(), code);
                    }
                    if let Some(description) = description {
                        result.insert("description".into(), description);
                    }
                    map.insert("result".into(), Value::Object(result));
                }
                let fields = [
                    ("status", long),
                    ("transactionStatus", short),
                    ("amount", amount),
                    ("refundAmount", refund),
                    ("paymentId", payment_id),
                    ("transaction", rows.map(Value::Array)),
                    ("AuthToken", token.map(Value::String)),
                ];
                for (key, value) in fields {
                    if let Some(value) = value {
                        map.insert(key.into(), value);
                    }
                }
                Value::Object(map).to_string()
            },
        )
}

/// Any body: arbitrary bytes (as the transport decodes them), arbitrary JSON,
/// or JSON shaped like a real answer.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        1 => json().prop_map(|v| v.to_string()),
        4 => shaped(),
    ]
}

fn http_status() -> impl Strategy<Value = u16> {
    prop_oneof![4 => Just(200u16), 1 => 100u16..600]
}

/// `result.code` as the answer sends it, read independently of the client:
/// leading zeros do not count, so `"00001"`, `"1"` and `1` are one code.
fn code_in(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let text = match value.get("result")?.get("code")? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let trimmed = text.trim_start_matches('0');
        Some(if trimmed.is_empty() { "0" } else { trimmed }.to_string())
    } else {
        Some(text)
    }
}

fn says(body: &str, codes: &[&str]) -> bool {
    code_in(body).is_some_and(|code| codes.contains(&code.as_str()))
}

/// The classification is one, and it is the error's own when there is one.
fn consistent(answer: &Answer) -> Result<(), TestCaseError> {
    if let Some(error) = &answer.error {
        prop_assert_eq!(answer.classification, error.classification(), "{:?}", error);
    }
    if answer.classification == Classification::Succeeded {
        prop_assert!(answer.error.is_none());
    }
    Ok(())
}

fn non_2xx_decides(status: u16, answer: &Answer) -> Result<(), TestCaseError> {
    if let Some(error) = status_error(status) {
        prop_assert_eq!(answer.classification, error.classification());
    }
    Ok(())
}

proptest! {
    #[test]
    fn capture_refund_and_cancel_succeed_only_on_their_success_codes(
        status in http_status(),
        body in body(),
        kind in prop::sample::select(&[PaymentType::Capture, PaymentType::Refund, PaymentType::Cancel][..]),
    ) {
        match classify_payment(kind, status, &body) {
            Verdict::Reauthenticate => {
                prop_assert!((200..300).contains(&status));
                prop_assert!(says(&body, &["401"]), "{}", body);
            }
            Verdict::Done(answer) => {
                consistent(&answer)?;
                non_2xx_decides(status, &answer)?;
                if answer.classification == Classification::Succeeded {
                    prop_assert!((200..300).contains(&status));
                    prop_assert!(says(&body, &["1", "4", "5", "6"]), "{}", body);
                    prop_assert!(answer.gateway_status.is_some());
                }
                prop_assert!(!answer.not_found, "only an inquiry can say not found");
                prop_assert!(answer.snapshot.is_none());
            }
        }
    }

    #[test]
    fn an_inquiry_succeeds_only_on_a_found_record_with_a_long_status(
        status in http_status(),
        body in body(),
    ) {
        match classify_inquiry(status, &body) {
            Verdict::Reauthenticate => {
                prop_assert!((200..300).contains(&status));
                prop_assert!(says(&body, &["401"]));
            }
            Verdict::Done(answer) => {
                consistent(&answer)?;
                non_2xx_decides(status, &answer)?;
                prop_assert_eq!(
                    answer.snapshot.is_some(),
                    answer.classification == Classification::Succeeded
                );
                if let Some(snapshot) = &answer.snapshot {
                    prop_assert!((200..300).contains(&status));
                    prop_assert!(says(&body, &["26", "1"]), "{}", body);
                    let value: Value = serde_json::from_str(&body).unwrap();
                    let long = match &value["status"] {
                        Value::String(s) => s.trim().to_string(),
                        Value::Number(n) => n.to_string(),
                        other => return Err(TestCaseError::fail(format!("status {other}"))),
                    };
                    prop_assert_eq!(&snapshot.status, &long);
                }
                if answer.not_found {
                    prop_assert_eq!(answer.classification, Classification::Declined);
                    prop_assert!((200..300).contains(&status));
                    prop_assert!(says(&body, &["10026"]), "{}", body);
                }
            }
        }
    }

    #[test]
    fn a_list_page_is_rows_only_when_the_gateway_says_so(
        status in http_status(),
        body in body(),
    ) {
        match classify_list_page(status, &body) {
            Verdict::Reauthenticate => {
                prop_assert!((200..300).contains(&status));
                prop_assert!(says(&body, &["401"]));
            }
            Verdict::Done(Page::Rows { .. }) => {
                prop_assert!((200..300).contains(&status));
                let value: Value = serde_json::from_str(&body).unwrap();
                let object = value.as_object().unwrap();
                let listed = object.contains_key("transaction") || object.contains_key("transactions");
                prop_assert!(
                    object.is_empty()
                        || says(&body, &["29"])
                        || (code_in(&body).is_none() && listed),
                    "{}", body
                );
            }
            Verdict::Done(Page::Stop(answer)) => {
                consistent(&answer)?;
                non_2xx_decides(status, &answer)?;
                prop_assert_ne!(answer.classification, Classification::Succeeded);
            }
        }
    }

    #[test]
    fn a_token_is_taken_only_from_a_2xx_that_grants_one(
        status in http_status(),
        body in body(),
    ) {
        match classify_token(status, &body) {
            Ok(token) => {
                prop_assert!((200..300).contains(&status));
                prop_assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert!(code_in(&body).is_none() || says(&body, &["200"]), "{}", body);
            }
            Err(error) => {
                prop_assert_ne!(error.classification(), Classification::Succeeded);
                if let Some(expected) = status_error(status) {
                    prop_assert_eq!(error, expected);
                }
            }
        }
    }
}

/// The generators reach every reading, so the properties above are tested
/// on successes and refusals alike, not only on noise.
#[test]
fn the_generated_answers_reach_every_classification() {
    use proptest::strategy::ValueTree;
    use std::collections::BTreeSet;

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    let mut reauthenticate = 0;
    let mut not_found = 0;
    for _ in 0..2000 {
        let status = http_status().new_tree(&mut runner).unwrap().current();
        let body = body().new_tree(&mut runner).unwrap().current();
        match classify_payment(PaymentType::Capture, status, &body) {
            Verdict::Reauthenticate => reauthenticate += 1,
            Verdict::Done(answer) => {
                seen.insert(answer.classification.as_str());
            }
        }
        if let Verdict::Done(answer) = classify_inquiry(status, &body) {
            seen.insert(answer.classification.as_str());
            not_found += usize::from(answer.not_found);
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["ambiguous", "declined", "not_applied", "succeeded"]
    );
    assert!(reauthenticate > 0 && not_found > 0);
}
