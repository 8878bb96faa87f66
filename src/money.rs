//! Money amounts as exact integer minor units.
//!
//! Amounts arrive as decimal strings (`"10"`, `"10.5"`, `"10.50"`) and leave as
//! the exact two-decimal strings the gateways demand (`"10.50"`) or as integer
//! minor units (Praxis). Keeping them as an integer count of cents means no
//! float ever touches money and formatting is exact by construction.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest amount Paymentz accepts: ten integer digits and two decimals.
pub const MAX_MINOR: u64 = 999_999_999_999;

/// A non-negative amount of money in minor units (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    /// The text is kept escaped and bounded: it is echoed in a `rejected` event.
    #[error("amount `{0}` is not a plain decimal number (digits, at most one `.` followed by 1 or 2 digits; no sign, space or exponent)")]
    NotDecimal(String),
    #[error("amount `{0}` has more than 2 decimals")]
    TooManyDecimals(String),
    #[error("amount `{0}` has more than 10 integer digits")]
    TooLarge(String),
    #[error("amount must be positive")]
    NotPositive,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn from_minor(minor: u64) -> Amount {
        Amount(minor)
    }

    pub const fn minor(self) -> u64 {
        self.0
    }

    /// Parses the contract's decimal text: digits, optionally one `.` and one
    /// or two more digits. Nothing else: no whitespace, sign, exponent or
    /// separator, because a producer's `" 10"` or `"1e3"` is a bug on its
    /// side that must come back `rejected`, not be guessed at. Leading zeros
    /// are allowed (the schema allows them); at most 10 integer digits remain
    /// after them. Zero is allowed here; commands use [`Amount::parse_positive`].
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let shown = || crate::telemetry::Escaped::new(text).to_string();
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let frac_ok = frac_part.is_none_or(|f| !f.is_empty() && all_digits(f));
        if int_part.is_empty() || !all_digits(int_part) || !frac_ok {
            return Err(AmountError::NotDecimal(shown()));
        }
        let frac_part = frac_part.unwrap_or("");
        if frac_part.len() > 2 {
            return Err(AmountError::TooManyDecimals(shown()));
        }
        let int_trimmed = int_part.trim_start_matches('0');
        if int_trimmed.len() > 10 {
            return Err(AmountError::TooLarge(shown()));
        }
        let units: u64 = if int_trimmed.is_empty() {
            0
        } else {
            int_trimmed
                .parse()
                .map_err(|_| AmountError::TooLarge(shown()))?
        };
        let mut cents: u64 = 0;
        for (i, b) in frac_part.bytes().enumerate() {
            let digit = u64::from(b - b'0');
            cents += digit * if i == 0 { 10 } else { 1 };
        }
        Ok(Amount(units * 100 + cents))
    }

    /// Parses an amount that a command asks the gateway to move: it must be above zero.
    pub fn parse_positive(text: &str) -> Result<Amount, AmountError> {
        let amount = Amount::parse(text)?;
        if amount.0 == 0 {
            return Err(AmountError::NotPositive);
        }
        Ok(amount)
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Amount {
    /// Exactly two decimals, no sign, no separators: the form Paymentz requires.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Amount::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_the_contract_allows() {
        assert_eq!(Amount::parse("10").unwrap().minor(), 1000);
        assert_eq!(Amount::parse("10.5").unwrap().minor(), 1050);
        assert_eq!(Amount::parse("10.50").unwrap().minor(), 1050);
        assert_eq!(Amount::parse("0.01").unwrap().minor(), 1);
        assert_eq!(Amount::parse("007.10").unwrap().minor(), 710);
        assert_eq!(Amount::parse("9999999999.99").unwrap().minor(), MAX_MINOR);
    }

    #[test]
    fn formats_exactly_two_decimals() {
        assert_eq!(Amount::from_minor(100).to_string(), "1.00");
        assert_eq!(Amount::from_minor(5000).to_string(), "50.00");
        assert_eq!(Amount::from_minor(1050).to_string(), "10.50");
        assert_eq!(Amount::from_minor(7).to_string(), "0.07");
        assert_eq!(Amount::from_minor(0).to_string(), "0.00");
        assert_eq!(Amount::from_minor(MAX_MINOR).to_string(), "9999999999.99");
    }

    #[test]
    fn round_trips_through_text() {
        for minor in [1u64, 9, 10, 99, 100, 101, 123_456, MAX_MINOR] {
            let a = Amount::from_minor(minor);
            assert_eq!(Amount::parse(&a.to_string()).unwrap(), a);
        }
    }

    #[test]
    fn refuses_what_is_not_an_exact_amount() {
        assert_eq!(Amount::parse(""), Err(AmountError::Empty));
        for bad in [
            "-1", "+1", "1,00", "1.", ".5", "1e3", "abc", "1.0.0", " 1 2", "NaN",
        ] {
            assert!(
                matches!(Amount::parse(bad), Err(AmountError::NotDecimal(_))),
                "{bad} should be refused"
            );
        }
        assert!(matches!(
            Amount::parse("1.001"),
            Err(AmountError::TooManyDecimals(_))
        ));
        assert!(matches!(
            Amount::parse("10000000000"),
            Err(AmountError::TooLarge(_))
        ));
        assert_eq!(
            Amount::parse_positive("0.00"),
            Err(AmountError::NotPositive)
        );
        assert_eq!(Amount::parse_positive("0"), Err(AmountError::NotPositive));
    }
}
