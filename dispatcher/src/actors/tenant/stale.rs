//! The stale-send guard: a follow-up found later than its step's maximum lateness, after an
//! outage or a pause, is skipped or planned again into the next opening of the send window,
//! under its sequence's [`StalePolicy`], instead of going out at once at the wrong hour.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use followup_core::domain::{FollowUp, FollowUpState, StalePolicy};
use followup_core::plan::replan_steps;

use super::{DispatchError, TenantRound, settle};

impl TenantRound {
    /// Handles the stale follow-ups of `due`: skipped ones and ones planned later leave `due`,
    /// and ones planned again into a window open now stay. Writes every change, the later steps
    /// of replanned schedules included, and returns how many follow-ups it wrote.
    ///
    /// NOTE: only the later steps on the follow-up's own channel shift with it. The other
    /// channels of the tenant run at the same moment, and this write is not conditional on a
    /// follow-up's state, so rewriting their steps could put back to pending one that another
    /// channel is sending. Their steps keep their plan, and the guard handles each when it
    /// comes due late.
    pub(super) async fn guard_stale(
        &self,
        due: &mut Vec<FollowUp>,
        now: DateTime<Utc>,
    ) -> Result<usize, DispatchError> {
        let mut stale = Vec::new();
        let mut kept = Vec::with_capacity(due.len());
        for follow_up in due.drain(..) {
            match self.lateness_limit(&follow_up).await? {
                Some(limit) if now - follow_up.planned_at > limit => stale.push(follow_up),
                _ => kept.push(follow_up),
            }
        }
        *due = kept;
        if stale.is_empty() {
            return Ok(0);
        }
        let contact_ids = stale.iter().map(|follow_up| follow_up.contact).collect();
        let contacts = self.deps.store.contacts(self.tenant, contact_ids).await?;
        let zones: HashMap<_, _> =
            contacts.into_iter().map(|contact| (contact.id, contact.timezone)).collect();

        // Earlier steps first, so that a schedule is planned again from its earliest stale
        // step, and its later stale steps are left to that plan.
        stale.sort_by_key(|follow_up| (follow_up.id.schedule, follow_up.id.step));
        let mut replanned = std::collections::HashSet::new();
        let mut shifted = std::collections::HashSet::new();
        let mut written = Vec::new();
        for mut follow_up in stale {
            if replanned.contains(&follow_up.id.schedule) {
                continue;
            }
            let Some(Ok(sequence)) = self.sequence(follow_up.sequence).await? else { continue };
            let late = now - follow_up.planned_at;
            if sequence.source.stale_policy == StalePolicy::Skip {
                let reason = format!(
                    "stale: {} minutes past its planned instant, over the step's maximum lateness",
                    late.num_minutes()
                );
                settle(&mut follow_up, FollowUpState::Skipped, reason, now);
                written.push(follow_up);
                continue;
            }
            let tz = zones
                .get(&follow_up.contact)
                .and_then(|name| name.parse().ok())
                .unwrap_or(chrono_tz::UTC);
            let step = usize::from(follow_up.id.step);
            let steps = sequence.source.steps.get(step..).unwrap_or_default();
            let planned = replan_steps(now, tz, steps, &sequence.source.window);
            let schedule = follow_up.id.schedule;
            replanned.insert(schedule);
            let later = self.deps.store.follow_ups_of_schedule(self.tenant, schedule).await?;
            for mut other in later {
                let offset = usize::from(other.id.step).checked_sub(step);
                let instant = offset.and_then(|offset| planned.get(offset));
                if other.id.step > follow_up.id.step
                    && other.channel == follow_up.channel
                    && other.state.is_due_kind()
                    && let Some(instant) = instant
                {
                    shifted.insert(other.id);
                    other.due_at = *instant;
                    other.planned_at = *instant;
                    other.updated_at = now;
                    written.push(other);
                }
            }
            let Some(first) = planned.first() else { continue };
            follow_up.due_at = *first;
            follow_up.planned_at = *first;
            follow_up.updated_at = now;
            follow_up.reason = Some(format!(
                "planned again: it was {} minutes late, over the step's maximum lateness",
                late.num_minutes()
            ));
            if *first <= now {
                // The window is open: it goes out in this round, written with the others.
                due.push(follow_up.clone());
            }
            written.push(follow_up);
        }
        // A later step shifted above may also be in this round's batch, as a copy read before
        // the shift: it must not go out now.
        due.retain(|follow_up| !shifted.contains(&follow_up.id));
        let count = written.len();
        if count > 0 {
            self.write_follow_ups(written, Vec::new()).await?;
        }
        Ok(count)
    }

    /// Returns the maximum lateness of the follow-up's step, if it has one.
    async fn lateness_limit(
        &self,
        follow_up: &FollowUp,
    ) -> Result<Option<chrono::Duration>, DispatchError> {
        let Some(Ok(sequence)) = self.sequence(follow_up.sequence).await? else {
            return Ok(None);
        };
        let step = sequence.source.steps.get(usize::from(follow_up.id.step));
        let seconds = step.and_then(|step| step.max_lateness_seconds);
        Ok(seconds.and_then(|seconds| chrono::Duration::try_seconds(i64::try_from(seconds).ok()?)))
    }
}
