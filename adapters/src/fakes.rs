//! Wire-level fakes of Gmail, Microsoft Graph and Twilio on loopback, for tests, the demo and
//! the load harness.
//!
//! Each provider gets its own HTTP server on `127.0.0.1` and a free port, so each has its own
//! base URL. The fakes check requests as the real APIs do (credentials, required fields,
//! recipient formats), respond with the providers' own success and error bodies, enforce each
//! account's [`SendLimits`] in sliding windows read from a shared, possibly virtual, clock, and
//! count what they received and every rate-limit violation. `GET /_fake/received` and
//! `GET /_fake/stats` on any of the servers return the same as [`FakeProviders::received`] and
//! [`FakeProviders::stats`], for tests that run the fakes in another process.
//!
//! - [`config`]: clock, latency and the errors to inject;
//! - [`faults`]: named fault profiles (retryable errors, 429 bursts, stalls, latency);
//! - `gmail`, `graph`, `twilio`: the request handlers of each provider, and `gmail_batch` for
//!   Gmail's batch endpoint;
//! - `state` and `limiter`: accounts, counters and the sliding windows.

pub mod config;
pub mod faults;
mod gmail;
pub(crate) mod gmail_batch;
mod graph;
mod graph_batch;
mod limiter;
mod server;
mod state;
mod twilio;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use chrono::{DateTime, Utc};
use followup_core::domain::{Channel, Provider};
use followup_core::limits::SendLimits;
use serde::{Deserialize, Serialize};

pub use config::{Accounts, ErrorPlan, FakeConfig, ForcedOutcome, ForcedRule};
pub use faults::{FaultProfile, UnknownProfile};
use state::FakeState;

/// One send a fake accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedMessage {
    pub provider: Provider,
    pub channel: Channel,
    /// Sender: the From header (email) or the From number.
    pub from: String,
    /// First recipient: the first To, Cc or Bcc address, or the To number.
    pub to: String,
    /// Email subject; `None` for SMS and calls.
    pub subject: Option<String>,
    /// Email text body (line ends as LF), SMS text, or the words of the call's `<Say>` (the whole TwiML when it
    /// is not a single `<Say>`).
    pub body: String,
    /// The List-Unsubscribe header value of an email the Graph fake received in MIME form;
    /// `None` for other sends.
    #[serde(default)]
    pub list_unsubscribe: Option<String>,
    /// The id the fake returned: Gmail message id, Graph request id, Twilio `SM`/`CA` sid.
    pub provider_message_id: String,
    /// When the fake accepted it, on the fake's clock.
    pub received_at: DateTime<Utc>,
}

/// Counters of the fakes since they started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeStats {
    /// Sends accepted, per provider.
    pub received_by_provider: BTreeMap<Provider, u64>,
    /// Requests refused with 429 because an account's per-minute, per-day or (Graph)
    /// concurrency limit was reached.
    pub rate_limit_violations: u64,
    /// Requests refused for bad credentials or as invalid (any 4xx other than 429).
    pub rejected_requests: u64,
    /// Sends that got an injected fault of the [`ErrorPlan`] or the [`FaultProfile`], stalls
    /// included.
    pub injected_errors: u64,
    /// Requests to a batch endpoint (Gmail's `/batch/gmail/v1`, Graph's `$batch`), valid or
    /// not, counted on arrival. The calls in them count in the other counters like single
    /// requests.
    #[serde(default)]
    pub batch_requests: u64,
    /// Injected stalls ([`ForcedOutcome::Timeout`]), also counted in `injected_errors`.
    #[serde(default)]
    pub injected_timeouts: u64,
    /// Injected 429s ([`ForcedOutcome::RateLimited`]), bursts included, also counted in
    /// `injected_errors`. Unlike `rate_limit_violations`, they break no limit of the engine's.
    #[serde(default)]
    pub injected_rate_limits: u64,
}

impl FakeStats {
    /// Sends accepted by `provider`.
    pub fn received(&self, provider: Provider) -> u64 {
        self.received_by_provider.get(&provider).copied().unwrap_or(0)
    }
}

/// The three running fakes and their shared state.
pub struct FakeProviders {
    state: Arc<FakeState>,
    gmail: server::RunningServer,
    graph: server::RunningServer,
    twilio: server::RunningServer,
}

impl std::fmt::Debug for FakeProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviders")
            .field("gmail_url", &self.gmail.url.as_str())
            .field("graph_url", &self.graph.url.as_str())
            .field("twilio_url", &self.twilio.url.as_str())
            .finish_non_exhaustive()
    }
}

impl FakeProviders {
    /// Starts the three fakes on free loopback ports, on the current Tokio runtime.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeProviders> {
        let faults = config.faults.to_string();
        let state = Arc::new(FakeState::new(config));
        let gmail = server::serve(Arc::clone(&state), gmail::routes)?;
        let graph = server::serve(Arc::clone(&state), graph::routes)?;
        let twilio = server::serve(Arc::clone(&state), twilio::routes)?;
        tracing::info!(
            gmail = %gmail.url, graph = %graph.url, twilio = %twilio.url, %faults,
            "provider fakes started"
        );
        Ok(FakeProviders { state, gmail, graph, twilio })
    }

    /// Base URL of the Gmail fake, for [`GmailClient`](crate::gmail::GmailClient).
    pub fn gmail_url(&self) -> reqwest::Url {
        self.gmail.url.clone()
    }

    /// Base URL of the Microsoft Graph fake, for [`GraphClient`](crate::outlook::GraphClient).
    pub fn graph_url(&self) -> reqwest::Url {
        self.graph.url.clone()
    }

    /// Base URL of the Twilio fake, for [`TwilioClient`](crate::twilio::TwilioClient).
    pub fn twilio_url(&self) -> reqwest::Url {
        self.twilio.url.clone()
    }

    /// Lets `access_token` send as the Gmail mailbox `email`, within `limits`.
    pub fn register_gmail(&self, access_token: &str, email: &str, limits: SendLimits) {
        self.state.register_mailbox(Provider::Gmail, access_token, email, limits);
    }

    /// Lets `access_token` send as the Outlook mailbox `email`, within `limits`.
    pub fn register_outlook(&self, access_token: &str, email: &str, limits: SendLimits) {
        self.state.register_mailbox(Provider::Outlook, access_token, email, limits);
    }

    /// Registers the Twilio number `from_number` of the account `account_sid`, with the
    /// account's `auth_token` and limits per number for messages (`sms`) and calls (`call`).
    pub fn register_twilio(
        &self,
        account_sid: &str,
        auth_token: &str,
        from_number: &str,
        sms: SendLimits,
        call: SendLimits,
    ) {
        self.state.register_twilio(account_sid, auth_token, from_number, sms, call);
    }

    /// Returns every send accepted so far, in the order accepted.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.state.received()
    }

    /// Returns the counters so far.
    pub fn stats(&self) -> FakeStats {
        self.state.stats()
    }

    /// Stops the three servers, letting running requests finish.
    pub async fn shutdown(self) {
        stop(&self.gmail.handle).await;
        stop(&self.graph.handle).await;
        stop(&self.twilio.handle).await;
        tracing::info!("provider fakes stopped");
    }
}

async fn stop(handle: &ServerHandle) {
    handle.stop(true).await;
}
