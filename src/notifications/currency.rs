//! Amounts in a currency's own minor units, with the ISO 4217 exponents of a
//! maintained table (the `iso_currency` crate), never a hand-written list:
//! JPY has 0 decimals, EUR 2, BHD 3. A currency the table does not know has
//! no minor units here, and the rules hold such an authorization.

/// Whether `code` looks like an ISO 4217 code (three capital letters).
pub fn is_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// The number of decimals of `code`, when the table knows it.
pub fn exponent(code: &str) -> Option<u32> {
    iso_currency::Currency::from_code(code)
        .and_then(|c| c.exponent())
        .map(u32::from)
}

/// A decimal text (`"500"`, `"500.5"`, `"0.125"`) in the minor units of a
/// currency with `exponent` decimals; `None` when it has more decimals than
/// the currency, or is not a plain non-negative decimal.
pub fn to_minor(text: &str, exponent: u32) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (text.contains('.') && frac.is_empty()) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() as u32 > exponent || int.len() > 15 {
        return None;
    }
    let scale = 10i64.checked_pow(exponent)?;
    let whole: i64 = int.parse().ok()?;
    let mut part: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    part *= 10i64.checked_pow(exponent - frac.len() as u32)?;
    whole.checked_mul(scale)?.checked_add(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_come_from_the_iso_table() {
        assert_eq!(exponent("JPY"), Some(0));
        assert_eq!(exponent("EUR"), Some(2));
        assert_eq!(exponent("BHD"), Some(3));
        assert_eq!(exponent("XXQ"), None);
    }

    #[test]
    fn decimal_texts_in_minor_units() {
        assert_eq!(to_minor("500.00", 2), Some(50_000));
        assert_eq!(to_minor("500", 0), Some(500));
        assert_eq!(to_minor("500.5", 0), None);
        assert_eq!(to_minor("1.125", 3), Some(1_125));
        assert_eq!(to_minor("1.10", 0), None);
        assert_eq!(to_minor("1.00", 0), Some(1));
        assert_eq!(to_minor("-1", 2), None);
        assert_eq!(to_minor("1.", 2), None);
        assert_eq!(to_minor("", 2), None);
    }
}
