//! The executor's rules, as one pure function: from what is known about a
//! run to the next step.
//!
//! [`next`] holds every branch of running a command and none of its I/O: the
//! [executor](super::executor) gathers the facts (the row, the gateway's
//! answer, the inquiries' [`Settlement`]), asks [`next`], and performs the
//! [`Step`] it returns. So the at-most-once rules can be read in one place and
//! tested without PostgreSQL, RabbitMQ or a gateway (the table at the end of
//! this file), as [`settle`](super::reconcile::settle) is for inquiries.
//!
//! Architecture invariant: no step sends a side effect again while an
//! earlier attempt may have taken effect. An ambiguous answer or an
//! interrupted attempt always leads to [`Step::Inquire`], and only a
//! [`Settlement::NotApplied`] leads from there to another attempt.

use std::time::Duration;

use super::reconcile::Settlement;
use crate::gateways::Classification;
use crate::outcome::Outcome;

/// What does not change while a command runs: what kind of operation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationKind {
    /// It moves money or changes the payment (capture, refund, cancel): the
    /// at-most-once rule applies. Reads may be repeated freely.
    pub side_effect: bool,
    /// The gateway needs the payment recorded before this operation, because
    /// its status afterwards could not tell whether the attempt applied
    /// ([`Gateway::snapshot_before`](crate::gateways::Gateway::snapshot_before)).
    pub snapshot_before: bool,
}

/// How much retrying is left, measured when the decision is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub attempts_made: i32,
    pub max_attempts: u32,
    /// Since the command was received.
    pub elapsed: Duration,
    /// How long the next attempt would wait (jittered backoff).
    pub next_delay: Duration,
    pub max_retry_time: Duration,
}

impl Budget {
    fn attempts_left(&self) -> bool {
        self.attempts_made < self.max_attempts as i32
    }

    /// Another attempt may be scheduled: attempts are left, and it would
    /// start within the retry time.
    fn retry_left(&self) -> bool {
        self.attempts_left() && self.elapsed + self.next_delay < self.max_retry_time
    }
}

/// Why it is not known whether an attempt took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncertain {
    /// A previous run stopped mid-call (found in phase `calling`).
    Interrupted,
    /// The gateway's answer was ambiguous.
    Ambiguous,
}

/// What is known at a decision point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// A command just claimed with its payment, as its row says.
    Claimed {
        /// An `unknown` outcome waiting to be reconciled.
        unsettled: bool,
        /// Intake committed the first attempt's recovery point with the command.
        intent_committed: bool,
        /// Found in phase `calling`: an earlier run stopped mid-call.
        interrupted: bool,
        /// The payment's before-snapshot is already recorded.
        has_snapshot: bool,
    },
    /// The inquiry made before the side effect (to record the payment) answered.
    Snapshot {
        classification: Classification,
        /// It found the payment (a snapshot came with the answer).
        found: bool,
        /// The refund asks for more than is left to refund.
        over_refund_limit: bool,
    },
    /// The call answered.
    Answered(Classification),
    /// Inquiries after an uncertain attempt ended with this settlement.
    Verified {
        settlement: Settlement,
        uncertain: Uncertain,
        has_snapshot: bool,
    },
}

/// What the executor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Inquire once for the `unknown` outcome of an earlier run
    /// ([`reconcile_unknown`](super::reconcile::reconcile_unknown)).
    Reconcile,
    /// Call at once: intake committed this first attempt's recovery point.
    CallNow,
    /// Inquire the payment and record what it looks like before the side effect.
    TakeSnapshot,
    /// Commit the recovery point (`calling`), then call.
    Call,
    /// Inquire (a few times, with backoff) whether the uncertain attempt took
    /// effect, before anything is sent again.
    Inquire(Uncertain),
    /// Schedule the next attempt in PostgreSQL after `delay`, and give the lease up.
    Retry { delay: Duration },
    /// Commit the outcome.
    Conclude(Ruling),
}

/// An outcome and why it was reached (the executor words the description).
/// Not to be confused with [`completion::Conclusion`](super::completion::Conclusion),
/// the committed decision it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ruling {
    pub outcome: Outcome,
    pub why: Why,
}

impl Ruling {
    /// An `unknown` keeps being reconciled in the background.
    pub fn unsettled(&self) -> bool {
        self.outcome == Outcome::Unknown
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The gateway's answer to the call says it all.
    Answered,
    /// The gateway refused the inquiry made before the side effect.
    SnapshotDeclined,
    /// The refund asks for more than is left to refund.
    RefundOverLimit,
    /// Not applied, and neither attempts nor time are left to retry.
    GaveUp,
    /// The interrupted attempt did not take effect and no attempts are left.
    InterruptedNotApplied,
    /// Inquiries showed the uncertain attempt took effect.
    Confirmed(Uncertain),
    /// The gateway does not know the payment: nothing took effect, nor can.
    NoSuchPayment(Uncertain),
    /// Inquiries could not tell; reconciliation continues in the background.
    Undecided(Uncertain),
}

/// The next step, from what is known.
pub fn next(operation: OperationKind, known: Known, budget: &Budget) -> Step {
    use Classification as C;
    match known {
        Known::Claimed {
            unsettled,
            intent_committed,
            interrupted,
            has_snapshot,
        } => {
            if unsettled {
                Step::Reconcile
            } else if intent_committed {
                Step::CallNow
            } else if interrupted {
                // Whatever it sent may have taken effect: find out first.
                Step::Inquire(Uncertain::Interrupted)
            } else {
                proceed(operation, has_snapshot)
            }
        }
        Known::Snapshot {
            classification: C::Succeeded,
            found: true,
            over_refund_limit,
        } => {
            if over_refund_limit {
                conclude(Outcome::Declined, Why::RefundOverLimit)
            } else {
                Step::Call
            }
        }
        Known::Snapshot {
            classification: C::Declined,
            ..
        } => conclude(Outcome::Declined, Why::SnapshotDeclined),
        // Nothing was sent yet: any other answer is as good as not applied.
        Known::Snapshot { .. } => retry_or_give_up(budget),
        Known::Answered(C::Succeeded) => conclude(Outcome::Succeeded, Why::Answered),
        Known::Answered(C::Declined) => conclude(Outcome::Declined, Why::Answered),
        Known::Answered(C::NotApplied) => retry_or_give_up(budget),
        // A read has no effect to double: just ask again.
        Known::Answered(C::Ambiguous) if !operation.side_effect => retry_or_give_up(budget),
        Known::Answered(C::Ambiguous) => Step::Inquire(Uncertain::Ambiguous),
        Known::Verified {
            settlement,
            uncertain,
            has_snapshot,
        } => match settlement {
            Settlement::Applied => conclude(Outcome::Succeeded, Why::Confirmed(uncertain)),
            Settlement::NoSuchPayment => conclude(Outcome::Declined, Why::NoSuchPayment(uncertain)),
            Settlement::Undecided => conclude(Outcome::Unknown, Why::Undecided(uncertain)),
            Settlement::NotApplied => match uncertain {
                // The interrupted attempt counted; this run may make the next
                // one at once, whatever time has passed.
                Uncertain::Interrupted if budget.attempts_left() => {
                    proceed(operation, has_snapshot)
                }
                Uncertain::Interrupted => conclude(Outcome::Failed, Why::InterruptedNotApplied),
                Uncertain::Ambiguous => retry_or_give_up(budget),
            },
        },
    }
}

/// Towards the call: first the before-snapshot, where the gateway needs one.
fn proceed(operation: OperationKind, has_snapshot: bool) -> Step {
    if operation.side_effect && operation.snapshot_before && !has_snapshot {
        Step::TakeSnapshot
    } else {
        Step::Call
    }
}

fn retry_or_give_up(budget: &Budget) -> Step {
    if budget.retry_left() {
        Step::Retry {
            delay: budget.next_delay,
        }
    } else {
        conclude(Outcome::Failed, Why::GaveUp)
    }
}

fn conclude(outcome: Outcome, why: Why) -> Step {
    Step::Conclude(Ruling { outcome, why })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Classification as C;

    const READ: OperationKind = OperationKind {
        side_effect: false,
        snapshot_before: false,
    };
    const EFFECT: OperationKind = OperationKind {
        side_effect: true,
        snapshot_before: false,
    };
    /// A side effect the gateway needs a before-snapshot for (a Paymentz refund).
    const EFFECT_SNAP: OperationKind = OperationKind {
        side_effect: true,
        snapshot_before: true,
    };
    const KINDS: [OperationKind; 3] = [READ, EFFECT, EFFECT_SNAP];

    const DELAY: Duration = Duration::from_secs(2);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum B {
        /// Attempts and time left.
        Left,
        /// Every attempt made, time left.
        AttemptsSpent,
        /// Attempts left, but the next one would start after the retry time.
        TimeSpent,
    }
    const BUDGETS: [B; 3] = [B::Left, B::AttemptsSpent, B::TimeSpent];

    fn budget(b: B) -> Budget {
        Budget {
            attempts_made: if b == B::AttemptsSpent { 5 } else { 2 },
            max_attempts: 5,
            elapsed: Duration::from_secs(if b == B::TimeSpent { 59 } else { 10 }),
            next_delay: DELAY,
            max_retry_time: Duration::from_secs(60),
        }
    }

    fn done(outcome: Outcome, why: Why) -> Step {
        Step::Conclude(Ruling { outcome, why })
    }
    const RETRY: Step = Step::Retry { delay: DELAY };

    /// What a retryable situation leads to under each budget.
    fn retry_or_gave_up(b: B) -> Step {
        match b {
            B::Left => RETRY,
            B::AttemptsSpent | B::TimeSpent => done(Outcome::Failed, Why::GaveUp),
        }
    }

    #[test]
    fn the_budget_is_spent_at_the_last_attempt_or_when_the_next_would_start_too_late() {
        assert!(budget(B::Left).retry_left());
        assert!(!budget(B::AttemptsSpent).retry_left());
        assert!(!budget(B::TimeSpent).retry_left());
        assert!(budget(B::TimeSpent).attempts_left());
        // Exactly at the limit is too late.
        let edge = Budget {
            elapsed: Duration::from_secs(58),
            ..budget(B::Left)
        };
        assert!(!edge.retry_left());
    }

    #[test]
    fn a_claimed_command_starts_where_its_row_says() {
        // (unsettled, intent committed, interrupted, has snapshot, kind, expected)
        let table = [
            (true, false, false, false, EFFECT, Step::Reconcile),
            (true, false, true, true, EFFECT_SNAP, Step::Reconcile),
            (false, true, false, false, EFFECT, Step::CallNow),
            (false, true, false, false, EFFECT_SNAP, Step::CallNow),
            (false, true, false, false, READ, Step::CallNow),
            (
                false,
                false,
                true,
                false,
                EFFECT,
                Step::Inquire(Uncertain::Interrupted),
            ),
            (
                false,
                false,
                true,
                false,
                READ,
                Step::Inquire(Uncertain::Interrupted),
            ),
            (
                false,
                false,
                true,
                true,
                EFFECT_SNAP,
                Step::Inquire(Uncertain::Interrupted),
            ),
            (false, false, false, false, READ, Step::Call),
            (false, false, false, false, EFFECT, Step::Call),
            (false, false, false, false, EFFECT_SNAP, Step::TakeSnapshot),
            (false, false, false, true, EFFECT_SNAP, Step::Call),
        ];
        for (unsettled, intent_committed, interrupted, has_snapshot, kind, expected) in table {
            for b in BUDGETS {
                let known = Known::Claimed {
                    unsettled,
                    intent_committed,
                    interrupted,
                    has_snapshot,
                };
                assert_eq!(
                    next(kind, known, &budget(b)),
                    expected,
                    "{known:?} {kind:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn every_answer_to_a_call_by_classification_operation_kind_and_budget() {
        let effect = |c: C, b: B| match c {
            C::Succeeded => done(Outcome::Succeeded, Why::Answered),
            C::Declined => done(Outcome::Declined, Why::Answered),
            C::NotApplied => retry_or_gave_up(b),
            // Never resent, whatever the budget: inquire first.
            C::Ambiguous => Step::Inquire(Uncertain::Ambiguous),
        };
        // (classification, kind, budget, expected): every combination.
        let mut table = vec![];
        for c in [C::Succeeded, C::Declined, C::NotApplied, C::Ambiguous] {
            for b in BUDGETS {
                table.push((c, READ, b, {
                    match c {
                        // A read's ambiguity is as good as not applied.
                        C::Ambiguous => retry_or_gave_up(b),
                        _ => effect(c, b),
                    }
                }));
                table.push((c, EFFECT, b, effect(c, b)));
                table.push((c, EFFECT_SNAP, b, effect(c, b)));
            }
        }
        assert_eq!(table.len(), 4 * 3 * 3);
        for (c, kind, b, expected) in table {
            assert_eq!(
                next(kind, Known::Answered(c), &budget(b)),
                expected,
                "{c} {kind:?} {b:?}"
            );
        }
    }

    #[test]
    fn the_inquiry_before_a_side_effect_decides_whether_to_call() {
        // (classification, found, over the refund limit, budget, expected)
        let mut table = vec![];
        for b in BUDGETS {
            table.push((C::Succeeded, true, false, b, Step::Call));
            table.push((
                C::Succeeded,
                true,
                true,
                b,
                done(Outcome::Declined, Why::RefundOverLimit),
            ));
            // Succeeded without a snapshot tells nothing: try again later.
            table.push((C::Succeeded, false, false, b, retry_or_gave_up(b)));
            for found in [false, true] {
                table.push((
                    C::Declined,
                    found,
                    false,
                    b,
                    done(Outcome::Declined, Why::SnapshotDeclined),
                ));
                // Nothing was sent yet: even an ambiguous inquiry can be repeated.
                table.push((C::NotApplied, found, false, b, retry_or_gave_up(b)));
                table.push((C::Ambiguous, found, false, b, retry_or_gave_up(b)));
            }
        }
        for (classification, found, over_refund_limit, b, expected) in table {
            let known = Known::Snapshot {
                classification,
                found,
                over_refund_limit,
            };
            assert_eq!(
                next(EFFECT_SNAP, known, &budget(b)),
                expected,
                "{known:?} {b:?}"
            );
        }
    }

    #[test]
    fn every_settlement_after_an_uncertain_attempt_by_cause_kind_and_budget() {
        use Settlement as S;
        use Uncertain::{Ambiguous, Interrupted};
        let settlements = [S::Applied, S::NotApplied, S::NoSuchPayment, S::Undecided];
        let mut rows = 0;
        for settlement in settlements {
            for uncertain in [Interrupted, Ambiguous] {
                for kind in KINDS {
                    for has_snapshot in [false, true] {
                        for b in BUDGETS {
                            let expected = match (settlement, uncertain, b) {
                                (S::Applied, u, _) => done(Outcome::Succeeded, Why::Confirmed(u)),
                                (S::NoSuchPayment, u, _) => {
                                    done(Outcome::Declined, Why::NoSuchPayment(u))
                                }
                                // Never a resend: the outcome is `unknown`.
                                (S::Undecided, u, _) => done(Outcome::Unknown, Why::Undecided(u)),
                                // An interrupted attempt that did not apply is
                                // followed at once by the next, if attempts are
                                // left (time is not looked at).
                                (S::NotApplied, Interrupted, B::Left | B::TimeSpent) => {
                                    if kind == EFFECT_SNAP && !has_snapshot {
                                        Step::TakeSnapshot
                                    } else {
                                        Step::Call
                                    }
                                }
                                (S::NotApplied, Interrupted, B::AttemptsSpent) => {
                                    done(Outcome::Failed, Why::InterruptedNotApplied)
                                }
                                (S::NotApplied, Ambiguous, b) => retry_or_gave_up(b),
                            };
                            let known = Known::Verified {
                                settlement,
                                uncertain,
                                has_snapshot,
                            };
                            assert_eq!(
                                next(kind, known, &budget(b)),
                                expected,
                                "{known:?} {kind:?} {b:?}"
                            );
                            rows += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(rows, 4 * 2 * 3 * 2 * 3);
    }

    #[test]
    fn a_side_effect_is_never_sent_again_while_it_may_have_applied() {
        // Over every input the decision function takes: an ambiguous answer
        // to a side effect, an interrupted attempt, or an undecided settlement
        // never leads to a call or a retry.
        for kind in KINDS.into_iter().filter(|k| k.side_effect) {
            for b in BUDGETS {
                let budget = budget(b);
                let sends = |s: Step| matches!(s, Step::Call | Step::CallNow | Step::Retry { .. });
                assert!(!sends(next(kind, Known::Answered(C::Ambiguous), &budget)));
                for uncertain in [Uncertain::Interrupted, Uncertain::Ambiguous] {
                    for settlement in [
                        Settlement::Applied,
                        Settlement::Undecided,
                        Settlement::NoSuchPayment,
                    ] {
                        for has_snapshot in [false, true] {
                            let known = Known::Verified {
                                settlement,
                                uncertain,
                                has_snapshot,
                            };
                            assert!(!sends(next(kind, known, &budget)), "{known:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn only_an_unknown_outcome_keeps_being_reconciled() {
        for outcome in [
            Outcome::Succeeded,
            Outcome::Declined,
            Outcome::Failed,
            Outcome::Unknown,
        ] {
            let conclusion = Ruling {
                outcome,
                why: Why::Answered,
            };
            assert_eq!(conclusion.unsettled(), outcome == Outcome::Unknown);
        }
    }
}
