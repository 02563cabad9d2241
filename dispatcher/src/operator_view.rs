//! What the operator API shows, kept cheap at any number of tenants.
//!
//! Two sources feed it. [`LiveStats`] holds in-process counters that the provider actors and
//! tenant actors touch as they work (requests in flight, sends, errors and rate-limit waits
//! per second, dispatch lateness over a rolling window, the last failed attempts); updating
//! them costs a lock or an atomic add, and their memory is bounded. [`OverviewCache`] holds the
//! counts that need the store: a background task ([`spawn_refresher`]) reads every follow-up
//! in one pass ([`Store::tally_follow_ups`]) at most every `admin.snapshot_refresh_millis`,
//! and every snapshot, stream event and tenant page is served from its last result. A snapshot
//! is therefore up to one refresh period old; `AdminSnapshot::now` says when it was counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use followup_core::api::{
    AdminSnapshot, FailureRecord, LatenessSummary, PausedItem, QueueSummary, TenantPage,
    TenantSummary,
};
use followup_core::domain::{Channel, FollowUpState, Provider};
use followup_core::ids::TenantId;
use followup_core::store::usage::BillingPeriod;
use followup_core::store::{Store, StoreError};

use crate::config::Plan;

/// The provider queues the operator sees, in display order. Twilio's SMS and calls have
/// separate limits, so they are two queues.
pub const QUEUES: [(Provider, Channel); 4] = [
    (Provider::Gmail, Channel::Email),
    (Provider::Outlook, Channel::Email),
    (Provider::Twilio, Channel::Sms),
    (Provider::Twilio, Channel::Call),
];

fn queue_index(provider: Provider, channel: Channel) -> Option<usize> {
    QUEUES.iter().position(|&queue| queue == (provider, channel))
}

/// Seconds over which the per-second rates are averaged.
const RATE_WINDOW_SECONDS: u64 = 5;
/// Per-second slots kept for rates: the window plus the second being filled.
const RATE_SLOTS: usize = RATE_WINDOW_SECONDS as usize + 1;
/// Lateness window: `LATENESS_SLOTS` slots of `LATENESS_SLOT_SECONDS` each (five minutes).
const LATENESS_SLOT_SECONDS: u64 = 10;
const LATENESS_SLOTS: usize = 30;
/// Bucket bounds grow by 10% from 1 ms; 200 buckets reach past a day and a half.
const LATENESS_GROWTH: f64 = 1.1;
const LATENESS_BUCKETS: usize = 200;
/// Failed attempts kept for the snapshot and the tenant detail.
pub const FAILURES_KEPT: usize = 200;
/// Longest failure reason shown, in characters.
const REASON_CHARS: usize = 160;

/// Counters of one second, for rates.
#[derive(Clone, Copy, Debug, Default)]
struct RateSlot {
    second: u64,
    sends: u64,
    errors: u64,
    waits: u64,
}

/// Live counters of one provider queue.
#[derive(Debug, Default)]
struct QueueStats {
    in_flight: AtomicI64,
    slots: Mutex<[RateSlot; RATE_SLOTS]>,
}

/// Which per-second counter an event adds to.
#[derive(Clone, Copy, Debug)]
pub enum QueueEvent {
    Send,
    Error,
    RateLimitWait,
}

/// One slot of the lateness window: a log-bucket histogram of the sends handed over in it.
#[derive(Clone, Debug)]
struct LatenessSlot {
    /// Index of the slot's period since the start; stale slots are reset on reuse.
    period: u64,
    buckets: [u32; LATENESS_BUCKETS],
    count: u64,
    max_ms: u64,
}

impl Default for LatenessSlot {
    fn default() -> Self {
        Self { period: u64::MAX, buckets: [0; LATENESS_BUCKETS], count: 0, max_ms: 0 }
    }
}

fn lateness_bucket(millis: u64) -> usize {
    if millis == 0 {
        return 0;
    }
    let index = ((millis as f64).ln() / LATENESS_GROWTH.ln()).ceil() as usize + 1;
    index.min(LATENESS_BUCKETS - 1)
}

fn lateness_upper_bound(index: usize) -> u64 {
    if index == 0 {
        return 0;
    }
    LATENESS_GROWTH.powi(index as i32 - 1).ceil() as u64
}

/// In-process counters the actors update as they work, read by the operator API.
#[derive(Debug)]
pub struct LiveStats {
    started: Instant,
    queues: [QueueStats; 4],
    lateness: Mutex<Vec<LatenessSlot>>,
    failures: Mutex<VecDeque<FailureRecord>>,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            queues: Default::default(),
            lateness: Mutex::new(vec![LatenessSlot::default(); LATENESS_SLOTS]),
            failures: Mutex::new(VecDeque::with_capacity(FAILURES_KEPT)),
        }
    }
}

impl LiveStats {
    fn seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Adds `change` (1 or -1) to the requests in flight of the queue.
    pub fn in_flight(&self, provider: Provider, channel: Channel, change: i64) {
        if let Some(index) = queue_index(provider, channel) {
            self.queues[index].in_flight.fetch_add(change, Ordering::Relaxed);
        }
    }

    pub fn count(&self, provider: Provider, channel: Channel, event: QueueEvent) {
        let Some(index) = queue_index(provider, channel) else { return };
        self.count_at(index, event, self.seconds());
    }

    fn count_at(&self, index: usize, event: QueueEvent, second: u64) {
        let mut slots = self.queues[index].slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut slots[(second % RATE_SLOTS as u64) as usize];
        if slot.second != second {
            *slot = RateSlot { second, ..RateSlot::default() };
        }
        match event {
            QueueEvent::Send => slot.sends += 1,
            QueueEvent::Error => slot.errors += 1,
            QueueEvent::RateLimitWait => slot.waits += 1,
        }
    }

    /// Records a send handed to a provider `millis` after its planned instant.
    pub fn record_lateness(&self, millis: u64) {
        self.record_lateness_at(millis, self.seconds());
    }

    fn record_lateness_at(&self, millis: u64, second: u64) {
        let period = second / LATENESS_SLOT_SECONDS;
        let mut slots = self.lateness.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut slots[(period % LATENESS_SLOTS as u64) as usize];
        if slot.period != period {
            *slot = LatenessSlot { period, ..LatenessSlot::default() };
        }
        slot.buckets[lateness_bucket(millis)] += 1;
        slot.count += 1;
        slot.max_ms = slot.max_ms.max(millis);
    }

    /// Keeps a failed attempt; the oldest goes once [`FAILURES_KEPT`] are kept. The reason is
    /// scrubbed of addresses, numbers and tokens first.
    pub fn record_failure(&self, mut failure: FailureRecord) {
        failure.reason = scrub_reason(&failure.reason);
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() == FAILURES_KEPT {
            failures.pop_back();
        }
        failures.push_front(failure);
    }

    /// The kept failures, newest first, of one tenant or all.
    pub fn failures(&self, tenant: Option<TenantId>, limit: usize) -> Vec<FailureRecord> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures
            .iter()
            .filter(|failure| tenant.is_none_or(|wanted| failure.tenant == wanted))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn lateness(&self) -> LatenessSummary {
        self.lateness_at(self.seconds())
    }

    fn lateness_at(&self, second: u64) -> LatenessSummary {
        let current = second / LATENESS_SLOT_SECONDS;
        let oldest = current.saturating_sub(LATENESS_SLOTS as u64 - 1);
        let slots = self.lateness.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buckets = [0_u64; LATENESS_BUCKETS];
        let (mut samples, mut max_ms) = (0_u64, 0_u64);
        for slot in slots.iter().filter(|slot| slot.period >= oldest && slot.period <= current) {
            for (total, &n) in buckets.iter_mut().zip(&slot.buckets) {
                *total += u64::from(n);
            }
            samples += slot.count;
            max_ms = max_ms.max(slot.max_ms);
        }
        let quantile = |q: f64| {
            if samples == 0 {
                return 0;
            }
            let rank = ((q * samples as f64).ceil() as u64).clamp(1, samples);
            let mut seen = 0;
            for (index, &n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return lateness_upper_bound(index).min(max_ms);
                }
            }
            max_ms
        };
        LatenessSummary {
            window_seconds: LATENESS_SLOT_SECONDS * LATENESS_SLOTS as u64,
            samples,
            p50_ms: quantile(0.5),
            p90_ms: quantile(0.9),
            p99_ms: quantile(0.99),
            max_ms,
        }
    }

    /// Fills the live fields of each queue: in flight now, rates over the last complete
    /// seconds.
    fn fill_queue(&self, index: usize, queue: &mut QueueSummary) {
        let stats = &self.queues[index];
        queue.in_flight = u64::try_from(stats.in_flight.load(Ordering::Relaxed)).unwrap_or(0);
        let now = self.seconds();
        let first = now.saturating_sub(RATE_WINDOW_SECONDS);
        let slots = stats.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut sends, mut errors, mut waits) = (0, 0, 0);
        for slot in slots.iter().filter(|slot| slot.second >= first && slot.second < now) {
            sends += slot.sends;
            errors += slot.errors;
            waits += slot.waits;
        }
        // Early on fewer than a whole window of seconds has passed.
        let seconds = now.clamp(1, RATE_WINDOW_SECONDS) as f64;
        queue.sends_per_s = sends as f64 / seconds;
        queue.errors_per_s = errors as f64 / seconds;
        queue.rate_limit_waits_per_s = waits as f64 / seconds;
    }
}

/// Shortens a provider's error text and removes what could name a person or open an account:
/// words with `@` (addresses), runs of 7 or more digits (phone numbers), and long tokens of
/// letters and digits (access tokens, message ids).
pub fn scrub_reason(reason: &str) -> String {
    let mut words = Vec::new();
    for word in reason.split_whitespace() {
        let digits = word.chars().filter(char::is_ascii_digit).count();
        let token_like = word.len() >= 24
            && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_.=/+".contains(c));
        words.push(if word.contains('@') {
            "[address]"
        } else if digits >= 7 {
            "[number]"
        } else if token_like {
            "[token]"
        } else {
            word
        });
    }
    let joined = words.join(" ");
    match joined.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// Everything a snapshot needs from the store, counted in one refresher pass.
#[derive(Debug, Default)]
pub struct Overview {
    /// When the pass counted, on the engine clock.
    pub at: DateTime<Utc>,
    pub totals: BTreeMap<String, u64>,
    /// Per entry of [`QUEUES`]: waiting, due, sent, failed.
    pub queues: Vec<QueueSummary>,
    /// Email follow-ups of tenants without an email connection, which no queue carries.
    pub unrouted: Option<QueueSummary>,
    /// Every tenant, largest backlog first.
    pub tenants: Vec<TenantSummary>,
    /// Follow-ups per state of each tenant.
    pub states: HashMap<TenantId, BTreeMap<String, u64>>,
    pub paused: Vec<PausedItem>,
    /// Time the pass took.
    pub took: Duration,
    /// When the pass ended, for the age of the cached result.
    pub counted: Option<Instant>,
}

/// The last [`Overview`], shared by the refresher and the API.
#[derive(Debug, Default)]
pub struct OverviewCache {
    current: RwLock<Arc<Overview>>,
    /// When an operator last read the overview (snapshot, stream, pages); the refresher
    /// counts only while someone reads, so an unwatched node puts no load on the store.
    last_read: Mutex<Option<Instant>>,
}

/// How long after the last read the refresher keeps counting.
pub const REFRESH_WHILE_READ_WITHIN: Duration = Duration::from_secs(30);

impl OverviewCache {
    /// Returns the last overview and notes the read, which keeps the refresher counting.
    pub fn get(&self) -> Arc<Overview> {
        *self.last_read.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.peek()
    }

    /// Returns the last overview without noting a read (for `/metrics`, which would otherwise
    /// keep the refresher busy on a node nobody watches).
    pub fn peek(&self) -> Arc<Overview> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set(&self, overview: Overview) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(overview);
    }

    /// Whether the cached overview was counted less than `age` ago.
    pub fn is_fresh(&self, age: Duration) -> bool {
        self.peek().counted.is_some_and(|counted| counted.elapsed() < age)
    }

    fn read_recently(&self) -> bool {
        let last_read = *self.last_read.lock().unwrap_or_else(PoisonError::into_inner);
        last_read.is_some_and(|at| at.elapsed() < REFRESH_WHILE_READ_WITHIN)
    }
}

/// Counts everything the overview needs: one tally of the follow-ups, the connection
/// statuses, the tenants and this period's usage counters. Four reads, whatever the number of
/// tenants.
pub async fn count_overview(
    store: &dyn Store,
    plans: &BTreeMap<String, Plan>,
    now: DateTime<Utc>,
) -> Result<Overview, StoreError> {
    let started = Instant::now();
    let tally = store.tally_follow_ups(now).await?;
    let statuses = store.connection_statuses().await?;
    let tenants = store.tenants().await?;
    let period = BillingPeriod::containing(now);
    let usage = store.usage(None, period.to_string()).await?;

    // Email goes through the first of the tenant's connections that carries it, in provider
    // order, as dispatch picks it.
    let mut email_provider: HashMap<TenantId, Provider> = HashMap::new();
    let mut paused_connections: HashMap<TenantId, Vec<(Provider, String)>> = HashMap::new();
    let mut sorted_statuses = statuses;
    sorted_statuses.sort_by_key(|status| (status.tenant, status.provider.as_str()));
    for status in sorted_statuses {
        if status.provider.carries(Channel::Email) {
            email_provider.entry(status.tenant).or_insert(status.provider);
        }
        if let Some(reason) = status.paused_reason {
            paused_connections.entry(status.tenant).or_default().push((status.provider, reason));
        }
    }

    let mut totals = BTreeMap::new();
    let mut queues: Vec<QueueSummary> = QUEUES
        .iter()
        .map(|(provider, channel)| QueueSummary {
            channel: channel.as_str().to_owned(),
            provider: provider.as_str().to_owned(),
            ..QueueSummary::default()
        })
        .collect();
    let mut unrouted = QueueSummary {
        channel: Channel::Email.as_str().to_owned(),
        provider: "none".to_owned(),
        ..QueueSummary::default()
    };
    let mut states: HashMap<TenantId, BTreeMap<String, u64>> = HashMap::new();
    for group in &tally {
        *totals.entry(group.state.as_str().to_owned()).or_insert(0) += group.count;
        *states
            .entry(group.tenant)
            .or_default()
            .entry(group.state.as_str().to_owned())
            .or_insert(0) += group.count;
        let queue = match group.channel {
            Channel::Email => match email_provider.get(&group.tenant) {
                Some(&provider) => queue_index(provider, Channel::Email).map(|i| &mut queues[i]),
                None => Some(&mut unrouted),
            },
            channel => queue_index(Provider::Twilio, channel).map(|i| &mut queues[i]),
        };
        let Some(queue) = queue else { continue };
        match group.state {
            FollowUpState::Pending | FollowUpState::Retry => {
                queue.waiting += group.count;
                queue.due += group.due;
            }
            FollowUpState::Sent => queue.sent += group.count,
            FollowUpState::Failed | FollowUpState::Dead => queue.failed += group.count,
            _ => {}
        }
    }

    let state_count = |tenant: TenantId, wanted: &[FollowUpState]| -> u64 {
        states.get(&tenant).map_or(0, |counts| {
            wanted.iter().map(|state| counts.get(state.as_str()).copied().unwrap_or(0)).sum()
        })
    };
    let mut usage_by_tenant: HashMap<TenantId, Vec<(Channel, u64)>> = HashMap::new();
    for counter in usage {
        usage_by_tenant.entry(counter.tenant).or_default().push((counter.channel, counter.taken));
    }
    let mut summaries = Vec::with_capacity(tenants.len());
    let mut paused = Vec::new();
    for tenant in tenants {
        let quota_used_percent = plans.get(&tenant.plan).map(|plan| {
            let shares =
                usage_by_tenant.get(&tenant.id).into_iter().flatten().map(|&(channel, taken)| {
                    let limit = plan.monthly(channel).max(1);
                    (u128::from(taken) * 100 / u128::from(limit)).min(100)
                });
            u8::try_from(shares.max().unwrap_or(0)).unwrap_or(100)
        });
        if let Some(pause) = &tenant.paused {
            paused.push(PausedItem {
                tenant: tenant.id,
                tenant_name: tenant.name.clone(),
                provider: None,
                reason: format!("operator: paused by {}", pause.by),
                since: Some(pause.since),
            });
        }
        let tenant_paused = paused_connections.remove(&tenant.id).unwrap_or_default();
        for (provider, reason) in &tenant_paused {
            paused.push(PausedItem {
                tenant: tenant.id,
                tenant_name: tenant.name.clone(),
                provider: Some(provider.as_str().to_owned()),
                reason: scrub_reason(reason),
                since: None,
            });
        }
        summaries.push(TenantSummary {
            id: tenant.id,
            backlog: state_count(tenant.id, &[FollowUpState::Pending, FollowUpState::Retry]),
            sent: state_count(tenant.id, &[FollowUpState::Sent]),
            failed: state_count(tenant.id, &[FollowUpState::Failed, FollowUpState::Dead]),
            held: state_count(tenant.id, &[FollowUpState::Held]),
            dead: state_count(tenant.id, &[FollowUpState::Dead]),
            paused_connections: tenant_paused
                .iter()
                .map(|(provider, reason)| format!("{provider}: {}", scrub_reason(reason)))
                .collect(),
            quota_used_percent,
            paused_reason: tenant.paused.as_ref().map(|_| "operator".to_owned()),
            name: tenant.name,
            plan: tenant.plan,
        });
    }
    summaries.sort_by(|a, b| b.backlog.cmp(&a.backlog).then_with(|| a.name.cmp(&b.name)));
    Ok(Overview {
        at: now,
        totals,
        queues,
        unrouted: (unrouted.waiting + unrouted.sent + unrouted.failed > 0).then_some(unrouted),
        tenants: summaries,
        states,
        paused,
        took: started.elapsed(),
        counted: Some(Instant::now()),
    })
}

/// Orders of a tenant page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantSort {
    /// Largest backlog first: the overview's own order.
    Backlog,
    /// By name, ignoring case.
    Name,
    /// Most failed first.
    Failed,
    /// Highest share of quota used first.
    Quota,
}

/// One page of the overview's tenants whose id or name contains `filter` (ignoring case),
/// sorted by `sort`. Sorts references, never copies a summary outside the page.
pub fn tenant_page(
    overview: &Overview,
    sort: TenantSort,
    filter: &str,
    offset: u64,
    limit: u64,
) -> TenantPage {
    let filter = filter.to_lowercase();
    let mut matching: Vec<&TenantSummary> = overview
        .tenants
        .iter()
        .filter(|tenant| {
            filter.is_empty()
                || tenant.name.to_lowercase().contains(&filter)
                || tenant.id.to_string().contains(&filter)
        })
        .collect();
    match sort {
        TenantSort::Backlog => {}
        TenantSort::Name => {
            matching.sort_by_cached_key(|tenant| (tenant.name.to_lowercase(), tenant.id));
        }
        TenantSort::Failed => {
            matching.sort_by(|a, b| b.failed.cmp(&a.failed).then_with(|| a.name.cmp(&b.name)));
        }
        TenantSort::Quota => matching.sort_by(|a, b| {
            b.quota_used_percent.cmp(&a.quota_used_percent).then_with(|| a.name.cmp(&b.name))
        }),
    }
    let total = u64::try_from(matching.len()).unwrap_or(u64::MAX);
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = usize::try_from(limit).unwrap_or(usize::MAX);
    let tenants = matching.into_iter().skip(skip).take(take).cloned().collect();
    TenantPage { total, offset, tenants }
}

/// Tenants a snapshot lists; `GET /admin/v1/tenant-summaries` pages through the rest.
pub const SNAPSHOT_TENANTS: usize = 50;
/// Failures a snapshot lists.
pub const SNAPSHOT_FAILURES: usize = 20;

/// Builds a snapshot from the cached overview and the live counters. No store work.
pub fn snapshot(overview: &Overview, live: &LiveStats, node: &str) -> AdminSnapshot {
    let mut queues = overview.queues.clone();
    for (index, queue) in queues.iter_mut().enumerate() {
        live.fill_queue(index, queue);
    }
    queues.extend(overview.unrouted.clone());
    AdminSnapshot {
        now: overview.at.to_rfc3339(),
        node: node.to_owned(),
        totals: overview.totals.clone(),
        queues,
        tenants: overview.tenants.iter().take(SNAPSHOT_TENANTS).cloned().collect(),
        tenant_count: u64::try_from(overview.tenants.len()).unwrap_or(u64::MAX),
        lateness: live.lateness(),
        recent_failures: live.failures(None, SNAPSHOT_FAILURES),
        dead_letters: overview.totals.get(FollowUpState::Dead.as_str()).copied().unwrap_or(0),
        paused: overview.paused.clone(),
    }
}

/// Runs [`count_overview`] every `period` while the actix system runs and an operator read
/// the overview within [`REFRESH_WHILE_READ_WITHIN`], keeping the last result in the engine's
/// cache. A failed pass keeps the previous result and is logged once per failure streak.
pub fn spawn_refresher(engine: Arc<crate::engine::Engine>, period: Duration) {
    actix::spawn(async move {
        let mut failing = false;
        loop {
            if !engine.overview().read_recently() {
                tokio::time::sleep(period).await;
                continue;
            }
            let now = engine.clock().now();
            let store = engine.store().clone();
            match count_overview(store.as_ref(), &engine.config().plans, now).await {
                Ok(overview) => {
                    if failing {
                        tracing::info!("operator overview counts again");
                        failing = false;
                    }
                    tracing::debug!(took_ms = overview.took.as_millis() as u64, "overview counted");
                    engine.overview().set(overview);
                }
                Err(error) if !failing => {
                    tracing::warn!(%error, "operator overview count failed; serving the last one");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(period).await;
        }
    });
}

#[cfg(test)]
mod tests;
