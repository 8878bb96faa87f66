//! `backoffice-worker call`: one operation, straight to a gateway, no queue.
//!
//! The operator's manual tool for one-off fixes. It reads only the accounts
//! from the config file (no RabbitMQ, no PostgreSQL), validates the operation
//! exactly as the worker validates a command, makes one attempt, and prints
//! the result in the shape of a result event. It never retries a side effect:
//! an ambiguous answer is reported as `unknown`, and the operator settles it
//! with an `inquiry`.

use std::path::PathBuf;

use serde::Serialize;

use crate::command::Command;
use crate::config::{self, Config};
use crate::events::Reported;
use crate::gateways::http::HttpTransport;
use crate::gateways::registry::Accounts;
use crate::gateways::Exchange;
use crate::ops::flags::CommandFlags;
use crate::outcome::{Outcome, RejectReason, Rejected};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker call --gateway paymentz --operation refund --payment-id 55361 --amount 10.00
  backoffice-worker call --gateway praxis --operation capture --payment-id 752856 --account eu
  backoffice-worker call --gateway paymentz --operation transaction_list --from 2026-11-01 --to 2026-11-22

Exit status: 0 when the outcome is succeeded, 2 when rejected, 1 otherwise.")]
pub struct CallArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub command: CommandFlags,
    /// Which configured account to use.
    #[arg(long, default_value = "default")]
    pub account: String,
    /// Also print every HTTP exchange (secrets removed).
    #[arg(long)]
    pub verbose: bool,
}

/// What `call` prints: the result event's fields that make sense without a queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallResult {
    pub gateway: String,
    pub account: String,
    pub operation: String,
    pub payment_id: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub gateway_status: Option<String>,
    pub gateway_code: Option<String>,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub response: serde_json::Value,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchanges: Option<Vec<Exchange>>,
}

impl CallResult {
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Outcome::Succeeded => 0,
            Outcome::Rejected => 2,
            _ => 1,
        }
    }
}

/// Loads the config named by the args and runs the call.
pub async fn run(args: &CallArgs) -> anyhow::Result<CallResult> {
    let file = config::locate(args.config.as_deref())?;
    let config = Config::load(&file)?;
    let accounts = config.clients(&HttpTransport::new(config.http.clone()));
    Ok(execute(args, &accounts).await)
}

/// Runs one call against already-built accounts.
pub async fn execute(args: &CallArgs, accounts: &Accounts) -> CallResult {
    let command = Command {
        id: Some("operator-call".into()),
        gateway: Some(args.command.gateway.clone()),
        account: Some(args.account.clone()),
        operation: Some(args.command.operation.clone()),
        payment_id: args.command.payment_id.clone(),
        amount: args.command.amount.clone(),
        currency: args.command.currency.clone(),
        from: args.command.from.clone(),
        to: args.command.to.clone(),
        metadata: None,
        origin: None,
    };
    let mut result = CallResult {
        gateway: args.command.gateway.clone(),
        account: args.account.clone(),
        operation: args.command.operation.clone(),
        payment_id: args.command.payment_id.clone(),
        outcome: Outcome::Rejected,
        reason: None,
        amount: args.command.amount.clone(),
        currency: args.command.currency.clone(),
        gateway_status: None,
        gateway_code: None,
        description: None,
        reference: None,
        response: serde_json::json!({}),
        attempts: 0,
        exchanges: None,
    };
    let valid = match command.validate(accounts) {
        Ok(valid) => valid,
        Err(Rejected {
            reason,
            description,
        }) => {
            result.reason = Some(reason);
            result.description = Some(description);
            return result;
        }
    };
    result.amount = valid.request.amount().map(|a| a.to_string());
    let call = valid.gateway.execute(&valid.request).await;
    result.outcome = Outcome::when_budget_spent(call.answer.classification);
    // The gateway's fields exactly as a result event reports them.
    let reported = Reported::from_answer(&call.answer, valid.request.operation());
    result.gateway_status = reported.gateway_status;
    result.gateway_code = reported.gateway_code;
    result.description = reported.description;
    result.reference = reported.reference;
    if let Some(response) = reported.response {
        result.response = response;
    }
    result.attempts = 1;
    if args.verbose {
        result.exchanges = Some(call.exchanges);
    }
    result
}
