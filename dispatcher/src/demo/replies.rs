//! Replies of `followup demo --replies`: a share of the contacts answer their first email at a
//! random moment, which the demo tells the engine as a stop signal under the virtual clock,
//! and tells the fakes too, so that they count any send that still reached the contact.

use std::collections::{BTreeSet, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use followup_adapters::fakes::FakeProviders;
use followup_core::clock::{Clock, VirtualClock};
use followup_core::domain::Channel;
use followup_core::ids::{ContactId, TenantId};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use super::{DemoClient, expect_ok};
use crate::actors::tenant::earliest;
use crate::server::RunningEngine;

/// Earliest reply after the first email, in seconds: ten minutes.
const MIN_REPLY_DELAY: i64 = 600;
/// Latest reply after the first email, in seconds: five days.
const MAX_REPLY_DELAY: i64 = 5 * 86_400;

/// The replies drawn so far and those still to come.
pub(super) struct Replies {
    fraction: f64,
    rng: StdRng,
    /// Recipients whose first email was seen, lowercase.
    seen: HashSet<String>,
    /// How many of the fakes' receipts were read.
    read: usize,
    /// Replies to come: instant and email address.
    pending: BTreeSet<(DateTime<Utc>, String)>,
    /// Stop signals sent.
    pub(super) sent: u64,
}

impl Replies {
    pub(super) fn new(fraction: f64, seed: u64) -> Self {
        Self {
            fraction,
            rng: StdRng::seed_from_u64(seed),
            seen: HashSet::new(),
            read: 0,
            pending: BTreeSet::new(),
            sent: 0,
        }
    }

    /// Draws, for each first email the fakes received since the last call, whether and when
    /// its recipient replies.
    fn draw(&mut self, fakes: &FakeProviders) {
        let received = fakes.received_from(self.read);
        self.read += received.len();
        for message in received {
            let first = self.seen.insert(message.to.to_lowercase());
            if message.channel != Channel::Email || !first {
                continue;
            }
            if self.rng.random::<f64>() < self.fraction {
                let delay = self.rng.random_range(MIN_REPLY_DELAY..=MAX_REPLY_DELAY);
                let at = message.received_at + chrono::Duration::seconds(delay);
                self.pending.insert((at, message.to));
            }
        }
    }

    fn next_at(&self) -> Option<DateTime<Utc>> {
        self.pending.first().map(|(at, _)| *at)
    }

    /// Removes and returns the replies due at `now`.
    fn take_due(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.pending.first()
            && *at <= now
        {
            if let Some((_, email)) = self.pending.pop_first() {
                due.push(email);
            }
        }
        due
    }
}

/// What the loop needs to send stop signals as the demo tenant.
pub(super) struct Replying<'a> {
    pub(super) client: &'a DemoClient,
    pub(super) api_key: &'a str,
    pub(super) tenant: TenantId,
    pub(super) replies: &'a mut Replies,
}

/// Dispatches under the virtual clock like [`crate::engine::Engine::run_until_settled`], and
/// between rounds sends the stop signal of each reply that has come due, moving the clock to
/// the earliest instant with work or a reply.
pub(super) async fn run_with_replies(
    running: &RunningEngine,
    clock: &VirtualClock,
    deadline: DateTime<Utc>,
    replying: Replying<'_>,
    mut progress: impl FnMut(DateTime<Utc>),
) -> anyhow::Result<()> {
    let Replying { client, api_key, tenant, replies } = replying;
    let fakes = running.fakes()?;
    loop {
        let report = running.engine.run_round().await;
        let now = clock.now();
        progress(now);
        replies.draw(fakes);
        for email in replies.take_due(now) {
            stop(running, fakes, client, api_key, tenant, &email, now).await?;
            replies.sent += 1;
        }
        match earliest(report.next_wake, replies.next_at()) {
            None => return Ok(()),
            Some(next) if next <= now => continue,
            Some(next) if next > deadline => {
                anyhow::bail!("work still waiting at {next}, past the deadline {deadline}")
            }
            Some(next) => clock.advance_to(next),
        }
    }
}

/// Sends the stop signal of the contact with `email` through the API and records the stop of
/// its address and number with the fakes.
async fn stop(
    running: &RunningEngine,
    fakes: &FakeProviders,
    client: &DemoClient,
    api_key: &str,
    tenant: TenantId,
    email: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let response = client
        .http
        .post(format!("{}/v1/contacts/stop", client.base))
        .bearer_auth(api_key)
        .json(&json!({"email": email, "reason": "replied"}))
        .send()
        .await?;
    let answer: serde_json::Value = expect_ok(response, "send a reply's stop signal").await?;
    let ids: Vec<ContactId> = serde_json::from_value(answer["contacts"].clone())
        .context("the stop's answer has no contact list")?;
    for contact in running.engine.store().contacts(tenant, ids).await? {
        let addresses = [contact.email.as_deref(), contact.phone.as_deref()];
        for address in addresses.into_iter().flatten() {
            fakes.record_stop(address, now);
        }
    }
    Ok(())
}
