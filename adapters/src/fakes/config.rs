//! Settings of the fakes: their clock, their latency and the errors they inject.

use std::sync::Arc;
use std::time::Duration;

use followup_core::clock::{Clock, SystemClock};
use followup_core::limits::SendLimits;

use super::faults::FaultProfile;

/// Settings of [`FakeProviders`](super::FakeProviders).
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The clock the rate-limit windows, timestamps and retry instants are read from. Share the
    /// engine's virtual clock to test limits without sleeping.
    pub clock: Arc<dyn Clock>,
    /// Wall-clock delay before each response, to imitate a provider's round trip. It is slept in
    /// real time even when `clock` is virtual.
    pub latency: Duration,
    /// Errors to inject into otherwise valid sends.
    pub errors: ErrorPlan,
    /// Faults to apply to otherwise valid sends after those of `errors`.
    pub faults: FaultProfile,
    /// Whether unknown credentials are accepted as new accounts; see [`Accounts`].
    pub accounts: Accounts,
}

/// Kinds of credentials the fakes accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accounts {
    /// Only credentials registered with `register_*`; anything else gets 401.
    #[default]
    Registered,
    /// Any well-formed credentials: an unknown token, Twilio account or sender number is
    /// registered on first use, so that an engine with tenants never registered with the fakes
    /// can still send. Each such account gets `limits`, or its provider's published limits.
    Open { limits: Option<SendLimits> },
}

impl FakeConfig {
    /// Creates fakes that read `clock`, respond at once and inject no error.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            latency: Duration::ZERO,
            errors: ErrorPlan::default(),
            faults: FaultProfile::none(),
            accounts: Accounts::Registered,
        }
    }

    /// Creates fakes that accept any credentials, with the providers' published limits.
    pub fn open(clock: Arc<dyn Clock>) -> Self {
        Self::new(clock).with_accounts(Accounts::Open { limits: None })
    }

    /// Sets which credentials are accepted.
    pub fn with_accounts(mut self, accounts: Accounts) -> Self {
        self.accounts = accounts;
        self
    }

    /// Waits `latency` before each response.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Injects the errors of `plan`.
    pub fn with_errors(mut self, plan: ErrorPlan) -> Self {
        self.errors = plan;
        self
    }

    /// Applies the faults of `profile`, after those of the error plan.
    pub fn with_faults(mut self, profile: FaultProfile) -> Self {
        self.faults = profile;
        self
    }
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

/// Errors the fakes inject into valid, authenticated sends, before rate limits are checked.
/// An injected error is never recorded as received.
#[derive(Clone, Debug, Default)]
pub struct ErrorPlan {
    /// Fraction (0.0 to 1.0) of sends rejected with the provider's retryable 503.
    pub retryable_fraction: f64,
    /// Seed of the random draw behind `retryable_fraction`, so that a run can be repeated.
    pub seed: u64,
    /// Outcomes forced on sends to given recipients; checked before `retryable_fraction`.
    pub forced: Vec<ForcedRule>,
}

impl ErrorPlan {
    /// Rejects a fraction of sends with a retryable 503, drawn from `seed`.
    pub fn with_retryable_fraction(mut self, fraction: f64, seed: u64) -> Self {
        self.retryable_fraction = fraction.clamp(0.0, 1.0);
        self.seed = seed;
        self
    }

    /// Responds to every send to `recipient` with `outcome`.
    pub fn force(mut self, recipient: impl Into<String>, outcome: ForcedOutcome) -> Self {
        self.forced.push(ForcedRule { recipient: recipient.into(), outcome, times: None });
        self
    }

    /// Responds to the next `times` sends to `recipient` with `outcome`, then lets sends
    /// through.
    pub fn force_times(
        mut self,
        recipient: impl Into<String>,
        outcome: ForcedOutcome,
        times: u32,
    ) -> Self {
        let rule = ForcedRule { recipient: recipient.into(), outcome, times: Some(times) };
        self.forced.push(rule);
        self
    }
}

/// An outcome forced on the sends to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedRule {
    /// Email address (compared without regard to case) or E.164 number.
    pub recipient: String,
    pub outcome: ForcedOutcome,
    /// How many sends the rule applies to; `None` for all of them.
    pub times: Option<u32>,
}

/// An error a fake responds with, in the provider's own form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForcedOutcome {
    /// 503: Gmail `backendError`, Graph `ServiceNotAvailable`, Twilio 20503.
    ServiceUnavailable,
    /// 500: Gmail `backendError`, Graph `generalException`, Twilio 20500.
    InternalError,
    /// 429 with a hint to retry after `retry_after`. Gmail sends `rateLimitExceeded` with the
    /// instant to retry at in its message and no `Retry-After` header. Graph sends
    /// `TooManyRequests` with a `Retry-After` in seconds, fractional when the wait is. Twilio
    /// sends 20429 without a hint, because Twilio documents none.
    RateLimited { retry_after: Duration },
    /// No response in time: the fake sleeps the fault profile's `stall_for` before it responds
    /// with the provider's 503, to a client that has usually given up by then.
    Timeout,
    /// 400 for the recipient: Gmail `invalidArgument`, Graph `ErrorInvalidRecipients`,
    /// Twilio 21610 (unsubscribed) for messages and 21215 (not allowed) for calls.
    RecipientRejected,
    /// 401: Gmail `authError`, Graph `InvalidAuthenticationToken`, Twilio 20003.
    Unauthorized,
    /// The Twilio error with this code, in Twilio's error form and with the HTTP status
    /// Twilio gives it, such as 21211 (400), 20429 (429) or 20003 (401). Gmail and Graph have
    /// no such codes and respond with their 500 error.
    TwilioError(u32),
}
