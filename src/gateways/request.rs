//! What the worker asks a gateway to do, shaped so that it cannot be
//! incomplete: an operation on a payment always names the payment, a
//! transaction list always has its dates, in order. [`Command::validate`]
//! builds one from a producer's fields; the clients and the pipeline read it
//! without checking again.
//!
//! [`Command::validate`]: crate::command::Command::validate

use super::{Operation, Rejection};
use crate::money::Amount;

/// One operation to run against a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationRequest {
    /// A capture, refund, cancel or inquiry: about one payment.
    Payment(PaymentRequest),
    /// A transaction list: about a span of dates.
    List(ListRequest),
}

/// The operations that are about one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentOperation {
    Capture,
    Refund,
    Cancel,
    Inquiry,
}

impl PaymentOperation {
    pub fn operation(self) -> Operation {
        match self {
            PaymentOperation::Capture => Operation::Capture,
            PaymentOperation::Refund => Operation::Refund,
            PaymentOperation::Cancel => Operation::Cancel,
            PaymentOperation::Inquiry => Operation::Inquiry,
        }
    }

    /// The payment operation `operation` is; `None` for a transaction list.
    pub fn of(operation: Operation) -> Option<PaymentOperation> {
        match operation {
            Operation::Capture => Some(PaymentOperation::Capture),
            Operation::Refund => Some(PaymentOperation::Refund),
            Operation::Cancel => Some(PaymentOperation::Cancel),
            Operation::Inquiry => Some(PaymentOperation::Inquiry),
            Operation::TransactionList => None,
        }
    }
}

/// An operation on one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub operation: PaymentOperation,
    /// Paymentz `paymentId`, Praxis `trace_id`.
    pub payment_id: String,
    /// Whether one is required or refused is each gateway's rule
    /// ([`Gateway::check`](super::Gateway::check)).
    pub amount: Option<Amount>,
}

/// A transaction list: an inclusive span of dates, `from` never after `to`,
/// and the producer's optional filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    from: time::Date,
    to: time::Date,
    pub currency: Option<String>,
    pub payment_id: Option<String>,
}

impl ListRequest {
    /// A list of the days `from` to `to`, both included.
    pub fn new(from: time::Date, to: time::Date) -> Result<ListRequest, Rejection> {
        if from > to {
            return Err(Rejection::invalid("from", "must not be after `to`"));
        }
        Ok(ListRequest {
            from,
            to,
            currency: None,
            payment_id: None,
        })
    }

    pub fn from(&self) -> time::Date {
        self.from
    }

    pub fn to(&self) -> time::Date {
        self.to
    }
}

impl OperationRequest {
    /// `operation` on the payment `payment_id`, without an amount.
    pub fn new(operation: PaymentOperation, payment_id: impl Into<String>) -> Self {
        OperationRequest::Payment(PaymentRequest {
            operation,
            payment_id: payment_id.into(),
            amount: None,
        })
    }

    /// The same operation on an amount. A list has none: it is returned as it was.
    pub fn with_amount(self, amount: Amount) -> Self {
        match self {
            OperationRequest::Payment(payment) => OperationRequest::Payment(PaymentRequest {
                amount: Some(amount),
                ..payment
            }),
            list @ OperationRequest::List(_) => list,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            OperationRequest::Payment(payment) => payment.operation.operation(),
            OperationRequest::List(_) => Operation::TransactionList,
        }
    }

    /// The payment this request is about: its payment, or a list's filter.
    pub fn payment_id(&self) -> Option<&str> {
        match self {
            OperationRequest::Payment(payment) => Some(&payment.payment_id),
            OperationRequest::List(list) => list.payment_id.as_deref(),
        }
    }

    pub fn amount(&self) -> Option<Amount> {
        match self {
            OperationRequest::Payment(payment) => payment.amount,
            OperationRequest::List(_) => None,
        }
    }

    /// The inquiry that tells what happened to this request's payment; a
    /// list is about no one payment.
    pub fn inquiry(&self) -> Option<OperationRequest> {
        match self {
            OperationRequest::Payment(payment) => Some(payment.inquiry()),
            OperationRequest::List(_) => None,
        }
    }
}

impl PaymentRequest {
    /// The inquiry that tells what happened to this payment.
    pub fn inquiry(&self) -> OperationRequest {
        OperationRequest::new(PaymentOperation::Inquiry, self.payment_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_list_never_runs_backwards() {
        let backwards = ListRequest::new(date!(2026 - 11 - 22), date!(2026 - 11 - 01));
        assert_eq!(
            backwards,
            Err(Rejection::invalid("from", "must not be after `to`"))
        );
        let one_day = ListRequest::new(date!(2026 - 11 - 22), date!(2026 - 11 - 22)).unwrap();
        assert_eq!(
            (one_day.from(), one_day.to()),
            (date!(2026 - 11 - 22), date!(2026 - 11 - 22))
        );
    }

    #[test]
    fn every_payment_operation_names_its_operation() {
        for operation in Operation::ALL {
            match PaymentOperation::of(operation) {
                Some(payment) => assert_eq!(payment.operation(), operation),
                None => assert_eq!(operation, Operation::TransactionList),
            }
        }
        let list = OperationRequest::List(
            ListRequest::new(date!(2026 - 11 - 01), date!(2026 - 11 - 02)).unwrap(),
        );
        assert_eq!(list.operation(), Operation::TransactionList);
        assert_eq!(list.inquiry(), None);
        assert_eq!(list.clone().with_amount(Amount::from_minor(1)), list);
    }
}
