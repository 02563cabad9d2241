//! Stops and suppression in the tenant actor: the cancellation of a stopped contact's
//! schedules, and the check of each send against the suppression list just before its
//! request leaves.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use followup_core::domain::{FollowUp, FollowUpState};
use followup_core::ids::ScheduleId;
use followup_core::suppression::{
    Suppression, SuppressionKind, SuppressionReason, SuppressionScope,
};

use super::{DispatchError, Sendable, TenantActor, TenantRound, settle};

/// How long a tenant's suppression scope is used before it is read again, in wall time.
const SCOPE_READ_EVERY: Duration = Duration::from_secs(5);

/// Cancels every follow-up of the schedules that has not left yet, with `reason`, and returns
/// how many. Runs alone in the actor like a round, so a round never writes back a follow-up
/// cancelled while the round held it. Schedules that do not exist are passed over.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, DispatchError>")]
pub struct CancelSchedules {
    pub schedules: Vec<ScheduleId>,
    pub reason: String,
    pub now: DateTime<Utc>,
}

impl Handler<CancelSchedules> for TenantActor {
    type Result = AtomicResponse<Self, Result<usize, DispatchError>>;

    fn handle(&mut self, msg: CancelSchedules, _: &mut Self::Context) -> Self::Result {
        let round = self.round.clone();
        let cancel = async move { round.cancel(&msg.schedules, &msg.reason, msg.now).await };
        AtomicResponse::new(Box::pin(cancel.into_actor(self)))
    }
}

impl TenantRound {
    /// Adds the numbers Twilio refused because their owners opted out (error 21610) to the
    /// suppression list, so that no later SMS or call is tried, and logs how many.
    pub(super) async fn suppress_opted_out(
        &self,
        numbers: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(), DispatchError> {
        if numbers.is_empty() {
            return Ok(());
        }
        let count = numbers.len();
        let reason = SuppressionReason::ProviderOptOut;
        let entries = numbers
            .into_iter()
            .map(|number| {
                Suppression::new(self.tenant, SuppressionKind::Phone, number, reason, now)
            })
            .collect();
        self.deps.store.put_suppressions(self.tenant, entries).await?;
        tracing::info!(tenant = %self.tenant, count, "numbers that opted out added to the suppression list");
        Ok(())
    }

    /// Returns the tenant's suppression scope; the default when the tenant record is gone.
    /// It is read again at most every [`SCOPE_READ_EVERY`], which saves a store read per round:
    /// a changed setting therefore applies within that time.
    pub(super) async fn suppression_scope(&self) -> Result<SuppressionScope, DispatchError> {
        let cached = *self.scope.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((scope, read_at)) = cached
            && read_at.elapsed() < SCOPE_READ_EVERY
        {
            return Ok(scope);
        }
        let tenant = self.deps.store.tenant(self.tenant).await?;
        let scope = tenant.map(|tenant| tenant.suppression_scope).unwrap_or_default();
        *self.scope.lock().unwrap_or_else(PoisonError::into_inner) = Some((scope, Instant::now()));
        Ok(scope)
    }

    /// Moves every follow-up of `sendable` that a suppression entry stops to `settled`: a
    /// stopped contact's as cancelled, a suppressed address's as skipped. Returns how many.
    pub(super) async fn hold_back_suppressed(
        &self,
        sendable: &mut Vec<Sendable>,
        settled: &mut Vec<FollowUp>,
        now: DateTime<Utc>,
    ) -> Result<usize, DispatchError> {
        let mut keys: Vec<String> =
            sendable.iter().flat_map(|item| item.stop_keys.iter().cloned()).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        keys.sort_unstable();
        keys.dedup();
        let entries = self.deps.store.suppressions(self.tenant, keys).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let by_key: HashMap<&str, &Suppression> =
            entries.iter().map(|entry| (entry.key.as_str(), entry)).collect();
        let before = sendable.len();
        sendable.retain_mut(|item| {
            let Some(entry) = item.stop_keys.iter().find_map(|key| by_key.get(key.as_str())) else {
                return true;
            };
            let state = if entry.kind == SuppressionKind::Contact {
                FollowUpState::Cancelled
            } else {
                FollowUpState::Skipped
            };
            let mut follow_up = item.follow_up.clone();
            settle(&mut follow_up, state, entry.follow_up_reason(), now);
            settled.push(follow_up);
            false
        });
        Ok(before - sendable.len())
    }
}
