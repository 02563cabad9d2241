//! A circuit breaker per connection. After a run of failed sends it stops the connection's
//! sends for a while, then lets one trial send through. A mailbox that keeps failing is then
//! not hammered by every due follow-up of its tenant.

use chrono::{DateTime, Utc};

/// Settings of every breaker.
#[derive(Clone, Copy, Debug)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker first stays open.
    pub open_for: chrono::Duration,
    /// Maximum time it stays open after repeated failed trials.
    pub max_open_for: chrono::Duration,
}

/// State of one breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Sends flow; counts consecutive failures.
    Closed { failures: u32 },
    /// No send until `until`.
    Open { until: DateTime<Utc> },
    /// One trial send is allowed; its outcome closes or reopens the breaker.
    HalfOpen { trial_in_flight: bool },
}

/// The sends [`CircuitBreaker::admit`] lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerAdmission {
    /// Up to this many sends may go out.
    Allow(u32),
    /// None may until this instant.
    WaitUntil(DateTime<Utc>),
}

/// A change of state worth logging and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened { until: DateTime<Utc>, failures: u32 },
    Closed,
}

#[derive(Clone, Copy, Debug)]
pub struct CircuitBreaker {
    state: BreakerState,
    /// How long the breaker stays open the next time it opens.
    next_open_for: chrono::Duration,
}

impl CircuitBreaker {
    pub fn new(settings: &BreakerSettings) -> Self {
        Self { state: BreakerState::Closed { failures: 0 }, next_open_for: settings.open_for }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Limits `wanted` sends at `now`: all while closed, one trial once the open time is over,
    /// none while open or while the trial is out.
    pub fn admit(&mut self, wanted: u32, now: DateTime<Utc>) -> BreakerAdmission {
        match self.state {
            BreakerState::Closed { .. } => BreakerAdmission::Allow(wanted),
            BreakerState::Open { until } if now < until => BreakerAdmission::WaitUntil(until),
            BreakerState::Open { .. } | BreakerState::HalfOpen { trial_in_flight: false } => {
                if wanted == 0 {
                    return BreakerAdmission::Allow(0);
                }
                self.state = BreakerState::HalfOpen { trial_in_flight: true };
                BreakerAdmission::Allow(1)
            }
            // The trial's outcome decides; until it is known nothing else goes out. A short
            // wait keeps the tenant's round from spinning meanwhile.
            BreakerState::HalfOpen { trial_in_flight: true } => {
                BreakerAdmission::WaitUntil(now + chrono::Duration::seconds(1))
            }
        }
    }

    /// Gives back a trial that was admitted but never sent.
    pub fn release_trial(&mut self) {
        if self.state == (BreakerState::HalfOpen { trial_in_flight: true }) {
            self.state = BreakerState::HalfOpen { trial_in_flight: false };
        }
    }

    /// Records a send that reached the provider and got a definite response.
    pub fn record_success(&mut self, settings: &BreakerSettings) -> Option<Transition> {
        let was_closed = matches!(self.state, BreakerState::Closed { .. });
        self.state = BreakerState::Closed { failures: 0 };
        self.next_open_for = settings.open_for;
        (!was_closed).then_some(Transition::Closed)
    }

    /// Records a failed send (a retryable error or a timeout) at `now`.
    pub fn record_failure(
        &mut self,
        settings: &BreakerSettings,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        let failures = match self.state {
            BreakerState::Closed { failures } => failures + 1,
            // A failed trial reopens at once, for longer.
            BreakerState::HalfOpen { .. } => settings.failure_threshold.max(1),
            // Failures of sends that left before the breaker opened change nothing.
            BreakerState::Open { .. } => return None,
        };
        if failures < settings.failure_threshold.max(1) {
            self.state = BreakerState::Closed { failures };
            return None;
        }
        let until = now + self.next_open_for;
        self.next_open_for = (self.next_open_for * 2).min(settings.max_open_for);
        self.state = BreakerState::Open { until };
        Some(Transition::Opened { until, failures })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: 3,
            open_for: chrono::Duration::seconds(30),
            max_open_for: chrono::Duration::seconds(100),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("valid instant")
            + chrono::Duration::seconds(seconds)
    }

    #[test]
    fn threshold_opens_then_one_trial() {
        let settings = settings();
        let mut breaker = CircuitBreaker::new(&settings);
        assert_eq!(breaker.record_failure(&settings, at(0)), None);
        assert_eq!(breaker.record_failure(&settings, at(1)), None);
        let opened = breaker.record_failure(&settings, at(2));
        assert_eq!(opened, Some(Transition::Opened { until: at(32), failures: 3 }));
        assert_eq!(breaker.admit(10, at(10)), BreakerAdmission::WaitUntil(at(32)));
        assert_eq!(breaker.admit(10, at(32)), BreakerAdmission::Allow(1));
        assert_eq!(breaker.admit(10, at(33)), BreakerAdmission::WaitUntil(at(34)));
        assert_eq!(breaker.record_success(&settings), Some(Transition::Closed));
        assert_eq!(breaker.admit(10, at(34)), BreakerAdmission::Allow(10));
    }

    #[test]
    fn failed_trials_double_open_time() {
        let settings = settings();
        let mut breaker = CircuitBreaker::new(&settings);
        for second in 0..3 {
            breaker.record_failure(&settings, at(second));
        }
        let mut now = at(2);
        let mut open_times = Vec::new();
        for _ in 0..4 {
            let BreakerState::Open { until } = breaker.state() else { panic!("open") };
            assert_eq!(breaker.admit(1, until), BreakerAdmission::Allow(1));
            open_times.push((until - now).num_seconds());
            now = until;
            breaker.record_failure(&settings, now);
        }
        assert_eq!(open_times, [30, 60, 100, 100]);
    }

    #[test]
    fn success_resets_failure_count() {
        let settings = settings();
        let mut breaker = CircuitBreaker::new(&settings);
        breaker.record_failure(&settings, at(0));
        breaker.record_failure(&settings, at(1));
        assert_eq!(breaker.record_success(&settings), None);
        breaker.record_failure(&settings, at(2));
        breaker.record_failure(&settings, at(3));
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 2 });
    }

    #[test]
    fn unsent_trial_is_released() {
        let settings = settings();
        let mut breaker = CircuitBreaker::new(&settings);
        for second in 0..3 {
            breaker.record_failure(&settings, at(second));
        }
        assert_eq!(breaker.admit(1, at(40)), BreakerAdmission::Allow(1));
        breaker.release_trial();
        assert_eq!(breaker.admit(1, at(41)), BreakerAdmission::Allow(1));
    }
}
