//! The Paymentz transactionServices REST v1 side of the wire: `authToken`,
//! `payments/{id}` (CP, RF, RV, IN) and `getTransactionList`, with their
//! checks (token, member, MD5 checksum, amount format), state rules and
//! answers, as `shared/spec/gateways.md` describes them.
//!
//! Every business answer is HTTP 200 with `result{code,description}`. Codes
//! the spec leaves unknown are the simulator's choice, in a block that no
//! known Paymentz table uses (`109xx`), so a client that treats them as
//! anything but a definite refusal shows up in tests. See the module docs of
//! [`crate::simulator`] for the full table.

use std::collections::HashMap;

use hyper::HeaderMap;
use serde_json::{json, Value};
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::config::PaymentzAccount;
use super::dispatch::Reply;
use super::faults::Target;
use super::signing::{ct_eq, paymentz_checksum};
use super::simulation::Simulation;
use super::state::{Effect, GatewayId, NewEntry, Payment, PzStatus, Status};
use super::tokens::TokenOwner;
use crate::money::Amount;

pub const BASE_PATH: &str = "/transactionServices/REST/v1";

/// The descriptor every answer carries (what would show on a statement).
pub const DESCRIPTOR: &str = "SIMULATOR*PAYMENTZ";

/// Result codes and their descriptions.
pub mod codes {
    pub const TOKEN_OK: (&str, &str) = ("200", "Token generated successfully");
    pub const TOKEN_FAILED: (&str, &str) =
        ("401", "Authorization failed: token expired or invalid");
    pub const TOKEN_REFUSED: (&str, &str) = ("403", "Token generation failed: invalid credentials");
    pub const CAPTURED: (&str, &str) = ("00004", "Capture successful");
    pub const REFUNDED: (&str, &str) = ("00005", "Refund successful");
    pub const CANCELLED: (&str, &str) = ("00006", "Cancel successful");
    pub const FOUND: (&str, &str) = ("00026", "Record found");
    pub const LIST: (&str, &str) = ("00029", "Transaction list retrieved successfully");
    pub const CAPTURE_REJECTED: &str = "10005";
    pub const REFUND_REJECTED: &str = "10006";
    pub const CANCEL_REJECTED: &str = "10007";
    pub const NOT_FOUND: (&str, &str) = ("10026", "Record not found");
    /// Simulator's choice: the checksum does not match.
    pub const BAD_CHECKSUM: (&str, &str) = ("10901", "Checksum mismatch");
    /// Simulator's choice: amount missing, not `d{1,10}.dd`, or zero.
    pub const BAD_AMOUNT: &str = "10902";
    /// Simulator's choice: a required field is missing or `paymentType`/`idType` is unknown.
    pub const INVALID_REQUEST: &str = "10903";
    /// Simulator's choice: the path id is not a valid paymentId (digits).
    pub const INVALID_PAYMENT_ID: (&str, &str) = ("10904", "Invalid paymentId");
    /// Simulator's choice: `authentication.memberId` is not the token's member.
    pub const MEMBER_MISMATCH: (&str, &str) = ("10905", "memberId does not match the auth token");
    /// Simulator's choice: refund above captured minus already refunded.
    pub const REFUND_OVER_LIMIT: (&str, &str) =
        ("10906", "Refund amount exceeds the refundable amount");
    /// Simulator's choice: capture above the authorised amount.
    pub const CAPTURE_OVER_LIMIT: (&str, &str) =
        ("10907", "Capture amount exceeds the authorised amount");
    pub const BAD_FROMDATE: (&str, &str) =
        ("30086", "Invalid pagination.fromdate: expected dd/MM/yyyy");
    pub const BAD_TODATE: (&str, &str) =
        ("30087", "Invalid pagination.todate: expected dd/MM/yyyy");
    pub const DATES_REVERSED: (&str, &str) =
        ("30088", "pagination.fromdate is after pagination.todate");
    pub const BAD_PAGENO: (&str, &str) = (
        "30089",
        "Invalid pagination.pageno: expected a positive integer",
    );
    pub const BAD_RECORDS: (&str, &str) = (
        "30090",
        "Invalid pagination.records: expected a positive integer",
    );
    pub const TOO_MANY_RECORDS: (&str, &str) = ("30091", "pagination.records exceeds 1000");
}

/// The largest page `getTransactionList` serves.
pub const MAX_RECORDS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    AuthToken,
    Payment(String),
    TransactionList,
}

/// The endpoint under [`BASE_PATH`], if any.
pub fn route(rest: &str) -> Option<Endpoint> {
    match rest {
        "/authToken" => Some(Endpoint::AuthToken),
        "/getTransactionList" => Some(Endpoint::TransactionList),
        _ => {
            let id = rest.strip_prefix("/payments/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            Some(Endpoint::Payment(percent_decode(id)?))
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaymentType {
    Capture,
    Refund,
    Reverse,
    Inquiry,
    Invalid,
}

impl PaymentType {
    fn parse(text: Option<&str>) -> PaymentType {
        match text {
            Some("CP") => PaymentType::Capture,
            Some("RF") => PaymentType::Refund,
            Some("RV") => PaymentType::Reverse,
            Some("IN") => PaymentType::Inquiry,
            _ => PaymentType::Invalid,
        }
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            PaymentType::Capture => ("CP", "capture"),
            PaymentType::Refund => ("RF", "refund"),
            PaymentType::Reverse => ("RV", "cancel"),
            PaymentType::Inquiry => ("IN", "inquiry"),
            PaymentType::Invalid => ("invalid", "invalid"),
        }
    }
}

/// One Paymentz request, parsed.
#[derive(Debug)]
pub struct Call {
    endpoint: Endpoint,
    /// Form fields from the body (first value wins). Nothing is read from
    /// the query string: Paymentz does not, so neither do we.
    form: HashMap<String, String>,
    token: Option<String>,
    payment_type: PaymentType,
}

impl Call {
    pub fn parse(endpoint: Endpoint, headers: &HeaderMap, body: &[u8]) -> Call {
        let is_form = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        let mut form = HashMap::new();
        if is_form {
            if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
                for (key, value) in pairs {
                    form.entry(key).or_insert(value);
                }
            }
        }
        let token = headers
            .get("AuthToken")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string());
        let payment_type = PaymentType::parse(form.get("paymentType").map(String::as_str));
        Call {
            endpoint,
            form,
            token,
            payment_type,
        }
    }

    pub fn target(&self) -> Target<'_> {
        let (wire_op, generic_op, payment_id) = match &self.endpoint {
            Endpoint::AuthToken => ("authToken", "auth_token", None),
            Endpoint::TransactionList => ("getTransactionList", "transaction_list", None),
            Endpoint::Payment(id) => {
                let (wire, generic) = self.payment_type.names();
                (wire, generic, Some(id.as_str()))
            }
        };
        Target {
            gateway: GatewayId::Paymentz,
            wire_op,
            generic_op,
            payment_id,
            operation_call: self.endpoint != Endpoint::AuthToken,
        }
    }

    pub fn handle(&self, sim: &Simulation, request_no: u64) -> Reply {
        match &self.endpoint {
            Endpoint::AuthToken => self.auth_token(sim),
            Endpoint::Payment(id) => self
                .payment(sim, id, request_no)
                .unwrap_or_else(|reply| reply),
            Endpoint::TransactionList => self.transaction_list(sim).unwrap_or_else(|reply| reply),
        }
    }

    /// A non-empty form field.
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<&str, Reply> {
        self.field(name)
            .ok_or_else(|| error(codes::INVALID_REQUEST, &format!("{name} is missing")))
    }

    fn auth_token(&self, sim: &Simulation) -> Reply {
        let partner = self.field("authentication.partnerId").unwrap_or_default();
        let username = self.field("merchant.username").unwrap_or_default();
        let key = self.field("authentication.sKey").unwrap_or_default();
        let mut accepted: Option<&PaymentzAccount> = None;
        for account in &sim.config.paymentz_accounts {
            // Compare every key in constant time, whoever matches, so timing
            // says nothing about which part was wrong.
            let key_ok = {
                use secrecy::ExposeSecret;
                ct_eq(account.secure_key.expose_secret(), key)
            };
            if key_ok && account.partner_id == partner && account.username == username {
                accepted.get_or_insert(account);
            }
        }
        let Some(account) = accepted else {
            return Reply::json(
                &json!({
                    "result": result(codes::TOKEN_REFUSED),
                    "timestamp": timestamp(),
                }),
                Some(codes::TOKEN_REFUSED.0.into()),
            );
        };
        let token = sim.tokens.issue(TokenOwner {
            member_id: account.member_id.clone(),
            username: account.username.clone(),
        });
        Reply::json(
            &json!({
                "partnerId": account.partner_id,
                "memberId": account.member_id,
                "result": result(codes::TOKEN_OK),
                "timestamp": timestamp(),
                "LoginName": account.username,
                "AuthToken": token,
            }),
            Some(codes::TOKEN_OK.0.into()),
        )
    }

    /// Token, then member, then the account whose key signs the checksum.
    fn authorize<'s>(&self, sim: &'s Simulation) -> Result<&'s PaymentzAccount, Reply> {
        let owner = self
            .token
            .as_deref()
            .and_then(|t| sim.tokens.check(t))
            .ok_or_else(|| {
                Reply::json(
                    &json!({"result": result(codes::TOKEN_FAILED)}),
                    Some(codes::TOKEN_FAILED.0.into()),
                )
            })?;
        let member = self.required("authentication.memberId")?;
        if member != owner.member_id {
            return Err(error_pair(codes::MEMBER_MISMATCH));
        }
        sim.config
            .paymentz_accounts
            .iter()
            .find(|a| a.member_id == owner.member_id && a.username == owner.username)
            .ok_or_else(|| {
                Reply::json(
                    &json!({"result": result(codes::TOKEN_FAILED)}),
                    Some(codes::TOKEN_FAILED.0.into()),
                )
            })
    }

    fn verify_checksum(&self, account: &PaymentzAccount, parts: &[&str]) -> Result<(), Reply> {
        let sent = self.required("authentication.checksum")?;
        let expected = paymentz_checksum(&account.member_id, &account.secure_key, parts);
        if ct_eq(&expected, sent) {
            Ok(())
        } else {
            Err(error_pair(codes::BAD_CHECKSUM))
        }
    }

    fn payment(&self, sim: &Simulation, id: &str, request_no: u64) -> Result<Reply, Reply> {
        let account = self.authorize(sim)?;
        let member = account.member_id.as_str();
        if self.payment_type == PaymentType::Invalid {
            return Err(error(
                codes::INVALID_REQUEST,
                "paymentType must be CP, RF, RV or IN",
            ));
        }
        match self.payment_type {
            PaymentType::Capture | PaymentType::Refund => {
                let amount_text = self
                    .field("amount")
                    .ok_or_else(|| error(codes::BAD_AMOUNT, "amount is missing"))?;
                self.verify_checksum(account, &[id, amount_text])?;
                let amount = parse_amount(amount_text)?;
                check_payment_id(id)?;
                Ok(sim.with_paymentz(id, member, |payment| {
                    let Some(payment) = payment else {
                        return error_pair(codes::NOT_FOUND);
                    };
                    if self.payment_type == PaymentType::Capture {
                        capture(sim, payment, amount, request_no)
                    } else {
                        refund(sim, payment, amount, request_no)
                    }
                }))
            }
            PaymentType::Reverse => {
                self.verify_checksum(account, &[id])?;
                check_payment_id(id)?;
                Ok(sim.with_paymentz(id, member, |payment| match payment {
                    Some(payment) => reverse(sim, payment, request_no),
                    None => error_pair(codes::NOT_FOUND),
                }))
            }
            PaymentType::Inquiry => {
                let by_reference = match self.field("idType").unwrap_or("PID") {
                    "PID" => false,
                    "MID" => true,
                    _ => return Err(error(codes::INVALID_REQUEST, "idType must be PID or MID")),
                };
                self.verify_checksum(account, &[id])?;
                let payment_id = if by_reference {
                    match sim.paymentz_by_reference(id) {
                        Some(pid) => pid,
                        None => return Ok(not_found_inquiry()),
                    }
                } else {
                    check_payment_id(id)?;
                    id.to_string()
                };
                Ok(
                    sim.with_paymentz(&payment_id, member, |payment| match payment {
                        Some(payment) => inquiry(payment),
                        None => not_found_inquiry(),
                    }),
                )
            }
            PaymentType::Invalid => unreachable!("refused above"),
        }
    }

    fn transaction_list(&self, sim: &Simulation) -> Result<Reply, Reply> {
        let account = self.authorize(sim)?;
        self.verify_checksum(account, &[])?;
        let from = self
            .field("pagination.fromdate")
            .and_then(parse_date)
            .ok_or_else(|| error_pair(codes::BAD_FROMDATE))?;
        let to = self
            .field("pagination.todate")
            .and_then(parse_date)
            .ok_or_else(|| error_pair(codes::BAD_TODATE))?;
        if from > to {
            return Err(error_pair(codes::DATES_REVERSED));
        }
        let page = positive(self.field("pagination.pageno"))
            .ok_or_else(|| error_pair(codes::BAD_PAGENO))?;
        let records = positive(self.field("pagination.records"))
            .ok_or_else(|| error_pair(codes::BAD_RECORDS))?;
        if records > MAX_RECORDS {
            return Err(error_pair(codes::TOO_MANY_RECORDS));
        }
        let payment_id = self.field("paymentId");
        let status = self.field("status");
        let currency = self.field("currency");
        let mut rows: Vec<Payment<PzStatus>> = sim
            .paymentz
            .values()
            .into_iter()
            .filter(|p| p.visible_to(&account.member_id))
            .filter(|p| (from..=to).contains(&p.created_at.date()))
            .filter(|p| payment_id.is_none_or(|id| id == p.id))
            .filter(|p| status.is_none_or(|s| s == p.status.as_str()))
            .filter(|p| currency.is_none_or(|c| c == p.currency))
            .collect();
        rows.sort_by(|a, b| {
            (a.created_at, a.id.len(), &a.id).cmp(&(b.created_at, b.id.len(), &b.id))
        });
        let page_rows: Vec<Value> = rows
            .iter()
            .skip((page - 1).saturating_mul(records))
            .take(records)
            .map(|p| {
                json!({
                    "systemPaymentId": p.id,
                    "merchantTransactionId": p.reference,
                    "amount": p.amount.to_string(),
                    "currency": p.currency,
                    "transactionStatus": p.status.as_str(),
                    "captureamount": p.captured.to_string(),
                    "refundamount": p.refunded.to_string(),
                    "date": format_time(p.created_at),
                })
            })
            .collect();
        if page_rows.is_empty() {
            // Paymentz's answer for "no rows": an empty object, not an error.
            return Ok(Reply::json(&json!({}), None));
        }
        Ok(Reply::json(
            &json!({"result": result(codes::LIST), "transaction": page_rows}),
            Some(codes::LIST.0.into()),
        ))
    }
}

fn capture(sim: &Simulation, p: &mut Payment<PzStatus>, amount: Amount, request_no: u64) -> Reply {
    if p.status != PzStatus::AuthSuccessful {
        return error(
            codes::CAPTURE_REJECTED,
            &format!("Capture rejected: payment is {}", p.status.as_str()),
        );
    }
    if amount > p.amount {
        return error_pair(codes::CAPTURE_OVER_LIMIT);
    }
    p.status = PzStatus::CaptureSuccess;
    p.captured = amount;
    applied(sim, p, Effect::Capture, amount, request_no, codes::CAPTURED)
}

fn refund(sim: &Simulation, p: &mut Payment<PzStatus>, amount: Amount, request_no: u64) -> Reply {
    if !matches!(
        p.status,
        PzStatus::CaptureSuccess | PzStatus::Settled | PzStatus::Reversed
    ) {
        return error(
            codes::REFUND_REJECTED,
            &format!("Refund rejected: payment is {}", p.status.as_str()),
        );
    }
    let room = p.captured.saturating_sub(p.refunded);
    if amount > room {
        return error_pair(codes::REFUND_OVER_LIMIT);
    }
    p.status = PzStatus::Reversed;
    p.refunded = p.refunded.checked_add(amount).expect("bounded by captured");
    applied(sim, p, Effect::Refund, amount, request_no, codes::REFUNDED)
}

fn reverse(sim: &Simulation, p: &mut Payment<PzStatus>, request_no: u64) -> Reply {
    if p.status != PzStatus::AuthSuccessful {
        return error(
            codes::CANCEL_REJECTED,
            &format!("Cancel rejected: payment is {}", p.status.as_str()),
        );
    }
    p.status = PzStatus::AuthCancelled;
    let amount = p.amount;
    applied(sim, p, Effect::Cancel, amount, request_no, codes::CANCELLED)
}

/// Records the effect (still under the payment's lock) and answers with the
/// new `paymentId` the operation got.
fn applied(
    sim: &Simulation,
    p: &mut Payment<PzStatus>,
    effect: Effect,
    amount: Amount,
    request_no: u64,
    code: (&str, &str),
) -> Reply {
    p.updated_at = OffsetDateTime::now_utc();
    let reference = sim.ids.next().to_string();
    sim.ledger.append(NewEntry {
        gateway: GatewayId::Paymentz,
        payment_id: &p.id,
        operation: effect,
        amount,
        currency: &p.currency,
        transaction_id: reference.clone(),
        status_after: p.status.as_str(),
        request_no,
    });
    sim.stats
        .applied(GatewayId::Paymentz.as_str(), effect.as_str());
    sim.notify(&p.view(GatewayId::Paymentz));
    Reply::json(
        &json!({
            "paymentId": reference,
            "descriptor": DESCRIPTOR,
            "result": result(code),
            "timestamp": timestamp(),
        }),
        Some(code.0.into()),
    )
}

fn inquiry(p: &Payment<PzStatus>) -> Reply {
    let short = p.status.short();
    let mut answer = json!({
        "paymentId": p.id,
        "merchantTransactionId": p.reference,
        "status": p.status.as_str(),
        "transactionStatus": short,
        "amount": p.amount.to_string(),
        "currency": p.currency,
        "descriptor": DESCRIPTOR,
        "remark": match short {
            "Y" => "Transaction Successful",
            "C" => "Transaction Cancelled",
            "N" => "Transaction Failed",
            _ => "Transaction Pending",
        },
        "bankReferenceId": format!("SIMBANK{}", p.id),
        "card": {
            "bin": "411111",
            "lastFourDigits": "1111",
            "expiryMonth": "12",
            "expiryYear": "2030",
            "cardType": "VISA",
        },
        "result": result(codes::FOUND),
        "timestamp": timestamp(),
    });
    if p.status == PzStatus::Reversed {
        answer["refundAmount"] = Value::String(p.refunded.to_string());
    }
    Reply::json(&answer, Some(codes::FOUND.0.into()))
}

fn not_found_inquiry() -> Reply {
    Reply::json(
        &json!({"result": result(codes::NOT_FOUND)}),
        Some(codes::NOT_FOUND.0.into()),
    )
}

/// Exactly two decimals, 1 to 10 integer digits, above zero.
fn parse_amount(text: &str) -> Result<Amount, Reply> {
    let well_formed = text.split_once('.').is_some_and(|(int, frac)| {
        (1..=10).contains(&int.len())
            && frac.len() == 2
            && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    });
    if !well_formed {
        return Err(error(
            codes::BAD_AMOUNT,
            &format!("Invalid amount `{text}`: exactly two decimals and at most 10 integer digits required"),
        ));
    }
    match Amount::parse(text) {
        Ok(amount) if amount > Amount::ZERO => Ok(amount),
        _ => Err(error(
            codes::BAD_AMOUNT,
            "Invalid amount: must be above zero",
        )),
    }
}

fn check_payment_id(id: &str) -> Result<(), Reply> {
    if id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(error_pair(codes::INVALID_PAYMENT_ID))
    }
}

fn parse_date(text: &str) -> Option<Date> {
    Date::parse(text, format_description!("[day]/[month]/[year]")).ok()
}

fn positive(text: Option<&str>) -> Option<usize> {
    text?.parse::<usize>().ok().filter(|n| *n > 0)
}

fn result(code: (&str, &str)) -> Value {
    json!({"code": code.0, "description": code.1})
}

/// An error answer: `paymentId` `-`, the result, the time.
fn error(code: &str, description: &str) -> Reply {
    Reply::json(
        &json!({
            "paymentId": "-",
            "result": {"code": code, "description": description},
            "timestamp": timestamp(),
        }),
        Some(code.to_string()),
    )
}

fn error_pair(code: (&str, &str)) -> Reply {
    error(code.0, code.1)
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .expect("static format")
}

fn timestamp() -> String {
    format_time(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/authToken"), Some(Endpoint::AuthToken));
        assert_eq!(
            route("/getTransactionList"),
            Some(Endpoint::TransactionList)
        );
        assert_eq!(
            route("/payments/54279"),
            Some(Endpoint::Payment("54279".into()))
        );
        assert_eq!(
            route("/payments/ORDER%201"),
            Some(Endpoint::Payment("ORDER 1".into()))
        );
        assert_eq!(route("/payments/"), None);
        assert_eq!(route("/payments/1/2"), None);
        assert_eq!(route("/payments/%zz"), None);
        assert_eq!(route("/other"), None);
    }

    #[test]
    fn amounts_must_be_exact() {
        assert_eq!(parse_amount("1.00").unwrap(), Amount::from_minor(100));
        assert_eq!(
            parse_amount("9999999999.99").unwrap(),
            Amount::from_minor(999_999_999_999)
        );
        for bad in [
            "1",
            "1.0",
            "1.000",
            "-1.00",
            "+1.00",
            "1,00",
            ".50",
            "12345678901.00",
            "0.00",
            "1e2.00",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn dates_are_day_month_year() {
        assert_eq!(
            parse_date("22/11/2026"),
            Some(Date::from_calendar_date(2026, time::Month::November, 22).unwrap())
        );
        assert_eq!(parse_date("2026-11-22"), None);
        assert_eq!(parse_date("11/22/2026"), None);
    }
}
