//! Write operations of the quota usage counters. The writer thread applies one operation at a
//! time, so reading a counter and writing it back is the atomic conditional update that keeps
//! concurrent reservations within the limit.

use followup_core::store::StoreError;
use followup_core::store::usage::{UsageCounter, UsageKey};

use super::{ApplyError, WriteTables, put};
use crate::embedded::keys;
use crate::embedded::tables::{self, USAGE};

impl WriteTables<'_> {
    fn usage_counter(&self, key: &UsageKey) -> Result<UsageCounter, StoreError> {
        let stored = tables::get(&self.usage, USAGE, &keys::usage(key))?;
        Ok(stored.unwrap_or_else(|| UsageCounter::empty(*key)))
    }

    pub(super) fn reserve_usage(
        &mut self,
        key: &UsageKey,
        wanted: u64,
        limit: u64,
    ) -> Result<u64, ApplyError> {
        let mut counter = self.usage_counter(key).map_err(ApplyError::Rejected)?;
        let granted = wanted.min(limit.saturating_sub(counter.taken));
        if granted > 0 {
            counter.taken += granted;
            put(&mut self.usage, USAGE, &keys::usage(key), &counter).map_err(ApplyError::Failed)?;
        }
        Ok(granted)
    }

    pub(super) fn settle_usage(
        &mut self,
        key: &UsageKey,
        committed: u64,
        released: u64,
    ) -> Result<(), ApplyError> {
        let mut counter = self.usage_counter(key).map_err(ApplyError::Rejected)?;
        if released > counter.taken {
            return Err(ApplyError::Rejected(StoreError::Conflict(format!(
                "usage of tenant {} in {} on {}: releasing {released} sends, but only {} are \
                 taken",
                key.tenant, key.period, key.channel, counter.taken
            ))));
        }
        counter.taken -= released;
        counter.committed += committed;
        put(&mut self.usage, USAGE, &keys::usage(key), &counter).map_err(ApplyError::Failed)
    }
}
