//! Property tests of the two parsers that take producer input first: the
//! command reader (`intake::read`) and the amount parser (`Amount::parse`).
//!
//! Whatever the input (random bytes, random JSON, contract-shaped commands
//! with random values in every field): no panic; exactly one of command,
//! rejected or unreadable; what a rejection or a dead-letter reason says is
//! printable and bounded; and a command that is accepted carries the
//! contract's fields exactly as sent, and reads back the same from its
//! stored form.

use backoffice_worker::command::{Command, FIELDS, MAX_TEXT_CHARS};
use backoffice_worker::money::{Amount, MAX_MINOR};
use backoffice_worker::pipeline::intake::{self, Reading};
use backoffice_worker::telemetry::Escaped;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any text, biased towards what breaks things: control characters, NUL,
/// line separators, bidi overrides, quotes and backslashes, long runs.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,20}",
        "[\\x00-\\x1f\\u{7f}\\u{2028}\\u{202e}\"\\\\a-z0-9 .:-]{0,40}",
        "[A-Za-z0-9._:-]{1,140}",
        (0usize..400).prop_map(|n| "x".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        nasty_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for one contract field: usually of the right shape, sometimes
/// not at all.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let good: BoxedStrategy<Value> = match field {
        "id" => "[A-Za-z0-9._:-]{1,128}".prop_map(Value::from).boxed(),
        "gateway" => prop_oneof![Just("paymentz"), Just("praxis")]
            .prop_map(Value::from)
            .boxed(),
        "operation" => prop_oneof![
            Just("capture"),
            Just("refund"),
            Just("cancel"),
            Just("inquiry"),
            Just("transaction_list")
        ]
        .prop_map(Value::from)
        .boxed(),
        "account" => "[a-z]{1,10}".prop_map(Value::from).boxed(),
        "payment_id" => "[1-9][0-9]{0,15}".prop_map(Value::from).boxed(),
        "amount" => "0{0,2}[1-9][0-9]{0,9}(\\.[0-9]{1,2})?"
            .prop_map(Value::from)
            .boxed(),
        "currency" => "[A-Z]{3}".prop_map(Value::from).boxed(),
        "from" | "to" => "20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
            .prop_map(Value::from)
            .boxed(),
        "metadata" => prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed(),
        _ => unreachable!(),
    };
    prop_oneof![
        6 => good,
        2 => nasty_text().prop_map(Value::String),
        1 => json_value(),
    ]
    .boxed()
}

/// A command-shaped JSON object: each contract field present or not, with
/// a good or bad value, and now and then an unknown field.
fn command_object() -> impl Strategy<Value = Map<String, Value>> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = FIELDS
        .iter()
        .map(|&f| {
            prop::option::weighted(0.8, field_value(f))
                .prop_map(move |v| v.map(|v| (f.to_string(), v)))
                .boxed()
        })
        .collect();
    (
        fields,
        prop::option::weighted(0.15, (nasty_text(), json_value())),
    )
        .prop_map(|(fields, extra)| {
            let mut map: Map<String, Value> = fields.into_iter().flatten().collect();
            if let Some((k, v)) = extra {
                map.insert(k, v);
            }
            map
        })
}

/// What every reading must satisfy, whatever the input.
fn check_reading(reading: &Reading) {
    match reading {
        Reading::Unreadable(reason) => {
            assert!(!reason.is_empty());
            assert!(reason.len() < 2_000, "{reason}");
            assert!(!reason.chars().any(Escaped::is_unsafe), "{reason:?}");
        }
        Reading::Rejected {
            command, rejected, ..
        } => {
            let id = command.id.as_deref().expect("a rejected command has an id");
            assert!(!id.is_empty() && id.len() <= 255);
            assert!(!id.chars().any(Escaped::is_unsafe), "{id:?}");
            let d = &rejected.description;
            assert!(d.len() < 4_000, "{d}");
            assert!(!d.chars().any(Escaped::is_unsafe), "{d:?}");
            let field = d.split(": ").next().unwrap();
            assert!(!field.is_empty(), "{d}");
            // The stored form is bounded and printable whatever was sent.
            let stored = command.bounded();
            for text in [
                &stored.gateway,
                &stored.account,
                &stored.operation,
                &stored.payment_id,
                &stored.amount,
                &stored.currency,
                &stored.from,
                &stored.to,
            ]
            .into_iter()
            .flatten()
            {
                assert!(text.chars().count() <= MAX_TEXT_CHARS + 6, "{text}");
                assert!(!text.chars().any(Escaped::is_unsafe), "{text:?}");
            }
        }
        Reading::Command(command) => {
            command
                .check()
                .expect("an accepted command passes its checks");
            // Stored and read again: the same command, the same fingerprint.
            let stored = serde_json::to_vec(&command.bounded()).unwrap();
            match intake::read(&stored) {
                Reading::Command(again) => {
                    assert_eq!(&again, command);
                    assert_eq!(
                        intake::fingerprint(&again, &[]),
                        intake::fingerprint(command, &[])
                    );
                }
                other => panic!("the stored form reads as {other:?}"),
            }
        }
    }
}

/// For an accepted command: every contract field is exactly what was sent.
fn check_round_trip(input: &Map<String, Value>, command: &Command) {
    let text = |name: &str| match input.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => panic!("{name} = {other} was accepted"),
    };
    assert_eq!(command.id, text("id"));
    assert_eq!(command.gateway, text("gateway"));
    assert_eq!(command.account, text("account"));
    assert_eq!(command.operation, text("operation"));
    assert_eq!(command.payment_id, text("payment_id"));
    assert_eq!(command.amount, text("amount"));
    assert_eq!(command.currency, text("currency"));
    assert_eq!(command.from, text("from"));
    assert_eq!(command.to, text("to"));
    let metadata = input.get("metadata").filter(|m| !m.is_null());
    assert_eq!(
        command.metadata.as_ref().map(|m| m.value()).as_ref(),
        metadata
    );
    for key in input.keys() {
        assert!(FIELDS.contains(&key.as_str()), "unknown {key} accepted");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bytes_give_exactly_one_reading(body in prop::collection::vec(any::<u8>(), 0..300)) {
        check_reading(&intake::read(&body));
    }

    #[test]
    fn any_json_gives_exactly_one_reading(value in json_value()) {
        check_reading(&intake::read(value.to_string().as_bytes()));
    }

    #[test]
    fn command_shaped_objects_are_read_exactly(object in command_object()) {
        let body = serde_json::to_vec(&Value::Object(object.clone())).unwrap();
        let reading = intake::read(&body);
        check_reading(&reading);
        if let Reading::Command(command) = &reading {
            check_round_trip(&object, command);
        }
    }

    #[test]
    fn well_formed_commands_are_accepted_whole(
        id in "[A-Za-z0-9._:-]{1,128}",
        gateway in prop_oneof![Just("paymentz"), Just("praxis")],
        operation in prop_oneof![Just("capture"), Just("refund"), Just("cancel"), Just("inquiry")],
        payment_id in "[1-9][0-9]{0,15}",
        amount in prop::option::of("0{0,2}[1-9][0-9]{0,9}(\\.[0-9]{1,2})?"),
        currency in prop::option::of("[A-Z]{3}"),
        metadata in prop::option::of(prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..4)),
    ) {
        let mut object = Map::new();
        object.insert("id".into(), id.into());
        object.insert("gateway".into(), gateway.into());
        object.insert("operation".into(), operation.into());
        object.insert("payment_id".into(), payment_id.into());
        if let Some(a) = amount { object.insert("amount".into(), a.into()); }
        if let Some(c) = currency { object.insert("currency".into(), c.into()); }
        if let Some(m) = metadata { object.insert("metadata".into(), Value::Object(m.into_iter().collect())); }
        let has_nul = object.get("metadata").is_some_and(|m| m.to_string().contains("\\u0000"));
        let big = object.get("metadata").is_some_and(|m| written_out_size(m) > 4096);
        let body = serde_json::to_vec(&Value::Object(object.clone())).unwrap();
        match intake::read(&body) {
            Reading::Command(command) => check_round_trip(&object, &command),
            Reading::Rejected { rejected, .. } => {
                prop_assert!(has_nul || big, "refused: {}", rejected.description);
                prop_assert!(rejected.description.starts_with("metadata: "));
            }
            Reading::Unreadable(why) => prop_assert!(false, "unreadable: {why}"),
        }
    }

    #[test]
    fn amounts_never_panic_and_accepted_ones_mean_what_they_say(text in "\\PC{0,20}|[ +\\-0-9.eE,]{0,16}") {
        if let Ok(amount) = Amount::parse(&text) {
            // Only the contract's form: digits, one optional `.` and one or two more.
            let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
            prop_assert!(!int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
            prop_assert!(frac.len() <= 2 && frac.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
            prop_assert!(!text.ends_with('.'), "{text:?}");
            let mut cents = int.parse::<u128>().unwrap() * 100;
            if !frac.is_empty() {
                let padded = format!("{frac:0<2}");
                cents += padded.parse::<u128>().unwrap();
            }
            prop_assert_eq!(u128::from(amount.minor()), cents);
            prop_assert!(amount.minor() <= MAX_MINOR);
            prop_assert_eq!(Amount::parse(&amount.to_string()).unwrap(), amount);
        }
    }

    #[test]
    fn every_amount_round_trips_through_its_text(minor in 0..=MAX_MINOR, zeros in 0usize..3) {
        let amount = Amount::from_minor(minor);
        let text = amount.to_string();
        prop_assert_eq!(Amount::parse(&text).unwrap(), amount);
        prop_assert_eq!(Amount::parse(&format!("{}{text}", "0".repeat(zeros))).unwrap(), amount);
        if minor % 10 == 0 {
            // One decimal means the same.
            prop_assert_eq!(Amount::parse(&text[..text.len() - 1]).unwrap(), amount);
        }
        for bad in [format!(" {text}"), format!("{text} "), format!("+{text}"), format!("-{text}"), format!("{text}e0")] {
            prop_assert!(Amount::parse(&bad).is_err(), "{bad:?}");
        }
    }
}

/// The size the contract gives metadata: compact JSON with every number
/// written out without an exponent (`-1.5e-308` counts its 300-odd digits).
/// Rust prints an `f64` in full, never with an exponent.
fn written_out_size(value: &Value) -> usize {
    let commas = |n: usize| n.saturating_sub(1);
    match value {
        Value::Number(n) => {
            let text = n.to_string();
            match n.as_f64() {
                Some(f) if text.contains(['e', 'E']) => format!("{f}").len(),
                _ => text.len(),
            }
        }
        Value::Array(items) => {
            2 + commas(items.len()) + items.iter().map(written_out_size).sum::<usize>()
        }
        Value::Object(map) => {
            2 + commas(map.len())
                + map
                    .iter()
                    .map(|(k, v)| {
                        Value::from(k.as_str()).to_string().len() + 1 + written_out_size(v)
                    })
                    .sum::<usize>()
        }
        other => other.to_string().len(),
    }
}

/// The oracle above counts as the reader does: metadata of tiny numbers,
/// 60 bytes as JSON text but over 4,096 written out, is refused, and 13 of
/// them (under the limit) are accepted.
#[test]
fn metadata_numbers_count_written_out_as_the_reader_counts_them() {
    let metadata = |n: usize| serde_json::json!({ "a": vec![-1.5e-300; n] });
    assert_eq!(written_out_size(&serde_json::json!(-1.5e-300)), 304);
    for (n, refused) in [(13, false), (14, true)] {
        let m = metadata(n);
        assert_eq!(written_out_size(&m) > 4096, refused, "{n} numbers");
        let body = serde_json::json!({"id": "m", "gateway": "paymentz", "operation": "inquiry",
                                      "payment_id": "1", "metadata": m});
        let reading = intake::read(&serde_json::to_vec(&body).unwrap());
        assert_eq!(
            matches!(reading, Reading::Rejected { .. }),
            refused,
            "{n} numbers"
        );
    }
}
