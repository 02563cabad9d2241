//! Twilio's `X-Twilio-Signature` is the base64 (standard alphabet, padded) HMAC-SHA1, keyed
//! with the account's auth token, of a text built from the request. The text is the URL Twilio
//! requested (scheme through query string), then every POST parameter as name then value with
//! no separators, sorted by name and then value in byte order.
//! Source: twilio.com/docs/usage/webhooks/webhooks-security.

use base64::Engine as _;
use ring::hmac;

use super::Rejection;

/// Returns the signature Twilio sends for a request to `url` with form `params`.
pub fn sign(url: &str, params: &[(String, String)], auth_token: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    let tag = hmac::sign(&key, &signed_text(url, params));
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// Checks `signature` (the header value) against the request's URL and parameters. A proxy can
/// add or drop the default port, so the URL is also tried with it toggled, as Twilio's
/// libraries do.
pub fn verify(
    signature: &str,
    url: &str,
    params: &[(String, String)],
    auth_token: &str,
) -> Result<(), Rejection> {
    let tag = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Rejection::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    let candidates = std::iter::once(url.to_owned()).chain(toggle_default_port(url));
    for candidate in candidates {
        if hmac::verify(&key, &signed_text(&candidate, params), &tag).is_ok() {
            return Ok(());
        }
    }
    Err(Rejection::Forged)
}

fn signed_text(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut text = url.as_bytes().to_vec();
    for (name, value) in sorted {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(value.as_bytes());
    }
    text
}

/// Returns `url` with its scheme's default port added when it has none, or removed when it has
/// it; `None` for any other URL.
fn toggle_default_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let explicit_port = authority
        .rsplit_once(':')
        .filter(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    match explicit_port {
        Some((host, port)) if port == default_port => Some(format!("{scheme}://{host}{tail}")),
        Some(_) => None,
        None => Some(format!("{scheme}://{authority}:{default_port}{tail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    /// The example of Twilio's SDK documentation, recomputed independently with Python's `hmac`.
    #[test]
    fn known_vector_verifies() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let form = params(&[
            ("Digits", "1234"),
            ("CallSid", "CA1234567890ABCDE"),
            ("To", "+18005551212"),
            ("Caller", "+12349013030"),
            ("From", "+12349013030"),
        ]);
        assert_eq!(sign(url, &form, "12345"), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert_eq!(verify("0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url, &form, "12345"), Ok(()));
        assert_eq!(
            verify("0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url, &form, "12346"),
            Err(Rejection::Forged)
        );
    }

    #[test]
    fn default_port_may_be_added_or_dropped() {
        let form = params(&[("MessageSid", "SM1")]);
        let signed_with_port = sign("https://example.com:443/hook?x=1", &form, "token");
        assert_eq!(
            verify(&signed_with_port, "https://example.com/hook?x=1", &form, "token"),
            Ok(())
        );
        let signed_without = sign("https://example.com/hook", &form, "token");
        assert_eq!(verify(&signed_without, "https://example.com:443/hook", &form, "token"), Ok(()));
        let other_port = sign("https://example.com:8443/hook", &form, "token");
        assert_eq!(
            verify(&other_port, "https://example.com/hook", &form, "token"),
            Err(Rejection::Forged)
        );
    }

    #[test]
    fn repeated_names_sort_by_value() {
        let forward = params(&[("MediaUrl", "a"), ("MediaUrl", "b")]);
        let backward = params(&[("MediaUrl", "b"), ("MediaUrl", "a")]);
        assert_eq!(sign("https://x.test/", &forward, "t"), sign("https://x.test/", &backward, "t"));
    }

    #[test]
    fn invalid_base64_is_malformed() {
        assert_eq!(verify("not base64!", "https://x.test/", &[], "t"), Err(Rejection::Malformed));
    }
}
