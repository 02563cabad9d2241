//! [`GmailClient`]: sends one follow-up through `users.messages.send`.

use std::sync::Arc;

use followup_core::clock::{Clock, SystemClock};
use followup_core::domain::Channel;

use super::SEND_PATH;
use super::request::GmailSendRequest;
use super::response::classify;
use crate::http::{endpoint, execute, scrub_secret};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};

/// A Gmail API client. Cheap to clone: the HTTP pool is shared.
#[derive(Clone, Debug)]
pub struct GmailClient {
    http: reqwest::Client,
    send_url: String,
    /// Dates messages and resolves Gmail's "Retry after <instant>" hints.
    clock: Arc<dyn Clock>,
}

impl GmailClient {
    /// Creates a client for the API at `base_url` (`https://gmail.googleapis.com` in production).
    pub fn new(http: reqwest::Client, base_url: reqwest::Url) -> Self {
        Self { http, send_url: endpoint(&base_url, SEND_PATH), clock: Arc::new(SystemClock) }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends `msg` from the mailbox that `creds` (a bearer access token) belongs to.
    pub async fn send(&self, creds: SendCredentials<'_>, msg: &OutboundMessage) -> SendOutcome {
        let SendCredentials::Bearer(token) = creds else {
            let reason = "gmail: credentials are not an oauth access token".to_owned();
            return SendOutcome::Unauthorized { reason };
        };
        if msg.channel != Channel::Email {
            let reason = format!("gmail: cannot send on channel {}", msg.channel);
            return SendOutcome::Permanent { reason };
        }

        let body = match GmailSendRequest::new(msg, self.clock.now()) {
            Ok(body) => body,
            Err(err) => {
                let reason = format!("gmail: building the message failed: {err}");
                return SendOutcome::Permanent { reason };
            }
        };

        let request = self.http.post(&self.send_url).bearer_auth(token).json(&body);
        let outcome = match execute("gmail", request).await {
            Ok(response) => classify(&response, self.clock.now()),
            Err(outcome) => outcome,
        };
        scrub_secret(outcome, token)
    }
}
