//! What a Praxis reply means: the one place that turns an HTTP result into a
//! [`Classification`], an [`Answer`] and, for `find-transaction`, a
//! [`PaymentSnapshot`].
//!
//! Praxis says everything in its `status`: 0 is done, a negative status is an
//! internal or network error on its side that may be retried, a positive one
//! is a final refusal. Whatever cannot be read as such an answer is left to
//! the shared transport rules ([`status_error`], [`GatewayError::Unreadable`]),
//! which call it ambiguous whenever the gateway may have acted.
//!
//! Two things are the account's to decide ([`AnswerRules`]), because the
//! spec does not know them: whether an answer whose signature does not verify
//! may still count as a success, and which positive statuses mean "no such
//! transaction".

use secrecy::SecretString;
use serde_json::Value;

use super::signing::{self, SIGNATURE_FIELD};
use super::wire::{self, lenient_int, AgentAnswer, Endpoint, Transaction};
use crate::gateways::http::{status_error, HttpReply};
use crate::gateways::{Answer, Classification, GatewayError, PaymentSnapshot, PaymentState};

/// What an account believes of Praxis answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerRules {
    /// `enforce_answer_signature`: an answer whose signature does not verify
    /// is ambiguous whatever it says (a success is settled by inquiry), and an
    /// inquiry whose signature does not verify is evidence of nothing. Off by
    /// default: the documented answer rule does not reproduce on the
    /// documentation's own examples.
    pub enforce_signature: bool,
    /// `not_found_statuses`: the positive statuses with which `find-transaction`
    /// says the transaction does not exist. Empty by default: the real
    /// gateway's code is not known, and mistaking another refusal for "not
    /// found" would declare an applied capture not applied.
    pub not_found_statuses: Vec<i64>,
}

/// A reply read as far as it could be, with what the exchange record needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpreted {
    pub answer: Answer,
    pub http_status: Option<u16>,
    pub body: Option<String>,
    pub signature_received: Option<String>,
    /// `Some` whenever an answer could be read: a missing signature is `Some(false)`.
    pub signature_verified: Option<bool>,
}

/// Reads what the transport brought back. A failure the transport decided
/// (no connection, a redirect, an answer over the cap) keeps whatever status
/// and body arrived, for the record.
pub fn interpret_reply(
    endpoint: Endpoint,
    trace_id: u64,
    reply: HttpReply,
    secret: &SecretString,
    rules: &AnswerRules,
) -> Interpreted {
    match (reply.failure, reply.received) {
        (None, Some(received)) => interpret(endpoint, trace_id, Ok(received), secret, rules),
        (failure, received) => Interpreted {
            answer: Answer::from_error(
                failure.unwrap_or_else(|| GatewayError::Dropped("no answer".into())),
            ),
            http_status: received.as_ref().map(|(status, _)| *status),
            body: received.map(|(_, body)| body),
            signature_received: None,
            signature_verified: None,
        },
    }
}

/// Reads the transport's result for one call to `endpoint` about `trace_id`.
pub fn interpret(
    endpoint: Endpoint,
    trace_id: u64,
    result: Result<(u16, String), GatewayError>,
    secret: &SecretString,
    rules: &AnswerRules,
) -> Interpreted {
    let (status, body) = match result {
        Ok(reply) => reply,
        Err(error) => {
            return Interpreted {
                answer: Answer::from_error(error),
                http_status: None,
                body: None,
                signature_received: None,
                signature_verified: None,
            }
        }
    };
    let failed = |error: GatewayError, body: String| Interpreted {
        answer: Answer::from_error(error),
        http_status: Some(status),
        body: Some(body),
        signature_received: None,
        signature_verified: None,
    };
    if let Some(error) = status_error(status) {
        return failed(error, body);
    }
    let parsed = match wire::parse_answer(&body) {
        Ok(parsed) => parsed,
        Err(error) => return failed(error, body),
    };
    let verified = parsed
        .signature
        .as_deref()
        .is_some_and(|received| signing::verify(&parsed.fields, received, secret));
    let mut answer = classify_answer(endpoint, trace_id, &parsed);
    if endpoint == Endpoint::FindTransaction
        && answer.classification == Classification::Declined
        && rules.not_found_statuses.contains(&parsed.status)
    {
        answer.not_found = true;
    }
    if rules.enforce_signature && !verified && answer.error.is_none() {
        // Under enforcement an answer that may be forged proves nothing about
        // the payment: not a success (money moved), not a refusal or a "try
        // again" (nothing moved, so a resend would be safe), not "no such
        // payment". It is read as unreadable; an inquiry settles it, and an
        // inquiry that does not verify either settles nothing.
        let problem = match &parsed.signature {
            Some(_) => "the signature received is not the answer's",
            None => "the answer carries no signature",
        };
        answer.classification = Classification::Ambiguous;
        answer.snapshot = None;
        answer.not_found = false;
        answer.error = Some(GatewayError::UnverifiedAnswer(problem.to_string()));
    }
    Interpreted {
        answer,
        http_status: Some(status),
        body: Some(body),
        signature_received: parsed.signature.clone(),
        signature_verified: Some(verified),
    }
}

/// What an Agent API `status` means for retry safety.
pub fn classify_status(status: i64) -> Classification {
    match status {
        0 => Classification::Succeeded,
        s if s < 0 => Classification::NotApplied,
        _ => Classification::Declined,
    }
}

/// The answer to a call, from a readable Agent API answer.
pub fn classify_answer(endpoint: Endpoint, trace_id: u64, parsed: &AgentAnswer) -> Answer {
    let classification = classify_status(parsed.status);
    let transaction = parsed.transaction.as_ref();
    let reported_status = transaction.and_then(|tx| tx.transaction_status.clone());
    let implied = match (classification, endpoint) {
        (Classification::Succeeded, Endpoint::DepositCapture) => Some("captured"),
        (Classification::Succeeded, Endpoint::DepositCancel) => Some("cancelled"),
        _ => None,
    };
    let mut answer = Answer {
        classification,
        gateway_status: reported_status.or_else(|| implied.map(str::to_string)),
        gateway_code: Some(parsed.status.to_string()),
        description: parsed.description.clone(),
        reference: transaction.and_then(|tx| tx.transaction_id.clone()),
        response: (endpoint == Endpoint::FindTransaction).then(|| without_signature(parsed)),
        snapshot: None,
        not_found: false,
        error: None,
    };

    if let Some(tx) = transaction {
        if !is_about(tx, trace_id) {
            let seen = tx
                .trace_id
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default();
            return ambiguous(
                answer,
                format!("answer is about trace_id {seen}, not the {trace_id} asked for"),
            );
        }
    }
    if classification == Classification::Succeeded && endpoint == Endpoint::FindTransaction {
        match transaction.and_then(snapshot) {
            Some(found) => answer.snapshot = Some(found),
            None => {
                return ambiguous(
                    answer,
                    "find-transaction answered status 0 without a transaction status".into(),
                )
            }
        }
    }
    answer
}

/// The payment's state as a `find-transaction` answer reports it.
pub fn snapshot(transaction: &Transaction) -> Option<PaymentSnapshot> {
    let status = transaction.transaction_status.clone()?;
    Some(PaymentSnapshot {
        state: payment_state(&status),
        status,
        amount: transaction.amount,
        // Praxis reports no captured or refunded totals, only the status.
        captured: None,
        refunded: None,
        currency: transaction.currency.clone(),
    })
}

/// Maps a Praxis `transaction_status` to the gateway-neutral state.
///
/// `requested` is a transaction that has not been authorised yet; `pending` is
/// read as work under way, so that reconciliation waits rather than concluding
/// that nothing happened.
pub fn payment_state(transaction_status: &str) -> PaymentState {
    match transaction_status.trim().to_ascii_lowercase().as_str() {
        "authorized" | "authorised" => PaymentState::Authorized,
        "approved" | "captured" => PaymentState::Captured,
        "cancelled" | "canceled" => PaymentState::Cancelled,
        "requested" => PaymentState::Pending,
        "pending" => PaymentState::InProgress,
        "rejected" | "error" | "failed" | "declined" | "chargeback" => PaymentState::Failed,
        "refunded" => PaymentState::Refunded,
        _ => PaymentState::Other,
    }
}

/// Whether a transaction in an answer is the one asked about. A transaction
/// that does not say is given the benefit of the doubt.
fn is_about(transaction: &Transaction, trace_id: u64) -> bool {
    match &transaction.trace_id {
        None => true,
        Some(value) => lenient_int(value).is_some_and(|seen| u64::try_from(seen) == Ok(trace_id)),
    }
}

fn ambiguous(mut answer: Answer, problem: String) -> Answer {
    answer.classification = Classification::Ambiguous;
    answer.snapshot = None;
    answer.error = Some(GatewayError::Unreadable(problem));
    answer
}

fn without_signature(parsed: &AgentAnswer) -> Value {
    let mut fields = parsed.fields.clone();
    fields.remove(SIGNATURE_FIELD);
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Amount;
    use serde_json::{json, Map};
    use std::time::Duration;

    const TRACE: u64 = 752856;

    fn secret() -> SecretString {
        SecretString::from("MerchantSecretKey")
    }

    /// An answer body signed the way the documentation describes.
    fn signed_body(mut fields: Map<String, Value>) -> String {
        let signature = signing::sign(&fields, &secret());
        fields.insert(SIGNATURE_FIELD.into(), Value::String(signature));
        Value::Object(fields).to_string()
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn ok(endpoint: Endpoint, body: &str) -> Interpreted {
        interpret(
            endpoint,
            TRACE,
            Ok((200, body.to_string())),
            &secret(),
            &AnswerRules::default(),
        )
    }

    #[test]
    fn status_zero_is_success_with_the_implied_status() {
        let capture = ok(
            Endpoint::DepositCapture,
            r#"{"status":0,"description":"Ok","version":"1.1"}"#,
        );
        assert_eq!(capture.answer.classification, Classification::Succeeded);
        assert_eq!(capture.answer.gateway_status.as_deref(), Some("captured"));
        assert_eq!(capture.answer.gateway_code.as_deref(), Some("0"));
        assert_eq!(capture.answer.description.as_deref(), Some("Ok"));
        assert_eq!(capture.answer.reference, None);
        assert_eq!(capture.answer.response, None);
        assert_eq!(capture.answer.error, None);
        assert_eq!(capture.http_status, Some(200));

        let cancel = ok(Endpoint::DepositCancel, r#"{"status":"0"}"#);
        assert_eq!(cancel.answer.classification, Classification::Succeeded);
        assert_eq!(cancel.answer.gateway_status.as_deref(), Some("cancelled"));
    }

    #[test]
    fn a_reported_transaction_status_and_id_win_over_the_implied_ones() {
        let capture = ok(
            Endpoint::DepositCapture,
            r#"{"status":0,"transaction":{"transaction_status":"approved","transaction_id":13042,"trace_id":752856}}"#,
        );
        assert_eq!(capture.answer.classification, Classification::Succeeded);
        assert_eq!(capture.answer.gateway_status.as_deref(), Some("approved"));
        assert_eq!(capture.answer.reference.as_deref(), Some("13042"));
    }

    #[test]
    fn negative_status_is_not_applied_and_positive_is_declined() {
        for body in [
            r#"{"status":-1,"description":"Internal error"}"#,
            r#"{"status":"-2","description":"Network error"}"#,
        ] {
            let reply = ok(Endpoint::DepositCapture, body);
            assert_eq!(reply.answer.classification, Classification::NotApplied);
            assert_eq!(reply.answer.gateway_status, None);
        }
        let reply = ok(
            Endpoint::DepositCancel,
            r#"{"status":3,"description":"Transaction is not in authorized state"}"#,
        );
        assert_eq!(reply.answer.classification, Classification::Declined);
        assert_eq!(reply.answer.gateway_code.as_deref(), Some("3"));
        assert_eq!(
            reply.answer.description.as_deref(),
            Some("Transaction is not in authorized state")
        );
        assert_eq!(reply.answer.gateway_status, None);
        assert_eq!(reply.answer.error, None);
    }

    #[test]
    fn an_unreadable_answer_is_ambiguous_and_kept() {
        let reply = ok(Endpoint::DepositCapture, "<html>oops</html>");
        assert_eq!(reply.answer.classification, Classification::Ambiguous);
        assert!(matches!(
            reply.answer.error,
            Some(GatewayError::Unreadable(_))
        ));
        assert_eq!(reply.body.as_deref(), Some("<html>oops</html>"));
        assert_eq!(reply.signature_verified, None);
    }

    #[test]
    fn http_failures_follow_the_shared_rules() {
        let body = r#"{"status":0}"#.to_string();
        for (status, expected) in [
            (500, Classification::Ambiguous),
            (503, Classification::Ambiguous),
            (429, Classification::NotApplied),
            (408, Classification::NotApplied),
            (400, Classification::Declined),
            (404, Classification::Declined),
        ] {
            let reply = interpret(
                Endpoint::DepositCapture,
                TRACE,
                Ok((status, body.clone())),
                &secret(),
                &AnswerRules::default(),
            );
            assert_eq!(reply.answer.classification, expected, "HTTP {status}");
            assert_eq!(reply.http_status, Some(status));
            assert_eq!(reply.body.as_deref(), Some(body.as_str()));
            assert!(reply.answer.error.is_some());
            assert_eq!(reply.signature_verified, None);
        }
    }

    #[test]
    fn transport_failures_keep_their_classification() {
        let reply = interpret(
            Endpoint::DepositCapture,
            TRACE,
            Err(GatewayError::Timeout(Duration::from_secs(30))),
            &secret(),
            &AnswerRules::default(),
        );
        assert_eq!(reply.answer.classification, Classification::Ambiguous);
        assert_eq!(reply.http_status, None);
        let reply = interpret(
            Endpoint::DepositCancel,
            TRACE,
            Err(GatewayError::Connect("refused".into())),
            &secret(),
            &AnswerRules::default(),
        );
        assert_eq!(reply.answer.classification, Classification::NotApplied);
    }

    #[test]
    fn a_correct_answer_signature_is_verified() {
        let body = signed_body(object(
            json!({"status": 0, "description": "Ok", "version": "1.1"}),
        ));
        let reply = ok(Endpoint::DepositCapture, &body);
        assert_eq!(reply.signature_verified, Some(true));
        let sent: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            reply.signature_received.as_deref(),
            sent["signature"].as_str()
        );
    }

    #[test]
    fn the_nested_transaction_is_left_out_of_the_answer_check() {
        let body = signed_body(object(json!({
            "status": 0, "description": "Ok", "version": "1.1",
            "transaction": {"transaction_status": "authorized", "trace_id": TRACE},
        })));
        assert_eq!(
            ok(Endpoint::FindTransaction, &body).signature_verified,
            Some(true)
        );
    }

    #[test]
    fn a_mismatching_or_missing_signature_is_recorded_but_not_fatal() {
        let body = r#"{"status":0,"description":"Ok","version":"1.1","signature":"0123abcd"}"#;
        let reply = ok(Endpoint::DepositCapture, body);
        assert_eq!(reply.signature_verified, Some(false));
        assert_eq!(reply.signature_received.as_deref(), Some("0123abcd"));
        assert_eq!(reply.answer.classification, Classification::Succeeded);

        let reply = ok(Endpoint::DepositCapture, r#"{"status":0}"#);
        assert_eq!(reply.signature_verified, Some(false));
        assert_eq!(reply.signature_received, None);
        assert_eq!(reply.answer.classification, Classification::Succeeded);
    }

    #[test]
    fn a_found_transaction_becomes_a_snapshot_and_a_response() {
        let body = signed_body(object(json!({
            "status": 0,
            "description": "Transaction found",
            "version": "1.1",
            "transaction": {
                "transaction_type": "authorize",
                "transaction_status": "authorized",
                "transaction_id": 13042,
                "trace_id": TRACE,
                "order_id": "order-1",
                "amount": 1050,
                "currency": "USD",
            },
        })));
        let reply = ok(Endpoint::FindTransaction, &body);
        let answer = reply.answer;
        assert_eq!(answer.classification, Classification::Succeeded);
        assert_eq!(answer.gateway_status.as_deref(), Some("authorized"));
        assert_eq!(answer.reference.as_deref(), Some("13042"));
        assert_eq!(
            answer.snapshot,
            Some(PaymentSnapshot {
                state: PaymentState::Authorized,
                status: "authorized".into(),
                amount: Some(Amount::from_minor(1050)),
                captured: None,
                refunded: None,
                currency: Some("USD".into()),
            })
        );
        let response = answer.response.unwrap();
        assert!(response.get("signature").is_none(), "{response}");
        assert_eq!(response["transaction"]["order_id"], json!("order-1"));
        assert_eq!(response["description"], json!("Transaction found"));
    }

    #[test]
    fn a_refused_inquiry_keeps_the_answer_as_response() {
        let reply = ok(
            Endpoint::FindTransaction,
            r#"{"status":2,"description":"Transaction not found","signature":"x"}"#,
        );
        assert_eq!(reply.answer.classification, Classification::Declined);
        assert_eq!(reply.answer.snapshot, None);
        assert_eq!(
            reply.answer.response,
            Some(json!({"status": 2, "description": "Transaction not found"}))
        );
    }

    #[test]
    fn a_successful_inquiry_without_a_transaction_settles_nothing() {
        for body in [
            r#"{"status":0,"description":"Ok"}"#,
            r#"{"status":0,"transaction":{"transaction_id":1}}"#,
        ] {
            let reply = ok(Endpoint::FindTransaction, body);
            assert_eq!(
                reply.answer.classification,
                Classification::Ambiguous,
                "{body}"
            );
            assert_eq!(reply.answer.snapshot, None);
            assert!(matches!(
                reply.answer.error,
                Some(GatewayError::Unreadable(_))
            ));
            assert_eq!(reply.answer.gateway_code.as_deref(), Some("0"));
        }
    }

    #[test]
    fn an_answer_about_another_payment_is_not_trusted() {
        let body =
            r#"{"status":0,"transaction":{"transaction_status":"approved","trace_id":"99"}}"#;
        for endpoint in [Endpoint::FindTransaction, Endpoint::DepositCapture] {
            let reply = ok(endpoint, body);
            assert_eq!(reply.answer.classification, Classification::Ambiguous);
            assert_eq!(reply.answer.snapshot, None);
            let error = reply.answer.error.unwrap().to_string();
            assert!(error.contains("99") && error.contains("752856"), "{error}");
        }
        // The same trace id written as a string is the same payment.
        let same =
            r#"{"status":0,"transaction":{"transaction_status":"approved","trace_id":"752856"}}"#;
        let reply = ok(Endpoint::FindTransaction, same);
        assert_eq!(reply.answer.classification, Classification::Succeeded);
        assert_eq!(reply.answer.snapshot.unwrap().state, PaymentState::Captured);
    }

    #[test]
    fn transaction_statuses_map_to_payment_states() {
        for (word, state) in [
            ("authorized", PaymentState::Authorized),
            ("approved", PaymentState::Captured),
            ("APPROVED", PaymentState::Captured),
            ("cancelled", PaymentState::Cancelled),
            ("requested", PaymentState::Pending),
            ("pending", PaymentState::InProgress),
            ("rejected", PaymentState::Failed),
            ("error", PaymentState::Failed),
            ("failed", PaymentState::Failed),
            ("refunded", PaymentState::Refunded),
            ("chargeback", PaymentState::Failed),
            ("on_hold", PaymentState::Other),
        ] {
            assert_eq!(payment_state(word), state, "{word}");
        }
        let tx = Transaction {
            transaction_type: None,
            transaction_status: Some("on_hold".into()),
            transaction_id: None,
            trace_id: None,
            amount: None,
            currency: None,
        };
        let snap = snapshot(&tx).unwrap();
        assert_eq!(snap.state, PaymentState::Other);
        assert_eq!(snap.status, "on_hold");
    }

    fn with_rules(endpoint: Endpoint, body: &str, rules: &AnswerRules) -> Interpreted {
        interpret(
            endpoint,
            TRACE,
            Ok((200, body.to_string())),
            &secret(),
            rules,
        )
    }

    fn enforcing() -> AnswerRules {
        AnswerRules {
            enforce_signature: true,
            not_found_statuses: vec![1007],
        }
    }

    #[test]
    fn a_flat_find_transaction_answer_is_a_snapshot_too() {
        let body = signed_body(object(json!({
            "status": 0,
            "description": "Transaction found",
            "version": "1.1",
            "transaction_type": "authorize",
            "transaction_status": "authorized",
            "transaction_id": 13042,
            "trace_id": TRACE,
            "amount": 1050,
            "currency": "USD",
            "card": {"card_type": "VISA"},
        })));
        let reply = ok(Endpoint::FindTransaction, &body);
        assert_eq!(reply.signature_verified, Some(true));
        let answer = reply.answer;
        assert_eq!(answer.classification, Classification::Succeeded);
        assert_eq!(answer.gateway_status.as_deref(), Some("authorized"));
        let snapshot = answer.snapshot.unwrap();
        assert_eq!(snapshot.state, PaymentState::Authorized);
        assert_eq!(snapshot.amount, Some(Amount::from_minor(1050)));
        // A flat answer about another payment is refused like a nested one.
        let other = signed_body(object(json!({
            "status": 0, "transaction_status": "approved", "trace_id": 99,
        })));
        let reply = ok(Endpoint::FindTransaction, &other);
        assert_eq!(reply.answer.classification, Classification::Ambiguous);
        assert_eq!(reply.answer.snapshot, None);
    }

    #[test]
    fn under_enforcement_an_unverified_success_is_ambiguous() {
        let rules = enforcing();
        let good = signed_body(object(
            json!({"status": 0, "description": "Ok", "version": "1.1"}),
        ));
        let verified = with_rules(Endpoint::DepositCapture, &good, &rules);
        assert_eq!(verified.answer.classification, Classification::Succeeded);

        for body in [
            r#"{"status":0,"description":"Ok","version":"1.1","signature":"0123abcd"}"#.to_string(),
            r#"{"status":0,"description":"Ok","version":"1.1"}"#.to_string(),
            // Signed, then altered: the description no longer matches.
            good.replace("\"Ok\"", "\"Ok!\""),
        ] {
            for endpoint in [Endpoint::DepositCapture, Endpoint::DepositCancel] {
                let reply = with_rules(endpoint, &body, &rules);
                assert_eq!(reply.signature_verified, Some(false), "{body}");
                assert_eq!(
                    reply.answer.classification,
                    Classification::Ambiguous,
                    "{body}"
                );
                assert!(matches!(
                    reply.answer.error,
                    Some(GatewayError::UnverifiedAnswer(_))
                ));
                // Without enforcement: today's behaviour, recorded and used.
                let lenient = ok(endpoint, &body);
                assert_eq!(lenient.answer.classification, Classification::Succeeded);
                assert_eq!(lenient.signature_verified, Some(false));
            }
        }
    }

    #[test]
    fn under_enforcement_an_unverified_inquiry_proves_nothing() {
        let rules = enforcing();
        let found = json!({
            "status": 0, "description": "Transaction found", "version": "1.1",
            "transaction": {"transaction_status": "approved", "trace_id": TRACE},
        });
        let signed = signed_body(object(found.clone()));
        let reply = with_rules(Endpoint::FindTransaction, &signed, &rules);
        assert_eq!(reply.answer.classification, Classification::Succeeded);
        assert!(reply.answer.snapshot.is_some());

        let mut forged = object(found);
        forged.insert("signature".into(), json!("00"));
        let reply = with_rules(
            Endpoint::FindTransaction,
            &Value::Object(forged).to_string(),
            &rules,
        );
        assert_eq!(reply.answer.classification, Classification::Ambiguous);
        assert_eq!(reply.answer.snapshot, None);

        // An unverified "not found" is no evidence either, nor is an
        // unverified refusal or "try again" of a side effect.
        let not_found = r#"{"status":1007,"description":"Transaction not found","version":"1.1","signature":"00"}"#;
        let reply = with_rules(Endpoint::FindTransaction, not_found, &rules);
        assert_eq!(reply.answer.classification, Classification::Ambiguous);
        assert!(!reply.answer.not_found);
        assert_eq!(
            reply.answer.gateway_code.as_deref(),
            Some("1007"),
            "kept for the record"
        );
        for body in [
            r#"{"status":1008,"description":"Transaction is approved"}"#,
            r#"{"status":-1,"description":"Internal error","signature":"00"}"#,
        ] {
            let reply = with_rules(Endpoint::DepositCapture, body, &rules);
            assert_eq!(
                reply.answer.classification,
                Classification::Ambiguous,
                "{body}"
            );
            assert!(matches!(
                reply.answer.error,
                Some(GatewayError::UnverifiedAnswer(_))
            ));
            // Signed, they mean what they say.
            let signed = signed_body(object(serde_json::from_str(body).unwrap()));
            let signed = with_rules(Endpoint::DepositCapture, &signed, &rules);
            assert_ne!(
                signed.answer.classification,
                Classification::Ambiguous,
                "{body}"
            );
        }
    }

    #[test]
    fn only_the_configured_statuses_of_find_transaction_mean_not_found() {
        let body = signed_body(object(json!({
            "status": 1007, "description": "Transaction not found", "version": "1.1",
        })));
        let rules = AnswerRules {
            enforce_signature: false,
            not_found_statuses: vec![1007],
        };
        let reply = with_rules(Endpoint::FindTransaction, &body, &rules);
        assert_eq!(reply.answer.classification, Classification::Declined);
        assert!(reply.answer.not_found);
        // Verified, and enforced: still evidence.
        assert!(
            with_rules(Endpoint::FindTransaction, &body, &enforcing())
                .answer
                .not_found
        );
        // Not configured (the default): the gateway's real code is unknown.
        assert!(!ok(Endpoint::FindTransaction, &body).answer.not_found);
        // A capture refused with that status says nothing about existence.
        assert!(
            !with_rules(Endpoint::DepositCapture, &body, &rules)
                .answer
                .not_found
        );
        // Another refusal of an inquiry is not "not found".
        let other = signed_body(object(
            json!({"status": 1004, "description": "Invalid signature"}),
        ));
        assert!(
            !with_rules(Endpoint::FindTransaction, &other, &rules)
                .answer
                .not_found
        );
    }
}
