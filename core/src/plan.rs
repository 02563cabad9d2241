//! Due-time math: when each step of a schedule is due, read in the contact's timezone.
//!
//! # Send windows
//!
//! A [`SendWindow`] lists local weekdays and a local time range, both read in the contact's
//! timezone. On each listed day the window is one interval of instants:
//! - `start < end`: from `start` to `end` of that day, end exclusive;
//! - `start == end == 00:00`: the whole day, from midnight to the next midnight;
//! - `start > end`: overnight, from `start` on that day to `end` on the next day, so a Friday
//!   22:00-06:00 window runs from Friday 22:00 to Saturday 06:00 and belongs to Friday.
//!
//! [`validate_window`] rejects a window with no weekday and a window with `start == end` at
//! any time other than midnight. If such a window reaches the functions here anyway, `start ==
//! end` is read as 24 hours from `start`, and a window without weekdays leaves instants
//! unchanged. The search for an opening covers the local day before an instant and the two
//! weeks after it, so it always ends, and an instant with no opening in that range is kept as
//! it is.
//!
//! # Step delays
//!
//! A step's delay counts from the previous step's planned due instant, or from the schedule's
//! start for the first step. Whole days of the delay are added on the contact's local
//! calendar, so "2 days" keeps the local time of day across a DST change, and the remaining
//! seconds are added as elapsed time. The result then moves to the next instant inside the
//! window.
//!
//! # DST
//!
//! Every local date and time, whether a window bound or a delay result, names one instant:
//! - a local time skipped when clocks go forward names the first instant after the gap, so
//!   02:30 on 2026-03-08 in America/New_York is 03:00 EDT, and a window starting at 02:30 that
//!   day opens at 03:00;
//! - a local time that occurs twice when clocks go back names its first occurrence, so 01:30
//!   on 2026-11-01 in America/New_York is 01:30 EDT. A window opens at most once a day, so
//!   during the repeated hour its opening and closing instants decide whether it is open, not
//!   the wall clock.
//!
//! A window whose whole range falls inside a gap does not open that day.

use chrono::{DateTime, Datelike, Days, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset};
use chrono::{TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::{SendWindow, Step};

#[cfg(test)]
mod tests;

const SECONDS_PER_DAY: u64 = 86_400;

/// Local days searched for an opening, counted from the day before the earliest instant. Two
/// weeks list every weekday twice, so a window still opens when a timezone skips a whole date
/// (Pacific/Apia skipped 2011-12-30).
const SEARCH_DAYS: usize = 16;

/// One opening of a send window: `open` inclusive, `close` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Opening {
    open: DateTime<Utc>,
    close: DateTime<Utc>,
}

/// Returns the first instant at or after `earliest` that falls inside `window`, read in `tz`.
///
/// The search covers the openings of the window from the local day before `earliest` to two
/// weeks after it. When none of them is usable (a window with no weekday, or dates at the
/// edge of the representable range), `earliest` is returned unchanged: the follow-up then goes
/// out outside its window instead of never.
pub fn next_window_instant(earliest: DateTime<Utc>, tz: Tz, window: &SendWindow) -> DateTime<Utc> {
    match next_opening(earliest, tz, window) {
        Some(opening) => opening.open.max(earliest),
        None => earliest,
    }
}

/// Returns whether `instant` falls inside `window`, read in `tz`.
pub fn window_contains(instant: DateTime<Utc>, tz: Tz, window: &SendWindow) -> bool {
    next_opening(instant, tz, window).is_some_and(|opening| opening.open <= instant)
}

/// Computes the due instant of each step of a sequence for a schedule starting at `start`.
///
/// Each step's delay counts from the previous step's due instant (the first step's from
/// `start`) and is added by [`add_step_delay`]. The result then moves to the next instant
/// inside `window`.
pub fn plan_steps(
    start: DateTime<Utc>,
    tz: Tz,
    steps: &[Step],
    window: &SendWindow,
) -> Vec<DateTime<Utc>> {
    let mut previous = start;
    steps
        .iter()
        .map(|step| {
            let earliest = add_step_delay(previous, tz, step.delay_seconds);
            previous = next_window_instant(earliest, tz, window);
            previous
        })
        .collect()
}

/// Plans `steps` again from `earliest`, as after an outage: the first of them goes out at the
/// first window instant at or after `earliest`, whatever its delay, and each later one as
/// [`plan_steps`] plans it, its delay after the one before.
pub fn replan_steps(
    earliest: DateTime<Utc>,
    tz: Tz,
    steps: &[Step],
    window: &SendWindow,
) -> Vec<DateTime<Utc>> {
    let Some((_, later)) = steps.split_first() else {
        return Vec::new();
    };
    let first = next_window_instant(earliest, tz, window);
    let mut planned = vec![first];
    planned.extend(plan_steps(first, tz, later, window));
    planned
}

/// Adds a step delay to `from`: the whole days on the local calendar of `tz`, keeping the
/// local time of day, then the remaining seconds as elapsed time.
///
/// Saturates at [`DateTime::<Utc>::MAX_UTC`] when the result is out of range.
pub fn add_step_delay(from: DateTime<Utc>, tz: Tz, delay_seconds: u64) -> DateTime<Utc> {
    let days = delay_seconds / SECONDS_PER_DAY;
    let remainder = TimeDelta::seconds((delay_seconds % SECONDS_PER_DAY) as i64);

    // With no whole day the local calendar is skipped, so a delay inside a repeated hour stays
    // exact elapsed time.
    let after_days = if days == 0 { Some(from) } else { add_local_days(from, tz, days) };

    after_days
        .and_then(|instant| instant.checked_add_signed(remainder))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Checks that a window can open: it lists at least one weekday, and its start and end differ
/// unless both are 00:00, which means all day. An overnight window (`start > end`) is valid.
pub fn validate_window(window: &SendWindow) -> Result<(), String> {
    if window.weekdays.is_empty() {
        return Err("invalid send window: it lists no weekday, so it never opens; \
                    list at least one weekday"
            .to_owned());
    }
    if window.start == window.end && window.start != NaiveTime::MIN {
        return Err(format!(
            "invalid send window: start and end are both {}; use 00:00 to 00:00 for all day, \
             or two different times",
            window.start
        ));
    }
    Ok(())
}

/// Converts a local date and time in `tz` to the instant it names: the first occurrence of a
/// time that occurs twice, and the first instant after the gap for a time that was skipped.
/// Returns `None` only when the result is out of range.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local).earliest() {
        Some(instant) => Some(instant.to_utc()),
        None => end_of_gap(tz, local),
    }
}

/// Finds the first opening of `window` that closes after `instant`.
fn next_opening(instant: DateTime<Utc>, tz: Tz, window: &SendWindow) -> Option<Opening> {
    // The day before counts because an overnight or all-day window of that day may still be
    // open.
    let first_day = local_naive(instant, tz)?.date().pred_opt()?;

    first_day
        .iter_days()
        .take(SEARCH_DAYS)
        .filter(|day| window.weekdays.contains(&day.weekday()))
        .filter_map(|day| opening_on(tz, window, day))
        .find(|opening| opening.open < opening.close && instant < opening.close)
}

/// Computes the opening of `window` that starts on local date `day`. It is empty (`open == close`)
/// when the whole range falls inside a DST gap.
fn opening_on(tz: Tz, window: &SendWindow, day: NaiveDate) -> Option<Opening> {
    let close_day = if window.start < window.end { day } else { day.succ_opt()? };
    let open = resolve_local(tz, day.and_time(window.start))?;
    let close = resolve_local(tz, close_day.and_time(window.end))?;
    Some(Opening { open, close })
}

fn add_local_days(from: DateTime<Utc>, tz: Tz, days: u64) -> Option<DateTime<Utc>> {
    let local = local_naive(from, tz)?.checked_add_days(Days::new(days))?;
    resolve_local(tz, local)
}

/// Returns the local date and time of `instant` in `tz`, or `None` when out of range.
fn local_naive(instant: DateTime<Utc>, tz: Tz) -> Option<NaiveDateTime> {
    let utc = instant.naive_utc();
    utc.checked_add_offset(offset_at(tz, utc))
}

fn offset_at(tz: Tz, utc: NaiveDateTime) -> FixedOffset {
    tz.offset_from_utc_datetime(&utc).fix()
}

/// Finds the first instant after the DST gap that skipped `local`: the transition itself.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // A day either side of `local` read as UTC lies before and after the transition for any
    // offset within the ±14 hours timezones use.
    let offset_before = offset_at(tz, local.checked_sub_days(Days::new(1))?);
    let offset_after = offset_at(tz, local.checked_add_days(Days::new(1))?);

    // Read with the later offset, `local` names an instant before the transition, and read
    // with the earlier one, an instant after it. Bisect between them, in whole seconds
    // because transitions fall on whole seconds.
    let mut before = local.checked_sub_offset(offset_after)?.and_utc().timestamp();
    let mut after = local.checked_sub_offset(offset_before)?.and_utc().timestamp();
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        if local_after(tz, middle, local) {
            after = middle;
        } else {
            before = middle;
        }
    }

    // NOTE: the bracket assumes one transition within a day of the gap. Should the zone's data
    // have two, the result is an instant near the gap rather than its exact end.
    DateTime::from_timestamp(after, 0)
}

/// Returns whether the local time of the UTC `timestamp` in `tz` is later than `local`.
fn local_after(tz: Tz, timestamp: i64, local: NaiveDateTime) -> bool {
    DateTime::from_timestamp(timestamp, 0)
        .and_then(|instant| local_naive(instant, tz))
        .is_none_or(|instant_local| instant_local > local)
}
