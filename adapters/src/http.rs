//! The HTTP client the provider clients share, and the steps of a send that do not depend on
//! the provider: joining the base URL, reading the response, classifying transport failures.

use std::time::Duration;

use crate::outbound::SendOutcome;

/// Timeouts and pooling of the shared HTTP client.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, from sending it to reading the last byte of the response.
    pub request_timeout: Duration,
    /// How long an unused pooled connection stays open for the next request.
    pub pool_idle_timeout: Duration,
    /// Maximum of idle connections kept per host.
    pub pool_max_idle_per_host: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
        }
    }
}

/// Builds the one `reqwest::Client` that every provider client clones: its pool keeps
/// connections alive between sends.
///
/// Server certificates are verified against the web PKI roots compiled into the binary
/// ([`web_pki_roots`]) and nothing else: not the host's trust store, and never no verification.
///
/// Installs rustls' ring crypto provider as the process default if no provider is installed
/// yet, because the workspace builds reqwest without a provider of its own.
pub fn build_http_client(settings: &HttpSettings) -> reqwest::Result<reqwest::Client> {
    // An error here only means another provider was installed first, which reqwest then uses.
    let _ = rustls::crypto::ring::default_provider().install_default();

    reqwest::Client::builder()
        .tls_certs_only(web_pki_roots()?)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .tcp_keepalive(Duration::from_secs(60))
        .build()
}

/// Returns the Mozilla root certificates of the `webpki-root-certs` crate, the roots every
/// provider's certificate must chain to.
///
/// They are compiled in rather than read from the host (`/etc/ssl/certs`), so a slim container
/// without a CA bundle still verifies, every machine trusts the same set, and a root added to
/// one host's store is not trusted by accident. The set changes with a `cargo update`.
pub fn web_pki_roots() -> reqwest::Result<Vec<reqwest::Certificate>> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()))
        .collect()
}

/// Joins `path` (which starts with `/`) to `base`, which may or may not end with `/`.
pub(crate) fn endpoint(base: &reqwest::Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

/// A provider's response, read whole so that it can be classified.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: reqwest::StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: bytes::Bytes,
}

impl RawResponse {
    /// Returns the value of header `name`, if it is present and valid text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Sends `request` and reads the whole response, or classifies the failure.
pub(crate) async fn execute(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<RawResponse, SendOutcome> {
    let response = request.send().await.map_err(|err| transport_outcome(provider, &err))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|err| transport_outcome(provider, &err))?;
    Ok(RawResponse { status, headers, body })
}

/// Classifies a failure that left no HTTP response. A failed connection means nothing was
/// sent, so it is retryable. Any later failure (a timeout waiting for the response, a reset
/// while reading it) may come after the provider acted on the request, and Gmail and Graph
/// offer no idempotency key, so sending again could deliver twice: the outcome is in doubt.
pub(crate) fn transport_outcome(provider: &str, err: &reqwest::Error) -> SendOutcome {
    if err.is_connect() {
        let reason = format!("{provider}: connection failed");
        return SendOutcome::Retryable { reason, retry_after: None };
    }
    if err.is_builder() {
        return SendOutcome::Permanent { reason: format!("{provider}: invalid request") };
    }
    let failure = if err.is_timeout() {
        "request timed out"
    } else if err.is_body() || err.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    SendOutcome::InDoubt {
        reason: format!(
            "{provider}: {failure} after the request was sent; it may have been delivered"
        ),
    }
}

/// Maximum length of a provider message kept in a reason, in characters.
const MAX_MESSAGE_CHARS: usize = 200;

/// Formats a reason as `<provider> <status> <code>: <message>`, the message cut short.
pub(crate) fn error_reason(provider: &str, status: u16, code: &str, message: &str) -> String {
    let message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    match (code.is_empty(), message.is_empty()) {
        (true, true) => format!("{provider} {status}"),
        (true, false) => format!("{provider} {status}: {message}"),
        (false, true) => format!("{provider} {status} {code}"),
        (false, false) => format!("{provider} {status} {code}: {message}"),
    }
}

/// Replaces every copy of `secret` in `text`, and a start of it at the end of `text`, which is
/// what remains when a message was cut short in the middle of an echoed credential.
fn redact_secret(text: &str, secret: &str) -> String {
    let mut redacted = text.replace(secret, "[redacted]");
    // Four characters of a token reveal little and occur by chance in ordinary words.
    let longest_tail = (4..secret.len())
        .rev()
        .filter(|&length| secret.is_char_boundary(length))
        .find(|&length| redacted.ends_with(&secret[..length]));
    if let Some(length) = longest_tail {
        redacted.truncate(redacted.len() - length);
        redacted.push_str("[redacted]");
    }
    redacted
}

/// Replaces every copy of `secret` in the outcome's reason, in case a provider echoed a
/// credential back in its error message.
pub(crate) fn scrub_secret(outcome: SendOutcome, secret: &str) -> SendOutcome {
    if secret.is_empty() {
        return outcome;
    }
    let scrub = |reason: String| redact_secret(&reason, secret);
    match outcome {
        SendOutcome::Accepted { .. } => outcome,
        SendOutcome::Retryable { reason, retry_after } => {
            SendOutcome::Retryable { reason: scrub(reason), retry_after }
        }
        SendOutcome::Permanent { reason } => SendOutcome::Permanent { reason: scrub(reason) },
        SendOutcome::Unauthorized { reason } => SendOutcome::Unauthorized { reason: scrub(reason) },
        SendOutcome::InDoubt { reason } => SendOutcome::InDoubt { reason: scrub(reason) },
        SendOutcome::NotSent { reason } => SendOutcome::NotSent { reason: scrub(reason) },
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_secret;

    #[test]
    fn whole_secret_is_redacted() {
        assert_eq!(
            redact_secret("bad token ya29.abcdef here", "ya29.abcdef"),
            "bad token [redacted] here"
        );
    }

    #[test]
    fn cut_secret_at_the_end_is_redacted() {
        assert_eq!(redact_secret("xxxxya29.ab", "ya29.abcdef"), "xxxx[redacted]");
    }

    #[test]
    fn short_common_tails_are_kept() {
        assert_eq!(redact_secret("sent to ya2", "ya29.abcdef"), "sent to ya2");
    }
}
