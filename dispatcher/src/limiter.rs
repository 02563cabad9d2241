//! The rate limit of one connection on one channel: an even pace per minute (governor's GCRA
//! with a burst of one) and a cap per rolling 24 hours.
//!
//! Both run on the engine's clock, so under the virtual clock of `followup demo` the limits
//! hold in virtual time. The pace is 1% slower than the published rate and the daily window
//! one minute longer than 24 hours, because the provider measures at its own clock, after
//! network delay: two sends paced exactly one interval apart here may arrive closer together
//! there.
//!
//! The pace allows a burst of just under 1% of the per-minute limit (at least one send). A
//! GCRA with burst `b` lets through at most `b` plus the rate's share of any window, so a
//! sliding minute sees at most `per_minute * 0.0099 + per_minute / 1.01`, which stays below
//! `per_minute`. A slow limit (60 a minute) gets a burst of one, exact spacing; a fast one
//! (6,000 a minute) lets a round take 59 at once instead of one.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use followup_core::clock::Clock;
use followup_core::limits::SendLimits;
use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Extra spacing between paced sends, in parts per thousand of the interval.
const PACE_MARGIN_PER_MILLE: u32 = 10;

/// Extra length of the daily window beyond 24 hours.
const DAILY_WINDOW_MARGIN: chrono::Duration = chrono::Duration::minutes(1);

/// Adapts the engine's clock to governor's clock trait.
#[derive(Clone, Debug)]
pub struct EngineClock(pub Arc<dyn Clock>);

impl GovernorClock for EngineClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let micros = self.0.now().timestamp_micros().max(0);
        Nanos::new(u64::try_from(micros).unwrap_or(0).saturating_mul(1_000))
    }
}

type PaceLimiter = RateLimiter<NotKeyed, InMemoryState, EngineClock, NoOpMiddleware<Nanos>>;

/// Result of [`ConnectionLimiter::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Sends that may go out now. Their permits are already taken.
    pub granted: u32,
    /// When the next send will be allowed, if fewer were granted than wanted.
    pub next_free_at: Option<DateTime<Utc>>,
}

/// Rate limit state of one connection on one channel.
#[derive(Debug)]
pub struct ConnectionLimiter {
    limits: SendLimits,
    clock: EngineClock,
    pace: PaceLimiter,
    /// Instants of the sends inside the current daily window, oldest first. Holds at most
    /// `limits.per_day` entries.
    sent_today: VecDeque<DateTime<Utc>>,
}

impl ConnectionLimiter {
    pub fn new(limits: SendLimits, clock: Arc<dyn Clock>) -> Self {
        let clock = EngineClock(clock);
        Self {
            limits,
            pace: PaceLimiter::direct_with_clock(pace_quota(limits.per_minute), clock.clone()),
            clock,
            sent_today: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> SendLimits {
        self.limits
    }

    /// Replaces the limits, keeping the daily count: a changed override must not reset how
    /// much the mailbox already sent today.
    pub fn set_limits(&mut self, limits: SendLimits) {
        if limits != self.limits {
            self.limits = limits;
            self.pace =
                PaceLimiter::direct_with_clock(pace_quota(limits.per_minute), self.clock.clone());
        }
    }

    /// Takes up to `wanted` permits for sends at the current instant.
    pub fn admit(&mut self, wanted: u32) -> Admission {
        let now = self.clock.0.now();
        self.forget_sends_before(now - chrono::Duration::days(1) - DAILY_WINDOW_MARGIN);
        let mut granted = 0;
        while granted < wanted {
            if self.sent_today.len() >= self.limits.per_day as usize {
                let oldest = self.sent_today.front().copied().unwrap_or(now);
                let next = oldest + chrono::Duration::days(1) + DAILY_WINDOW_MARGIN;
                return Admission { granted, next_free_at: Some(next) };
            }
            if let Err(not_until) = self.pace.check() {
                let wait = not_until.wait_time_from(self.clock.now());
                let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                let wait = wait.max(chrono::Duration::microseconds(1));
                return Admission { granted, next_free_at: Some(now + wait) };
            }
            self.sent_today.push_back(now);
            granted += 1;
        }
        Admission { granted, next_free_at: None }
    }

    /// Gives back the daily-window places of the last `count` permits, for follow-ups that
    /// were admitted but not sent. The per-minute pace keeps them spent: it only delays the
    /// next sends by at most `count` intervals.
    pub fn refund(&mut self, count: u32) {
        for _ in 0..count {
            if self.sent_today.pop_back().is_none() {
                break;
            }
        }
    }

    fn forget_sends_before(&mut self, cutoff: DateTime<Utc>) {
        while self.sent_today.front().is_some_and(|&sent| sent <= cutoff) {
            self.sent_today.pop_front();
        }
    }
}

fn pace_quota(per_minute: u32) -> Quota {
    let burst = NonZeroU32::new(per_minute.saturating_mul(99) / 10_000).unwrap_or(NonZeroU32::MIN);
    let per_minute = u64::from(per_minute.max(1));
    let nanos = 60_000_000_000 / per_minute * u64::from(1_000 + PACE_MARGIN_PER_MILLE) / 1_000;
    Quota::with_period(Duration::from_nanos(nanos.max(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use followup_core::clock::VirtualClock;

    use super::*;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("valid instant")
    }

    #[test]
    fn pace_spaces_sends_evenly() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut limiter =
            ConnectionLimiter::new(SendLimits { per_minute: 60, per_day: 1_000 }, clock.clone());
        let first = limiter.admit(5);
        assert_eq!(first.granted, 1);
        let next = first.next_free_at.expect("a next instant");
        assert_eq!(next - start(), chrono::Duration::milliseconds(1_010));
        clock.advance_to(next);
        assert_eq!(limiter.admit(5).granted, 1);
    }

    #[test]
    fn fast_pace_never_exceeds_a_sliding_minute() {
        let clock = Arc::new(VirtualClock::new(start()));
        let per_minute = 6_000;
        let mut limiter =
            ConnectionLimiter::new(SendLimits { per_minute, per_day: u32::MAX }, clock.clone());
        let mut sent_at = Vec::new();
        // Ask for far more than allowed, at every instant the limiter names, for 3 minutes.
        while clock.now() < start() + chrono::Duration::minutes(3) {
            let admission = limiter.admit(10_000);
            sent_at.extend(std::iter::repeat_n(clock.now(), admission.granted as usize));
            clock.advance_to(admission.next_free_at.expect("a next instant"));
        }
        assert!(sent_at.len() > 17_000, "the pace is close to the limit: {}", sent_at.len());
        // Sends are in time order, so the window's first send only moves forward.
        let mut first = 0;
        for (index, &at) in sent_at.iter().enumerate() {
            while sent_at[first] <= at - chrono::Duration::minutes(1) {
                first += 1;
            }
            let in_window = index - first + 1;
            assert!(in_window <= per_minute as usize, "{in_window} sends in the minute to {at}");
        }
    }

    #[test]
    fn refund_frees_daily_places() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut limiter =
            ConnectionLimiter::new(SendLimits { per_minute: 6_000, per_day: 2 }, clock.clone());
        assert_eq!(limiter.admit(2).granted, 2);
        limiter.refund(1);
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(limiter.admit(2).granted, 1, "one refunded place, one still used");
    }

    #[test]
    fn daily_cap_waits_for_the_window_to_roll() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut limiter =
            ConnectionLimiter::new(SendLimits { per_minute: 6_000, per_day: 3 }, clock.clone());
        for _ in 0..3 {
            assert_eq!(limiter.admit(1).granted, 1);
            clock.advance(chrono::Duration::seconds(1));
        }
        let blocked = limiter.admit(1);
        assert_eq!(blocked.granted, 0);
        let reopens = blocked.next_free_at.expect("a next instant");
        assert_eq!(reopens, start() + chrono::Duration::days(1) + DAILY_WINDOW_MARGIN);
        clock.advance_to(reopens);
        assert_eq!(limiter.admit(1).granted, 1);
    }
}
