//! A payment's page: what its commands add up to, the commands in order,
//! and the notifications on it.

use hyper::{Response, StatusCode};
use maud::html;
use time::OffsetDateTime;

use super::super::auth::Caller;
use super::super::{Console, ConsoleError};
use super::render::*;
use super::{layout, page, Nav};
use crate::listener::Body;
use crate::money::Amount;
use crate::outcome::Outcome;
use crate::store::console::{self as queries, ListedCommand};

#[derive(Debug, Clone, serde::Serialize)]
pub struct PaymentTotals {
    pub currency: Option<String>,
    pub captured: String,
    /// A capture without an amount (the whole authorization) succeeded.
    pub captured_in_full: bool,
    pub refunded: String,
    pub cancelled: bool,
}

impl PaymentTotals {
    pub fn of(commands: &[ListedCommand]) -> PaymentTotals {
        let succeeded =
            |c: &&ListedCommand| c.settled_outcome.or(c.outcome) == Some(Outcome::Succeeded);
        let sum = |op: &str| -> u64 {
            commands
                .iter()
                .filter(succeeded)
                .filter(|c| c.operation.as_deref() == Some(op))
                .filter_map(|c| c.amount_minor.and_then(|m| u64::try_from(m).ok()))
                .sum()
        };
        PaymentTotals {
            currency: commands.iter().find_map(|c| c.currency.clone()),
            captured: Amount::from_minor(sum("capture")).to_string(),
            captured_in_full: commands
                .iter()
                .filter(succeeded)
                .any(|c| c.operation.as_deref() == Some("capture") && c.amount_minor.is_none()),
            refunded: Amount::from_minor(sum("refund")).to_string(),
            cancelled: commands
                .iter()
                .filter(succeeded)
                .any(|c| c.operation.as_deref() == Some("cancel")),
        }
    }
}

pub(super) async fn payment(
    console: &Console,
    caller: &Caller,
    gateway: &str,
    payment_id: &str,
) -> Result<Response<Body>, ConsoleError> {
    let mut conn = console.conn().await?;
    let commands = queries::payment_commands(&mut conn, gateway, payment_id, 1000).await?;
    let notifications =
        crate::store::notifications::for_payment(&mut conn, gateway, payment_id, None, 1000)
            .await?;
    let totals = PaymentTotals::of(&commands);
    let now = OffsetDateTime::now_utc();
    let currency = totals.currency.clone().unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        layout(
            &format!("Payment {payment_id}"),
            caller,
            Nav::Commands,
            html! {
                h1 { "Payment " span.mono { (payment_id) } " " span.note { "on " (gateway) } }
                div.cards {
                    div.card { span.label { "Captured" } span.value #captured { (totals.captured) " " (currency) } span.detail { @if totals.captured_in_full { "and a capture of the whole authorization" } @else { "by succeeded captures" } } }
                    div.card { span.label { "Refunded" } span.value #refunded { (totals.refunded) " " (currency) } span.detail { "by succeeded refunds" } }
                    div.card { span.label { "Cancelled" } span.value #cancelled { @if totals.cancelled { "yes" } @else { "no" } } span.detail { "by a succeeded cancel" } }
                }
                h2 { "Commands, in order" }
                @if commands.is_empty() { p.note { "No command on this payment." } }
                @else {
                    table #payment-commands {
                        thead { tr { th { "Received" } th { "Id" } th { "Operation" } th.num { "Amount" } th { "State" } th { "Outcome" } th { "Decided" } } }
                        tbody {
                            @for c in &commands {
                                tr { td { (when(c.received_at, now)) } td { (command_link(&c.id)) } td { (c.operation.as_deref().unwrap_or("-")) } td.num { (amount(c.amount_minor, c.currency.as_deref())) } td { (c.state) } td { (current_outcome(c.outcome, c.settled_outcome)) } td { (maybe_when(c.decided_at, now)) } }
                            }
                        }
                    }
                }
                h2 { "Notifications" }
                @if notifications.is_empty() { p.note #notifications { "No notification on this payment." } }
                @else { (notification_table(&notifications, now)) }
            },
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::lifecycle::CommandState;
    #[test]
    fn payment_totals_count_only_what_succeeded() {
        let command = |op: &str, minor: Option<i64>, outcome: Outcome, settled: Option<Outcome>| {
            ListedCommand {
                id: "c".into(),
                gateway: Some("paymentz".into()),
                account: None,
                operation: Some(op.into()),
                payment_id: Some("p".into()),
                amount_minor: minor,
                currency: Some("EUR".into()),
                state: CommandState::Done,
                outcome: Some(outcome),
                settled_outcome: settled,
                reason: None,
                attempts: 1,
                received_at: OffsetDateTime::now_utc(),
                decided_at: None,
            }
        };
        let totals = PaymentTotals::of(&[
            command("capture", Some(10_000), Outcome::Succeeded, None),
            command(
                "refund",
                Some(2_500),
                Outcome::Unknown,
                Some(Outcome::Succeeded),
            ),
            command("refund", Some(1_000), Outcome::Declined, None),
            command("refund", Some(500), Outcome::Unknown, None),
            command("cancel", None, Outcome::Failed, None),
        ]);
        assert_eq!(totals.captured, "100.00");
        assert_eq!(totals.refunded, "25.00");
        assert!(!totals.cancelled);
        assert!(!totals.captured_in_full);
        assert_eq!(totals.currency.as_deref(), Some("EUR"));
    }
}
