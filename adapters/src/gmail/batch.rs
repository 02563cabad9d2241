//! [`GmailClient::send_batch`]: many `users.messages.send` calls in one HTTP request to
//! Google's batch endpoint.

use rand::Rng;
use reqwest::header::CONTENT_TYPE;

use super::multipart::{
    RequestPart, ResponsePart, contains_boundary, decode_response, encode_request, new_boundary,
};
use super::response::classify;
use super::service::{GmailClient, PROVIDER, PreparedSend};
use crate::http::{RawResponse, execute, scrub_secret};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};

#[cfg(test)]
mod tests;

impl GmailClient {
    /// Sends every `(credentials, message)` of `items` through Gmail's batch endpoint and
    /// returns one outcome per item, in the order of `items`.
    ///
    /// - **Local checks first.** An item whose credentials are not a bearer token, or whose
    ///   token is empty or not valid in a header, gets `Unauthorized`. One that is not an
    ///   email or whose message cannot be built gets `Permanent`. Neither makes a request.
    /// - **Chunks.** The other items go out in batches of at most the
    ///   [`with_max_batch`](Self::with_max_batch) size, one batch after another, each one
    ///   `POST /batch/gmail/v1`. A lone item, or a chunk of one, is sent with
    ///   [`send`](Self::send), without the batch overhead.
    /// - **Several mailboxes.** Each call carries its own `Authorization` header, so a batch
    ///   may mix mailboxes. The outer request carries a token only when every call of the
    ///   batch has the same one.
    /// - **Per-call outcomes.** Each call's response is classified like the response of
    ///   `send`, on its own: one call's 429 does not fail the others. A call the response has
    ///   no part for is `InDoubt`, because it may have run.
    /// - **Whole-batch failures** apply to every call of that batch, classified as for a
    ///   single send. A failed connection is `Retryable`, because nothing was sent. A timeout
    ///   or a reset after sending is `InDoubt`. An outer non-2xx status is classified like a
    ///   send's response, so an outer 401 makes every call `Unauthorized`. An unreadable 2xx
    ///   body is `InDoubt`.
    ///
    /// No reason contains a token of the batch. Google runs the calls of a batch in any order,
    /// and each call counts against quota and against its mailbox's sending limits like a
    /// single send: a batch saves connections, not quota. A batch must finish within the HTTP
    /// client's request timeout, or the one set with
    /// [`with_batch_timeout`](Self::with_batch_timeout).
    pub async fn send_batch(
        &self,
        items: &[(SendCredentials<'_>, &OutboundMessage)],
    ) -> Vec<SendOutcome> {
        if let [(creds, msg)] = items {
            return vec![self.send(*creds, msg).await];
        }

        let prepared: Vec<Result<PreparedSend<'_>, SendOutcome>> =
            items.iter().map(|(creds, msg)| self.prepare(*creds, msg)).collect();
        let ready: Vec<&PreparedSend<'_>> =
            prepared.iter().filter_map(|item| item.as_ref().ok()).collect();

        let mut sent = Vec::with_capacity(ready.len());
        for chunk in ready.chunks(self.max_batch) {
            sent.extend(self.send_chunk(chunk).await);
        }

        // `sent` has one outcome per ready item, in order, so each ready item takes the next.
        let mut sent = sent.into_iter();
        prepared
            .into_iter()
            .map(|item| match item {
                Ok(_) => sent.next().unwrap_or_else(unanswered),
                Err(outcome) => outcome,
            })
            .collect()
    }

    /// Sends one chunk, as a batch unless it contains a single call, and returns an outcome for
    /// each of its calls, in order.
    async fn send_chunk(&self, chunk: &[&PreparedSend<'_>]) -> Vec<SendOutcome> {
        if let [prepared] = chunk {
            return vec![self.send_prepared(prepared).await];
        }

        let parts = request_parts(chunk);
        let outcomes = match execute(PROVIDER, self.batch_request(&parts)).await {
            Err(outcome) => vec![outcome; parts.len()],
            Ok(response) if !response.status.is_success() => {
                vec![classify(&response, self.clock.now()); parts.len()]
            }
            Ok(response) => self.pair_responses(&parts, &response),
        };

        // An outer error body is shared by every call, so each reason is cleaned of all tokens.
        outcomes
            .into_iter()
            .map(|outcome| {
                parts.iter().fold(outcome, |outcome, part| scrub_secret(outcome, part.token))
            })
            .collect()
    }

    /// Builds the body of one batch request carrying `items`, as [`send_batch`](Self::send_batch)
    /// would send it, without sending anything: each message is built, base64url-encoded and
    /// wrapped in its JSON body, then every call is written into the `multipart/mixed` body.
    /// All items go into one body, whatever the [`with_max_batch`](Self::with_max_batch) size.
    /// Benchmarks use it to measure the encoding apart from the network.
    ///
    /// # Errors
    ///
    /// Returns the outcome `send_batch` would give the first item that cannot be sent (not a
    /// bearer token, not an email, a message that cannot be built).
    pub fn encode_batch(
        &self,
        items: &[(SendCredentials<'_>, &OutboundMessage)],
    ) -> Result<EncodedBatch, SendOutcome> {
        let prepared = items
            .iter()
            .map(|(creds, msg)| self.prepare(*creds, msg))
            .collect::<Result<Vec<_>, _>>()?;
        let chunk: Vec<&PreparedSend<'_>> = prepared.iter().collect();
        Ok(self.encode_parts(&request_parts(&chunk)))
    }

    /// Writes the `multipart/mixed` body of `parts` under a boundary that occurs in none of
    /// them.
    fn encode_parts(&self, parts: &[RequestPart<'_>]) -> EncodedBatch {
        let mut boundary = new_boundary();
        while contains_boundary(&boundary, parts) {
            boundary = new_boundary();
        }
        EncodedBatch {
            content_type: format!("multipart/mixed; boundary={boundary}"),
            body: encode_request(&boundary, &self.send_path, parts),
        }
    }

    /// Builds the batch request carrying `parts`.
    pub(super) fn batch_request(&self, parts: &[RequestPart<'_>]) -> reqwest::RequestBuilder {
        let EncodedBatch { content_type, body } = self.encode_parts(parts);
        let mut request =
            self.http.post(&self.batch_url).header(CONTENT_TYPE, content_type).body(body);
        if let Some(token) = shared_token(parts) {
            request = request.bearer_auth(token);
        }
        if let Some(timeout) = self.batch_timeout {
            request = request.timeout(timeout);
        }
        request
    }

    /// Classifies the response part of each call, found by its Content-ID.
    fn pair_responses(
        &self,
        parts: &[RequestPart<'_>],
        response: &RawResponse,
    ) -> Vec<SendOutcome> {
        let content_type = response.header("content-type").unwrap_or_default();
        let mut answers = match decode_response(content_type, &response.body) {
            Ok(answers) => answers,
            Err(err) => {
                tracing::warn!(error = %err, calls = parts.len(), "gmail: unreadable batch response");
                let reason = format!(
                    "{PROVIDER}: the batch response is unreadable ({err}); the message may have \
                     been delivered"
                );
                return vec![SendOutcome::InDoubt { reason }; parts.len()];
            }
        };

        let now = self.clock.now();
        let mut missing = 0;
        let outcomes: Vec<SendOutcome> = parts
            .iter()
            .map(|part| match take_answer(&mut answers, &part.content_id) {
                Some(answer) => classify(&answer.response, now),
                None => {
                    missing += 1;
                    unanswered()
                }
            })
            .collect();
        if missing > 0 {
            tracing::warn!(calls = parts.len(), missing, "gmail: batch response lacks parts");
        }
        outcomes
    }
}

/// The body of one batch request and the `Content-Type` (with its boundary) it is sent with.
#[derive(Debug)]
pub struct EncodedBatch {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Returns the batch parts of `chunk`, each with a Content-ID made of a random batch id and
/// the call's position.
fn request_parts<'a>(chunk: &[&'a PreparedSend<'_>]) -> Vec<RequestPart<'a>> {
    let batch_id = format!("{:016x}", rand::rng().random::<u64>());
    chunk
        .iter()
        .enumerate()
        .map(|(index, prepared)| RequestPart {
            content_id: format!("{batch_id}+{index}"),
            token: prepared.token,
            body: &prepared.body,
        })
        .collect()
}

/// Returns the token every part carries, if they all carry the same one.
fn shared_token<'a>(parts: &[RequestPart<'a>]) -> Option<&'a str> {
    let first = parts.first()?.token;
    parts.iter().all(|part| part.token == first).then_some(first)
}

/// Removes and returns the response part for the call `content_id`.
fn take_answer(answers: &mut Vec<ResponsePart>, content_id: &str) -> Option<ResponsePart> {
    let position =
        answers.iter().position(|answer| answer.content_id.as_deref() == Some(content_id))?;
    Some(answers.swap_remove(position))
}

/// Returns the outcome of a call that the batch response has no part for.
fn unanswered() -> SendOutcome {
    let reason = format!(
        "{PROVIDER}: the batch response has no part for this message; it may have been delivered"
    );
    SendOutcome::InDoubt { reason }
}
