//! [`GraphClient`]: sends follow-ups through Graph `sendMail`, one at a time or in `$batch`es.

use std::sync::Arc;

use followup_core::clock::{Clock, SystemClock};
use followup_core::domain::Channel;
use reqwest::header::CONTENT_TYPE;

use super::batch::{BatchItem, BatchRequest, batch_sizes, pair_responses};
use super::request::{MIME_CONTENT_TYPE, SendMailBody};
use super::response::classify;
use super::{BATCH_PATH, MAX_BATCH_REQUESTS, SEND_MAIL_PATH};
use crate::http::{endpoint, execute, scrub_secret};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};

const PROVIDER: &str = "outlook";

/// A Microsoft Graph mail client. Cheap to clone: the HTTP pool is shared.
#[derive(Clone, Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    send_url: String,
    batch_url: String,
    /// Dates MIME messages and resolves `Retry-After` headers that carry an HTTP-date.
    clock: Arc<dyn Clock>,
}

impl GraphClient {
    /// Creates a client for the API at `base_url` (`https://graph.microsoft.com` in production).
    pub fn new(http: reqwest::Client, base_url: reqwest::Url) -> Self {
        Self {
            http,
            send_url: endpoint(&base_url, SEND_MAIL_PATH),
            batch_url: endpoint(&base_url, BATCH_PATH),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends `msg` from the mailbox that `creds` (a bearer access token) belongs to: in the
    /// MIME form when it has an unsubscribe URL, else in the JSON form.
    pub async fn send(&self, creds: SendCredentials<'_>, msg: &OutboundMessage) -> SendOutcome {
        let token = match bearer_token(creds) {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let request = match self.send_request(token, msg) {
            Ok(request) => request,
            Err(outcome) => return outcome,
        };
        let outcome = match execute(PROVIDER, request).await {
            Ok(response) => classify(&response, self.clock.now()),
            Err(outcome) => outcome,
        };
        scrub_secret(outcome, token)
    }

    /// Sends `messages`, all from the one mailbox that `creds` (a bearer access token) belongs
    /// to, through Graph JSON batching, and returns one outcome per message, in the order of
    /// `messages`.
    ///
    /// - Each outcome means what it means for [`send`](Self::send): the inner responses are
    ///   classified one by one with the same rules, so an inner 429 makes only its own message
    ///   retryable, with its own `Retry-After`. Retry only the messages whose outcome is
    ///   retryable.
    /// - Up to 20 messages go in one `$batch`. A longer list is split into batches of even
    ///   size, sent one after another, never at once: Graph runs the inner requests of a
    ///   batch against the mailbox at most 4 at a time, and the mailbox allows 4 concurrent
    ///   requests, so a second batch or a single send running beside it on the same mailbox
    ///   gets 429 MailboxConcurrency (retryable).
    /// - A failure of a whole `$batch` request gives every message of that batch the same
    ///   outcome and leaves the other batches' outcomes as they are. A failed connection is
    ///   retryable; a timeout or reset after the request was sent is in doubt; 401 and 403
    ///   are unauthorized; 429 and 5xx are retryable with the `Retry-After` wait; any other
    ///   status is permanent, because the same batch would fail again. The shared client's
    ///   request timeout covers the whole batch.
    /// - A message missing from Graph's response is in doubt, as Graph may have sent it.
    /// - A message that cannot be built (not an email, a bad unsubscribe URL) gets a permanent
    ///   outcome without being sent. A single sendable message goes through
    ///   [`send`](Self::send).
    ///
    /// Graph counts each inner request against the mailbox's limits as if it were sent on its
    /// own, so batching saves round trips, not quota: the caller must only batch what the
    /// mailbox's send limits allow.
    pub async fn send_batch(
        &self,
        creds: SendCredentials<'_>,
        messages: &[OutboundMessage],
    ) -> Vec<SendOutcome> {
        let token = match bearer_token(creds) {
            Ok(token) => token,
            Err(outcome) => return vec![outcome; messages.len()],
        };

        // Messages that cannot be built get their outcome now; the rest become inner requests
        // whose id is the message's position.
        let mut outcomes: Vec<Option<SendOutcome>> = vec![None; messages.len()];
        let mut indexes = Vec::with_capacity(messages.len());
        let mut items = Vec::with_capacity(messages.len());
        for (index, msg) in messages.iter().enumerate() {
            match self.batch_item(index, msg) {
                Ok(item) => {
                    indexes.push(index);
                    items.push(item);
                }
                Err(outcome) => outcomes[index] = Some(outcome),
            }
        }

        if let [index] = indexes[..] {
            outcomes[index] = Some(self.send(creds, &messages[index]).await);
        } else {
            let sent = self.send_in_batches(token, &items).await;
            for (index, outcome) in indexes.into_iter().zip(sent) {
                outcomes[index] = Some(outcome);
            }
        }

        outcomes
            .into_iter()
            .map(|outcome| scrub_secret(outcome.unwrap_or_else(no_outcome), token))
            .collect()
    }

    /// Builds the body of one `$batch` request carrying `messages`, as
    /// [`send_batch`](Self::send_batch) would send it, without sending anything: the `sendMail`
    /// body of each message (JSON, or MIME in base64 when it has an unsubscribe URL) inside the
    /// JSON of the batch. The body is sent as `application/json`. Benchmarks use it to measure
    /// the encoding apart from the network.
    ///
    /// # Errors
    ///
    /// Returns a permanent outcome when `messages` holds more than the 20 requests Graph
    /// accepts in one `$batch`, or the outcome `send_batch` would give the first message that
    /// cannot be sent.
    pub fn encode_batch(&self, messages: &[OutboundMessage]) -> Result<Vec<u8>, SendOutcome> {
        if messages.len() > MAX_BATCH_REQUESTS {
            let reason = format!(
                "outlook: {} messages do not fit in one $batch of at most {MAX_BATCH_REQUESTS}",
                messages.len()
            );
            return Err(SendOutcome::Permanent { reason });
        }
        let items = messages
            .iter()
            .enumerate()
            .map(|(index, msg)| self.batch_item(index, msg))
            .collect::<Result<Vec<_>, _>>()?;
        // The same serialization as `RequestBuilder::json` in `batch_request`.
        serde_json::to_vec(&BatchRequest { requests: &items }).map_err(|err| {
            SendOutcome::Permanent { reason: format!("outlook: encoding the $batch failed: {err}") }
        })
    }

    /// Builds the `sendMail` request for `msg`, or the outcome of a message that cannot be
    /// sent.
    pub(crate) fn send_request(
        &self,
        token: &str,
        msg: &OutboundMessage,
    ) -> Result<reqwest::RequestBuilder, SendOutcome> {
        let body = build_body(msg, self.clock.as_ref())?;
        let request = self.http.post(&self.send_url).bearer_auth(token);
        Ok(match body {
            SendMailBody::Json(json) => request.json(&json),
            SendMailBody::Mime(base64) => {
                request.header(CONTENT_TYPE, MIME_CONTENT_TYPE).body(base64)
            }
        })
    }

    /// Builds the `$batch` request that carries `items`.
    pub(crate) fn batch_request(
        &self,
        token: &str,
        items: &[BatchItem],
    ) -> reqwest::RequestBuilder {
        self.http.post(&self.batch_url).bearer_auth(token).json(&BatchRequest { requests: items })
    }

    /// Builds the inner request of the message at `index`, or its outcome when it cannot be
    /// sent.
    pub(crate) fn batch_item(
        &self,
        index: usize,
        msg: &OutboundMessage,
    ) -> Result<BatchItem, SendOutcome> {
        let body = build_body(msg, self.clock.as_ref())?;
        // NOTE: Graph's batching documentation says a body that is not JSON travels as base64.
        // The MIME form's body is already base64 text, so it is sent unchanged. Whether Graph
        // decodes it once more inside a batch is not documented, and this was not checked
        // against the live service.
        let value = body.to_batch_value().map_err(|err| SendOutcome::Permanent {
            reason: format!("outlook: encoding the message as JSON failed: {err}"),
        })?;
        Ok(BatchItem::send_mail(index.to_string(), body.content_type(), value))
    }

    /// Sends `items` in as many `$batch`es as needed, one after another, and returns their
    /// outcomes in the order of `items`.
    async fn send_in_batches(&self, token: &str, items: &[BatchItem]) -> Vec<SendOutcome> {
        let mut outcomes = Vec::with_capacity(items.len());
        let mut start = 0;
        for size in batch_sizes(items.len()) {
            let batch = &items[start..start + size];
            outcomes.extend(self.send_one_batch(token, batch).await);
            start += size;
        }
        outcomes
    }

    /// Sends one `$batch` of at most 20 items and returns their outcomes in the same order.
    async fn send_one_batch(&self, token: &str, items: &[BatchItem]) -> Vec<SendOutcome> {
        let request = self.batch_request(token, items);
        let response = match execute(PROVIDER, request).await {
            Ok(response) => response,
            Err(outcome) => return vec![outcome; items.len()],
        };
        let now = self.clock.now();
        if response.status.is_success() {
            return pair_responses(items, &response.body, now);
        }
        let outcome = whole_batch(classify(&response, now));
        vec![outcome; items.len()]
    }
}

/// Takes the access token out of `creds`.
fn bearer_token(creds: SendCredentials<'_>) -> Result<&str, SendOutcome> {
    match creds {
        SendCredentials::Bearer(token) => Ok(token),
        SendCredentials::Basic { .. } => {
            let reason = "outlook: credentials are not an oauth access token".to_owned();
            Err(SendOutcome::Unauthorized { reason })
        }
    }
}

/// Builds the `sendMail` body of `msg`, or the permanent outcome of a message Graph cannot
/// send.
fn build_body(msg: &OutboundMessage, clock: &dyn Clock) -> Result<SendMailBody, SendOutcome> {
    if msg.channel != Channel::Email {
        let reason = format!("outlook: cannot send on channel {}", msg.channel);
        return Err(SendOutcome::Permanent { reason });
    }
    SendMailBody::new(msg, clock.now())
        .map_err(|err| SendOutcome::Permanent { reason: err.to_string() })
}

/// Marks the reason of an outcome that a whole `$batch` request got.
fn whole_batch(outcome: SendOutcome) -> SendOutcome {
    let mark = |reason: String| format!("{reason} (the whole $batch request failed)");
    match outcome {
        SendOutcome::Accepted { .. } => outcome,
        SendOutcome::Retryable { reason, retry_after } => {
            SendOutcome::Retryable { reason: mark(reason), retry_after }
        }
        SendOutcome::Permanent { reason } => SendOutcome::Permanent { reason: mark(reason) },
        SendOutcome::Unauthorized { reason } => SendOutcome::Unauthorized { reason: mark(reason) },
        SendOutcome::InDoubt { reason } => SendOutcome::InDoubt { reason: mark(reason) },
        SendOutcome::NotSent { reason } => SendOutcome::NotSent { reason: mark(reason) },
    }
}

fn no_outcome() -> SendOutcome {
    let reason = "outlook $batch: no outcome was recorded for this message".to_owned();
    SendOutcome::InDoubt { reason }
}
