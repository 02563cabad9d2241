//! Reading a provider's "try again later" hint: the `Retry-After` header (RFC 9110 §10.2.3)
//! in any of its forms, and the instant Gmail writes into its mail-sending error text.
//!
//! Both parsers are pure: they take the current instant instead of reading a clock, so that a
//! virtual clock gives the same results as the wall clock.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// Maximum wait accepted from a hint. A larger value is more likely a bug than a plan, and it
/// is capped rather than trusted.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(48 * 60 * 60);

/// Parses a `Retry-After` header value into the wait from `now`.
///
/// Accepts delay-seconds (`120`), fractional seconds as Microsoft Graph sends them (`2.128`),
/// and an HTTP-date in any of the three RFC 9110 formats. A date in the past gives a zero wait.
/// Returns `None` for anything else, including negative or non-finite numbers.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }

    // Seconds come first because an HTTP-date never starts with a digit.
    if value.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_seconds(value);
    }

    let instant = httpdate::parse_http_date(value).ok()?;
    Some(wait_until(DateTime::<Utc>::from(instant), now))
}

/// Finds `Retry after <RFC 3339 instant>` in a Gmail error message and returns the wait from
/// `now` until that instant. Gmail writes it into 429 mail-sending errors, for example
/// `User-rate limit exceeded.  Retry after 2024-11-12T11:16:42.247Z (Mail sending)`, and sends
/// no `Retry-After` header with them.
pub fn parse_gmail_retry_after(message: &str, now: DateTime<Utc>) -> Option<Duration> {
    const MARKER: &str = "retry after ";

    let start = message.to_ascii_lowercase().find(MARKER)? + MARKER.len();
    let instant_text = message[start..].split_whitespace().next()?;
    let instant = DateTime::parse_from_rfc3339(instant_text).ok()?;
    Some(wait_until(instant.with_timezone(&Utc), now))
}

/// Parses whole or fractional non-negative seconds.
fn parse_seconds(value: &str) -> Option<Duration> {
    let well_formed = value.chars().all(|c| c.is_ascii_digit() || c == '.')
        && value.matches('.').count() <= 1
        && !value.ends_with('.');
    if !well_formed {
        return None;
    }

    let seconds: f64 = value.parse().ok()?;
    let capped = seconds.min(MAX_RETRY_AFTER.as_secs_f64());
    Duration::try_from_secs_f64(capped).ok()
}

/// Returns the wait from `now` until `instant`, zero if it has passed and at most
/// [`MAX_RETRY_AFTER`].
fn wait_until(instant: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let wait = (instant - now).to_std().unwrap_or(Duration::ZERO);
    wait.min(MAX_RETRY_AFTER)
}

/// Formats `instant` as an HTTP-date (IMF-fixdate), for servers that send one.
pub(crate) fn format_http_date(instant: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(SystemTime::from(instant))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 11, 12, 11, 16, 0).single().expect("valid instant")
    }

    #[test]
    fn whole_seconds() {
        assert_eq!(parse_retry_after("120", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn fractional_seconds_from_graph() {
        assert_eq!(parse_retry_after("2.128", now()), Some(Duration::from_millis(2128)));
        assert_eq!(parse_retry_after("10", now()), Some(Duration::from_secs(10)));
    }

    #[test]
    fn http_date_in_future_and_past() {
        let in_90s = "Tue, 12 Nov 2024 11:17:30 GMT";
        assert_eq!(parse_retry_after(in_90s, now()), Some(Duration::from_secs(90)));

        let past = "Tue, 12 Nov 2024 11:00:00 GMT";
        assert_eq!(parse_retry_after(past, now()), Some(Duration::ZERO));
    }

    #[test]
    fn obsolete_http_date_forms() {
        let rfc850 = "Tuesday, 12-Nov-24 11:16:30 GMT";
        assert_eq!(parse_retry_after(rfc850, now()), Some(Duration::from_secs(30)));

        let asctime = "Tue Nov 12 11:16:30 2024";
        assert_eq!(parse_retry_after(asctime, now()), Some(Duration::from_secs(30)));
    }

    #[test]
    fn malformed_values_are_ignored() {
        for value in ["", "-5", "1.2.3", "5.", "soon", "NaN", "inf", "1e3", "Tue, 99 Nov 2024"] {
            assert_eq!(parse_retry_after(value, now()), None, "value {value:?}");
        }
    }

    #[test]
    fn huge_values_are_capped() {
        let wait = parse_retry_after("99999999999999999999", now());
        assert_eq!(wait, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn gmail_text_with_two_spaces() {
        let message =
            "User-rate limit exceeded.  Retry after 2024-11-12T11:16:42.247Z (Mail sending)";
        assert_eq!(parse_gmail_retry_after(message, now()), Some(Duration::from_millis(42_247)));
    }

    #[test]
    fn gmail_text_in_past_or_missing() {
        let past = "User-rate limit exceeded.  Retry after 2024-11-12T10:00:00Z (Mail sending)";
        assert_eq!(parse_gmail_retry_after(past, now()), Some(Duration::ZERO));

        assert_eq!(parse_gmail_retry_after("Resource has been exhausted", now()), None);
        assert_eq!(parse_gmail_retry_after("Retry after tomorrow", now()), None);
    }

    #[test]
    fn http_date_round_trip() {
        let later = now() + chrono::Duration::seconds(75);
        let header = format_http_date(later);
        assert_eq!(parse_retry_after(&header, now()), Some(Duration::from_secs(75)));
    }
}
