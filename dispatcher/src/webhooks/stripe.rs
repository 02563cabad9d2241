//! Stripe's `Stripe-Signature` header: `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each
//! `v1` is the lowercase hex HMAC-SHA256 of `"{t}.{raw body}"` keyed with the endpoint's
//! signing secret (the whole `whsec_...` string). Several `v1` entries arrive while a secret is
//! being rolled; other schemes (`v0`) are ignored. Source: docs.stripe.com/webhooks, "Verify
//! manually", and Stripe's libraries, whose default tolerance is 300 s.

use chrono::{DateTime, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::Rejection;

/// The parts of a `Stripe-Signature` header that take part in verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The `t` entry, Unix seconds.
    pub timestamp: i64,
    /// Every `v1` entry, decoded from hex. An entry that is not hex is kept out, so it
    /// cannot match.
    pub signatures: Vec<Vec<u8>>,
}

/// Reads a `Stripe-Signature` header value. It is malformed without a numeric `t` or
/// without any `v1` entry.
pub fn parse_header(value: &str) -> Result<SignatureHeader, Rejection> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let mut v1_entries = 0;
    for entry in value.split(',') {
        let Some((name, value)) = entry.trim().split_once('=') else { continue };
        match name {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| Rejection::Malformed)?),
            "v1" => {
                v1_entries += 1;
                if let Some(bytes) = decode_hex(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Rejection::Malformed)?;
    if v1_entries == 0 {
        return Err(Rejection::Malformed);
    }
    Ok(SignatureHeader { timestamp, signatures })
}

/// Checks that one of the header's `v1` signatures is the HMAC of `body` under one of
/// `secrets`, then that its timestamp is within `tolerance_seconds` of `now` either way.
pub fn verify(
    header: &SignatureHeader,
    body: &[u8],
    secrets: &[&str],
    now: DateTime<Utc>,
    tolerance_seconds: u64,
) -> Result<(), Rejection> {
    let payload = signed_payload(header.timestamp, body);
    let matches = secrets.iter().any(|secret| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        header.signatures.iter().any(|signature| hmac::verify(&key, &payload, signature).is_ok())
    });
    if !matches {
        return Err(Rejection::Forged);
    }
    let skew = now.timestamp().abs_diff(header.timestamp);
    if skew > tolerance_seconds {
        return Err(Rejection::Stale);
    }
    Ok(())
}

/// Returns the bytes Stripe signs: the timestamp, a dot, and the raw body.
pub fn signed_payload(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("{timestamp}.").into_bytes();
    payload.extend_from_slice(body);
    payload
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

/// The fields of a Stripe event the engine reads. The whole body is kept as received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StripeEvent {
    /// `evt_...`, unique per event and the same on every delivery of it.
    pub id: String,
    /// Such as `customer.subscription.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When Stripe created the event, Unix seconds.
    pub created: i64,
    pub data: StripeEventData,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StripeEventData {
    /// The object the event is about, such as a subscription.
    pub object: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// Stripe's documented shape, computed independently with Python's `hmac`: secret
    /// `whsec_test`, `t=1492774577`, body `{"id":"evt_test"}`.
    const KNOWN_V1: &str = "91756ee38f5c256c6db5893fecc447d8729adb8023535a860e4c2b521391cec9";

    fn at(timestamp: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(timestamp, 0).single().expect("valid timestamp")
    }

    #[test]
    fn known_vector_verifies() {
        let header = parse_header(&format!("t=1492774577,v1={KNOWN_V1},v0=abc")).expect("parses");
        let body = br#"{"id":"evt_test"}"#;
        assert_eq!(verify(&header, body, &["whsec_test"], at(1492774577), 300), Ok(()));
    }

    #[test]
    fn any_v1_and_any_secret_may_match() {
        let header = parse_header(&format!("t=1492774577,v1=00ff,v1={KNOWN_V1}")).expect("parses");
        let body = br#"{"id":"evt_test"}"#;
        let secrets = ["whsec_new", "whsec_test"];
        assert_eq!(verify(&header, body, &secrets, at(1492774577), 300), Ok(()));
    }

    #[test]
    fn tolerance_applies_both_ways() {
        let header = parse_header(&format!("t=1492774577,v1={KNOWN_V1}")).expect("parses");
        let body = br#"{"id":"evt_test"}"#;
        let secrets = ["whsec_test"];
        assert_eq!(verify(&header, body, &secrets, at(1492774577 + 300), 300), Ok(()));
        assert_eq!(
            verify(&header, body, &secrets, at(1492774577 + 301), 300),
            Err(Rejection::Stale)
        );
        assert_eq!(
            verify(&header, body, &secrets, at(1492774577 - 301), 300),
            Err(Rejection::Stale)
        );
    }

    #[test]
    fn changed_body_is_forged() {
        let header = parse_header(&format!("t=1492774577,v1={KNOWN_V1}")).expect("parses");
        let body = br#"{"id":"evt_tesT"}"#;
        let result = verify(&header, body, &["whsec_test"], at(1492774577), 300);
        assert_eq!(result, Err(Rejection::Forged));
    }

    #[test]
    fn header_without_timestamp_or_v1_is_malformed() {
        assert_eq!(parse_header(&format!("v1={KNOWN_V1}")), Err(Rejection::Malformed));
        assert_eq!(parse_header("t=1492774577,v0=abcd"), Err(Rejection::Malformed));
        assert_eq!(parse_header("t=soon,v1=abcd"), Err(Rejection::Malformed));
        assert_eq!(parse_header(""), Err(Rejection::Malformed));
    }
}
