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
//! - [`oauth`]: the token endpoints of Google and Microsoft (the `refresh_token` grant), whose
//!   access tokens the Gmail and Graph fakes accept until they expire;
//! - `state` and `limiter`: accounts, counters and the sliding windows;
//! - [`stripe`]: customers, subscriptions and invoices, delivered as signed webhook events.

pub mod config;
pub mod faults;
mod gmail;
pub(crate) mod gmail_batch;
mod graph;
mod graph_batch;
mod limiter;
pub mod oauth;
mod server;
mod state;
pub mod stripe;
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
pub use oauth::{TokenMode, TokenRequestRecord};
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
    /// Requests to the provider and token endpoints that have arrived and are not answered yet:
    /// a gauge, not a counter.
    #[serde(default)]
    pub requests_in_flight: u64,
    /// Requests to the token endpoints, per provider, valid or not.
    #[serde(default)]
    pub token_requests_by_provider: BTreeMap<Provider, u64>,
    /// Sends accepted for a recipient after the instant it asked to hear no more (see
    /// [`FakeProviders::record_stop`]), on the fakes' clock.
    #[serde(default)]
    pub sent_after_stop: u64,
}

impl FakeStats {
    /// Sends accepted by `provider`.
    pub fn received(&self, provider: Provider) -> u64 {
        self.received_by_provider.get(&provider).copied().unwrap_or(0)
    }

    /// Requests to `provider`'s token endpoint.
    pub fn token_requests(&self, provider: Provider) -> u64 {
        self.token_requests_by_provider.get(&provider).copied().unwrap_or(0)
    }
}

/// Client id of the OAuth client the engine uses against the token fakes when none is
/// configured.
pub const FAKE_OAUTH_CLIENT_ID: &str = "followup-fake-client";
/// Secret of [`FAKE_OAUTH_CLIENT_ID`]; it protects nothing, the fakes run on loopback only.
pub const FAKE_OAUTH_CLIENT_SECRET: &str = "followup-fake-client-secret";

/// The running fakes and their shared state.
pub struct FakeProviders {
    state: Arc<FakeState>,
    gmail: server::RunningServer,
    graph: server::RunningServer,
    twilio: server::RunningServer,
    oauth: server::RunningServer,
}

impl std::fmt::Debug for FakeProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviders")
            .field("gmail_url", &self.gmail.url.as_str())
            .field("graph_url", &self.graph.url.as_str())
            .field("twilio_url", &self.twilio.url.as_str())
            .field("oauth_url", &self.oauth.url.as_str())
            .finish_non_exhaustive()
    }
}

impl FakeProviders {
    /// Starts the fakes on free loopback ports, on the current Tokio runtime.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeProviders> {
        let faults = config.faults.to_string();
        let state = Arc::new(FakeState::new(config));
        let gmail = server::serve(Arc::clone(&state), gmail::routes)?;
        let graph = server::serve(Arc::clone(&state), graph::routes)?;
        let twilio = server::serve(Arc::clone(&state), twilio::routes)?;
        let oauth = server::serve(Arc::clone(&state), oauth::routes)?;
        tracing::info!(
            gmail = %gmail.url, graph = %graph.url, twilio = %twilio.url, oauth = %oauth.url,
            %faults, "provider fakes started"
        );
        Ok(FakeProviders { state, gmail, graph, twilio, oauth })
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

    /// Base URL of the token endpoint fake: Google's endpoint is `/token` under it and
    /// Microsoft's `/{tenant}/oauth2/v2.0/token`.
    pub fn oauth_url(&self) -> reqwest::Url {
        self.oauth.url.clone()
    }

    /// Google's token endpoint on the fake.
    pub fn google_token_url(&self) -> String {
        server::join(&self.oauth.url, "/token")
    }

    /// Microsoft's token endpoint on the fake, with `{tenant}` left for the caller to fill.
    pub fn microsoft_token_url(&self) -> String {
        server::join(&self.oauth.url, "/{tenant}/oauth2/v2.0/token")
    }

    /// Accepts `client_id` with `client_secret` at `provider`'s token endpoint.
    pub fn register_oauth_client(&self, provider: Provider, client_id: &str, client_secret: &str) {
        self.state.with_oauth(|oauth| oauth.register_client(provider, client_id, client_secret));
    }

    /// Lets `refresh_token` obtain access tokens for the `provider` mailbox `email`.
    pub fn register_refresh_token(&self, provider: Provider, refresh_token: &str, email: &str) {
        self.state.with_oauth(|oauth| oauth.register_refresh_token(provider, refresh_token, email));
    }

    /// Sets the instant from which the registered `access_token` gets 401; `None` for never.
    pub fn set_access_token_expiry(
        &self,
        provider: Provider,
        access_token: &str,
        expires_at: Option<DateTime<Utc>>,
    ) {
        self.state.set_token_expiry(provider, access_token, expires_at);
    }

    /// Sets how `provider`'s token endpoint responds from now on.
    pub fn set_token_mode(&self, provider: Provider, mode: TokenMode) {
        self.state.with_oauth(|oauth| oauth.set_mode(provider, mode));
    }

    /// Sets the lifetime of the access tokens the token endpoints issue from now on.
    pub fn set_access_token_lifetime(&self, lifetime: std::time::Duration) {
        self.state.with_oauth(|oauth| oauth.set_lifetime(lifetime));
    }

    /// Returns every request the token endpoints received, in order.
    pub fn token_requests(&self) -> Vec<TokenRequestRecord> {
        self.state.with_oauth(|oauth| oauth.requests.clone())
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

    /// Records that `recipient` (an email address or phone number) asked at `at` to hear no
    /// more, as a reply or an opt-out would tell the sender. Sends to it accepted after `at`
    /// count in [`FakeStats::sent_after_stop`].
    pub fn record_stop(&self, recipient: &str, at: DateTime<Utc>) {
        self.state.record_stop(recipient, at);
    }

    /// Returns every send accepted so far, in the order accepted.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.state.received()
    }

    /// Returns the sends accepted after the first `start`, in the order accepted.
    pub fn received_from(&self, start: usize) -> Vec<ReceivedMessage> {
        self.state.received_from(start)
    }

    /// Returns the counters so far.
    pub fn stats(&self) -> FakeStats {
        self.state.stats()
    }

    /// Stops the servers, letting running requests finish.
    pub async fn shutdown(self) {
        stop(&self.gmail.handle).await;
        stop(&self.graph.handle).await;
        stop(&self.twilio.handle).await;
        stop(&self.oauth.handle).await;
        tracing::info!("provider fakes stopped");
    }
}

async fn stop(handle: &ServerHandle) {
    handle.stop(true).await;
}
