//! Quota usage counters: per tenant, billing period and channel, how many sends the engine
//! nodes have taken from the plan's quota and how many of those were committed.
//!
//! `taken` grows by an atomic conditional add that never passes the plan's limit, so nodes
//! that reserve for the same tenant at once can never overspend it together. A reservation is
//! later committed (the send went out, or may have) or released (it did not go out), and a
//! release gives its sends back to `taken`. Sends reserved by a node that stopped before it
//! committed or released them stay taken: the tenant can then get less than its quota for
//! that period, never more.

use chrono::{DateTime, Datelike as _, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Channel;
use crate::ids::TenantId;

/// A billing period: one calendar month in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BillingPeriod {
    year: i32,
    month: u32,
}

impl BillingPeriod {
    /// Returns the period that contains `instant`.
    pub fn containing(instant: DateTime<Utc>) -> BillingPeriod {
        BillingPeriod { year: instant.year(), month: instant.month() }
    }

    /// Returns the first instant of the period.
    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Returns the period after this one.
    pub fn next(self) -> BillingPeriod {
        if self.month == 12 {
            BillingPeriod { year: self.year + 1, month: 1 }
        } else {
            BillingPeriod { year: self.year, month: self.month + 1 }
        }
    }

    /// Returns the first instant after the period.
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }

    /// Parses the `YYYY-MM` form that [`fmt::Display`](std::fmt::Display) writes.
    pub fn parse(text: &str) -> Result<BillingPeriod, String> {
        let invalid =
            || format!("invalid billing period {text:?}: expected YYYY-MM, such as 2026-01");
        let (year, month) = text.split_once('-').ok_or_else(invalid)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(invalid());
        }
        let year: i32 = year.parse().map_err(|_| invalid())?;
        let month: u32 = month.parse().map_err(|_| invalid())?;
        if !(1..=12).contains(&month) {
            return Err(invalid());
        }
        Ok(BillingPeriod { year, month })
    }
}

impl std::fmt::Display for BillingPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The counter a reservation, commit or release applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub tenant: TenantId,
    pub period: BillingPeriod,
    pub channel: Channel,
}

/// A quota usage counter as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounter {
    pub tenant: TenantId,
    /// The billing period, `YYYY-MM`.
    pub period: String,
    pub channel: Channel,
    /// Sends reserved from the quota, committed ones included.
    pub taken: u64,
    /// Sends that went out, or may have (in doubt), of those taken.
    pub committed: u64,
}

impl UsageCounter {
    /// Returns an empty counter for `key`.
    pub fn empty(key: UsageKey) -> UsageCounter {
        UsageCounter {
            tenant: key.tenant,
            period: key.period.to_string(),
            channel: key.channel,
            taken: 0,
            committed: 0,
        }
    }

    /// Sends reserved and not yet committed or released.
    pub fn reserved(&self) -> u64 {
        self.taken.saturating_sub(self.committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_display_parse_and_bounds() {
        let instant = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).single().expect("instant");
        let period = BillingPeriod::containing(instant);
        assert_eq!(period.to_string(), "2026-12");
        assert_eq!(BillingPeriod::parse("2026-12"), Ok(period));
        assert_eq!(period.next().to_string(), "2027-01");
        assert_eq!(period.end(), period.next().start());
        assert!(period.start() <= instant && instant < period.end());
    }

    #[test]
    fn period_parse_rejects_bad_text() {
        for text in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00"] {
            let error = BillingPeriod::parse(text).expect_err(text);
            assert!(error.contains("YYYY-MM"), "{error}");
        }
    }
}
