//! The state all fakes share: registered accounts, their limiters, what was received and the
//! counters. One mutex guards it, held only for map look-ups and pushes, never across an
//! await.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use followup_core::clock::Clock;
use followup_core::domain::{Channel, Provider};
use followup_core::limits::SendLimits;
use parking_lot::Mutex;

use super::config::{Accounts, FakeConfig, ForcedOutcome};
use super::faults::Faults;
use super::limiter::SlidingWindowLimiter;
use super::oauth::OAuthState;
use super::{FakeStats, ReceivedMessage};

/// Maximum of requests one Outlook mailbox may have running at once, as Graph allows.
pub(crate) const GRAPH_MAX_CONCURRENT_PER_MAILBOX: u32 = 4;

/// Shared state of the fakes. Holds tokens, so it has no `Debug` that prints them.
pub(crate) struct FakeState {
    accounts: Accounts,
    pub clock: Arc<dyn Clock>,
    pub latency: Duration,
    /// The error plan and fault profile, with their own lock and counters.
    pub faults: Faults,
    /// Requests to the provider routes that have arrived and not yet been answered.
    requests_in_flight: Arc<AtomicU64>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for FakeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeState").field("latency", &self.latency).finish_non_exhaustive()
    }
}

struct Inner {
    /// Gmail and Outlook mailboxes by provider and lowercase address.
    mailboxes: HashMap<(Provider, String), Mailbox>,
    /// Access token to mailbox address and expiry, per provider. Several tokens may name one
    /// mailbox, as after a token refresh.
    tokens: HashMap<(Provider, String), AccessGrant>,
    /// The token endpoint's registered clients, refresh tokens, modes and records.
    pub(crate) oauth: OAuthState,
    /// Twilio accounts by Account SID.
    twilio: HashMap<String, TwilioAccount>,
    received: Vec<ReceivedMessage>,
    /// Recipients (lowercase address or number) that asked to hear no more, with the
    /// earliest instant they asked.
    stops: HashMap<String, DateTime<Utc>>,
    received_by_provider: BTreeMap<Provider, u64>,
    rate_limit_violations: u64,
    rejected_requests: u64,
    batch_requests: u64,
}

/// What an access token lets its bearer do, and until when.
struct AccessGrant {
    /// Lowercase address of the mailbox.
    mailbox: String,
    /// The instant from which the token is refused with 401; never when `None`.
    expires_at: Option<DateTime<Utc>>,
}

struct Mailbox {
    limiter: SlidingWindowLimiter,
    in_flight: u32,
}

struct TwilioAccount {
    auth_token: String,
    /// Registered sender numbers, each with its own limits.
    numbers: HashMap<String, TwilioNumber>,
}

struct TwilioNumber {
    sms: SlidingWindowLimiter,
    call: SlidingWindowLimiter,
}

/// The limiter a send counts against.
#[derive(Clone, Debug)]
pub(crate) enum LimitKey {
    /// A Gmail or Outlook mailbox, by lowercase address.
    Mailbox(Provider, String),
    /// A Twilio sender number of an account, per channel.
    TwilioNumber { account_sid: String, from: String, channel: Channel },
}

impl FakeState {
    pub(crate) fn new(config: FakeConfig) -> Self {
        let inner = Inner {
            mailboxes: HashMap::new(),
            tokens: HashMap::new(),
            oauth: OAuthState::default(),
            twilio: HashMap::new(),
            received: Vec::new(),
            stops: HashMap::new(),
            received_by_provider: BTreeMap::new(),
            rate_limit_violations: 0,
            rejected_requests: 0,
            batch_requests: 0,
        };
        Self {
            accounts: config.accounts,
            clock: config.clock,
            latency: config.latency,
            faults: Faults::new(config.errors, config.faults),
            requests_in_flight: Arc::new(AtomicU64::new(0)),
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Registers a mailbox and a token for it. Registering the mailbox again adds the token
    /// and replaces its limits but keeps the sends already counted.
    pub(crate) fn register_mailbox(
        &self,
        provider: Provider,
        access_token: &str,
        email: &str,
        limits: SendLimits,
    ) {
        let email = email.to_ascii_lowercase();
        let mut inner = self.inner.lock();
        let grant = AccessGrant { mailbox: email.clone(), expires_at: None };
        inner.tokens.insert((provider, access_token.to_owned()), grant);
        inner
            .mailboxes
            .entry((provider, email))
            .and_modify(|mailbox| mailbox.limiter.set_limits(limits))
            .or_insert_with(|| Mailbox {
                limiter: SlidingWindowLimiter::new(limits),
                in_flight: 0,
            });
    }

    /// Creates the mailbox `email` with the limits of an open account unless it exists, so that
    /// the tokens a refresh issues for it can send. Does nothing when accounts are registered.
    pub(crate) fn add_open_mailbox(&self, provider: Provider, email: &str) {
        let Some(limits) = self.open_limits(provider, Channel::Email) else { return };
        let mut inner = self.inner.lock();
        inner.mailboxes.entry((provider, email.to_ascii_lowercase())).or_insert_with(|| Mailbox {
            limiter: SlidingWindowLimiter::new(limits),
            in_flight: 0,
        });
    }

    /// Registers a Twilio sender number, replacing the account's token and the number's limits.
    pub(crate) fn register_twilio(
        &self,
        account_sid: &str,
        auth_token: &str,
        from_number: &str,
        sms: SendLimits,
        call: SendLimits,
    ) {
        let mut inner = self.inner.lock();
        let account = inner.twilio.entry(account_sid.to_owned()).or_insert_with(|| TwilioAccount {
            auth_token: String::new(),
            numbers: HashMap::new(),
        });
        account.auth_token = auth_token.to_owned();
        account
            .numbers
            .entry(from_number.to_owned())
            .and_modify(|number| {
                number.sms.set_limits(sms);
                number.call.set_limits(call);
            })
            .or_insert_with(|| TwilioNumber {
                sms: SlidingWindowLimiter::new(sms),
                call: SlidingWindowLimiter::new(call),
            });
    }

    /// Returns the limits an account registered on first use gets, or `None` when only registered
    /// accounts are accepted.
    fn open_limits(&self, provider: Provider, channel: Channel) -> Option<SendLimits> {
        match self.accounts {
            Accounts::Registered => None,
            Accounts::Open { limits } => {
                Some(limits.unwrap_or_else(|| SendLimits::published(provider, channel)))
            }
        }
    }

    /// Returns the lowercase address of the mailbox `access_token` belongs to, or `None` when
    /// the token is unknown or has expired. With open accounts, an unknown token becomes a
    /// mailbox of its own, named after a hash of the token so that the token itself is never
    /// kept as a name.
    pub(crate) fn mailbox_of(&self, provider: Provider, access_token: &str) -> Option<String> {
        let now = self.now();
        let known =
            self.inner.lock().tokens.get(&(provider, access_token.to_owned())).map(|grant| {
                let live = grant.expires_at.is_none_or(|expires_at| now < expires_at);
                live.then(|| grant.mailbox.clone())
            });
        if let Some(mailbox) = known {
            return mailbox;
        }
        if access_token.is_empty() {
            return None;
        }
        let limits = self.open_limits(provider, Channel::Email)?;
        let mailbox = format!("open-{:016x}@fake.invalid", token_hash(access_token));
        self.register_mailbox(provider, access_token, &mailbox, limits);
        Some(mailbox)
    }

    /// Sets the instant from which `access_token` is refused with 401; `None` makes it last.
    /// An unknown token is left unknown.
    pub(crate) fn set_token_expiry(
        &self,
        provider: Provider,
        access_token: &str,
        expires_at: Option<DateTime<Utc>>,
    ) {
        let mut inner = self.inner.lock();
        if let Some(grant) = inner.tokens.get_mut(&(provider, access_token.to_owned())) {
            grant.expires_at = expires_at;
        }
    }

    /// Lets `access_token` send as `mailbox` until `expires_at`, as a token endpoint does when
    /// it issues one.
    pub(crate) fn issue_access_token(
        &self,
        provider: Provider,
        access_token: &str,
        mailbox: &str,
        expires_at: DateTime<Utc>,
    ) {
        let grant = AccessGrant { mailbox: mailbox.to_owned(), expires_at: Some(expires_at) };
        self.inner.lock().tokens.insert((provider, access_token.to_owned()), grant);
    }

    /// Runs `action` on the token endpoint's state under the shared lock.
    pub(crate) fn with_oauth<T>(&self, action: impl FnOnce(&mut OAuthState) -> T) -> T {
        action(&mut self.inner.lock().oauth)
    }

    /// Returns whether unknown credentials are accepted as new accounts.
    pub(crate) fn accounts_open(&self) -> bool {
        matches!(self.accounts, Accounts::Open { .. })
    }

    /// Returns whether `auth_token` is the token of the Twilio account `account_sid`. With open
    /// accounts, an unknown account is registered with the token it first shows.
    pub(crate) fn twilio_authenticates(&self, account_sid: &str, auth_token: &str) -> bool {
        let mut inner = self.inner.lock();
        if let Some(account) = inner.twilio.get(account_sid) {
            return account.auth_token == auth_token;
        }
        if self.open_limits(Provider::Twilio, Channel::Sms).is_none() || auth_token.is_empty() {
            return false;
        }
        inner.twilio.insert(
            account_sid.to_owned(),
            TwilioAccount { auth_token: auth_token.to_owned(), numbers: HashMap::new() },
        );
        true
    }

    /// Returns whether `from` is a registered number of the Twilio account `account_sid`. With open
    /// accounts, an unknown number of a known account is registered on first use.
    pub(crate) fn twilio_owns_number(&self, account_sid: &str, from: &str) -> bool {
        let sms = self.open_limits(Provider::Twilio, Channel::Sms);
        let call = self.open_limits(Provider::Twilio, Channel::Call);
        let mut inner = self.inner.lock();
        let Some(account) = inner.twilio.get_mut(account_sid) else {
            return false;
        };
        if account.numbers.contains_key(from) {
            return true;
        }
        let (Some(sms), Some(call)) = (sms, call) else {
            return false;
        };
        account.numbers.insert(
            from.to_owned(),
            TwilioNumber {
                sms: SlidingWindowLimiter::new(sms),
                call: SlidingWindowLimiter::new(call),
            },
        );
        true
    }

    /// Counts a request rejected for bad credentials or an invalid request.
    pub(crate) fn count_rejected(&self) {
        self.inner.lock().rejected_requests += 1;
    }

    /// Counts a request to a batch endpoint.
    pub(crate) fn count_batch_request(&self) {
        self.inner.lock().batch_requests += 1;
    }

    /// Draws the injected error, if any, for a send from `key` to `recipient`, and counts
    /// it. For [`ForcedOutcome::Timeout`] it first sleeps the profile's `stall_for`.
    pub(crate) async fn injected_error(
        &self,
        key: &LimitKey,
        recipient: &str,
    ) -> Option<ForcedOutcome> {
        self.faults.inject(key, recipient, self.now()).await
    }

    /// Counts a send against `key` and records `message`, or, when the limit is reached,
    /// counts a violation and returns the wait until there is room.
    pub(crate) fn accept(&self, key: &LimitKey, message: ReceivedMessage) -> Result<(), Duration> {
        let mut inner = self.inner.lock();
        let admitted = match inner.limiter(key) {
            Some(limiter) => limiter.try_acquire(message.received_at),
            // The handlers look the account up first; a key without one has no limit.
            None => Ok(()),
        };
        if let Err(wait) = admitted {
            inner.rate_limit_violations += 1;
            tracing::warn!(limit = ?key, wait_ms = wait.as_millis(), "fake refused a send over a rate limit");
            return Err(wait);
        }

        *inner.received_by_provider.entry(message.provider).or_default() += 1;
        inner.received.push(message);
        Ok(())
    }

    /// Marks one more request running on an Outlook mailbox, or counts a violation if
    /// [`GRAPH_MAX_CONCURRENT_PER_MAILBOX`] are running already. The slot is freed when the
    /// returned guard drops, including when the client goes away mid-request.
    pub(crate) fn enter_mailbox(self: &Arc<Self>, email: &str) -> Option<InFlightGuard> {
        let mut inner = self.inner.lock();
        let key = (Provider::Outlook, email.to_owned());
        let mailbox = inner.mailboxes.get_mut(&key)?;
        if mailbox.in_flight >= GRAPH_MAX_CONCURRENT_PER_MAILBOX {
            inner.rate_limit_violations += 1;
            tracing::warn!(
                mailbox = email,
                "fake refused a request over Graph's concurrency limit"
            );
            return None;
        }
        mailbox.in_flight += 1;
        Some(InFlightGuard { state: Arc::clone(self), key })
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn enter_request(&self) -> RequestGauge {
        self.requests_in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGauge(Arc::clone(&self.requests_in_flight))
    }

    pub(crate) fn received(&self) -> Vec<ReceivedMessage> {
        self.inner.lock().received.clone()
    }

    pub(crate) fn received_from(&self, start: usize) -> Vec<ReceivedMessage> {
        let inner = self.inner.lock();
        inner.received.get(start..).map(<[ReceivedMessage]>::to_vec).unwrap_or_default()
    }

    /// Records that `recipient` asked at `at` to hear no more; the earliest instant counts.
    pub(crate) fn record_stop(&self, recipient: &str, at: DateTime<Utc>) {
        let mut inner = self.inner.lock();
        let earliest = inner.stops.entry(recipient.to_lowercase()).or_insert(at);
        *earliest = (*earliest).min(at);
    }

    pub(crate) fn stats(&self) -> FakeStats {
        let injected = self.faults.counts();
        let inner = self.inner.lock();
        let sent_after_stop = inner
            .received
            .iter()
            .filter(|message| {
                let stopped_at = inner.stops.get(&message.to.to_lowercase());
                stopped_at.is_some_and(|stopped_at| message.received_at > *stopped_at)
            })
            .count() as u64;
        FakeStats {
            sent_after_stop,
            received_by_provider: inner.received_by_provider.clone(),
            rate_limit_violations: inner.rate_limit_violations,
            rejected_requests: inner.rejected_requests,
            injected_errors: injected.errors,
            injected_timeouts: injected.timeouts,
            injected_rate_limits: injected.rate_limits,
            batch_requests: inner.batch_requests,
            requests_in_flight: self.requests_in_flight.load(Ordering::SeqCst),
            token_requests_by_provider: inner.oauth.request_counts(),
        }
    }
}

/// One request counted in [`FakeStats::requests_in_flight`] until dropped.
pub(crate) struct RequestGauge(Arc<AtomicU64>);

impl Drop for RequestGauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn limiter(&mut self, key: &LimitKey) -> Option<&mut SlidingWindowLimiter> {
        match key {
            LimitKey::Mailbox(provider, email) => {
                let mailbox = self.mailboxes.get_mut(&(*provider, email.clone()))?;
                Some(&mut mailbox.limiter)
            }
            LimitKey::TwilioNumber { account_sid, from, channel } => {
                let number = self.twilio.get_mut(account_sid)?.numbers.get_mut(from)?;
                match channel {
                    Channel::Call => Some(&mut number.call),
                    Channel::Sms | Channel::Email => Some(&mut number.sms),
                }
            }
        }
    }
}

/// One running request on an Outlook mailbox; frees its slot when dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    state: Arc<FakeState>,
    key: (Provider, String),
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut inner = self.state.inner.lock();
        if let Some(mailbox) = inner.mailboxes.get_mut(&self.key) {
            mailbox.in_flight = mailbox.in_flight.saturating_sub(1);
        }
    }
}

/// Returns a stable, non-reversible name for a token, so that an open account can be keyed by it.
fn token_hash(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}
