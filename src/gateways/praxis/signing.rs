//! The Praxis SHA-384 signature, for requests we send and answers we receive.
//!
//! Praxis signs a message by sorting its field names, concatenating the values
//! (no names, no separators), appending the merchant secret and hashing with
//! SHA-384. The rule is the same in both directions, so it is written once here
//! over a generic JSON object. The secret is fed straight into the hasher: it
//! is never copied into a string that could end up in a log or an error.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::{Digest, Sha384};
use subtle::ConstantTimeEq;

/// The field that carries the signature and is therefore never part of it.
pub const SIGNATURE_FIELD: &str = "signature";

/// The text that is hashed before the secret is appended.
///
/// Keys are sorted by byte order (what `ksort` gives the gateway's PHP code
/// for ASCII keys). Integers are written in decimal and `null` as nothing.
/// Nested objects and arrays are skipped: requests never have them, and in
/// answers (a `find-transaction` answer's `transaction`) the documentation
/// does not say how they would be folded in, so only the top-level scalars
/// are checked. Booleans never occur in requests; in answers they are written
/// the way PHP concatenates them (`"1"` and `""`), a guess that only affects
/// the non-fatal answer check.
pub fn concatenate(fields: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = fields
        .keys()
        .filter(|key| key.as_str() != SIGNATURE_FIELD)
        .collect();
    keys.sort();
    let mut text = String::new();
    for key in keys {
        match &fields[key.as_str()] {
            Value::String(s) => text.push_str(s),
            Value::Number(n) => text.push_str(&n.to_string()),
            Value::Bool(true) => text.push('1'),
            Value::Bool(false) | Value::Null => {}
            Value::Object(_) | Value::Array(_) => {}
        }
    }
    text
}

/// SHA-384 of `concatenated` followed by the secret, as lowercase hex.
pub fn digest(concatenated: &str, secret: &SecretString) -> String {
    let mut hasher = Sha384::new();
    hasher.update(concatenated.as_bytes());
    hasher.update(secret.expose_secret().as_bytes());
    hex::encode(hasher.finalize())
}

/// The signature of every field of `fields` except `signature`.
pub fn sign(fields: &Map<String, Value>, secret: &SecretString) -> String {
    digest(&concatenate(fields), secret)
}

/// Whether `received` is the signature of `fields`, compared in constant time so
/// that a forger learns nothing from how long the comparison took. Hex case is
/// ignored: a gateway that sends uppercase hex has still signed correctly.
pub fn verify(fields: &Map<String, Value>, received: &str, secret: &SecretString) -> bool {
    let expected = sign(fields, secret);
    let received = received.trim().to_ascii_lowercase();
    expected.as_bytes().ct_eq(received.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "MerchantSecretKey";
    const MERCHANT: &str = "Test-Integration-Merchant";

    fn secret() -> SecretString {
        SecretString::from(SECRET)
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn first_documented_vector() {
        let fields = object(json!({
            "merchant_id": MERCHANT,
            "frontend": "Integration TEST USD",
            "trace_id": 752856,
            "timestamp": 1568763080,
            "version": "1.1",
        }));
        assert_eq!(
            sign(&fields, &secret()),
            "1dc661c002e4335fa8554e6fe9d9d64ac29bc4a214817391faffa64ffeff8169457913a8c161153179d889703758d725"
        );
    }

    #[test]
    fn second_documented_vector() {
        let fields = object(json!({
            "version": "1.1",
            "trace_id": 752856,
            "timestamp": 1568763244,
            "merchant_id": MERCHANT,
            "frontend": "Integration TEST USD",
        }));
        assert_eq!(
            sign(&fields, &secret()),
            "d055969f7069799fd0efec97a731b230396ce16f9a40a3dbe2f2b814948ba3d871d4ca021b986c18bf23a05377b24f2f"
        );
    }

    #[test]
    fn api_1_2_vector_with_application_key() {
        let fields = object(json!({
            "application_key": "Sandbox",
            "merchant_id": MERCHANT,
            "timestamp": 1578879941,
            "trace_id": 752856,
            "version": "1.2",
        }));
        assert_eq!(
            sign(&fields, &secret()),
            "68d044bf60b52684f0abe0a0d1e9050bf6a5472b0b33073c4aef744c2f527321b5a260462f338b0381d9eeef3eec7e0b"
        );
    }

    #[test]
    fn raw_string_vector() {
        const RAW: &str =
            "Integration TEST USDTest-Integration-Merchant15688553921.1ABCDEFMerchantSecretKey";
        const EXPECTED: &str = "c8d9b1824601bb6e11342afc36cb7281892daead2fbae257ea2d2ff8aa4908d66d5863a429e247d47155c01a0592e482";
        assert_eq!(hex::encode(Sha384::digest(RAW.as_bytes())), EXPECTED);
        // The same hash through `digest`, which appends the secret itself.
        let without_secret = RAW.strip_suffix(SECRET).unwrap();
        assert_eq!(digest(without_secret, &secret()), EXPECTED);
    }

    #[test]
    fn concatenation_sorts_by_byte_order_and_skips_the_signature() {
        let fields = object(json!({
            "b": "2",
            "B": "upper",
            "a": 1,
            "signature": "ignored",
            "n": null,
            "nested": {"x": "y"},
            "list": [1, 2],
            "yes": true,
            "no": false,
        }));
        // Byte order puts uppercase before lowercase.
        assert_eq!(concatenate(&fields), "upper121");
    }

    #[test]
    fn the_signature_field_does_not_change_the_signature() {
        let mut fields = object(json!({"status": 0, "description": "Ok", "version": "1.1"}));
        let unsigned = sign(&fields, &secret());
        fields.insert(SIGNATURE_FIELD.into(), Value::String(unsigned.clone()));
        assert_eq!(sign(&fields, &secret()), unsigned);
    }

    #[test]
    fn verification_accepts_the_right_signature_and_refuses_others() {
        let fields = object(json!({"status": 0, "description": "Ok", "version": "1.1"}));
        let good = sign(&fields, &secret());
        assert!(verify(&fields, &good, &secret()));
        assert!(verify(&fields, &good.to_ascii_uppercase(), &secret()));
        assert!(!verify(&fields, &good[..good.len() - 1], &secret()));
        assert!(!verify(&fields, "", &secret()));
        assert!(!verify(
            &fields,
            &good,
            &SecretString::from("AnotherSecret")
        ));
        let mut tampered = fields.clone();
        tampered.insert("status".into(), json!(1));
        assert!(!verify(&tampered, &good, &secret()));
    }
}
