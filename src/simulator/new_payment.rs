//! A payment the admin asks for (`POST /admin/payments`, or
//! [`NewPayment::new`] in process): its fields, checked, and the payment it
//! becomes.

use serde::{Deserialize, Deserializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::simulation::AdminError;
use super::state::{GatewayId, Payment, Status};
use crate::money::Amount;

/// A payment to create (`POST /admin/payments`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    pub gateway: GatewayId,
    /// Paymentz `paymentId` or Praxis `trace_id` (digits); handed out from the
    /// id sequence when absent. A JSON number is accepted too.
    #[serde(default, deserialize_with = "string_or_integer")]
    pub id: Option<String>,
    /// Authorised amount, a decimal string (`"50.00"`).
    pub amount: Amount,
    /// Default EUR (Paymentz) or USD (Praxis).
    #[serde(default)]
    pub currency: Option<String>,
    /// `authorized` (default), `captured`, `settled`, `refunded`,
    /// `cancelled`, `failed`, `chargeback`, or any native status name
    /// (`authsuccessful`, `authcancelled`, `capturesuccess`, `reversed`,
    /// `approved`...). A native name always means itself, so Paymentz
    /// `cancelled` is the status `cancelled`; the status an RV leaves is
    /// `authcancelled`.
    #[serde(default)]
    pub state: Option<String>,
    /// Captured so far; defaults to the full amount for captured states, else 0.
    #[serde(default)]
    pub captured: Option<Amount>,
    /// Refunded so far; defaults to the captured amount for `reversed`, else 0.
    #[serde(default)]
    pub refunded: Option<Amount>,
    /// Paymentz `merchantTransactionId` / Praxis `order_id`; default `order-<id>`.
    #[serde(default, alias = "merchant_transaction_id", alias = "order_id")]
    pub reference: Option<String>,
    /// Member id (Paymentz) or merchant id (Praxis) allowed to use it; any when absent.
    #[serde(default, alias = "member_id", alias = "merchant_id")]
    pub owner: Option<String>,
    /// Praxis front end; the caller's when absent.
    #[serde(default)]
    pub frontend: Option<String>,
    /// Creation time, RFC 3339 or `YYYY-MM-DD` (midnight UTC); now when absent.
    /// It decides which `getTransactionList` date ranges include the payment.
    #[serde(default)]
    pub created_at: Option<String>,
}

impl NewPayment {
    pub fn new(gateway: GatewayId, amount: Amount) -> NewPayment {
        NewPayment {
            gateway,
            id: None,
            amount,
            currency: None,
            state: None,
            captured: None,
            refunded: None,
            reference: None,
            owner: None,
            frontend: None,
            created_at: None,
        }
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn state(mut self, state: impl Into<String>) -> Self {
        self.state = Some(state.into());
        self
    }

    pub fn captured(mut self, amount: Amount) -> Self {
        self.captured = Some(amount);
        self
    }

    pub fn refunded(mut self, amount: Amount) -> Self {
        self.refunded = Some(amount);
        self
    }

    pub fn reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }

    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    pub fn currency(mut self, currency: impl Into<String>) -> Self {
        self.currency = Some(currency.into());
        self
    }

    pub fn created_at(mut self, when: impl Into<String>) -> Self {
        self.created_at = Some(when.into());
        self
    }
}

fn string_or_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::Text(t) => t,
        Id::Number(n) => n.to_string(),
    }))
}

pub(super) fn parse_created_at(text: &str) -> Result<OffsetDateTime, AdminError> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            AdminError::BadRequest(format!(
                "created_at `{text}` is neither RFC 3339 nor YYYY-MM-DD"
            ))
        })
}

pub(super) fn build_payment<S: Status>(
    new: &NewPayment,
    id: String,
    reference: String,
    currency: String,
    created_at: OffsetDateTime,
) -> Result<Payment<S>, AdminError> {
    let state = new.state.as_deref().unwrap_or("authorized");
    let status = S::parse(state).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "state `{state}` is not a {} status",
            new.gateway.as_str()
        ))
    })?;
    let captured = new.captured.unwrap_or(if status.is_captured() {
        new.amount
    } else {
        Amount::ZERO
    });
    let refunded = new.refunded.unwrap_or(if status.is_refunded() {
        captured
    } else {
        Amount::ZERO
    });
    if captured > new.amount {
        return Err(AdminError::BadRequest(
            "captured is more than the amount".into(),
        ));
    }
    if refunded > captured {
        return Err(AdminError::BadRequest(
            "refunded is more than the captured amount".into(),
        ));
    }
    Ok(Payment {
        id,
        reference,
        owner: new.owner.clone(),
        frontend: None,
        transaction_id: None,
        status,
        amount: new.amount,
        captured,
        refunded,
        currency,
        created_at,
        updated_at: created_at,
    })
}
