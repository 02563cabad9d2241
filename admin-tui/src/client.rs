//! The HTTP client of the operator API.

use std::time::Duration;

use followup_core::api::{
    ActionOutcome, AdminSnapshot, DeadLetterPage, OperatorAction, TenantDetail, TenantPage,
};
use followup_core::ids::TenantId;
use followup_core::sensitive::Sensitive;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::requests::{Action, DeadLetterQuery, TenantQuery};
use crate::sse::{SseError, SseParser};

/// Time limit of one request, and of opening the event stream. It is shorter than a few
/// snapshot periods, so that a hung engine shows as disconnected within seconds.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest silence on the event stream before the console takes the connection for dead. The
/// engine sends a snapshot each second and heartbeat comments between them, so ten seconds
/// without a byte means the engine or the network is gone even if no TCP error arrived.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Failure of a request to the engine. Messages are short because they fill one line of the
/// console, and none contains the operator token.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("request timed out after {} s", REQUEST_TIMEOUT.as_secs())]
    TimedOut,
    #[error("operator token rejected with HTTP {0}: check FOLLOWUP_ADMIN_TOKEN")]
    Unauthorized(StatusCode),
    #[error("engine returned HTTP {0}")]
    Status(StatusCode),
    /// An error status with the message of the engine's JSON error body, shown as it came:
    /// the engine puts no secret in its error messages.
    #[error("engine returned HTTP {status}: {message}")]
    Rejected { status: StatusCode, message: String },
    #[error("invalid JSON from the engine: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("request failed: {0}")]
    Request(String),
    #[error("no data on the event stream for {} s", .0.as_secs_f64())]
    StreamIdle(Duration),
    #[error("the engine closed the event stream")]
    StreamClosed,
    #[error("invalid event stream: {0}")]
    Stream(#[from] SseError),
}

impl FetchError {
    /// Whether the engine responded 404, which for the stream and the tenant pages means an
    /// engine older than the route.
    pub fn is_not_found(&self) -> bool {
        match self {
            FetchError::Status(status) | FetchError::Rejected { status, .. } => {
                *status == StatusCode::NOT_FOUND
            }
            _ => false,
        }
    }
}

impl From<reqwest::Error> for FetchError {
    fn from(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return FetchError::TimedOut;
        }

        let reason = root_cause(&error);
        if error.is_connect() { FetchError::Connect(reason) } else { FetchError::Request(reason) }
    }
}

/// Returns the cause under reqwest's own message, which is only "error sending request":
/// the kind of the deepest I/O error, such as "connection refused", or else the
/// innermost error's message.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    let mut io_kind = None;
    loop {
        let kind = cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        if kind.is_some_and(|kind| kind != std::io::ErrorKind::Other) {
            io_kind = kind;
        }
        match cause.source() {
            Some(source) => cause = source,
            None => break,
        }
    }
    io_kind.map_or_else(|| cause.to_string(), |kind| kind.to_string())
}

/// Former name of [`AdminClient`], from when the console only fetched snapshots. Tests of the
/// dispatcher crate still use it.
pub type SnapshotClient = AdminClient;

/// Client of the operator API of one engine.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    /// Base URL without user or password, ending in the path prefix if any.
    base: Url,
    token: Sensitive<String>,
    /// Longest silence on an open event stream, [`STREAM_IDLE_TIMEOUT`] unless a test sets it.
    stream_idle_timeout: Duration,
}

impl AdminClient {
    /// Creates a client of the engine at `base`, such as `http://127.0.0.1:8080`, that
    /// authenticates with the operator `token`.
    ///
    /// Installs ring as the process's rustls crypto provider unless one is installed already,
    /// because reqwest is built without one and panics on building a client otherwise.
    pub fn new(base: &Url, token: Sensitive<String>) -> anyhow::Result<Self> {
        if !matches!(base.scheme(), "http" | "https") {
            // The URL itself is left out because it may carry a password.
            let scheme = base.scheme();
            anyhow::bail!("invalid engine URL scheme {scheme:?}: expected http or https");
        }
        if token.expose().trim().is_empty() {
            anyhow::bail!("operator token is empty: set --token or FOLLOWUP_ADMIN_TOKEN");
        }
        let _ = rustls::crypto::ring::default_provider().install_default();

        // No overall timeout on the client: it would cut the event stream, which lasts as
        // long as the engine runs. Each plain request sets `REQUEST_TIMEOUT` instead.
        let http = reqwest::Client::builder().connect_timeout(REQUEST_TIMEOUT).build()?;
        let base = strip_credentials(base);
        Ok(Self { http, base, token, stream_idle_timeout: STREAM_IDLE_TIMEOUT })
    }

    /// Sets the longest silence on an open event stream before it counts as dropped.
    #[must_use]
    pub fn with_stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// Returns the address shown on screen: scheme, host and port, without any user or
    /// password the URL may carry.
    pub fn server(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    /// Fetches one snapshot: `GET /admin/v1/snapshot`.
    pub async fn fetch_snapshot(&self) -> Result<AdminSnapshot, FetchError> {
        self.get_json(&["snapshot"], &[]).await
    }

    /// Fetches one snapshot, as [`AdminClient::fetch_snapshot`] does; the name of the former
    /// `SnapshotClient`.
    pub async fn fetch(&self) -> Result<AdminSnapshot, FetchError> {
        self.fetch_snapshot().await
    }

    /// Fetches one page of tenants: `GET /admin/v1/tenant-summaries`.
    pub async fn tenant_page(&self, query: &TenantQuery) -> Result<TenantPage, FetchError> {
        let params = [
            ("sort", query.sort.to_string()),
            ("filter", query.filter.clone()),
            ("offset", query.offset.to_string()),
            ("limit", query.limit.to_string()),
        ];
        self.get_json(&["tenant-summaries"], &params).await
    }

    /// Fetches one tenant for the detail view: `GET /admin/v1/tenants/{id}/detail`.
    pub async fn tenant_detail(&self, tenant: TenantId) -> Result<TenantDetail, FetchError> {
        self.get_json(&["tenants", &tenant.to_string(), "detail"], &[]).await
    }

    /// Fetches one page of dead letters: `GET /admin/v1/dead-letters`.
    pub async fn dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, FetchError> {
        let mut params =
            vec![("offset", query.offset.to_string()), ("limit", query.limit.to_string())];
        if let Some(tenant) = query.tenant {
            params.push(("tenant", tenant.to_string()));
        }
        self.get_json(&["dead-letters"], &params).await
    }

    /// Performs an operator action: a `POST` with an [`OperatorAction`] body.
    pub async fn act(&self, action: &Action) -> Result<ActionOutcome, FetchError> {
        let (segments, body) = action_request(action);
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let request = self
            .http
            .post(self.endpoint(&segments))
            .bearer_auth(self.token.expose())
            .timeout(REQUEST_TIMEOUT)
            .json(&body);
        decode(request.send().await?).await
    }

    /// Opens the snapshot stream: `GET /admin/v1/stream`.
    pub async fn open_stream(&self) -> Result<SnapshotStream, FetchError> {
        let request = self
            .http
            .get(self.endpoint(&["stream"]))
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
            .await
            .map_err(|_| FetchError::TimedOut)??;
        let response = check_status(response).await?;
        Ok(SnapshotStream {
            response,
            parser: SseParser::new(),
            ready: Vec::new(),
            idle_timeout: self.stream_idle_timeout,
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        params: &[(&str, String)],
    ) -> Result<T, FetchError> {
        let mut request = self
            .http
            .get(self.endpoint(segments))
            .bearer_auth(self.token.expose())
            .timeout(REQUEST_TIMEOUT);
        if !params.is_empty() {
            request = request.query(params);
        }
        decode(request.send().await?).await
    }

    /// Returns the URL of `/admin/v1/` followed by `segments`, each percent-encoded as one
    /// path segment, after any path prefix of the base URL.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["admin", "v1"]).extend(segments);
        }
        url
    }
}

/// Returns the path segments after `/admin/v1/` and the body of `action`.
///
/// NOTE: the routes name a connection by its provider, so a tenant with two connections of
/// one provider cannot pause one of them alone.
fn action_request(action: &Action) -> (Vec<String>, OperatorAction) {
    let mut body = OperatorAction::default();
    let segments = match action {
        Action::PauseTenant { tenant, .. } => {
            vec!["tenants".into(), tenant.to_string(), "pause".into()]
        }
        Action::ResumeTenant { tenant, .. } => {
            vec!["tenants".into(), tenant.to_string(), "resume".into()]
        }
        Action::PauseConnection { tenant, provider, .. } => {
            let tenant = tenant.to_string();
            vec!["tenants".into(), tenant, "connections".into(), provider.clone(), "pause".into()]
        }
        Action::ResumeConnection { tenant, provider, .. } => {
            let tenant = tenant.to_string();
            vec!["tenants".into(), tenant, "connections".into(), provider.clone(), "resume".into()]
        }
        Action::RetryDeadLetters { tenant, .. } => {
            body.tenant = tenant.as_ref().map(|(id, _)| *id);
            vec!["dead-letters".into(), "retry".into()]
        }
    };
    (segments, body)
}

/// Drops a user and password in `base`, because reqwest would send them as basic
/// authentication and the operator token is the only credential the engine accepts.
fn strip_credentials(base: &Url) -> Url {
    let mut base = base.clone();
    // Both setters fail only for URLs that cannot have credentials, which `new` rejected.
    let _ = base.set_username("");
    let _ = base.set_password(None);
    base
}

/// Turns an error status into a [`FetchError`], with the engine's message when its body is
/// the usual `{"error": {"message": ...}}`.
async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, FetchError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(FetchError::Unauthorized(status));
    }

    let body = response.bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value["error"]["message"].as_str().map(str::to_owned));
    Err(match message {
        Some(message) => FetchError::Rejected { status, message },
        None => FetchError::Status(status),
    })
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, FetchError> {
    let response = check_status(response).await?;
    let body = response.bytes().await?;
    Ok(serde_json::from_slice(&body)?)
}

/// An open `GET /admin/v1/stream`, read one snapshot at a time.
#[derive(Debug)]
pub struct SnapshotStream {
    response: reqwest::Response,
    parser: SseParser,
    /// Snapshots parsed from the last chunk and not returned yet, oldest last.
    ready: Vec<AdminSnapshot>,
    idle_timeout: Duration,
}

impl SnapshotStream {
    /// Waits for the next `snapshot` event. Heartbeat comments and events of other names
    /// are skipped, but they count as signs of life against the idle timeout.
    pub async fn next_snapshot(&mut self) -> Result<AdminSnapshot, FetchError> {
        loop {
            if let Some(snapshot) = self.ready.pop() {
                return Ok(snapshot);
            }
            let chunk = tokio::time::timeout(self.idle_timeout, self.response.chunk())
                .await
                .map_err(|_| FetchError::StreamIdle(self.idle_timeout))??
                .ok_or(FetchError::StreamClosed)?;

            for event in self.parser.push(&chunk)? {
                if event.event == "snapshot" {
                    self.ready.push(serde_json::from_str(&event.data)?);
                }
            }
            self.ready.reverse();
        }
    }
}
