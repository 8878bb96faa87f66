//! Paymentz request checksums: MD5 over `|`-joined fields with the secure key
//! in second place, as lowercase hex.
//!
//! This is the only place that sees the merchant's secure key for signing. The
//! key is fed to the hasher piece by piece, so no string holding it is ever
//! built (and so none can leak into a log or a record by accident).

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};

use crate::money::Amount;

/// MD5 of `member_id|secure_key|rest[0]|rest[1]...`, lowercase hex.
fn checksum(member_id: &str, secure_key: &SecretString, rest: &[&str]) -> String {
    let mut hasher = Md5::new();
    hasher.update(member_id.as_bytes());
    hasher.update(b"|");
    hasher.update(secure_key.expose_secret().as_bytes());
    for part in rest {
        hasher.update(b"|");
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// CP and RF: the amount is hashed exactly as it is sent, so both come from
/// the same `Amount` `Display` (two decimals).
pub fn amount_checksum(
    member_id: &str,
    secure_key: &SecretString,
    payment_id: &str,
    amount: Amount,
) -> String {
    checksum(member_id, secure_key, &[payment_id, &amount.to_string()])
}

/// RV, and IN by the gateway's `paymentId` (`idType=PID`).
pub fn payment_checksum(member_id: &str, secure_key: &SecretString, payment_id: &str) -> String {
    checksum(member_id, secure_key, &[payment_id])
}

/// IN by our own reference (`idType=MID`): finds a payment whose `paymentId`
/// we never learned (the answer to the original sale was lost).
pub fn merchant_transaction_checksum(
    member_id: &str,
    secure_key: &SecretString,
    merchant_transaction_id: &str,
) -> String {
    checksum(member_id, secure_key, &[merchant_transaction_id])
}

/// getTransactionList.
pub fn list_checksum(member_id: &str, secure_key: &SecretString) -> String {
    checksum(member_id, secure_key, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ExampleSecureKey0123456789ABCDEF";

    fn key() -> SecretString {
        SecretString::from(KEY)
    }

    #[test]
    fn capture_and_refund_vector() {
        assert_eq!(
            amount_checksum("11344", &key(), "54279", Amount::from_minor(100)),
            "4e56b4bbd6aa732c8ca00ebbbf7184d2"
        );
    }

    #[test]
    fn cancel_and_inquiry_vector() {
        assert_eq!(
            payment_checksum("11344", &key(), "54279"),
            "7754a09f0dac717c46ba29492ee14afe"
        );
    }

    #[test]
    fn inquiry_by_merchant_transaction_id_vector() {
        assert_eq!(
            merchant_transaction_checksum("11344", &key(), "ORDER-1001"),
            "6c4906d6e757e7d8b9b0a5588b3d0715"
        );
    }

    #[test]
    fn transaction_list_vector() {
        assert_eq!(
            list_checksum("11344", &key()),
            "25f0140e6cbcf798da9db847d4056ab4"
        );
    }

    #[test]
    fn the_amount_is_hashed_with_two_decimals() {
        // 1.00 and 1 are the same money but not the same checksum: the gateway
        // hashes the text it received, which is always two decimals.
        let ours = amount_checksum("11344", &key(), "54279", Amount::from_minor(100));
        assert_ne!(ours, checksum("11344", &key(), &["54279", "1"]));
        assert_eq!(ours, checksum("11344", &key(), &["54279", "1.00"]));
    }

    #[test]
    fn checksums_are_lowercase_hex() {
        let sum = payment_checksum("1", &key(), "2");
        assert_eq!(sum.len(), 32);
        assert!(sum
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
