//! [`GmailClient`]: sends one follow-up through `users.messages.send`, or many through the
//! batch endpoint (see [`batch`](super::batch)).

use std::sync::Arc;
use std::time::Duration;

use followup_core::clock::{Clock, SystemClock};
use followup_core::domain::Channel;
use reqwest::header::CONTENT_TYPE;

use super::request::GmailSendRequest;
use super::response::classify;
use super::{BATCH_PATH, DEFAULT_MAX_BATCH, MAX_BATCH_CALLS, SEND_PATH};
use crate::http::{endpoint, execute, scrub_secret};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};

pub(super) const PROVIDER: &str = "gmail";

/// A Gmail API client. Cheap to clone: the HTTP pool is shared.
#[derive(Clone, Debug)]
pub struct GmailClient {
    pub(super) http: reqwest::Client,
    send_url: String,
    pub(super) batch_url: String,
    /// Path of `users.messages.send` from the server's root, as a batch part's request line
    /// names it. It includes any path of the base URL.
    pub(super) send_path: String,
    /// Maximum number of calls in one batch request, from 1 to [`MAX_BATCH_CALLS`].
    pub(super) max_batch: usize,
    /// Time allowed for a whole batch request; `None` keeps the HTTP client's request timeout.
    pub(super) batch_timeout: Option<Duration>,
    /// Dates messages and resolves Gmail's "Retry after <instant>" hints.
    pub(super) clock: Arc<dyn Clock>,
}

/// A send that passed the local checks: the token it goes out with and its JSON body.
#[derive(Debug)]
pub(super) struct PreparedSend<'a> {
    pub(super) token: &'a str,
    pub(super) body: Vec<u8>,
}

impl GmailClient {
    /// Creates a client for the API at `base_url` (`https://gmail.googleapis.com` in production).
    pub fn new(http: reqwest::Client, base_url: reqwest::Url) -> Self {
        let send_url = endpoint(&base_url, SEND_PATH);
        let send_path = format!("{}{SEND_PATH}", base_url.path().trim_end_matches('/'));
        Self {
            http,
            batch_url: endpoint(&base_url, BATCH_PATH),
            send_url,
            send_path,
            max_batch: DEFAULT_MAX_BATCH,
            batch_timeout: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Puts at most `max_batch` calls in one batch request of
    /// [`send_batch`](Self::send_batch). The value is clamped to 1 to [`MAX_BATCH_CALLS`]
    /// (Google's maximum), and 1 sends every message on its own. The default is
    /// [`DEFAULT_MAX_BATCH`], because Google advises against larger batches, which tend to be
    /// rate limited.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.clamp(1, MAX_BATCH_CALLS);
        self
    }

    /// Allows `timeout` for a whole batch request instead of the HTTP client's request timeout,
    /// because a batch of many sends takes longer than one send.
    pub fn with_batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = Some(timeout);
        self
    }

    /// Sends `msg` from the mailbox that `creds` (a bearer access token) belongs to.
    pub async fn send(&self, creds: SendCredentials<'_>, msg: &OutboundMessage) -> SendOutcome {
        match self.prepare(creds, msg) {
            Ok(prepared) => self.send_prepared(&prepared).await,
            Err(outcome) => outcome,
        }
    }

    /// Checks the credentials and the channel and builds the JSON body, or returns the outcome
    /// of a send that cannot be made.
    pub(super) fn prepare<'a>(
        &self,
        creds: SendCredentials<'a>,
        msg: &OutboundMessage,
    ) -> Result<PreparedSend<'a>, SendOutcome> {
        let SendCredentials::Bearer(token) = creds else {
            let reason = format!("{PROVIDER}: credentials are not an oauth access token");
            return Err(SendOutcome::Unauthorized { reason });
        };
        // A token goes into a header line, of its own request or of a batch part, where a
        // line break or another control character would corrupt the request.
        if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            let reason = format!(
                "{PROVIDER}: the access token is empty or has characters invalid in a header"
            );
            return Err(SendOutcome::Unauthorized { reason });
        }
        if msg.channel != Channel::Email {
            let reason = format!("{PROVIDER}: cannot send on channel {}", msg.channel);
            return Err(SendOutcome::Permanent { reason });
        }

        let request = GmailSendRequest::new(msg, self.clock.now()).map_err(|err| {
            let reason = format!("{PROVIDER}: building the message failed: {err}");
            SendOutcome::Permanent { reason }
        })?;
        let body = serde_json::to_vec(&request).map_err(|err| {
            let reason = format!("{PROVIDER}: encoding the request body failed: {err}");
            SendOutcome::Permanent { reason }
        })?;
        Ok(PreparedSend { token, body })
    }

    /// Builds the `users.messages.send` request of `prepared`.
    pub(super) fn send_request(&self, prepared: &PreparedSend<'_>) -> reqwest::RequestBuilder {
        self.http
            .post(&self.send_url)
            .bearer_auth(prepared.token)
            .header(CONTENT_TYPE, "application/json")
            .body(prepared.body.clone())
    }

    /// Sends `prepared` on its own and classifies the response.
    pub(super) async fn send_prepared(&self, prepared: &PreparedSend<'_>) -> SendOutcome {
        let outcome = match execute(PROVIDER, self.send_request(prepared)).await {
            Ok(response) => classify(&response, self.clock.now()),
            Err(outcome) => outcome,
        };
        scrub_secret(outcome, prepared.token)
    }
}
