//! The rules a command must follow: those that need no configuration
//! ([`Command::check`], also run by the reader) and the account lookup and
//! gateway's own rules ([`Command::validate`]).

use super::{
    valid_id, Command, ValidCommand, LIST_YEARS, MAX_ACCOUNT_CHARS, MAX_LIST_DAYS, MAX_TEXT_CHARS,
    SHOWN_NAME_CHARS,
};
use crate::gateways::registry::{self, Accounts};
use crate::gateways::{
    Gateway, ListRequest, Operation, OperationRequest, PaymentOperation, PaymentRequest, Rejection,
};
use crate::money::Amount;
use crate::outcome::{RejectReason, Rejected};
use crate::telemetry::Escaped;

impl Command {
    /// The rules that need no configuration, in a fixed order; the first
    /// problem found is the one reported. Every text field is first checked
    /// to be short and printable, so that what a rejection echoes is bounded.
    pub fn check(&self) -> Result<(), Rejected> {
        self.check_texts()?;
        self.check_id_and_gateway()?;
        let operation = self.operation()?;
        self.check_account()?;
        self.check_payment_id(operation)?;
        self.check_amount_and_currency()?;
        self.list_span(operation)?;
        Ok(())
    }

    /// Every text field short and printable, so that what a rejection
    /// echoes is bounded.
    fn check_texts(&self) -> Result<(), Rejected> {
        let text_fields = [
            ("id", &self.id),
            ("gateway", &self.gateway),
            ("account", &self.account),
            ("operation", &self.operation),
            ("payment_id", &self.payment_id),
            ("amount", &self.amount),
            ("currency", &self.currency),
            ("from", &self.from),
            ("to", &self.to),
        ];
        for (name, value) in text_fields {
            let Some(text) = value else { continue };
            let chars = text.chars().count();
            if chars > MAX_TEXT_CHARS {
                return Err(Rejected::invalid(
                    name,
                    format!("is {chars} characters long; at most {MAX_TEXT_CHARS} allowed"),
                ));
            }
            if text.chars().any(Escaped::is_unsafe) {
                return Err(Rejected::invalid(
                    name,
                    format!(
                        "contains a control character: `{}`",
                        Escaped::at_most(text, SHOWN_NAME_CHARS)
                    ),
                ));
            }
        }

        Ok(())
    }

    /// The command's id and gateway name, both well-formed.
    fn check_id_and_gateway(&self) -> Result<(&str, &str), Rejected> {
        let id = self
            .id
            .as_deref()
            .ok_or_else(|| Rejected::invalid("id", "missing"))?;
        if !valid_id(id) {
            return Err(Rejected::invalid(
                "id",
                "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let gateway_name = self
            .gateway
            .as_deref()
            .ok_or_else(|| Rejected::invalid("gateway", "missing"))?;
        if registry::find(gateway_name).is_none() {
            let known: Vec<_> = registry::GATEWAYS.iter().map(|k| k.name).collect();
            return Err(Rejected::invalid(
                "gateway",
                format!(
                    "unknown gateway `{}` (known: {})",
                    Escaped::at_most(gateway_name, SHOWN_NAME_CHARS),
                    known.join(", ")
                ),
            ));
        }
        Ok((id, gateway_name))
    }

    fn check_account(&self) -> Result<(), Rejected> {
        let account = self.account_name();
        if account.is_empty() {
            return Err(Rejected::invalid("account", "must not be empty"));
        }
        if account.chars().count() > MAX_ACCOUNT_CHARS {
            return Err(Rejected::invalid(
                "account",
                format!("must be at most {MAX_ACCOUNT_CHARS} characters"),
            ));
        }
        Ok(())
    }

    /// A payment id for every operation but a transaction list, where it
    /// is an optional filter.
    fn check_payment_id(&self, operation: Operation) -> Result<Subject<'_>, Rejected> {
        if let Some(p) = &self.payment_id {
            if p.is_empty() || p.len() > 64 {
                return Err(Rejected::invalid(
                    "payment_id",
                    "must be 1 to 64 characters",
                ));
            }
            if !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Rejected::invalid(
                    "payment_id",
                    "must be printable ASCII without spaces",
                ));
            }
        }
        match (PaymentOperation::of(operation), self.payment_id.as_deref()) {
            (Some(operation), Some(id)) => Ok(Subject::Payment(operation, id)),
            (Some(_), None) => Err(Rejected::invalid("payment_id", "missing")),
            (None, filter) => Ok(Subject::List(filter)),
        }
    }

    fn check_amount_and_currency(&self) -> Result<(), Rejected> {
        if let Some(text) = &self.amount {
            Amount::parse_positive(text).map_err(|e| Rejected::invalid("amount", e))?;
        }
        if let Some(currency) = &self.currency {
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Rejected::invalid(
                    "currency",
                    "must be an ISO 4217 code such as EUR",
                ));
            }
        }
        Ok(())
    }

    fn operation(&self) -> Result<Operation, Rejected> {
        let name = self
            .operation
            .as_deref()
            .ok_or_else(|| Rejected::invalid("operation", "missing"))?;
        Operation::parse(name).ok_or_else(|| {
            Rejected::invalid(
                "operation",
                format!(
                    "unknown operation `{}` (known: capture, refund, cancel, inquiry, transaction_list)",
                    Escaped::at_most(name, SHOWN_NAME_CHARS)
                ),
            )
        })
    }

    /// `from` and `to`: both for a transaction list, neither for anything else.
    fn list_span(&self, operation: Operation) -> Result<(), Rejected> {
        if operation == Operation::TransactionList {
            self.list_dates().map(|_| ())
        } else if self.from.is_some() || self.to.is_some() {
            Err(Rejected::invalid(
                "from",
                "only allowed for transaction_list",
            ))
        } else {
            Ok(())
        }
    }

    /// A transaction list's span: in sane years, in order, at most
    /// [`MAX_LIST_DAYS`] apart.
    fn list_dates(&self) -> Result<ListRequest, Rejected> {
        let from = parse_date("from", self.from.as_deref())?;
        let to = parse_date("to", self.to.as_deref())?;
        let list = ListRequest::new(from, to).map_err(rejected)?;
        let days = (to - from).whole_days() + 1;
        if days > MAX_LIST_DAYS {
            return Err(Rejected::invalid(
                "to",
                format!(
                    "the list would cover {days} days; one list covers at most {MAX_LIST_DAYS} (from and to included)"
                ),
            ));
        }
        Ok(list)
    }

    /// The request this checked command asks for. A list takes no amount:
    /// refused as its gateway would refuse it, an operation it does not
    /// offer first.
    fn request(
        &self,
        operation: Operation,
        amount: Option<Amount>,
        gateway: &dyn Gateway,
    ) -> Result<OperationRequest, Rejected> {
        let filter = match self.check_payment_id(operation)? {
            Subject::Payment(operation, id) => {
                return Ok(OperationRequest::Payment(PaymentRequest {
                    operation,
                    payment_id: id.to_string(),
                    amount,
                }))
            }
            Subject::List(filter) => filter,
        };
        if !gateway.supports(operation) {
            return Err(rejected(Rejection::UnsupportedOperation {
                gateway: gateway.name(),
                operation,
            }));
        }
        if amount.is_some() {
            return Err(Rejected::invalid(
                "amount",
                format!("not allowed for {} {operation}", gateway.name()),
            ));
        }
        let mut list = self.list_dates()?;
        list.currency = self.currency.clone();
        list.payment_id = filter.map(str::to_string);
        Ok(OperationRequest::List(list))
    }

    /// Checks every field; the first problem found is the one reported.
    pub fn validate(&self, accounts: &Accounts) -> Result<ValidCommand, Rejected> {
        self.check()?;
        let (id, gateway_name) = self.check_id_and_gateway()?;
        let operation = self.operation()?;
        let account = self.account_name();
        let amount = self
            .amount
            .as_deref()
            .map(Amount::parse_positive)
            .transpose()
            .map_err(|e| Rejected::invalid("amount", e))?;
        let gateway = accounts
            .get(gateway_name, account)
            .cloned()
            .ok_or_else(|| {
                Rejected::new(
                    RejectReason::UnknownAccount,
                    format!(
                        "no account `{}` is configured for {gateway_name}",
                        Escaped::at_most(account, SHOWN_NAME_CHARS)
                    ),
                )
            })?;
        let request = self.request(operation, amount, gateway.as_ref())?;
        gateway.check(&request).map_err(rejected)?;
        Ok(ValidCommand {
            id: id.to_string(),
            gateway,
            account: account.to_string(),
            request,
        })
    }
}

/// The gateway's refusal as the command's `rejected` result.
fn rejected(rejection: Rejection) -> Rejected {
    match rejection {
        Rejection::UnsupportedOperation { .. } => {
            Rejected::new(RejectReason::UnsupportedOperation, rejection.to_string())
        }
        Rejection::InvalidField { field, problem } => Rejected::invalid(field, problem),
    }
}

/// What a command is about: one payment, or a list with an optional filter.
enum Subject<'c> {
    Payment(PaymentOperation, &'c str),
    List(Option<&'c str>),
}

fn parse_date(field: &str, text: Option<&str>) -> Result<time::Date, Rejected> {
    let text = text.ok_or_else(|| Rejected::invalid(field, "missing"))?;
    let shown = || Escaped::at_most(text, SHOWN_NAME_CHARS);
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    let date = shaped
        .then(|| {
            time::Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()
        })
        .flatten()
        .ok_or_else(|| {
            Rejected::invalid(
                field,
                format!("`{}` is not a date of the form YYYY-MM-DD", shown()),
            )
        })?;
    if !LIST_YEARS.contains(&date.year()) {
        return Err(Rejected::invalid(
            field,
            format!(
                "`{}` is outside the years {} to {}",
                shown(),
                LIST_YEARS.start(),
                LIST_YEARS.end()
            ),
        ));
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_rules_reject_before_looking_up_accounts() {
        let accounts = Accounts::default();
        let base = Command {
            id: Some("c1".into()),
            gateway: Some("paymentz".into()),
            operation: Some("refund".into()),
            payment_id: Some("55361".into()),
            amount: Some("10.00".into()),
            ..Command::default()
        };
        let cases: Vec<(Command, &str)> = vec![
            (
                Command {
                    id: None,
                    ..base.clone()
                },
                "id: missing",
            ),
            (
                Command {
                    gateway: Some("stripe".into()),
                    ..base.clone()
                },
                "gateway: unknown gateway `stripe`",
            ),
            (
                Command {
                    operation: Some("void".into()),
                    ..base.clone()
                },
                "operation: unknown operation",
            ),
            (
                Command {
                    payment_id: None,
                    ..base.clone()
                },
                "payment_id: missing",
            ),
            (
                Command {
                    amount: Some("-1".into()),
                    ..base.clone()
                },
                "amount:",
            ),
            (
                Command {
                    amount: Some("1.005".into()),
                    ..base.clone()
                },
                "amount:",
            ),
            (
                Command {
                    amount: Some("0".into()),
                    ..base.clone()
                },
                "amount: amount must be positive",
            ),
            (
                Command {
                    currency: Some("eur".into()),
                    ..base.clone()
                },
                "currency:",
            ),
            (
                Command {
                    operation: Some("transaction_list".into()),
                    payment_id: None,
                    from: Some("2026-13-01".into()),
                    to: Some("2026-01-02".into()),
                    amount: None,
                    ..base.clone()
                },
                "from: `2026-13-01` is not a date",
            ),
            (
                Command {
                    operation: Some("transaction_list".into()),
                    payment_id: None,
                    from: Some("2026-02-01".into()),
                    to: Some("2026-01-02".into()),
                    amount: None,
                    ..base.clone()
                },
                "from: must not be after `to`",
            ),
            (
                Command {
                    operation: Some("transaction_list".into()),
                    payment_id: None,
                    from: Some("2026-01-01".into()),
                    to: None,
                    amount: None,
                    ..base.clone()
                },
                "to: missing",
            ),
        ];
        for (command, expected) in cases {
            let rejected = command.validate(&accounts).err().expect("must be rejected");
            assert_eq!(rejected.reason, RejectReason::InvalidCommand, "{command:?}");
            assert!(
                rejected.description.starts_with(expected),
                "{} does not start with {expected}",
                rejected.description
            );
        }
        let unknown = base.validate(&accounts).err().unwrap();
        assert_eq!(unknown.reason, RejectReason::UnknownAccount);
    }
}
