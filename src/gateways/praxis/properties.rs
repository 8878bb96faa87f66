//! Properties of the Praxis answer classifier, over arbitrary input: HTTP
//! statuses, arbitrary bytes, arbitrary JSON, and JSON shaped like real
//! answers (nested or flat transaction, signed correctly or not) with
//! arbitrary values, for every endpoint and every account rule.
//!
//! Whatever comes in, [`interpret`] returns (never panics) exactly one
//! reading whose classification agrees with its error; it says `Succeeded`
//! only for a 2xx whose `status` is 0 and, under enforcement, whose signature
//! verified (an unverified answer is then ambiguous, whatever it says); a
//! snapshot comes only with a successful inquiry, and "not found" only from a
//! configured status of `find-transaction`.

use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::classify::{interpret, AnswerRules};
use super::signing;
use super::wire::Endpoint;
use crate::gateways::http::status_error;
use crate::gateways::Classification;

const TRACE: u64 = 752856;
const SECRET: &str = "MerchantSecretKey";

const TRANSACTION_STATUSES: &[&str] = &[
    "authorized",
    "approved",
    "cancelled",
    "requested",
    "pending",
    "rejected",
    "error",
    "refunded",
    "chargeback",
    "",
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

/// A `status` as a gateway might send it.
fn status_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (-3i64..4).prop_map(Value::from),
        2 => prop::sample::select(&["0", " 0", "-1", "1007", "+0", "0.0", "ok"][..]).prop_map(Value::from),
        1 => Just(Value::from(0.0)),
        1 => prop::sample::select(&[1004i64, 1007, 1008][..]).prop_map(Value::from),
        1 => json(),
    ]
}

fn transaction() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of(prop_oneof![
            3 => prop::sample::select(TRANSACTION_STATUSES).prop_map(Value::from),
            1 => json(),
        ]),
        prop::option::of(prop_oneof![
            3 => Just(Value::from(TRACE)),
            1 => Just(Value::from(TRACE.to_string())),
            1 => json(),
        ]),
        prop::option::of(json()),
        prop::option::of(prop_oneof![any::<i64>().prop_map(Value::from), json()]),
    )
        .prop_map(|(status, trace, id, amount)| {
            let mut map = Map::new();
            for (key, value) in [
                ("transaction_status", status),
                ("trace_id", trace),
                ("transaction_id", id),
                ("amount", amount),
            ] {
                if let Some(value) = value {
                    map.insert(key.into(), value);
                }
            }
            map
        })
}

/// JSON shaped like an Agent API answer: a status, perhaps a description and
/// version, perhaps a transaction (nested or flat), and no signature, a
/// correct one, or a wrong one.
fn shaped() -> impl Strategy<Value = String> {
    (
        prop::option::of(status_value()),
        prop::option::of(json()),
        prop::option::of(prop_oneof![Just(Value::from("1.1")), json()]),
        prop::option::of((any::<bool>(), transaction())),
        0u8..3,
    )
        .prop_map(|(status, description, version, transaction, signature)| {
            let mut map = Map::new();
            for (key, value) in [
                ("status", status),
                ("description", description),
                ("version", version),
            ] {
                if let Some(value) = value {
                    map.insert(key.into(), value);
                }
            }
            match transaction {
                Some((true, tx)) => {
                    map.insert("transaction".into(), Value::Object(tx));
                }
                Some((false, tx)) => map.extend(tx),
                None => {}
            }
            match signature {
                0 => {}
                1 => {
                    let signed = signing::sign(&map, &SecretString::from(SECRET));
                    map.insert("signature".into(), Value::String(signed));
                }
                _ => {
                    map.insert("signature".into(), Value::from("0".repeat(96)));
                }
            }
            Value::Object(map).to_string()
        })
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        1 => json().prop_map(|v| v.to_string()),
        5 => shaped(),
    ]
}

fn http_status() -> impl Strategy<Value = u16> {
    prop_oneof![4 => Just(200u16), 1 => 100u16..600]
}

fn rules() -> impl Strategy<Value = AnswerRules> {
    (any::<bool>(), any::<bool>()).prop_map(|(enforce, not_found)| AnswerRules {
        enforce_signature: enforce,
        not_found_statuses: if not_found { vec![1007] } else { Vec::new() },
    })
}

/// Whether the answer's own `status` reads as 0, independently of the client:
/// an integral number 0 or a text that parses as the integer 0.
fn status_is_zero(body: &str) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    match map.get("status") {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.trim().parse::<i64>() == Ok(0),
        _ => false,
    }
}

fn status_of(body: &str) -> Option<i64> {
    let map: Map<String, Value> = serde_json::from_str(body).ok()?;
    match map.get("status")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

proptest! {
    #[test]
    fn praxis_answers_succeed_only_on_status_zero_and_a_verified_signature_when_enforced(
        status in http_status(),
        body in body(),
        endpoint in prop::sample::select(&[
            Endpoint::DepositCapture, Endpoint::DepositCancel, Endpoint::FindTransaction,
        ][..]),
        rules in rules(),
    ) {
        let secret = SecretString::from(SECRET);
        let read = interpret(endpoint, TRACE, Ok((status, body.clone())), &secret, &rules);
        let answer = &read.answer;
        if let Some(error) = &answer.error {
            prop_assert_eq!(answer.classification, error.classification(), "{:?}", error);
        }
        if let Some(error) = status_error(status) {
            prop_assert_eq!(answer.classification, error.classification());
        }
        if answer.classification == Classification::Succeeded {
            prop_assert!((200..300).contains(&status));
            prop_assert!(status_is_zero(&body), "{}", body);
            prop_assert!(answer.error.is_none());
            if rules.enforce_signature {
                prop_assert_eq!(read.signature_verified, Some(true), "{}", body);
            }
        }
        if answer.snapshot.is_some() {
            prop_assert_eq!(answer.classification, Classification::Succeeded);
            prop_assert_eq!(endpoint, Endpoint::FindTransaction);
        }
        if answer.not_found {
            prop_assert_eq!(answer.classification, Classification::Declined);
            prop_assert_eq!(endpoint, Endpoint::FindTransaction);
            prop_assert_eq!(status_of(&body), Some(1007));
            prop_assert!(rules.not_found_statuses.contains(&1007));
            if rules.enforce_signature {
                prop_assert_eq!(read.signature_verified, Some(true));
            }
        }
        // Under enforcement, an answer read but not verified proves nothing.
        if rules.enforce_signature && read.signature_verified == Some(false) {
            prop_assert_eq!(answer.classification, Classification::Ambiguous);
            prop_assert!(answer.snapshot.is_none() && !answer.not_found);
        }
        // Enforcement only ever takes a success away, never grants one.
        let lenient = interpret(endpoint, TRACE, Ok((status, body.clone())), &secret, &AnswerRules::default());
        if answer.classification == Classification::Succeeded {
            prop_assert_eq!(lenient.answer.classification, Classification::Succeeded);
        }
        if lenient.answer.classification == Classification::Succeeded
            && read.signature_verified == Some(true)
        {
            prop_assert_eq!(answer.classification, Classification::Succeeded);
        }
    }
}

/// The generators reach every reading (and successes under enforcement), so
/// the property above is tested on more than noise.
#[test]
fn the_generated_answers_reach_every_classification() {
    use proptest::strategy::ValueTree;
    use std::collections::BTreeSet;

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let secret = SecretString::from(SECRET);
    let enforcing = AnswerRules {
        enforce_signature: true,
        not_found_statuses: vec![1007],
    };
    let mut seen = BTreeSet::new();
    let (mut enforced_successes, mut snapshots, mut not_found) = (0, 0, 0);
    for _ in 0..2000 {
        let status = http_status().new_tree(&mut runner).unwrap().current();
        let body = body().new_tree(&mut runner).unwrap().current();
        let read = interpret(
            Endpoint::FindTransaction,
            TRACE,
            Ok((status, body)),
            &secret,
            &enforcing,
        );
        seen.insert(read.answer.classification.as_str());
        enforced_successes += usize::from(read.answer.classification == Classification::Succeeded);
        snapshots += usize::from(read.answer.snapshot.is_some());
        not_found += usize::from(read.answer.not_found);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["ambiguous", "declined", "not_applied", "succeeded"]
    );
    assert!(enforced_successes > 0 && snapshots > 0 && not_found > 0);
}
