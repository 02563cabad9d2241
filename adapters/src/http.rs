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
/// Installs rustls' ring crypto provider as the process default if no provider is installed
/// yet, because the workspace builds reqwest without a provider of its own.
pub fn build_http_client(settings: &HttpSettings) -> reqwest::Result<reqwest::Client> {
    // An error here only means another provider was installed first, which reqwest then uses.
    let _ = rustls::crypto::ring::default_provider().install_default();

    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .tcp_keepalive(Duration::from_secs(60))
        .build()
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

/// Classifies a failure that left no HTTP response as retryable.
///
/// NOTE: a failure after the request was written (a reset while reading) may mean the
/// provider acted on it. This function cannot tell, so the engine's in-doubt bookkeeping must.
pub(crate) fn transport_outcome(provider: &str, err: &reqwest::Error) -> SendOutcome {
    let failure = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    SendOutcome::Retryable { reason: format!("{provider}: {failure}"), retry_after: None }
}

/// Longest provider message kept in a reason, in characters.
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

/// Replaces every copy of `secret` in the outcome's reason, in case a provider echoed a
/// credential back in its error message.
pub(crate) fn scrub_secret(outcome: SendOutcome, secret: &str) -> SendOutcome {
    if secret.is_empty() {
        return outcome;
    }
    let scrub = |reason: String| reason.replace(secret, "[redacted]");
    match outcome {
        SendOutcome::Accepted { .. } => outcome,
        SendOutcome::Retryable { reason, retry_after } => {
            SendOutcome::Retryable { reason: scrub(reason), retry_after }
        }
        SendOutcome::Permanent { reason } => SendOutcome::Permanent { reason: scrub(reason) },
        SendOutcome::Unauthorized { reason } => SendOutcome::Unauthorized { reason: scrub(reason) },
    }
}
