//! What each Paymentz answer means: the one place that maps an HTTP status and
//! body to a [`Classification`], a [`PaymentSnapshot`], or "authenticate again".
//!
//! Everything here is a pure function of what came back. Decisions rest on
//! `result.code` and the long `status`, never on the short status (`Y` covers
//! authorised, captured, refunded and charged back alike) and never on the
//! HTTP status of a 2xx: business errors, token errors included, arrive as
//! HTTP 200. Result codes live in a table per deployment, so they are compared
//! leniently (string or number, leading zeros ignored) and an unknown one is a
//! definite refusal, kept verbatim, never a reason to send again.

use serde_json::Value;

use super::wire::{self, PaymentType};
use crate::gateways::http::status_error;
use crate::gateways::{Answer, Classification, GatewayError, PaymentSnapshot, PaymentState};
use crate::money::Amount;

/// Codes that confirm a CP, RF or RV (`00001` succeeded, `00004` captured,
/// `00005` refunded, `00006` cancelled).
pub const DONE_CODES: &[&str] = &["00001", "00004", "00005", "00006"];
/// Pending: the operation may still take effect.
pub const PENDING: &str = "10004";
/// The token was refused: nothing was processed.
pub const TOKEN_REFUSED: &str = "401";
pub const TOKEN_OK: &str = "200";
/// IN found the record (some builds answer `00001`).
pub const RECORD_FOUND: &[&str] = &["00026", "00001"];
pub const RECORD_NOT_FOUND: &str = "10026";
pub const LIST_RETRIEVED: &str = "00029";

/// Either a final reading of an answer, or "the token was refused, get a new
/// one and send this again" (which only the caller can do).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<T> {
    Reauthenticate,
    Done(T),
}

/// One page of `getTransactionList`: rows to keep going with, or the end of the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Page {
    Rows {
        rows: Vec<Value>,
        code: Option<String>,
        description: Option<String>,
    },
    Stop(Answer),
}

/// Whether a received code is `expected`: `"00001"`, `"1"` and `1` are the same code.
pub fn code_is(code: &str, expected: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(code) && digits(expected) {
        code.trim_start_matches('0') == expected.trim_start_matches('0')
    } else {
        code == expected
    }
}

fn code_in(code: &str, set: &[&str]) -> bool {
    set.iter().any(|expected| code_is(code, expected))
}

/// The HTTP status first (only a non-2xx decides anything), then a JSON object.
fn read(status: u16, body: &str) -> Result<Value, GatewayError> {
    if let Some(error) = status_error(status) {
        return Err(error);
    }
    let value: Value = serde_json::from_str(body)
        .map_err(|e| GatewayError::Unreadable(format!("answer is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(GatewayError::Unreadable(
            "answer is not a JSON object".into(),
        ));
    }
    Ok(value)
}

/// An `/authToken` answer: the token, or why there is none. Any code other
/// than `200` is a refusal of our credentials (`403` is the documented one;
/// others are unknown and treated the same way, as the spec asks).
pub fn classify_token(status: u16, body: &str) -> Result<String, GatewayError> {
    if let Some(error) = status_error(status) {
        return Err(error);
    }
    let answer = wire::parse_token_answer(body).map_err(GatewayError::Unreadable)?;
    let accepted = answer.code.as_deref().is_none_or(|c| code_is(c, TOKEN_OK));
    match (answer.code, answer.token) {
        (_, Some(token)) if accepted => {
            if token.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(token)
            } else {
                Err(GatewayError::Unreadable(
                    "AuthToken holds characters a header cannot carry".into(),
                ))
            }
        }
        (Some(_), None) if accepted => Err(GatewayError::Unreadable(
            "token answer has result.code 200 but no AuthToken".into(),
        )),
        (Some(code), _) => Err(GatewayError::CredentialsRefused(match answer.description {
            Some(description) => format!("result.code {code}: {description}"),
            None => format!("result.code {code}"),
        })),
        (None, _) => Err(GatewayError::Unreadable(
            "token answer has neither result.code nor AuthToken".into(),
        )),
    }
}

/// The long status a confirmed operation leaves the payment in.
pub fn implied_status(kind: PaymentType) -> Option<&'static str> {
    match kind {
        PaymentType::Capture => Some("capturesuccess"),
        PaymentType::Refund => Some("reversed"),
        PaymentType::Cancel => Some("authcancelled"),
        PaymentType::Inquiry => None,
    }
}

/// An answer built from a failure, keeping the code when there was one.
fn failure(error: GatewayError, code: Option<String>) -> Answer {
    let mut answer = Answer::from_error(error);
    answer.gateway_code = code;
    answer
}

fn coded(classification: Classification, code: String, value: &Value) -> Answer {
    let mut answer = Answer::classified(classification);
    answer.gateway_code = Some(code);
    answer.description = wire::result_description(value);
    answer
}

/// CP, RF and RV answers.
pub fn classify_payment(kind: PaymentType, status: u16, body: &str) -> Verdict<Answer> {
    let value = match read(status, body) {
        Ok(value) => value,
        Err(error) => return Verdict::Done(Answer::from_error(error)),
    };
    let Some(code) = wire::result_code(&value) else {
        return Verdict::Done(Answer::from_error(GatewayError::Unreadable(
            "answer has no result.code".into(),
        )));
    };
    if code_is(&code, TOKEN_REFUSED) {
        return Verdict::Reauthenticate;
    }
    let answer = if code_in(&code, DONE_CODES) {
        let mut answer = coded(Classification::Succeeded, code, &value);
        answer.gateway_status = implied_status(kind).map(str::to_string);
        answer.reference = wire::text_field(&value, "paymentId").filter(|id| id != "-");
        answer
    } else if code_is(&code, PENDING) {
        coded(Classification::Ambiguous, code, &value)
    } else {
        coded(Classification::Declined, code, &value)
    };
    Verdict::Done(answer)
}

/// A long status as a gateway-neutral state. Unknown words are `Other`; the
/// snapshot keeps the word itself.
pub fn payment_state(status: &str) -> PaymentState {
    match status.trim().to_ascii_lowercase().as_str() {
        "begun" | "authstarted" => PaymentState::Pending,
        "authsuccessful" => PaymentState::Authorized,
        "capturestarted" | "cancelstarted" | "markedforreversal" => PaymentState::InProgress,
        "capturesuccess" | "settled" => PaymentState::Captured,
        "authcancelled" | "cancelled" => PaymentState::Cancelled,
        "reversed" => PaymentState::Refunded,
        "authfailed" | "capturefailed" | "failed" | "chargeback" => PaymentState::Failed,
        _ => PaymentState::Other,
    }
}

/// Whether a long status says no refund has happened, so an absent
/// `refundAmount` means zero. `reversed`, `markedforreversal`, `chargeback`
/// and unknown words say nothing of the kind: there the amount stays unknown.
fn implies_no_refund(status: &str) -> bool {
    matches!(
        status.trim().to_ascii_lowercase().as_str(),
        "begun"
            | "authstarted"
            | "authsuccessful"
            | "authfailed"
            | "authcancelled"
            | "cancelstarted"
            | "cancelled"
            | "capturestarted"
            | "capturesuccess"
            | "capturefailed"
            | "settled"
            | "failed"
    )
}

/// The first of `names` present, read as an amount; `None` when absent or
/// unparsable (the raw value stays in the response for a person to read).
fn amount_field(value: &Value, names: &[&str]) -> Option<Option<Amount>> {
    names
        .iter()
        .find_map(|name| wire::text_field(value, name))
        .map(|text| Amount::parse(&text).ok())
}

/// What an IN answer with a long status says about the payment.
pub fn snapshot(value: &Value, status: &str) -> PaymentSnapshot {
    let refunded = match amount_field(value, &["refundAmount", "refundamount"]) {
        Some(parsed) => parsed,
        None if implies_no_refund(status) => Some(Amount::ZERO),
        None => None,
    };
    PaymentSnapshot {
        state: payment_state(status),
        status: status.to_string(),
        amount: amount_field(value, &["amount"]).flatten(),
        captured: amount_field(value, &["captureAmount", "captureamount"]).flatten(),
        refunded,
        currency: wire::text_field(value, "currency"),
    }
}

/// An IN answer. A record that is not found has only `result` (and perhaps
/// the `"-"` placeholders); a found one has a long `status`.
pub fn classify_inquiry(status: u16, body: &str) -> Verdict<Answer> {
    let value = match read(status, body) {
        Ok(value) => value,
        Err(error) => return Verdict::Done(Answer::from_error(error)),
    };
    let Some(code) = wire::result_code(&value) else {
        return Verdict::Done(Answer::from_error(GatewayError::Unreadable(
            "answer has no result.code".into(),
        )));
    };
    if code_is(&code, TOKEN_REFUSED) {
        return Verdict::Reauthenticate;
    }
    let long_status = wire::text_field(&value, "status");
    let has_record = long_status.is_some() || wire::text_field(&value, "amount").is_some();
    let answer = if code_in(&code, RECORD_FOUND) {
        match long_status {
            Some(long_status) => {
                let mut answer = coded(Classification::Succeeded, code, &value);
                answer.snapshot = Some(snapshot(&value, &long_status));
                answer.gateway_status = Some(long_status);
                let mut response = value;
                wire::redact_value(&mut response);
                answer.response = Some(response);
                answer
            }
            None if !has_record => {
                let mut answer = coded(Classification::Declined, code, &value);
                answer.description = Some(match answer.description {
                    Some(d) => format!("record not found: {d}"),
                    None => "record not found".into(),
                });
                answer
            }
            None => failure(
                GatewayError::Unreadable("inquiry found a record without a long status".into()),
                Some(code),
            ),
        }
    } else if code_is(&code, RECORD_NOT_FOUND) {
        // The gateway's own "no such payment" ([I] in the spec): evidence that
        // nothing was ever applied to this id. A "found" code without a record
        // (above) contradicts itself and proves nothing.
        let mut answer = coded(Classification::Declined, code, &value);
        answer.not_found = true;
        answer
    } else {
        coded(Classification::Declined, code, &value)
    };
    Verdict::Done(answer)
}

/// One `getTransactionList` page. `{}` is an empty page, not an error.
pub fn classify_list_page(status: u16, body: &str) -> Verdict<Page> {
    let value = match read(status, body) {
        Ok(value) => value,
        Err(error) => return Verdict::Done(Page::Stop(Answer::from_error(error))),
    };
    if value.as_object().is_some_and(|o| o.is_empty()) {
        return Verdict::Done(Page::Rows {
            rows: Vec::new(),
            code: None,
            description: None,
        });
    }
    let code = wire::result_code(&value);
    if code.as_deref().is_some_and(|c| code_is(c, TOKEN_REFUSED)) {
        return Verdict::Reauthenticate;
    }
    // The documented key is `transaction`; `transactions` is accepted too.
    let listed = value
        .get("transaction")
        .or_else(|| value.get("transactions"));
    let rows = match listed {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(rows)) => Ok(rows.clone()),
        Some(row @ Value::Object(_)) => Ok(vec![row.clone()]),
        Some(_) => Err(GatewayError::Unreadable(
            "transaction list is neither a list nor an object".into(),
        )),
    };
    let retrieved = match &code {
        Some(c) => code_is(c, LIST_RETRIEVED),
        // No result at all but rows present: read the rows, the list is harmless to trust.
        None => listed.is_some(),
    };
    let page = match (retrieved, code, rows) {
        (true, code, Ok(mut rows)) => {
            rows.iter_mut().for_each(wire::redact_value);
            Page::Rows {
                rows,
                code,
                description: wire::result_description(&value),
            }
        }
        (true, code, Err(error)) => Page::Stop(failure(error, code)),
        (false, Some(code), _) => Page::Stop(coded(Classification::Declined, code, &value)),
        (false, None, _) => Page::Stop(Answer::from_error(GatewayError::Unreadable(
            "answer has neither result.code nor transactions".into(),
        ))),
    };
    Verdict::Done(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done<T: std::fmt::Debug>(verdict: Verdict<T>) -> T {
        match verdict {
            Verdict::Done(t) => t,
            Verdict::Reauthenticate => panic!("expected a final answer, got re-authenticate"),
        }
    }

    fn cp(body: &str) -> Answer {
        done(classify_payment(PaymentType::Capture, 200, body))
    }

    #[test]
    fn codes_compare_as_numbers_or_text() {
        assert!(code_is("00001", "00001"));
        assert!(code_is("1", "00001"));
        assert!(code_is("401", "401"));
        assert!(!code_is("00004", "00001"));
        assert!(!code_is("10001", "00001"));
        assert!(code_is("ABC", "ABC"));
        assert!(!code_is("", "0"));
    }

    #[test]
    fn token_answers() {
        let ok = r#"{"result":{"code":"200","description":"Token generated successfully"},"AuthToken":"eyJ.a.b"}"#;
        assert_eq!(classify_token(200, ok).unwrap(), "eyJ.a.b");
        // Code absent but a token present: accepted.
        assert_eq!(classify_token(200, r#"{"AuthToken":"t1"}"#).unwrap(), "t1");
        let refused = classify_token(
            200,
            r#"{"result":{"code":"403","description":"Invalid credentials"}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(refused, GatewayError::CredentialsRefused(ref m) if m.contains("403") && m.contains("Invalid credentials"))
        );
        assert_eq!(refused.classification(), Classification::Declined);
        // A token next to a refusing code is not used.
        assert!(matches!(
            classify_token(200, r#"{"result":{"code":403},"AuthToken":"x"}"#),
            Err(GatewayError::CredentialsRefused(_))
        ));
        assert!(matches!(
            classify_token(200, r#"{"result":{"code":"200"}}"#),
            Err(GatewayError::Unreadable(_))
        ));
        assert!(matches!(
            classify_token(200, "not json"),
            Err(GatewayError::Unreadable(_))
        ));
        assert!(matches!(
            classify_token(200, "{}"),
            Err(GatewayError::Unreadable(_))
        ));
        assert!(matches!(
            classify_token(200, r#"{"AuthToken":"a\nb"}"#),
            Err(GatewayError::Unreadable(_))
        ));
        assert_eq!(
            classify_token(503, ok).unwrap_err(),
            GatewayError::ServerError { status: 503 }
        );
    }

    #[test]
    fn confirmed_operations_succeed_with_the_implied_status() {
        for code in ["00001", "00004", "00005", "00006"] {
            let body = format!(
                r#"{{"paymentId":"55362","descriptor":"x","result":{{"code":"{code}","description":"Transaction succeeded"}},"timestamp":"2026-11-22 10:15:03"}}"#
            );
            for (kind, status) in [
                (PaymentType::Capture, "capturesuccess"),
                (PaymentType::Refund, "reversed"),
                (PaymentType::Cancel, "authcancelled"),
            ] {
                let answer = done(classify_payment(kind, 200, &body));
                assert_eq!(answer.classification, Classification::Succeeded, "{code}");
                assert_eq!(answer.gateway_status.as_deref(), Some(status));
                assert_eq!(answer.gateway_code.as_deref(), Some(code));
                assert_eq!(answer.reference.as_deref(), Some("55362"));
                assert_eq!(answer.description.as_deref(), Some("Transaction succeeded"));
                assert!(answer.error.is_none());
            }
        }
    }

    #[test]
    fn a_numeric_code_and_a_dash_payment_id_are_read_leniently() {
        let answer = cp(r#"{"paymentId":"-","result":{"code":1}}"#);
        assert_eq!(answer.classification, Classification::Succeeded);
        assert_eq!(answer.gateway_code.as_deref(), Some("1"));
        assert_eq!(answer.reference, None);
        let numeric_id = cp(r#"{"paymentId":55362,"result":{"code":"00004"}}"#);
        assert_eq!(numeric_id.reference.as_deref(), Some("55362"));
    }

    #[test]
    fn pending_may_still_take_effect() {
        let answer =
            cp(r#"{"paymentId":"55362","result":{"code":"10004","description":"Pending"}}"#);
        assert_eq!(answer.classification, Classification::Ambiguous);
        assert_eq!(answer.gateway_code.as_deref(), Some("10004"));
        assert_eq!(answer.description.as_deref(), Some("Pending"));
        assert_eq!(answer.reference, None);
    }

    #[test]
    fn refusals_and_unknown_codes_are_declined_verbatim() {
        for code in [
            "10001", "10005", "10006", "10007", "10026", "99999", "403", "200",
        ] {
            let body = format!(
                r#"{{"paymentId":"-","result":{{"code":"{code}","description":"reason {code}"}}}}"#
            );
            for kind in [
                PaymentType::Capture,
                PaymentType::Refund,
                PaymentType::Cancel,
            ] {
                let answer = done(classify_payment(kind, 200, &body));
                assert_eq!(answer.classification, Classification::Declined, "{code}");
                assert_eq!(answer.gateway_code.as_deref(), Some(code));
                let expected = format!("reason {code}");
                assert_eq!(answer.description.as_deref(), Some(expected.as_str()));
                assert_eq!(answer.gateway_status, None);
            }
        }
    }

    #[test]
    fn a_refused_token_asks_for_reauthentication() {
        for body in [
            r#"{"result":{"code":"401","description":"Invalid or expired token"}}"#,
            r#"{"result":{"code":401}}"#,
        ] {
            assert_eq!(
                classify_payment(PaymentType::Refund, 200, body),
                Verdict::Reauthenticate
            );
            assert_eq!(classify_inquiry(200, body), Verdict::Reauthenticate);
            assert_eq!(classify_list_page(200, body), Verdict::Reauthenticate);
        }
    }

    #[test]
    fn unreadable_answers_are_ambiguous() {
        for body in [
            "",
            "<html>gateway error</html>",
            "[]",
            r#"{"paymentId":"1"}"#,
            r#"{"result":{"description":"no code"}}"#,
            r#"{"result":{"code":"00001""#,
        ] {
            let answer = cp(body);
            assert_eq!(answer.classification, Classification::Ambiguous, "{body}");
            assert!(
                matches!(answer.error, Some(GatewayError::Unreadable(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn http_status_decides_only_when_not_2xx() {
        let ok_body = r#"{"paymentId":"1","result":{"code":"00001"}}"#;
        let cases = [
            (500, Classification::Ambiguous),
            (502, Classification::Ambiguous),
            (429, Classification::NotApplied),
            (404, Classification::Declined),
        ];
        for (status, expected) in cases {
            let answer = done(classify_payment(PaymentType::Refund, status, ok_body));
            assert_eq!(answer.classification, expected, "{status}");
            assert_eq!(answer.error, status_error(status));
        }
        // A business refusal inside HTTP 200 is decided by its code.
        assert_eq!(
            cp(r#"{"result":{"code":"10001"}}"#).classification,
            Classification::Declined
        );
    }

    const FOUND: &str = r#"{"paymentId":"55361","merchantTransactionId":"ORDER-1001","status":"reversed","transactionStatus":"Y","amount":"50.00","currency":"EUR","refundAmount":"10.00","descriptor":"d","remark":"","bankReferenceId":"b","card":{"bin":"411111","lastFourDigits":"1111"},"result":{"code":"00026","description":"Record found"},"timestamp":"2026-11-22 10:15:03"}"#;

    #[test]
    fn a_found_record_gives_a_snapshot_by_its_long_status() {
        let answer = done(classify_inquiry(200, FOUND));
        assert_eq!(answer.classification, Classification::Succeeded);
        assert_eq!(answer.gateway_status.as_deref(), Some("reversed"));
        assert_eq!(answer.gateway_code.as_deref(), Some("00026"));
        assert_eq!(answer.reference, None);
        let snapshot = answer.snapshot.unwrap();
        assert_eq!(snapshot.state, PaymentState::Refunded);
        assert_eq!(snapshot.status, "reversed");
        assert_eq!(snapshot.amount, Some(Amount::from_minor(5000)));
        assert_eq!(snapshot.refunded, Some(Amount::from_minor(1000)));
        assert_eq!(snapshot.captured, None);
        assert_eq!(snapshot.currency.as_deref(), Some("EUR"));
        let response = answer.response.unwrap();
        assert_eq!(response["card"]["lastFourDigits"], "1111");
        assert_eq!(response["merchantTransactionId"], "ORDER-1001");
    }

    #[test]
    fn some_builds_answer_00001_for_a_found_record() {
        let body = FOUND
            .replace("00026", "00001")
            .replace("\"reversed\"", "\"authsuccessful\"");
        let answer = done(classify_inquiry(200, &body));
        assert_eq!(answer.classification, Classification::Succeeded);
        assert_eq!(answer.snapshot.unwrap().state, PaymentState::Authorized);
    }

    #[test]
    fn the_short_status_is_never_used() {
        // `Y` everywhere; only the long status tells these apart.
        for (long, state) in [
            ("authsuccessful", PaymentState::Authorized),
            ("capturesuccess", PaymentState::Captured),
            ("reversed", PaymentState::Refunded),
            ("chargeback", PaymentState::Failed),
        ] {
            let body = format!(
                r#"{{"status":"{long}","transactionStatus":"Y","amount":"5.00","result":{{"code":"00026"}}}}"#
            );
            let answer = done(classify_inquiry(200, &body));
            assert_eq!(answer.snapshot.unwrap().state, state, "{long}");
        }
    }

    #[test]
    fn every_long_status_maps_to_a_state() {
        use PaymentState::*;
        let table = [
            ("begun", Pending),
            ("authstarted", Pending),
            ("authsuccessful", Authorized),
            ("capturestarted", InProgress),
            ("cancelstarted", InProgress),
            ("markedforreversal", InProgress),
            ("capturesuccess", Captured),
            ("settled", Captured),
            ("authcancelled", Cancelled),
            ("cancelled", Cancelled),
            ("reversed", Refunded),
            ("authfailed", Failed),
            ("capturefailed", Failed),
            ("failed", Failed),
            ("chargeback", Failed),
            ("CaptureSuccess", Captured),
            ("partialrefund", Other),
            ("Y", Other),
        ];
        for (word, state) in table {
            assert_eq!(payment_state(word), state, "{word}");
        }
        let other = done(classify_inquiry(
            200,
            r#"{"status":"partialrefund","amount":"5.00","result":{"code":"00026"}}"#,
        ));
        let snapshot = other.snapshot.unwrap();
        assert_eq!(snapshot.state, Other);
        assert_eq!(snapshot.status, "partialrefund");
        assert_eq!(snapshot.refunded, None);
    }

    #[test]
    fn refunded_is_zero_only_when_the_status_rules_a_refund_out() {
        let refunded = |status: &str, extra: &str| {
            let body = format!(
                r#"{{"status":"{status}","amount":"50.00"{extra},"result":{{"code":"00026"}}}}"#
            );
            done(classify_inquiry(200, &body))
                .snapshot
                .unwrap()
                .refunded
        };
        assert_eq!(refunded("capturesuccess", ""), Some(Amount::ZERO));
        assert_eq!(refunded("authsuccessful", ""), Some(Amount::ZERO));
        assert_eq!(refunded("settled", ""), Some(Amount::ZERO));
        assert_eq!(refunded("reversed", ""), None);
        assert_eq!(refunded("markedforreversal", ""), None);
        assert_eq!(refunded("chargeback", ""), None);
        assert_eq!(
            refunded("reversed", r#","refundAmount":"50.00""#),
            Some(Amount::from_minor(5000))
        );
        // Unparsable: unknown, not zero, and still visible in the response.
        assert_eq!(refunded("reversed", r#","refundAmount":"ten""#), None);
        assert_eq!(
            refunded("capturesuccess", r#","refundAmount":"1,00""#),
            None
        );
    }

    #[test]
    fn an_unparsable_amount_is_kept_in_the_response_only() {
        let answer = done(classify_inquiry(
            200,
            r#"{"status":"capturesuccess","amount":"50,00","result":{"code":"00026"}}"#,
        ));
        assert_eq!(answer.classification, Classification::Succeeded);
        assert_eq!(answer.snapshot.as_ref().unwrap().amount, None);
        assert_eq!(answer.response.unwrap()["amount"], "50,00");
        let numeric = done(classify_inquiry(
            200,
            r#"{"status":"capturesuccess","amount":50.5,"captureAmount":"20.00","result":{"code":"00026"}}"#,
        ));
        let snapshot = numeric.snapshot.unwrap();
        assert_eq!(snapshot.amount, Some(Amount::from_minor(5050)));
        assert_eq!(snapshot.captured, Some(Amount::from_minor(2000)));
    }

    #[test]
    fn a_record_that_is_not_found_is_declined() {
        for body in [
            r#"{"paymentId":"-","result":{"code":"10026","description":"Record not found"}}"#,
            r#"{"result":{"code":"00026","description":"Record found"}}"#,
            r#"{"paymentId":"-","result":{"code":"00001"},"timestamp":"2026-11-22 10:15:03"}"#,
            r#"{"result":{"code":"10001","description":"Invalid checksum"}}"#,
        ] {
            let answer = done(classify_inquiry(200, body));
            assert_eq!(answer.classification, Classification::Declined, "{body}");
            assert!(answer.snapshot.is_none());
            assert!(answer.gateway_code.is_some());
            // Only the not-found code is evidence that the payment does not exist.
            assert_eq!(
                answer.not_found,
                answer.gateway_code.as_deref() == Some("10026"),
                "{body}"
            );
        }
        assert!(done(classify_inquiry(200, r#"{"result":{"code":10026}}"#)).not_found);
        // Not an inquiry answer's business: a refused CP on an unknown id is just declined.
        assert!(!cp(r#"{"paymentId":"-","result":{"code":"10026"}}"#).not_found);
    }

    #[test]
    fn a_found_record_without_a_long_status_is_unreadable() {
        let answer = done(classify_inquiry(
            200,
            r#"{"amount":"5.00","transactionStatus":"Y","result":{"code":"00026"}}"#,
        ));
        assert_eq!(answer.classification, Classification::Ambiguous);
        assert_eq!(answer.gateway_code.as_deref(), Some("00026"));
        assert!(answer.snapshot.is_none());
    }

    #[test]
    fn inquiry_transport_failures_are_classified_truthfully() {
        let answer = done(classify_inquiry(503, FOUND));
        assert_eq!(answer.classification, Classification::Ambiguous);
        let answer = done(classify_inquiry(200, "oops"));
        assert_eq!(answer.classification, Classification::Ambiguous);
    }

    fn rows(verdict: Verdict<Page>) -> Vec<Value> {
        match done(verdict) {
            Page::Rows { rows, .. } => rows,
            Page::Stop(answer) => panic!("expected rows, got {answer:?}"),
        }
    }

    fn stop(verdict: Verdict<Page>) -> Answer {
        match done(verdict) {
            Page::Stop(answer) => answer,
            Page::Rows { rows, .. } => panic!("expected a stop, got {rows:?}"),
        }
    }

    #[test]
    fn list_pages() {
        let page = rows(classify_list_page(
            200,
            r#"{"result":{"code":"00029","description":"Transactions retrieved"},"transaction":[{"systemPaymentId":"1","amount":"5.00","transactionStatus":"capturesuccess"},{"systemPaymentId":"2"}]}"#,
        ));
        assert_eq!(page.len(), 2);
        assert_eq!(page[0]["systemPaymentId"], "1");
        assert_eq!(page[0]["transactionStatus"], "capturesuccess");

        assert!(rows(classify_list_page(200, "{}")).is_empty());
        assert!(rows(classify_list_page(200, " { } ")).is_empty());
        assert!(rows(classify_list_page(200, r#"{"result":{"code":"00029"}}"#)).is_empty());
        assert_eq!(
            rows(classify_list_page(
                200,
                r#"{"result":{"code":29},"transactions":[{"a":1}]}"#
            ))
            .len(),
            1
        );
        assert_eq!(
            rows(classify_list_page(
                200,
                r#"{"result":{"code":"00029"},"transaction":{"a":1}}"#
            ))
            .len(),
            1
        );
        assert_eq!(
            rows(classify_list_page(200, r#"{"transaction":[{"a":1}]}"#)).len(),
            1
        );
    }

    #[test]
    fn list_errors() {
        for code in [
            "30086", "30087", "30088", "30089", "30090", "30091", "10001",
        ] {
            let body = format!(r#"{{"result":{{"code":"{code}","description":"bad page"}}}}"#);
            let answer = stop(classify_list_page(200, &body));
            assert_eq!(answer.classification, Classification::Declined, "{code}");
            assert_eq!(answer.gateway_code.as_deref(), Some(code));
            assert_eq!(answer.description.as_deref(), Some("bad page"));
        }
        for body in [
            "nope",
            r#"{"something":"else"}"#,
            r#"{"result":{"code":"00029"},"transaction":"x"}"#,
        ] {
            let answer = stop(classify_list_page(200, body));
            assert_eq!(answer.classification, Classification::Ambiguous, "{body}");
        }
        assert_eq!(
            stop(classify_list_page(500, "{}")).classification,
            Classification::Ambiguous
        );
        assert_eq!(
            stop(classify_list_page(429, "{}")).classification,
            Classification::NotApplied
        );
    }
}
