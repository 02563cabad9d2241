//! The rate limit of one connection on one channel: an even pace per minute (governor's GCRA
//! with a small burst), a cap per rolling 24 hours, the tenant's optional cap per calendar day
//! in the mailbox's timezone, and a pause the provider asked for with a retry hint.
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

use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use followup_core::clock::Clock;
use followup_core::limits::ConnectionLimits;
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
    limits: ConnectionLimits,
    clock: EngineClock,
    pace: PaceLimiter,
    /// Instants of the sends inside the current daily window, oldest first. Holds at most
    /// `limits.send.per_day` entries.
    sent_today: VecDeque<DateTime<Utc>>,
    /// The local date of the last send in the connection's timezone, and the sends on it.
    local_day: Option<(NaiveDate, u32)>,
    /// No send before this instant: the provider asked for the pause.
    paused_until: Option<DateTime<Utc>>,
}

impl ConnectionLimiter {
    pub fn new(limits: ConnectionLimits, clock: Arc<dyn Clock>) -> Self {
        let clock = EngineClock(clock);
        Self {
            limits,
            pace: PaceLimiter::direct_with_clock(pace_quota(limits.send.per_minute), clock.clone()),
            clock,
            sent_today: VecDeque::new(),
            local_day: None,
            paused_until: None,
        }
    }

    /// Replaces the limits, keeping the counts: a changed override must not reset how much the
    /// mailbox already sent today or in the last minute.
    pub fn set_limits(&mut self, limits: ConnectionLimits) {
        let pace_changed = limits.send.per_minute != self.limits.send.per_minute;
        let timezone_changed = limits.timezone != self.limits.timezone;
        self.limits = limits;
        if pace_changed {
            let quota = pace_quota(limits.send.per_minute);
            self.pace = PaceLimiter::direct_with_clock(quota, self.clock.clone());
            self.spend_pace_on_last_minute();
        }
        if timezone_changed {
            self.recount_local_day();
        }
    }

    /// Takes a pace permit for every send of the last minute, so that a new pace limiter
    /// starts where the old one (or the engine before a restart) left off. Spending them all
    /// at once is stricter than spacing them out as they were, never looser.
    fn spend_pace_on_last_minute(&mut self) {
        let minute_ago = self.clock.0.now() - chrono::Duration::minutes(1);
        let recent = self.sent_today.iter().rev().take_while(|&&at| at > minute_ago).count();
        for _ in 0..recent {
            let _ = self.pace.check();
        }
    }

    /// Counts the sends of the current local day again from the daily window, which covers
    /// more than a day, after the timezone that decides the day changed.
    fn recount_local_day(&mut self) {
        let timezone = self.limits.timezone;
        let today = self.clock.0.now().with_timezone(&timezone).date_naive();
        let sent = self
            .sent_today
            .iter()
            .filter(|at| at.with_timezone(&timezone).date_naive() == today)
            .count();
        self.local_day = Some((today, u32::try_from(sent).unwrap_or(u32::MAX)));
    }

    /// Counts sends made before this limiter existed, at the instants `sent_at` (oldest
    /// first), so that a restarted engine keeps its daily caps. Instants outside the current
    /// windows are ignored.
    pub fn restore(&mut self, sent_at: &[DateTime<Utc>]) {
        let now = self.clock.0.now();
        let window_start = now - chrono::Duration::days(1) - DAILY_WINDOW_MARGIN;
        self.sent_today.extend(sent_at.iter().filter(|&&at| at > window_start && at <= now));
        self.sent_today.make_contiguous().sort_unstable();
        self.recount_local_day();
        self.spend_pace_on_last_minute();
    }

    /// Stops sends until `until`, as a provider's retry hint requests. A pause ending later
    /// replaces one ending sooner, and never the other way round.
    pub fn pause_until(&mut self, until: DateTime<Utc>) {
        self.paused_until = Some(self.paused_until.map_or(until, |current| current.max(until)));
    }

    /// Takes up to `wanted` permits for sends at the current instant.
    pub fn admit(&mut self, wanted: u32) -> Admission {
        let now = self.clock.0.now();
        if let Some(until) = self.paused_until {
            if now < until {
                return Admission { granted: 0, next_free_at: Some(until) };
            }
            self.paused_until = None;
        }
        self.forget_sends_before(now - chrono::Duration::days(1) - DAILY_WINDOW_MARGIN);
        let today = now.with_timezone(&self.limits.timezone).date_naive();
        if self.local_day.is_some_and(|(day, _)| day != today) {
            self.local_day = None;
        }
        let mut granted = 0;
        while granted < wanted {
            let sent_locally = self.local_day.map_or(0, |(_, sent)| sent);
            if self.limits.per_local_day.is_some_and(|cap| sent_locally >= cap) {
                let next = next_local_midnight(today, self.limits.timezone).unwrap_or(now);
                return Admission { granted, next_free_at: Some(next.max(now)) };
            }
            if self.sent_today.len() >= self.limits.send.per_day as usize {
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
            self.local_day = Some((today, sent_locally + 1));
            granted += 1;
        }
        Admission { granted, next_free_at: None }
    }

    /// Gives back the daily places of the last `count` permits, for follow-ups that were
    /// admitted but not sent. The per-minute pace keeps them spent: it only delays the next
    /// sends by at most `count` intervals.
    pub fn refund(&mut self, count: u32) {
        for _ in 0..count {
            if self.sent_today.pop_back().is_none() {
                break;
            }
        }
        if let Some((_, sent)) = &mut self.local_day {
            *sent = sent.saturating_sub(count);
        }
    }

    fn forget_sends_before(&mut self, cutoff: DateTime<Utc>) {
        while self.sent_today.front().is_some_and(|&sent| sent <= cutoff) {
            self.sent_today.pop_front();
        }
    }
}

/// Returns the first instant of the day after `today` in `timezone`. Where a DST change skips local
/// midnight, the day starts at the first local time that exists.
fn next_local_midnight(today: NaiveDate, timezone: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    let tomorrow = today.succ_opt()?;
    (0..=3 * 60).find_map(|minutes| {
        let local = tomorrow.and_hms_opt(0, 0, 0)? + chrono::Duration::minutes(minutes);
        timezone.from_local_datetime(&local).earliest().map(|at| at.with_timezone(&Utc))
    })
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
    use followup_core::limits::SendLimits;

    use super::*;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("valid instant")
    }

    fn limits(per_minute: u32, per_day: u32) -> ConnectionLimits {
        ConnectionLimits {
            send: SendLimits { per_minute, per_day },
            per_local_day: None,
            timezone: chrono_tz::UTC,
            max_in_flight: 4,
        }
    }

    #[test]
    fn pace_spaces_sends_evenly() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut limiter = ConnectionLimiter::new(limits(60, 1_000), clock.clone());
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
        let mut limiter = ConnectionLimiter::new(limits(per_minute, u32::MAX), clock.clone());
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
        let mut limiter = ConnectionLimiter::new(limits(6_000, 2), clock.clone());
        assert_eq!(limiter.admit(2).granted, 2);
        limiter.refund(1);
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(limiter.admit(2).granted, 1, "one refunded place, one still used");
    }

    #[test]
    fn daily_cap_waits_for_the_window_to_roll() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut limiter = ConnectionLimiter::new(limits(6_000, 3), clock.clone());
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

    #[test]
    fn local_day_cap_resets_at_the_mailboxs_midnight() {
        // 09:00 UTC is 01:00 in Tokyo, so the local day ends at 15:00 UTC.
        let clock = Arc::new(VirtualClock::new(start()));
        let mut connection_limits = limits(6_000, 10_000);
        connection_limits.per_local_day = Some(2);
        connection_limits.timezone = chrono_tz::Asia::Tokyo;
        let mut limiter = ConnectionLimiter::new(connection_limits, clock.clone());
        assert_eq!(limiter.admit(5).granted, 2);
        clock.advance(chrono::Duration::seconds(1));
        let blocked = limiter.admit(1);
        assert_eq!(blocked.granted, 0);
        let midnight_in_tokyo =
            Utc.with_ymd_and_hms(2026, 12, 1, 15, 0, 0).single().expect("valid instant");
        assert_eq!(blocked.next_free_at, Some(midnight_in_tokyo));
        clock.advance_to(midnight_in_tokyo);
        assert_eq!(limiter.admit(5).granted, 2, "a new local day, a new cap");
    }

    #[test]
    fn dst_skipped_midnight_starts_day_later() {
        // Santiago moves its clocks from 00:00 to 01:00 on 2026-09-06.
        let santiago = chrono_tz::America::Santiago;
        let day = NaiveDate::from_ymd_opt(2026, 9, 5).expect("valid date");
        let next = next_local_midnight(day, santiago).expect("a next day");
        let local = next.with_timezone(&santiago);
        assert_eq!(local.date_naive(), day.succ_opt().expect("a next day"));
        assert_eq!(local.format("%H:%M").to_string(), "01:00");
    }

    #[test]
    fn provider_pause_holds_every_send_until_it_ends() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut limiter = ConnectionLimiter::new(limits(6_000, 10_000), clock.clone());
        let until = start() + chrono::Duration::seconds(90);
        limiter.pause_until(until);
        limiter.pause_until(start() + chrono::Duration::seconds(10));
        assert_eq!(limiter.admit(3), Admission { granted: 0, next_free_at: Some(until) });
        clock.advance_to(until);
        assert!(limiter.admit(3).granted > 0);
    }

    #[test]
    fn restored_sends_count_against_the_windows() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut connection_limits = limits(6_000, 3);
        connection_limits.per_local_day = Some(2);
        let mut limiter = ConnectionLimiter::new(connection_limits, clock.clone());
        let hours_ago = |hours| start() - chrono::Duration::hours(hours);
        // Two days ago (outside every window), yesterday evening, and this morning.
        limiter.restore(&[hours_ago(48), hours_ago(12), hours_ago(1)]);
        assert_eq!(limiter.admit(5).granted, 1, "one more today, by the local-day cap of 2");
        clock.advance_to(start() + chrono::Duration::hours(15));
        // Midnight: a new local day, but the rolling day still contains the restored send of
        // 08:00 and the one admitted at 09:00, so one more fits its cap of 3.
        assert_eq!(limiter.admit(5).granted, 1);
    }

    #[test]
    fn changed_limits_keep_recent_sends() {
        let clock = Arc::new(VirtualClock::new(start()));
        let mut connection_limits = limits(6_000, 10_000);
        connection_limits.per_local_day = Some(3);
        let mut limiter = ConnectionLimiter::new(connection_limits, clock.clone());
        assert_eq!(limiter.admit(3).granted, 3);

        // A slower pace counts the three sends of the last minute at once.
        connection_limits.send.per_minute = 2;
        limiter.set_limits(connection_limits);
        clock.advance(chrono::Duration::seconds(1));
        connection_limits.per_local_day = Some(10);
        limiter.set_limits(connection_limits);
        assert_eq!(limiter.admit(1).granted, 0, "three sends already spent the slow pace");

        // Another timezone, in which the three sends fall on the same local day.
        connection_limits.per_local_day = Some(3);
        connection_limits.timezone = chrono_tz::Europe::Berlin;
        limiter.set_limits(connection_limits);
        clock.advance(chrono::Duration::minutes(5));
        assert_eq!(limiter.admit(1).granted, 0, "the local-day cap still counts them");
    }
}
