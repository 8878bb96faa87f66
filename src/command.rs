//! A command as producers publish it, and its validation.
//!
//! The field names follow `shared/spec/messages.md` exactly. Validation turns
//! a [`Command`] into a [`ValidCommand`] (a ready gateway client and an
//! [`OperationRequest`]) or a [`Rejected`] with the contract's `reason`.
//! Generic rules live here; what only one gateway cares about (Praxis refusing
//! an amount on capture) is asked of the gateway through [`Gateway::check`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::macros::format_description;

use crate::gateways::registry::{self, Accounts};
use crate::gateways::{Gateway, Operation, OperationRequest, Rejection};
use crate::money::Amount;
use crate::outcome::{RejectReason, Rejected};

/// The largest `metadata` object accepted, serialized.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A command as it arrives. Every field is optional here so that a command with
/// a usable `id` but a bad field still gets a `rejected` result, not a dead letter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A command that passed validation, with its gateway client resolved.
#[derive(Clone)]
pub struct ValidCommand {
    pub id: String,
    pub gateway: Arc<dyn Gateway>,
    pub account: String,
    pub request: OperationRequest,
}

pub const DEFAULT_ACCOUNT: &str = "default";

pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl Command {
    pub fn account_name(&self) -> &str {
        self.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
    }

    /// Checks every field; the first problem found is the one reported.
    pub fn validate(&self, accounts: &Accounts) -> Result<ValidCommand, Rejected> {
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
                    "unknown gateway `{gateway_name}` (known: {})",
                    known.join(", ")
                ),
            ));
        }
        let operation_name = self
            .operation
            .as_deref()
            .ok_or_else(|| Rejected::invalid("operation", "missing"))?;
        let operation = Operation::parse(operation_name).ok_or_else(|| {
            Rejected::invalid(
                "operation",
                format!(
                    "unknown operation `{operation_name}` (known: capture, refund, cancel, inquiry, transaction_list)"
                ),
            )
        })?;
        let account = self.account_name();
        if account.is_empty() {
            return Err(Rejected::invalid("account", "must not be empty"));
        }

        let payment_id = match (&self.payment_id, operation) {
            (None, Operation::TransactionList) => None,
            (None, _) => return Err(Rejected::invalid("payment_id", "missing")),
            (Some(p), _) if p.is_empty() || p.len() > 64 => {
                return Err(Rejected::invalid(
                    "payment_id",
                    "must be 1 to 64 characters",
                ))
            }
            (Some(p), _) if !p.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(Rejected::invalid(
                    "payment_id",
                    "must be printable ASCII without spaces",
                ))
            }
            (Some(p), _) => Some(p.clone()),
        };
        let amount = match &self.amount {
            None => None,
            Some(text) => {
                Some(Amount::parse_positive(text).map_err(|e| Rejected::invalid("amount", e))?)
            }
        };
        if let Some(currency) = &self.currency {
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Rejected::invalid(
                    "currency",
                    "must be an ISO 4217 code such as EUR",
                ));
            }
        }
        let (from, to) = match operation {
            Operation::TransactionList => {
                let from = parse_date("from", self.from.as_deref())?;
                let to = parse_date("to", self.to.as_deref())?;
                if from > to {
                    return Err(Rejected::invalid("from", "must not be after `to`"));
                }
                (Some(from), Some(to))
            }
            _ => {
                if self.from.is_some() || self.to.is_some() {
                    return Err(Rejected::invalid(
                        "from",
                        "only allowed for transaction_list",
                    ));
                }
                (None, None)
            }
        };
        if let Some(metadata) = &self.metadata {
            if !metadata.is_object() {
                return Err(Rejected::invalid("metadata", "must be a JSON object"));
            }
            let size = serde_json::to_vec(metadata)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(Rejected::invalid(
                    "metadata",
                    format!("is {size} bytes; at most {MAX_METADATA_BYTES} allowed"),
                ));
            }
        }

        let gateway = accounts
            .get(gateway_name, account)
            .cloned()
            .ok_or_else(|| {
                Rejected::new(
                    RejectReason::UnknownAccount,
                    format!("no account `{account}` is configured for {gateway_name}"),
                )
            })?;
        let request = OperationRequest {
            operation,
            payment_id,
            amount,
            currency: self.currency.clone(),
            from,
            to,
        };
        gateway
            .check(&request)
            .map_err(|rejection| match rejection {
                Rejection::UnsupportedOperation { .. } => {
                    Rejected::new(RejectReason::UnsupportedOperation, rejection.to_string())
                }
                Rejection::InvalidField { field, problem } => Rejected::invalid(field, problem),
            })?;
        Ok(ValidCommand {
            id: id.to_string(),
            gateway,
            account: account.to_string(),
            request,
        })
    }
}

fn parse_date(field: &str, text: Option<&str>) -> Result<time::Date, Rejected> {
    let text = text.ok_or_else(|| Rejected::invalid(field, "missing"))?;
    time::Date::parse(text, format_description!("[year]-[month]-[day]")).map_err(|_| {
        Rejected::invalid(
            field,
            format!("`{text}` is not a date of the form YYYY-MM-DD"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_contract_alphabet() {
        assert!(valid_id("order-8812-refund-1"));
        assert!(valid_id("a.b_c:d-E9"));
        assert!(valid_id(&"x".repeat(128)));
        assert!(!valid_id(""));
        assert!(!valid_id(&"x".repeat(129)));
        assert!(!valid_id("has space"));
        assert!(!valid_id("slash/no"));
        assert!(!valid_id("ünï"));
    }

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
                    metadata: Some(serde_json::json!([1])),
                    ..base.clone()
                },
                "metadata: must be a JSON object",
            ),
            (
                Command {
                    metadata: Some(serde_json::json!({"x": "y".repeat(5000)})),
                    ..base.clone()
                },
                "metadata: is",
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
