//! The pure half of intake: a delivery read, checked and fingerprinted into
//! the row to store, with no I/O. The transactional half is
//! [`super::accept_batch`].

use sha2::{Digest, Sha256};

use crate::broker::Topology;
pub use crate::command::{read, Reading};
use crate::command::{Command, ValidCommand};
use crate::gateways::registry::Accounts;
use crate::money::Amount;
use crate::outcome::Rejected;
use crate::store::commands::NewCommand;
use crate::telemetry::Escaped;

/// A hash of what the command asks for, in a normal form: `"10"` and `"10.00"`
/// are the same amount, and an absent account is `default`. Two commands with
/// the same id and the same fingerprint are the same command. `extra` are the
/// fields a rejected command had beyond the contract's (unknown, or of the
/// wrong type), as JSON text. For a well-formed command this is the same
/// hash as earlier versions computed, so that a producer's retry across an
/// upgrade is still a replay, not a conflict.
pub fn fingerprint(command: &Command, extra: &[(String, String)]) -> String {
    let amount = command.amount.as_deref().map(|a| match Amount::parse(a) {
        Ok(amount) => amount.to_string(),
        Err(_) => a.to_string(),
    });
    let metadata: Option<serde_json::Value> = command
        .metadata
        .as_ref()
        .and_then(|m| serde_json::from_str(m.get()).ok());
    let raw_types: serde_json::Map<String, serde_json::Value> = extra
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    // serde_json's default map is ordered, so this serialization is canonical.
    let normal = serde_json::json!({
        "gateway": command.gateway,
        "account": command.account_name(),
        "operation": command.operation,
        "payment_id": command.payment_id,
        "amount": amount,
        "currency": command.currency,
        "from": command.from,
        "to": command.to,
        "metadata": metadata,
        "raw_types": raw_types,
    });
    hex::encode(Sha256::digest(normal.to_string().as_bytes()))
}

/// Validates a command read from a message.
pub fn validate(command: &Command, accounts: &Accounts) -> Result<ValidCommand, Rejected> {
    command.validate(accounts)
}

/// Why `name` may not be a command's `reply_to`: the worker's own queues and
/// exchange (its events would go back into its input, or among its dead
/// letters), and the broker's reserved `amq.` names other than the ones made
/// for replies (server-named queues `amq.gen-*`, direct reply-to).
pub fn reply_to_problem(name: &str, topology: &Topology) -> Option<String> {
    if name.chars().any(Escaped::is_unsafe) {
        return Some(format!(
            "contains a control character: `{}`",
            Escaped::at_most(name, 64)
        ));
    }
    if name.len() > 255 {
        return Some("is longer than 255 bytes".into());
    }
    if [
        &topology.command_queue,
        &topology.dead_letter_queue,
        &topology.result_exchange,
    ]
    .contains(&&name.to_string())
    {
        return Some(format!(
            "`{name}` is one of the worker's own queues or exchange; name a queue of yours"
        ));
    }
    if name.starts_with("amq.")
        && !name.starts_with("amq.gen-")
        && !name.starts_with("amq.rabbitmq.reply-to")
    {
        return Some(format!(
            "`{name}` is a name reserved to the broker (only amq.gen-* and amq.rabbitmq.reply-to are allowed)"
        ));
    }
    None
}

/// The AMQP properties a command is answered with, checked: a `reply_to` or
/// `correlation_id` that breaks the rules is not kept (the event goes to the
/// exchange only) and the command is `rejected` naming it.
pub fn checked_envelope(
    envelope: &Envelope,
    topology: &Topology,
) -> (Option<String>, Option<String>, Option<Rejected>) {
    let mut problem = None;
    let reply_to = match envelope.reply_to.as_deref() {
        None | Some("") => None,
        Some(name) => match reply_to_problem(name, topology) {
            None => Some(name.to_string()),
            Some(why) => {
                problem = Some(Rejected::invalid("reply_to", why));
                None
            }
        },
    };
    let correlation_id = match envelope.correlation_id.as_deref() {
        None => None,
        Some(id) if id.chars().any(Escaped::is_unsafe) || id.len() > 255 => {
            problem.get_or_insert_with(|| {
                Rejected::invalid(
                    "correlation_id",
                    format!(
                        "contains a control character: `{}`",
                        Escaped::at_most(id, 64)
                    ),
                )
            });
            None
        }
        Some(id) => Some(id.to_string()),
    };
    (reply_to, correlation_id, problem)
}

/// A delivery checked: its command validated (or why it is refused) and
/// the row to store.
pub type Prepared = (Result<ValidCommand, Rejected>, NewCommand);

/// Checks a delivery: its envelope, its command (unless reading already
/// refused it), and the row to store, with the fingerprint.
pub fn prepare(item: &Incoming, topology: &Topology, accounts: &Accounts) -> Prepared {
    let (reply_to, correlation_id, envelope_problem) = checked_envelope(&item.envelope, topology);
    let validated = match (&item.rejected, envelope_problem) {
        (Some(rejected), _) => Err(rejected.clone()),
        (None, Some(problem)) => Err(problem),
        (None, None) => validate(&item.command, accounts),
    };
    let row = new_row(
        &item.command,
        fingerprint(&item.command, &item.extra),
        validated.as_ref().ok(),
        reply_to,
        correlation_id,
    );
    (validated, row)
}

/// The row to store for a command: its contract fields, bounded.
pub fn new_row(
    command: &Command,
    fingerprint: String,
    valid: Option<&ValidCommand>,
    reply_to: Option<String>,
    correlation_id: Option<String>,
) -> NewCommand {
    let stored = command.bounded();
    NewCommand {
        id: stored.id.clone().unwrap_or_default(),
        payload: serde_json::to_string(&stored).expect("a command serializes"),
        fingerprint,
        gateway: stored.gateway.clone(),
        account: Some(stored.account_name().to_string()),
        operation: stored.operation.clone(),
        payment_id: stored.payment_id.clone(),
        amount_minor: valid
            .and_then(|v| v.request.amount())
            .and_then(|a| i64::try_from(a.minor()).ok()),
        currency: stored.currency.clone(),
        reply_to,
        correlation_id,
    }
}

/// The AMQP properties intake needs.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub redelivered: bool,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
}

/// A delivery read as a command, waiting for the intake commit.
pub struct Incoming {
    pub command: Box<Command>,
    /// Why the reading already refused it, if it did.
    pub rejected: Option<Rejected>,
    /// Fields beyond the contract's, for the fingerprint.
    pub extra: Vec<(String, String)>,
    pub envelope: Envelope,
}

impl Incoming {
    /// A reading that has a command (`None` for an unreadable one).
    pub fn of(reading: Reading, envelope: Envelope) -> Option<Incoming> {
        match reading {
            Reading::Command(command) => Some(Incoming {
                command,
                rejected: None,
                extra: Vec::new(),
                envelope,
            }),
            Reading::Rejected {
                command,
                rejected,
                extra,
            } => Some(Incoming {
                command,
                rejected: Some(rejected),
                extra,
                envelope,
            }),
            Reading::Unreadable(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_of(body: &str) -> (Command, Option<Rejected>, Vec<(String, String)>) {
        match read(body.as_bytes()) {
            Reading::Command(command) => (*command, None, Vec::new()),
            Reading::Rejected {
                command,
                rejected,
                extra,
            } => (*command, Some(rejected), extra),
            Reading::Unreadable(why) => panic!("unreadable: {why}"),
        }
    }

    #[test]
    fn unreadable_messages_say_why() {
        let why = |body: &str| match read(body.as_bytes()) {
            Reading::Unreadable(why) => why,
            other => panic!("{body} was read as {other:?}"),
        };
        assert!(why("not json").starts_with("not JSON"));
        assert_eq!(why("[1,2]"), "not a JSON object");
        assert_eq!(why(r#""a string""#), "not a JSON object");
        assert_eq!(why(r#"{"gateway":"paymentz"}"#), "no `id` field");
        assert_eq!(why(r#"{"id":null}"#), "no `id` field");
        assert_eq!(why(r#"{"id":""}"#), "`id` is empty");
        assert_eq!(why(r#"{"id":42}"#), "`id` is not a string");
        assert!(why(&format!(r#"{{"id":"{}"}}"#, "x".repeat(300))).contains("longer"));
        assert_eq!(
            why(r#"{"id":"a\u0000b"}"#),
            "`id` contains a control character: `a\\u{0}b`"
        );
        assert!(why("{\"id\":\"a\\nb\"}").contains("control character"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_a_rejection_not_a_dead_letter() {
        let (command, rejected, extra) =
            command_of(r#"{"id":"c1","gateway":"paymentz","amount":10}"#);
        assert_eq!(command.id.as_deref(), Some("c1"));
        assert_eq!(
            rejected.expect("amount is a number").description,
            "amount: must be a string, not a number"
        );
        assert_eq!(extra, vec![("amount".to_string(), "10".to_string())]);
    }

    #[test]
    fn fingerprints_ignore_spelling_but_not_meaning() {
        let fp = |body: &str| {
            let (c, _, extra) = command_of(body);
            fingerprint(&c, &extra)
        };
        let a = fp(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","amount":"10"}"#,
        );
        let b = fp(
            r#"{"amount":"10.00","id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","account":"default"}"#,
        );
        let c = fp(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","amount":"10.01"}"#,
        );
        let d = fp(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"2","amount":"10"}"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        let e = fp(r#"{"id":"c","gateway":"paymentz","metadata":{ "a" : [1, 2] }}"#);
        let f = fp(r#"{"id":"c","gateway":"paymentz","metadata":{"a":[1,2]}}"#);
        assert_eq!(e, f, "whitespace in metadata is not meaning");
    }

    /// The hash of earlier versions, for a well-formed command: a retry
    /// across an upgrade must still be a replay.
    #[test]
    fn fingerprints_of_well_formed_commands_did_not_change() {
        let (c, _, extra) = command_of(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","amount":"10","metadata":{"order":"8812","n":[1,2.5]}}"#,
        );
        let old = serde_json::json!({
            "gateway": "paymentz", "account": "default", "operation": "refund",
            "payment_id": "1", "amount": "10.00", "currency": null, "from": null, "to": null,
            "metadata": {"order": "8812", "n": [1, 2.5]}, "raw_types": {},
        });
        assert_eq!(
            fingerprint(&c, &extra),
            hex::encode(Sha256::digest(old.to_string().as_bytes()))
        );
    }

    #[test]
    fn reply_to_may_not_name_the_workers_own_queues_or_reserved_names() {
        let topology = Topology {
            command_queue: "backoffice.commands".into(),
            result_exchange: "backoffice.events".into(),
            dead_letter_queue: "backoffice.commands.dead".into(),
        };
        for bad in [
            "backoffice.commands",
            "backoffice.commands.dead",
            "backoffice.events",
            "amq.direct",
            "amq.topic.x",
            "a\nb",
        ] {
            assert!(reply_to_problem(bad, &topology).is_some(), "{bad}");
        }
        for good in [
            "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.g1h2AA==.abc",
            "orders.results",
        ] {
            assert_eq!(reply_to_problem(good, &topology), None, "{good}");
        }
    }
}
