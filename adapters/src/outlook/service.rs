//! [`GraphClient`]: sends one follow-up through Graph `sendMail`.

use std::sync::Arc;

use followup_core::clock::{Clock, SystemClock};
use followup_core::domain::Channel;

use super::SEND_MAIL_PATH;
use super::request::SendMailRequest;
use super::response::classify;
use crate::http::{endpoint, execute, scrub_secret};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};

/// A Microsoft Graph mail client. Cheap to clone: the HTTP pool is shared.
#[derive(Clone, Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    send_url: String,
    /// Resolves `Retry-After` headers that carry an HTTP-date.
    clock: Arc<dyn Clock>,
}

impl GraphClient {
    /// Creates a client for the API at `base_url` (`https://graph.microsoft.com` in production).
    pub fn new(http: reqwest::Client, base_url: reqwest::Url) -> Self {
        Self { http, send_url: endpoint(&base_url, SEND_MAIL_PATH), clock: Arc::new(SystemClock) }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends `msg` from the mailbox that `creds` (a bearer access token) belongs to.
    pub async fn send(&self, creds: SendCredentials<'_>, msg: &OutboundMessage) -> SendOutcome {
        let SendCredentials::Bearer(token) = creds else {
            let reason = "outlook: credentials are not an oauth access token".to_owned();
            return SendOutcome::Unauthorized { reason };
        };
        if msg.channel != Channel::Email {
            let reason = format!("outlook: cannot send on channel {}", msg.channel);
            return SendOutcome::Permanent { reason };
        }

        let body = SendMailRequest::new(msg);
        let request = self.http.post(&self.send_url).bearer_auth(token).json(&body);
        let outcome = match execute("outlook", request).await {
            Ok(response) => classify(&response, self.clock.now()),
            Err(outcome) => outcome,
        };
        scrub_secret(outcome, token)
    }
}
