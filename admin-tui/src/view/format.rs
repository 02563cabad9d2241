//! Formatting of figures, instants and durations for the screen.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ratatui::text::Line;
use ratatui::widgets::Cell;

/// Formats `value` with a comma between groups of three digits, such as `1,234,567`.
pub(crate) fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Formats a rate per second with one decimal.
pub(crate) fn rate(value: f64) -> String {
    format!("{value:.1}")
}

/// Formats a lateness in milliseconds: `850 ms`, `12.5 s`, `3.2 min`.
pub(crate) fn millis(value: u64) -> String {
    match value {
        0..1_000 => format!("{value} ms"),
        1_000..60_000 => format!("{:.1} s", value as f64 / 1_000.0),
        _ => format!("{:.1} min", value as f64 / 60_000.0),
    }
}

/// Formats the age of something: `4 s ago`, `3 min ago`, `2 h ago`.
pub(crate) fn age(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3_600 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3_600),
    }
}

/// Formats an instant as UTC time of day, the date left out to keep tables narrow.
pub(crate) fn time_of_day(instant: &DateTime<Utc>) -> String {
    instant.format("%H:%M:%S").to_string()
}

/// Formats an instant as UTC month, day and time of day.
pub(crate) fn day_and_time(instant: &DateTime<Utc>) -> String {
    instant.format("%m-%d %H:%M:%S").to_string()
}

/// Formats the engine's RFC 3339 instant `now` as UTC in at most `room` cells: with the date
/// when it fits, the time of day only when not, and nothing on a very narrow terminal. An
/// instant that does not parse is shown as received.
pub(crate) fn engine_clock(now: &str, room: usize) -> String {
    let candidates = match DateTime::parse_from_rfc3339(now) {
        Ok(instant) => {
            let utc = instant.with_timezone(&Utc);
            vec![
                utc.format("engine clock %Y-%m-%d %H:%M:%S UTC").to_string(),
                utc.format("clock %H:%M:%S UTC").to_string(),
            ]
        }
        Err(_) => vec![format!("engine clock {now}")],
    };
    candidates.into_iter().find(|text| text.len() <= room).unwrap_or_default()
}

/// Returns a cell whose text sits at the right edge, for numbers.
pub(crate) fn right<'a>(text: impl Into<String>) -> Cell<'a> {
    Cell::from(Line::from(text.into()).right_aligned())
}

/// Returns the range of rows shown, such as `21-40`, or `0` when there are none.
pub(crate) fn range(first: u64, shown: u64) -> String {
    if shown == 0 {
        "0".to_owned()
    } else {
        format!("{}-{}", grouped(first + 1), grouped(first + shown))
    }
}
