//! The clock every scheduling decision reads: the system clock in production, a virtual clock
//! in tests and in `followup demo`, which compresses days into seconds.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};

/// A source of the current instant.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Whether time moves only when the owner advances it. A virtual clock lets the engine
    /// jump to the next due instant instead of sleeping.
    fn is_virtual(&self) -> bool {
        false
    }
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is advanced. Microsecond resolution.
#[derive(Debug)]
pub struct VirtualClock {
    micros: AtomicI64,
}

impl VirtualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { micros: AtomicI64::new(start.timestamp_micros()) }
    }

    /// Moves the clock to `instant` if that is later than now; the clock never goes back.
    pub fn advance_to(&self, instant: DateTime<Utc>) {
        self.micros.fetch_max(instant.timestamp_micros(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `duration`.
    pub fn advance(&self, duration: chrono::Duration) {
        let delta = duration.num_microseconds().unwrap_or(i64::MAX);
        self.micros.fetch_add(delta, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        let micros = self.micros.load(Ordering::SeqCst);
        Utc.timestamp_micros(micros).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn is_virtual(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_never_goes_back() {
        let start = Utc.with_ymd_and_hms(2026, 3, 8, 6, 0, 0).single().expect("valid instant");
        let clock = VirtualClock::new(start);
        clock.advance(chrono::Duration::seconds(90));
        assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
        clock.advance_to(start);
        assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
        assert!(clock.is_virtual());
    }
}
