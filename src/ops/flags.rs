//! The flags that spell a command's fields, shared by `call` (run one
//! operation now) and `enqueue` (publish it to the worker): one list, so the
//! two never disagree on a name or its help.

/// A command's fields, as flags: what to run, on which payment.
#[derive(Debug, Clone, clap::Args)]
pub struct CommandFlags {
    /// `paymentz` or `praxis`.
    #[arg(long)]
    pub gateway: String,
    /// capture, refund, cancel, inquiry or transaction_list.
    #[arg(long)]
    pub operation: String,
    /// The gateway's id of the payment (Paymentz paymentId, Praxis trace_id).
    #[arg(long)]
    pub payment_id: Option<String>,
    /// Decimal amount, at most 2 decimals (Paymentz capture and refund).
    #[arg(long)]
    pub amount: Option<String>,
    #[arg(long)]
    pub currency: Option<String>,
    /// First day for transaction_list, YYYY-MM-DD.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day for transaction_list, YYYY-MM-DD (inclusive).
    #[arg(long)]
    pub to: Option<String>,
}
