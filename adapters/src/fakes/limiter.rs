//! The sliding-window limits a fake enforces per account: at most `per_minute` sends in any
//! window of 60 seconds and at most `per_day` in any window of 24 hours.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use followup_core::limits::SendLimits;

const MINUTE: TimeDelta = TimeDelta::seconds(60);
const DAY: TimeDelta = TimeDelta::hours(24);

/// The send instants of one account within the last 24 hours. Memory is bounded by the
/// number of sends the account made in that time.
#[derive(Debug)]
pub(crate) struct SlidingWindowLimiter {
    limits: SendLimits,
    last_minute: VecDeque<DateTime<Utc>>,
    last_day: VecDeque<DateTime<Utc>>,
}

impl SlidingWindowLimiter {
    pub(crate) fn new(limits: SendLimits) -> Self {
        Self { limits, last_minute: VecDeque::new(), last_day: VecDeque::new() }
    }

    pub(crate) fn set_limits(&mut self, limits: SendLimits) {
        self.limits = limits;
    }

    /// Counts a send at `now` if both windows have room, else returns how long until the
    /// fuller window has room again.
    ///
    /// A send at instant t counts against the windows (t - 60 s, t] and (t - 24 h, t], so a
    /// send exactly 60 seconds after another no longer shares its minute. Checking and
    /// counting happen in one call, so two callers can never both take the last slot.
    pub(crate) fn try_acquire(&mut self, now: DateTime<Utc>) -> Result<(), Duration> {
        expire(&mut self.last_minute, now - MINUTE);
        expire(&mut self.last_day, now - DAY);

        let minute_wait = wait_for_room(&self.last_minute, self.limits.per_minute, MINUTE, now);
        let day_wait = wait_for_room(&self.last_day, self.limits.per_day, DAY, now);
        if let Some(wait) = minute_wait.max(day_wait) {
            return Err(wait);
        }

        self.last_minute.push_back(now);
        self.last_day.push_back(now);
        Ok(())
    }
}

/// Drops the instants at or before `cutoff`, which have left the window.
fn expire(window: &mut VecDeque<DateTime<Utc>>, cutoff: DateTime<Utc>) {
    while window.front().is_some_and(|&sent| sent <= cutoff) {
        window.pop_front();
    }
}

/// `None` if `window` holds fewer than `limit` sends, else the time until the oldest send
/// that must leave for a new one to fit has left.
fn wait_for_room(
    window: &VecDeque<DateTime<Utc>>,
    limit: u32,
    length: TimeDelta,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if window.len() < limit {
        return None;
    }

    // With a limit of zero nothing ever fits; the wait is then one full window.
    let leaving = window.len() - limit;
    let frees_at = window.get(leaving).map_or(now + length, |&sent| sent + length);
    Some((frees_at - now).to_std().unwrap_or(Duration::ZERO))
}
