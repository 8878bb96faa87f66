//! The simulator's own hashing: Paymentz MD5 checksums, Praxis SHA-384
//! signatures, constant-time comparison and the base64url used in tokens.
//!
//! This is written from `shared/spec/gateways.md` independently of the
//! clients in `src/gateways/`: the simulator is the other side of the wire,
//! and a shared helper would let one misreading of the spec pass both sides.

use md5::{Digest as _, Md5};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::Sha384;
use subtle::ConstantTimeEq;

/// Lowercase hex MD5, the form Paymentz compares case-sensitively.
pub fn md5_hex(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}

/// Lowercase hex SHA-384, the Praxis signature form.
pub fn sha384_hex(input: &str) -> String {
    hex::encode(Sha384::digest(input.as_bytes()))
}

/// Equality that takes the same time wherever the first difference is, so a
/// caller cannot find a valid checksum byte by byte. A length difference
/// returns early; the length of a hex digest is no secret.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The Paymentz checksum: the parts joined by `|`, the secure key second.
pub fn paymentz_checksum(member_id: &str, secure_key: &SecretString, rest: &[&str]) -> String {
    let mut text = String::with_capacity(64);
    text.push_str(member_id);
    text.push('|');
    text.push_str(secure_key.expose_secret());
    for part in rest {
        text.push('|');
        text.push_str(part);
    }
    md5_hex(&text)
}

/// Which fields of a Praxis JSON object take part in its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// Requests: every field except `signature`.
    All,
    /// Answers: only top-level scalars (objects and arrays are left out),
    /// which is how the clients check answers.
    Scalars,
}

/// The Praxis signature: values of the chosen fields in ascending byte order
/// of their keys, concatenated without separators (integers in decimal, null
/// as empty), then the merchant secret, hashed with SHA-384.
pub fn praxis_signature(
    object: &Map<String, Value>,
    fields: Fields,
    secret: &SecretString,
) -> String {
    let mut keys: Vec<&String> = object
        .iter()
        .filter(|(key, value)| {
            key.as_str() != "signature"
                && (fields == Fields::All || !matches!(value, Value::Object(_) | Value::Array(_)))
        })
        .map(|(key, _)| key)
        .collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut text = String::with_capacity(128);
    for key in keys {
        match &object[key.as_str()] {
            Value::Null => {}
            Value::String(s) => text.push_str(s),
            Value::Number(n) => text.push_str(&n.to_string()),
            Value::Bool(b) => text.push_str(if *b { "true" } else { "false" }),
            // Nested values are not part of API 1.1 requests; if a caller sends
            // one anyway it is signed as its compact JSON, which is at least stable.
            nested => text.push_str(&nested.to_string()),
        }
    }
    text.push_str(secret.expose_secret());
    sha384_hex(&text)
}

/// URL-safe base64 without padding, as in JWTs.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..symbols {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K: &str = "ExampleSecureKey0123456789ABCDEF";

    #[test]
    fn paymentz_vectors_from_the_spec() {
        let key = SecretString::from(K);
        assert_eq!(
            paymentz_checksum("11344", &key, &["54279", "1.00"]),
            "4e56b4bbd6aa732c8ca00ebbbf7184d2"
        );
        assert_eq!(
            paymentz_checksum("11344", &key, &["54279"]),
            "7754a09f0dac717c46ba29492ee14afe"
        );
        assert_eq!(
            paymentz_checksum("11344", &key, &["ORDER-1001"]),
            "6c4906d6e757e7d8b9b0a5588b3d0715"
        );
        assert_eq!(
            paymentz_checksum("11344", &key, &[]),
            "25f0140e6cbcf798da9db847d4056ab4"
        );
    }

    #[test]
    fn praxis_vectors_from_the_spec() {
        let secret = SecretString::from("MerchantSecretKey");
        let request = |timestamp: i64| {
            json!({
                "merchant_id": "Test-Integration-Merchant",
                "frontend": "Integration TEST USD",
                "trace_id": 752856,
                "timestamp": timestamp,
                "version": "1.1",
                "signature": "ignored",
            })
        };
        let sign =
            |value: Value| praxis_signature(value.as_object().unwrap(), Fields::All, &secret);
        assert_eq!(
            sign(request(1568763080)),
            "1dc661c002e4335fa8554e6fe9d9d64ac29bc4a214817391faffa64ffeff8169457913a8c161153179d889703758d725"
        );
        assert_eq!(
            sign(request(1568763244)),
            "d055969f7069799fd0efec97a731b230396ce16f9a40a3dbe2f2b814948ba3d871d4ca021b986c18bf23a05377b24f2f"
        );
        assert_eq!(
            sign(json!({
                "application_key": "Sandbox",
                "merchant_id": "Test-Integration-Merchant",
                "timestamp": 1578879941,
                "trace_id": 752856,
                "version": "1.2",
            })),
            "68d044bf60b52684f0abe0a0d1e9050bf6a5472b0b33073c4aef744c2f527321b5a260462f338b0381d9eeef3eec7e0b"
        );
        assert_eq!(
            sha384_hex(
                "Integration TEST USDTest-Integration-Merchant15688553921.1ABCDEFMerchantSecretKey"
            ),
            "c8d9b1824601bb6e11342afc36cb7281892daead2fbae257ea2d2ff8aa4908d66d5863a429e247d47155c01a0592e482"
        );
    }

    #[test]
    fn answers_sign_only_top_level_scalars() {
        let secret = SecretString::from("s");
        let with_nested = json!({
            "status": 0, "description": "ok", "version": "1.1",
            "transaction": {"amount": 1}, "signature": "x"
        });
        let without = json!({"status": 0, "description": "ok", "version": "1.1"});
        let a = praxis_signature(with_nested.as_object().unwrap(), Fields::Scalars, &secret);
        let b = praxis_signature(without.as_object().unwrap(), Fields::Scalars, &secret);
        assert_eq!(a, b);
        assert_eq!(a, sha384_hex("ok01.1s"));
    }

    #[test]
    fn null_is_empty_and_keys_sort_by_bytes() {
        let secret = SecretString::from("S");
        let value = json!({"b": null, "B": "upper", "a": 7});
        // Byte order puts uppercase before lowercase.
        assert_eq!(
            praxis_signature(value.as_object().unwrap(), Fields::All, &secret),
            sha384_hex("upper7S")
        );
    }

    #[test]
    fn constant_time_compare_is_exact() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "ABC"));
        assert!(!ct_eq("abc", "abcd"));
    }

    #[test]
    fn base64url_matches_rfc4648() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
