//! Finding out whether an attempt took effect, from what the payment looks like.
//!
//! After an ambiguous answer (or a crash mid-call) the worker inquires and
//! compares the payment with what it looked like before the attempt. The
//! decision is [`settle`], a pure function: it says `Applied` or `NotApplied`
//! only when the evidence allows no other reading, and `Undecided` otherwise,
//! because resending on a wrong `NotApplied` moves money twice.

use crate::gateways::{Operation, PaymentSnapshot, PaymentState};
use crate::money::Amount;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The attempt took effect.
    Applied,
    /// The attempt did not take effect: it is safe to send again.
    NotApplied,
    /// The evidence does not tell (yet): ask again later, never resend.
    Undecided,
}

/// Did `operation` (for `amount`) take effect, given the payment `before` the
/// attempt (when recorded) and `after` it?
pub fn settle(
    operation: Operation,
    amount: Option<Amount>,
    before: Option<&PaymentSnapshot>,
    after: &PaymentSnapshot,
) -> Settlement {
    use PaymentState::*;
    match operation {
        Operation::Capture => {
            if before.is_some_and(|b| !matches!(b.state, Authorized)) {
                // It was not capturable before the attempt, so the attempt cannot
                // have captured it; whatever happened was someone else's doing.
                return Settlement::NotApplied;
            }
            match after.state {
                Captured | Refunded => Settlement::Applied,
                Authorized | Cancelled | Failed => Settlement::NotApplied,
                Pending | InProgress | Other => Settlement::Undecided,
            }
        }
        Operation::Cancel => {
            if before.is_some_and(|b| !matches!(b.state, Authorized)) {
                return Settlement::NotApplied;
            }
            match after.state {
                Cancelled => Settlement::Applied,
                Authorized | Captured | Refunded | Failed => Settlement::NotApplied,
                Pending | InProgress | Other => Settlement::Undecided,
            }
        }
        Operation::Refund => {
            // Only the refunded total tells whether THIS refund happened: the status
            // reads `reversed` after any refund, ours or an earlier one.
            let (Some(before), Some(amount)) = (before, amount) else {
                return Settlement::Undecided;
            };
            let was = before.refunded.unwrap_or(Amount::ZERO);
            let now = match (after.refunded, after.state) {
                (Some(now), _) => now,
                (None, Captured) => Amount::ZERO,
                (None, _) => return Settlement::Undecided,
            };
            if matches!(after.state, InProgress | Pending | Other) {
                return Settlement::Undecided;
            }
            if now == was {
                Settlement::NotApplied
            } else if was.checked_add(amount) == Some(now) {
                Settlement::Applied
            } else {
                Settlement::Undecided
            }
        }
        // Reads have no effect to settle: repeating them is always safe.
        Operation::Inquiry | Operation::TransactionList => Settlement::NotApplied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(state: PaymentState, refunded: Option<u64>) -> PaymentSnapshot {
        PaymentSnapshot {
            state,
            status: format!("{state:?}"),
            amount: Some(Amount::from_minor(10_000)),
            captured: None,
            refunded: refunded.map(Amount::from_minor),
            currency: Some("EUR".into()),
        }
    }

    #[test]
    fn capture_is_applied_only_when_the_payment_moved_from_authorized_to_captured() {
        let before = snap(PaymentState::Authorized, None);
        let captured = snap(PaymentState::Captured, None);
        let a = Some(Amount::from_minor(500));
        assert_eq!(
            settle(Operation::Capture, a, Some(&before), &captured),
            Settlement::Applied
        );
        assert_eq!(
            settle(Operation::Capture, a, None, &captured),
            Settlement::Applied
        );
        assert_eq!(
            settle(
                Operation::Capture,
                a,
                Some(&before),
                &snap(PaymentState::Authorized, None)
            ),
            Settlement::NotApplied
        );
        assert_eq!(
            settle(
                Operation::Capture,
                a,
                Some(&before),
                &snap(PaymentState::InProgress, None)
            ),
            Settlement::Undecided
        );
        // Already captured before our attempt: ours cannot be the capture.
        assert_eq!(
            settle(Operation::Capture, a, Some(&captured), &captured),
            Settlement::NotApplied
        );
    }

    #[test]
    fn cancel_is_applied_when_cancelled() {
        let before = snap(PaymentState::Authorized, None);
        assert_eq!(
            settle(
                Operation::Cancel,
                None,
                Some(&before),
                &snap(PaymentState::Cancelled, None)
            ),
            Settlement::Applied
        );
        assert_eq!(
            settle(Operation::Cancel, None, Some(&before), &before),
            Settlement::NotApplied
        );
        assert_eq!(
            settle(
                Operation::Cancel,
                None,
                None,
                &snap(PaymentState::Other, None)
            ),
            Settlement::Undecided
        );
    }

    #[test]
    fn refund_is_judged_by_the_refunded_total() {
        let amount = Some(Amount::from_minor(1_000));
        let before = snap(PaymentState::Refunded, Some(2_000));
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&before),
                &snap(PaymentState::Refunded, Some(3_000))
            ),
            Settlement::Applied
        );
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&before),
                &snap(PaymentState::Refunded, Some(2_000))
            ),
            Settlement::NotApplied
        );
        // Someone else refunded a different amount meanwhile: cannot tell.
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&before),
                &snap(PaymentState::Refunded, Some(2_500))
            ),
            Settlement::Undecided
        );
        // Without the before-snapshot the status alone says nothing.
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                None,
                &snap(PaymentState::Refunded, Some(3_000))
            ),
            Settlement::Undecided
        );
        // First refund on a captured payment.
        let captured = snap(PaymentState::Captured, None);
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&captured),
                &snap(PaymentState::Refunded, Some(1_000))
            ),
            Settlement::Applied
        );
        assert_eq!(
            settle(Operation::Refund, amount, Some(&captured), &captured),
            Settlement::NotApplied
        );
        // Refund requested but not yet booked: wait.
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&captured),
                &snap(PaymentState::InProgress, None)
            ),
            Settlement::Undecided
        );
    }
}
