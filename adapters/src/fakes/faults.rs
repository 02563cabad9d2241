//! Named fault profiles: the retryable errors, 429 bursts, stalls and latency the fakes apply
//! to otherwise valid sends, and the seeded state that draws them.
//!
//! A *sender* here is what a provider limits: a Gmail or Outlook mailbox, or a Twilio `From`
//! number. Draws that concern one sender (its errors, bursts and whether it goes dark) come
//! from a random generator of its own, seeded from the profile's seed and the sender. So a
//! sender's sequence of outcomes repeats from run to run, even when other senders' requests
//! interleave differently.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use followup_core::domain::Provider;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng, SeedableRng};

use super::config::{ErrorPlan, ForcedOutcome, ForcedRule};
use super::state::LimitKey;

/// How long a stalled request is delayed unless the profile sets another value. It is longer
/// than the default request timeout of [`HttpSettings`](crate::http::HttpSettings) (30 s), so that
/// a client with default settings gives up first.
pub const DEFAULT_STALL_FOR: Duration = Duration::from_secs(40);

/// Faults the fakes apply to valid, authenticated sends, drawn from `seed`.
///
/// For each send, the fake first applies the [`ErrorPlan`]: forced rules, then its retryable
/// fraction. Then it checks, in this order, whether the sender is dark and past its first
/// sends (the send stalls), whether the sender is in a 429 burst (the send gets 429), and
/// draws `timeout_fraction` and `retryable_fraction`. A send that gets any injected fault is
/// not recorded and does not count against rate limits.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultProfile {
    /// Name of the profile this one was built from, for logs.
    name: &'static str,
    /// Seed of every draw, so that the same sends in the same order get the same faults.
    pub seed: u64,
    /// Fraction (0.0 to 1.0) of sends that get an immediate retryable error in the provider's
    /// own form: 429, 500 or 503.
    pub retryable_fraction: f64,
    /// Share (0.0 to 1.0) of those retryable errors that are 429; the others are 500 and 503
    /// in equal parts.
    pub rate_limited_share: f64,
    /// Range of the retry hint of a drawn 429, in whole milliseconds.
    pub retry_hint: DurationRange,
    /// Fraction (0.0 to 1.0) of sends that stall: see [`ForcedOutcome::Timeout`].
    pub timeout_fraction: f64,
    /// Stretches in which one sender gets 429 on every send; `None` for none.
    pub bursts: Option<RateLimitBursts>,
    /// Senders that stop responding after their first sends; `None` for none.
    pub dark_senders: Option<DarkSenders>,
    /// Delay of every response, slept in real time on top of the fixed
    /// [`FakeConfig::latency`](super::FakeConfig::latency); `None` for none.
    pub latency: Option<LatencyMix>,
    /// How long a stalled request is delayed before the fake responds with 503. Keep it longer
    /// than the client's request timeout, so that the client gives up first.
    pub stall_for: Duration,
}

/// A range of durations drawn uniformly, in whole milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
}

/// 429 bursts: at random instants of the fakes' clock, one sender starts getting 429 on every
/// send for a short stretch, with a retry hint that points at the stretch's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitBursts {
    /// Mean time from the end of one burst, or from a sender's first send, to the start of
    /// the next burst on that sender. The gaps are exponential, so bursts start at random.
    pub mean_gap: Duration,
    /// Length of a burst, on the fakes' clock.
    pub length: DurationRange,
}

/// Senders that go dark: about one sender in `one_in`, chosen from the seed, handles its
/// first `after_sends` sends as usual and then stalls every request for the rest of the run.
///
/// NOTE: a stalled Graph request keeps its place in the mailbox's four concurrent requests.
/// Once four stall together, further sends to a dark Outlook mailbox get the immediate
/// `MailboxConcurrency` 429, which the fakes count as a rate-limit violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DarkSenders {
    /// Rarity of dark senders: `1` makes every sender go dark, and `0` none.
    pub one_in: u32,
    /// Number of sends each dark sender handles before it stalls.
    pub after_sends: u32,
}

/// A response delay: usually within `typical`, with a fraction of slow responses in `tail`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyMix {
    pub typical: DurationRange,
    /// Fraction (0.0 to 1.0) of responses delayed by a draw from `tail` instead.
    pub tail_fraction: f64,
    pub tail: DurationRange,
}

/// The error of [`FaultProfile::named`] for a name that is not a profile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault profile {name:?}; valid names: {}", FaultProfile::NAMES.join(", "))]
pub struct UnknownProfile {
    pub name: String,
}

impl FaultProfile {
    /// Names [`FaultProfile::named`] accepts.
    pub const NAMES: [&'static str; 6] =
        ["none", "flaky", "slow", "bursty-429", "dark-mailbox", "stalled"];

    /// Returns the profile called `name`, with seed 0:
    ///
    /// - `none`: no faults;
    /// - `flaky`: 9% of sends get a retryable error (half of them 429), 1% stall, and each
    ///   sender has a 429 burst of 2 to 5 s about every 5 minutes;
    /// - `slow`: most responses take 20 to 80 ms, 5% take 0.2 to 2 s;
    /// - `bursty-429`: only 429 bursts, of 2 to 5 s about every 30 s per sender;
    /// - `dark-mailbox`: about one sender in 5 stalls every request after its first 3 sends;
    /// - `stalled`: 2% of sends stall.
    pub fn named(name: &str) -> Result<FaultProfile, UnknownProfile> {
        let none = FaultProfile::none();
        let profile = match name {
            "none" => none,
            "flaky" => FaultProfile {
                name: "flaky",
                retryable_fraction: 0.09,
                timeout_fraction: 0.01,
                bursts: Some(RateLimitBursts {
                    mean_gap: Duration::from_secs(300),
                    length: DurationRange::from_millis(2_000, 5_000),
                }),
                ..none
            },
            "slow" => FaultProfile {
                name: "slow",
                latency: Some(LatencyMix {
                    typical: DurationRange::from_millis(20, 80),
                    tail_fraction: 0.05,
                    tail: DurationRange::from_millis(200, 2_000),
                }),
                ..none
            },
            "bursty-429" => FaultProfile {
                name: "bursty-429",
                bursts: Some(RateLimitBursts {
                    mean_gap: Duration::from_secs(30),
                    length: DurationRange::from_millis(2_000, 5_000),
                }),
                ..none
            },
            "dark-mailbox" => FaultProfile {
                name: "dark-mailbox",
                dark_senders: Some(DarkSenders { one_in: 5, after_sends: 3 }),
                ..none
            },
            "stalled" => FaultProfile { name: "stalled", timeout_fraction: 0.02, ..none },
            _ => return Err(UnknownProfile { name: name.to_owned() }),
        };
        Ok(profile)
    }

    /// Returns the profile without faults, with which the fakes behave as without a profile.
    pub fn none() -> FaultProfile {
        FaultProfile {
            name: "none",
            seed: 0,
            retryable_fraction: 0.0,
            rate_limited_share: 0.5,
            retry_hint: DurationRange::from_millis(500, 3_000),
            timeout_fraction: 0.0,
            bursts: None,
            dark_senders: None,
            latency: None,
            stall_for: DEFAULT_STALL_FOR,
        }
    }

    /// Returns the name of the profile this one was built from.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Draws from `seed` instead.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Delays stalled requests by `stall_for`.
    pub fn with_stall_for(mut self, stall_for: Duration) -> Self {
        self.stall_for = stall_for;
        self
    }

    /// Returns whether the sender `sender` of `provider` (a mailbox address, compared without
    /// regard to case, or a Twilio `From` number) is one of the dark senders of this profile.
    pub fn goes_dark(&self, provider: Provider, sender: &str) -> bool {
        let Some(dark) = self.dark_senders else {
            return false;
        };
        let hash = sender_seed(self.seed, provider, sender);
        dark.one_in != 0 && hash.is_multiple_of(u64::from(dark.one_in))
    }
}

impl Default for FaultProfile {
    fn default() -> Self {
        FaultProfile::none()
    }
}

impl FromStr for FaultProfile {
    type Err = UnknownProfile;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FaultProfile::named(name)
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (seed {})", self.name, self.seed)
    }
}

impl DurationRange {
    /// Creates the range from `min` to `max` milliseconds, both included.
    pub const fn from_millis(min: u64, max: u64) -> Self {
        Self { min: Duration::from_millis(min), max: Duration::from_millis(max) }
    }

    fn sample(&self, rng: &mut StdRng) -> Duration {
        let min = millis(self.min);
        let max = millis(self.max).max(min);
        Duration::from_millis(rng.random_range(min..=max))
    }
}

impl LatencyMix {
    fn sample(&self, rng: &mut StdRng) -> Duration {
        if chance(rng, self.tail_fraction) {
            self.tail.sample(rng)
        } else {
            self.typical.sample(rng)
        }
    }
}

/// Counts of injected faults, for [`FakeStats`](super::FakeStats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InjectedCounts {
    /// Every injected fault, of the error plan or the profile.
    pub errors: u64,
    pub timeouts: u64,
    pub rate_limits: u64,
}

/// The error plan and the fault profile of running fakes, with the state of their draws.
pub(crate) struct Faults {
    profile: FaultProfile,
    /// The retryable fraction of the [`ErrorPlan`], which responds only with 503.
    plan_errors: RetryableErrors,
    /// The retryable errors of the profile.
    profile_errors: RetryableErrors,
    inner: Mutex<FaultsInner>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults").field("profile", &self.profile).finish_non_exhaustive()
    }
}

struct FaultsInner {
    forced: Vec<ForcedRule>,
    /// Draws of the error plan's retryable fraction, in the order sends arrive.
    plan_rng: StdRng,
    /// Draws of the profile's latency, in the order requests arrive.
    latency_rng: StdRng,
    senders: HashMap<(Provider, String), SenderFaults>,
    counts: InjectedCounts,
}

/// The fault state of one sender.
struct SenderFaults {
    rng: StdRng,
    /// Sends that reached the profile's draws so far.
    sends: u64,
    dark: bool,
    /// Start and end of the current or next 429 burst. It is `None` until the first send, and
    /// when the next start lies beyond what the clock can represent.
    burst: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// A fraction of sends that get a retryable error: 429 with a retry hint in a share of them,
/// else one of `server_errors`.
struct RetryableErrors {
    fraction: f64,
    rate_limited_share: f64,
    retry_hint: DurationRange,
    server_errors: &'static [ForcedOutcome],
}

impl RetryableErrors {
    fn draw(&self, rng: &mut StdRng) -> Option<ForcedOutcome> {
        if !chance(rng, self.fraction) {
            return None;
        }
        if chance(rng, self.rate_limited_share) {
            let retry_after = self.retry_hint.sample(rng);
            return Some(ForcedOutcome::RateLimited { retry_after });
        }
        self.server_errors.choose(rng).copied()
    }
}

impl Faults {
    pub(crate) fn new(plan: ErrorPlan, profile: FaultProfile) -> Self {
        let plan_errors = RetryableErrors {
            fraction: plan.retryable_fraction,
            rate_limited_share: 0.0,
            retry_hint: profile.retry_hint,
            server_errors: &[ForcedOutcome::ServiceUnavailable],
        };
        let profile_errors = RetryableErrors {
            fraction: profile.retryable_fraction,
            rate_limited_share: profile.rate_limited_share,
            retry_hint: profile.retry_hint,
            server_errors: &[ForcedOutcome::InternalError, ForcedOutcome::ServiceUnavailable],
        };
        let inner = FaultsInner {
            forced: plan.forced,
            plan_rng: StdRng::seed_from_u64(plan.seed),
            // A different stream from the senders', whose seeds mix in the sender.
            latency_rng: StdRng::seed_from_u64(mix(profile.seed ^ 0x6c61_7465_6e63_7900)),
            senders: HashMap::new(),
            counts: InjectedCounts::default(),
        };
        Self { profile, plan_errors, profile_errors, inner: Mutex::new(inner) }
    }

    /// Draws the profile's extra delay for one response.
    pub(crate) fn draw_latency(&self) -> Duration {
        let Some(latency) = self.profile.latency else {
            return Duration::ZERO;
        };
        latency.sample(&mut self.inner.lock().latency_rng)
    }

    /// Draws the injected fault, if any, for a send from `key` to `recipient` at `now`, and
    /// counts it. For [`ForcedOutcome::Timeout`] it sleeps the profile's `stall_for` first.
    pub(crate) async fn inject(
        &self,
        key: &LimitKey,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> Option<ForcedOutcome> {
        let outcome = self.draw(key, recipient, now)?;
        if outcome == ForcedOutcome::Timeout {
            // The send is not recorded. From the client's side this is indistinguishable from
            // a response lost on its way back: either way it cannot know whether the provider
            // acted, which is what makes the outcome in doubt.
            tokio::time::sleep(self.profile.stall_for).await;
        }
        Some(outcome)
    }

    /// Draws and counts the injected fault, if any, for a send from `key` to `recipient`.
    pub(crate) fn draw(
        &self,
        key: &LimitKey,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> Option<ForcedOutcome> {
        let mut inner = self.inner.lock();
        let outcome = self.draw_locked(&mut inner, key, recipient, now)?;

        inner.counts.errors += 1;
        match outcome {
            ForcedOutcome::Timeout => inner.counts.timeouts += 1,
            ForcedOutcome::RateLimited { .. } => inner.counts.rate_limits += 1,
            _ => {}
        }
        Some(outcome)
    }

    pub(crate) fn counts(&self) -> InjectedCounts {
        self.inner.lock().counts
    }

    fn draw_locked(
        &self,
        inner: &mut FaultsInner,
        key: &LimitKey,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> Option<ForcedOutcome> {
        // The error plan comes first, and its draws happen for every send, so that its
        // sequence does not depend on the profile.
        if let Some(outcome) = take_forced(&mut inner.forced, recipient) {
            return Some(outcome);
        }
        if let Some(outcome) = self.plan_errors.draw(&mut inner.plan_rng) {
            return Some(outcome);
        }

        let (provider, sender) = sender_of(key);
        let profile = &self.profile;
        let faults =
            inner.senders.entry((provider, sender.to_ascii_lowercase())).or_insert_with(|| {
                SenderFaults {
                    rng: StdRng::seed_from_u64(sender_seed(profile.seed, provider, sender)),
                    sends: 0,
                    dark: profile.goes_dark(provider, sender),
                    burst: None,
                }
            });
        faults.sends += 1;

        let dark_after = profile.dark_senders.map_or(0, |dark| u64::from(dark.after_sends));
        if faults.dark && faults.sends > dark_after {
            return Some(ForcedOutcome::Timeout);
        }
        if let Some(bursts) = profile.bursts
            && let Some(retry_after) = faults.burst_wait(&bursts, now)
        {
            return Some(ForcedOutcome::RateLimited { retry_after });
        }
        if chance(&mut faults.rng, profile.timeout_fraction) {
            return Some(ForcedOutcome::Timeout);
        }
        self.profile_errors.draw(&mut faults.rng)
    }
}

impl SenderFaults {
    /// Returns the wait until the end of the burst `now` falls in, rounded up to whole
    /// milliseconds, or `None` outside bursts.
    fn burst_wait(&mut self, bursts: &RateLimitBursts, now: DateTime<Utc>) -> Option<Duration> {
        let (start, end) = match self.burst {
            Some(window) => window,
            None => {
                self.burst = next_burst(&mut self.rng, bursts, now);
                self.burst?
            }
        };
        if now < start {
            return None;
        }
        if now < end {
            let wait = (end - now).to_std().unwrap_or(Duration::ZERO);
            return Some(round_up_to_millis(wait));
        }

        // The burst is over. The gaps are exponential, so drawing the next one from now
        // instead of from the end changes nothing but the bursts no send would have seen.
        self.burst = next_burst(&mut self.rng, bursts, now);
        None
    }
}

/// Returns the next burst after `from`, or `None` if it would start or end beyond what the
/// clock can represent.
fn next_burst(
    rng: &mut StdRng,
    bursts: &RateLimitBursts,
    from: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    // 1 - u lies in (0, 1], so the logarithm is finite and the gap at most about 37 means.
    let unit: f64 = rng.random();
    let gap = bursts.mean_gap.mul_f64(-(1.0 - unit).ln());
    let start = from.checked_add_signed(TimeDelta::from_std(gap).ok()?)?;
    let length = TimeDelta::from_std(bursts.length.sample(rng)).ok()?;
    Some((start, start.checked_add_signed(length)?))
}

/// Returns the first forced rule's outcome for `recipient`, using up one of its times.
fn take_forced(forced: &mut [ForcedRule], recipient: &str) -> Option<ForcedOutcome> {
    let rule = forced
        .iter_mut()
        .find(|rule| rule.recipient.eq_ignore_ascii_case(recipient) && rule.times != Some(0))?;
    if let Some(times) = rule.times.as_mut() {
        *times -= 1;
    }
    Some(rule.outcome)
}

/// Returns the provider and the sender a send counts against.
fn sender_of(key: &LimitKey) -> (Provider, &str) {
    match key {
        LimitKey::Mailbox(provider, email) => (*provider, email),
        LimitKey::TwilioNumber { from, .. } => (Provider::Twilio, from),
    }
}

/// Returns whether a draw with probability `probability` succeeds; values outside 0.0 to 1.0
/// are clamped, and NaN never succeeds.
fn chance(rng: &mut StdRng, probability: f64) -> bool {
    probability > 0.0 && rng.random_bool(probability.min(1.0))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn round_up_to_millis(duration: Duration) -> Duration {
    let whole = Duration::from_millis(millis(duration));
    if whole < duration { whole + Duration::from_millis(1) } else { whole }
}

/// Returns the seed of one sender's draws: FNV-1a over the profile seed, the provider and
/// the lowercase sender, then mixed. Written out, unlike std's hasher, so that it stays the
/// same across Rust versions.
fn sender_seed(seed: u64, provider: Provider, sender: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

    let bytes = seed
        .to_le_bytes()
        .into_iter()
        .chain(provider.as_str().bytes())
        .chain([0])
        .chain(sender.bytes().map(|byte| byte.to_ascii_lowercase()));
    let hash =
        bytes.fold(FNV_OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME));
    mix(hash)
}

/// Applies the SplitMix64 finaliser, which spreads every input bit over the whole output, so that
/// `% n` on the result is close to uniform.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
