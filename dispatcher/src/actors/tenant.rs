//! Tenant actors: one per tenant, owning the dispatch of its due follow-ups.
//!
//! A dispatch round takes, per channel, a batch of due follow-ups from the store; settles at
//! once those that cannot be sent (no address, no connection, template field missing, quota
//! used up); asks the provider actor how many of the rest may go out now; records those as
//! sending, durably, before any request leaves; hands them over; and writes every outcome
//! back. Rounds of one tenant never overlap, because a follow-up must not be taken twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use followup_core::api::FailureRecord;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use followup_adapters::outbound::{OutboundMessage, SendOutcome};
use followup_core::domain::{
    Attempt, Channel, Connection, Contact, FollowUp, FollowUpState, Provider, SentMessage, Sequence,
};
use followup_core::ids::{FollowUpId, ScheduleId, SequenceId, TenantId};
use followup_core::limits::ConnectionLimits;
use followup_core::store::subscription::{BillingStanding, standing_of};
use followup_core::store::usage::BillingPeriod;
use followup_core::store::{Store, StoreError};
use followup_core::suppression::keys_stopping;
use followup_core::template::{Template, escape_html};
use rand::Rng as _;

use super::billing::{BillingActor, Reservation, Reserve, Settle};
use super::provider::{Admit, Deliver, ProviderActor, Refund};
use crate::cluster::TenantLease;
use crate::config::{DispatchConfig, OverQuota};
use crate::lifecycle::SendGate;
use crate::telemetry::{self, LatenessHistogram};
use crate::tokens::{TokenKeeper, TokenStatus};

/// Reason recorded on follow-ups cancelled through the API.
const CANCELLED_REASON: &str = "schedule cancelled by the tenant";

/// Words of every reason given to a follow-up skipped or held for quota.
const QUOTA_REASON_MARK: &str = "quota of plan";

/// Returns whether a follow-up's reason says it was skipped or held for quota.
pub fn is_quota_reason(reason: &str) -> bool {
    reason.contains(QUOTA_REASON_MARK)
}

/// Follow-ups read per page while looking for held ones.
const HELD_SCAN_PAGE: usize = 1_000;

mod stale;
mod stops;

pub use stops::CancelSchedules;

/// How long the outcomes of sends that left are retried while the store is unavailable.
const OUTCOME_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Dependencies every tenant actor shares.
#[derive(Debug)]
pub struct DispatchDeps {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn followup_core::clock::Clock>,
    /// Refreshes the OAuth access tokens of the tenants' connections.
    pub tokens: Arc<TokenKeeper>,
    pub providers: HashMap<Provider, Addr<ProviderActor>>,
    pub billing: Addr<BillingActor>,
    pub config: DispatchConfig,
    /// The engine's public base URL, to which Twilio reports delivery status; none turns
    /// status callbacks off.
    pub public_base_url: Option<String>,
    /// Whether attempts keep the subject and text of the message they sent.
    pub keep_sent_messages: bool,
    /// Signs the engine's unsubscribe links, which emails carry unless their sequence has an
    /// unsubscribe URL of its own; none without a public base URL.
    pub unsubscribe_links: Option<crate::unsubscribe::UnsubscribeLinks>,
    /// Lateness of every accepted send since start, for summaries.
    pub lateness: Mutex<LatenessHistogram>,
    /// Counters the operator API reads: sends, errors, lateness window, recent failures.
    pub live: Arc<crate::operator_view::LiveStats>,
}

/// Errors that end a round early. What the round already wrote stays written; the next round
/// picks up the rest.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("actor mailbox closed: {0}")]
    Mailbox(#[from] MailboxError),
}

/// An error after some sends may have gone out, with how many were sent or left in doubt.
#[derive(Debug)]
struct DeliveryFailure {
    used: u64,
    error: DispatchError,
}

/// Runs one dispatch round at instant `now`.
#[derive(Debug, Message)]
#[rtype(result = "Result<RoundReport, DispatchError>")]
pub struct RunDue {
    pub now: DateTime<Utc>,
}

/// Result of a round: follow-ups changed and the instant the tenant next has work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Follow-ups whose state the round changed.
    pub settled_or_sent: usize,
    /// The earliest instant at which a further round has work: a due instant, or the instant a
    /// rate limit frees up. At or before `now` means work is waiting now.
    pub next_wake: Option<DateTime<Utc>>,
}

impl RoundReport {
    /// Adds another report: counts add up, the earlier wake wins.
    pub fn merge(&mut self, other: RoundReport) {
        self.settled_or_sent += other.settled_or_sent;
        self.next_wake = earliest(self.next_wake, other.next_wake);
    }
}

/// Returns the earlier of two optional instants.
pub fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A sequence with its templates parsed once.
#[derive(Debug)]
struct CompiledSequence {
    steps: Vec<CompiledStep>,
    unsubscribe_url: Option<Template>,
    /// The sequence itself, for its window, delays and maximum lateness.
    source: Sequence,
}

#[derive(Debug)]
struct CompiledStep {
    subject: Option<Template>,
    body: Template,
    html_body: Option<Template>,
}

impl CompiledSequence {
    fn compile(sequence: &Sequence) -> Result<Self, String> {
        let parse = |source: &str| Template::parse(source).map_err(|e| e.to_string());
        let parse_optional = |source: Option<&str>| source.map(parse).transpose();
        let steps = sequence
            .steps
            .iter()
            .map(|step| {
                Ok(CompiledStep {
                    subject: parse_optional(step.subject.as_deref())?,
                    body: parse(&step.body)?,
                    html_body: parse_optional(step.html_body.as_deref())?,
                })
            })
            .collect::<Result<_, String>>()?;
        let unsubscribe_url = parse_optional(sequence.unsubscribe_url.as_deref())?;
        Ok(Self { steps, unsubscribe_url, source: sequence.clone() })
    }
}

/// The texts of one step rendered for one contact.
struct RenderedStep {
    body: String,
    subject: Option<String>,
    html_body: Option<String>,
    unsubscribe_url: Option<String>,
}

impl RenderedStep {
    /// Renders `step` of `sequence` for `contact`. The HTML body and the unsubscribe URL are
    /// rendered for email only.
    fn render(
        sequence: &CompiledSequence,
        step: &CompiledStep,
        contact: &Contact,
        channel: Channel,
    ) -> Result<Self, followup_core::template::MissingField> {
        let lookup = |name: &str| contact.field(name);
        let is_email = channel == Channel::Email;
        let html_body = match &step.html_body {
            // A contact's values are escaped: an uploaded file must not put markup or links
            // into mail sent from the tenant's mailbox.
            Some(html) if is_email => Some(html.render_encoded(lookup, escape_html)?),
            _ => None,
        };
        let unsubscribe_url = match &sequence.unsubscribe_url {
            Some(url) if is_email => Some(render_url(url, contact)?),
            _ => None,
        };
        Ok(Self {
            body: step.body.render(lookup)?,
            subject: step.subject.as_ref().map(|subject| subject.render(lookup)).transpose()?,
            html_body,
            unsubscribe_url,
        })
    }
}

/// Renders a URL template with each field value percent-encoded, so that a value with spaces
/// or reserved characters stays one URL component.
fn render_url(
    template: &Template,
    contact: &Contact,
) -> Result<String, followup_core::template::MissingField> {
    template.render_encoded(|name| contact.field(name), percent_encode)
}

/// Appends `value` to `output` with every byte outside RFC 3986's unreserved characters
/// percent-encoded.
fn percent_encode(value: &str, output: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            output.push(char::from(byte));
        } else {
            output.push_str(&format!("%{byte:02X}"));
        }
    }
}

#[derive(Debug)]
pub struct TenantActor {
    round: Arc<TenantRound>,
}

impl TenantActor {
    pub fn new(
        tenant: TenantId,
        deps: Arc<DispatchDeps>,
        gate: Arc<SendGate>,
        lease: Arc<TenantLease>,
    ) -> Self {
        let round = TenantRound {
            tenant,
            deps,
            gate,
            lease,
            sequences: Mutex::default(),
            held_checked: Mutex::default(),
            billing_seen: Mutex::default(),
            scope: Mutex::default(),
            read_limits: Mutex::default(),
        };
        Self { round: Arc::new(round) }
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
    }
}

impl Handler<RunDue> for TenantActor {
    type Result = AtomicResponse<Self, Result<RoundReport, DispatchError>>;

    fn handle(&mut self, msg: RunDue, _: &mut Self::Context) -> Self::Result {
        let round = self.round.clone();
        AtomicResponse::new(Box::pin(async move { round.run(msg.now).await }.into_actor(self)))
    }
}

/// Cancels every follow-up of a schedule that has not left yet, and returns how many. Like a
/// round, it runs alone in the actor, so a round never writes back a follow-up that was
/// cancelled while the round held it.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, DispatchError>")]
pub struct CancelSchedule {
    pub schedule: ScheduleId,
    pub now: DateTime<Utc>,
}

impl Handler<CancelSchedule> for TenantActor {
    type Result = AtomicResponse<Self, Result<usize, DispatchError>>;

    fn handle(&mut self, msg: CancelSchedule, _: &mut Self::Context) -> Self::Result {
        let round = self.round.clone();
        let cancel = async move { round.cancel(&[msg.schedule], CANCELLED_REASON, msg.now).await };
        AtomicResponse::new(Box::pin(cancel.into_actor(self)))
    }
}

/// Returns the tenant's dead follow-ups (all, or the listed ones) to pending with a fresh retry
/// budget, and returns how many. Runs alone in the actor, like a round, and writes under the
/// tenant's lease like every follow-up write.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, DispatchError>")]
pub struct RetryDead {
    pub follow_ups: Option<Vec<FollowUpId>>,
    pub now: DateTime<Utc>,
}

impl Handler<RetryDead> for TenantActor {
    type Result = AtomicResponse<Self, Result<usize, DispatchError>>;

    fn handle(&mut self, msg: RetryDead, _: &mut Self::Context) -> Self::Result {
        let round = self.round.clone();
        let retry = async move { round.retry_dead(msg.follow_ups.as_deref(), msg.now).await };
        AtomicResponse::new(Box::pin(retry.into_actor(self)))
    }
}

/// Returns every held follow-up of the tenant to pending, after its plan changed, and returns
/// how many. Runs alone in the actor, like a round.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, DispatchError>")]
pub struct ReleaseHeld {
    pub now: DateTime<Utc>,
}

impl Handler<ReleaseHeld> for TenantActor {
    type Result = AtomicResponse<Self, Result<usize, DispatchError>>;

    fn handle(&mut self, msg: ReleaseHeld, _: &mut Self::Context) -> Self::Result {
        let round = self.round.clone();
        let release = async move { round.release_held(msg.now, None).await };
        AtomicResponse::new(Box::pin(release.into_actor(self)))
    }
}

/// The state a round works with; shared with the round's future.
#[derive(Debug)]
struct TenantRound {
    tenant: TenantId,
    deps: Arc<DispatchDeps>,
    /// Closed for good when the tenant is deleted or its lease released or lost; sends go out
    /// only while it is open.
    gate: Arc<SendGate>,
    /// This node's lease on the tenant: its epoch fences every follow-up write, and no send
    /// starts after its time runs out.
    lease: Arc<TenantLease>,
    sequences: Mutex<HashMap<SequenceId, Arc<CompiledSequence>>>,
    /// The billing period whose start this node has released the held follow-ups of.
    held_checked: Mutex<Option<BillingPeriod>>,
    /// The billing standing the last round saw, with the account's `updated_at`, so that a
    /// change the clock alone brings (a grace period or paid period running out) is logged.
    billing_seen: Mutex<Option<(DateTime<Utc>, &'static str)>>,
    /// The tenant's suppression scope and when it was read (see `stops`).
    scope: Mutex<Option<(followup_core::suppression::SuppressionScope, std::time::Instant)>>,
    /// Follow-ups each channel's next round reads, by `Channel::ALL` order; see `read_limit`.
    read_limits: Mutex<[Option<usize>; 3]>,
}

/// A follow-up ready to go out, with its rendered message.
struct Sendable {
    follow_up: FollowUp,
    message: OutboundMessage,
    /// Keys of the suppression entries that would stop it, checked just before it is sent.
    stop_keys: Vec<String>,
}

impl TenantRound {
    async fn cancel(
        &self,
        schedules: &[ScheduleId],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, DispatchError> {
        let store = &self.deps.store;
        let mut cancelled = Vec::new();
        for schedule in schedules {
            for mut follow_up in store.follow_ups_of_schedule(self.tenant, *schedule).await? {
                if follow_up.state.is_due_kind() || follow_up.state == FollowUpState::Held {
                    settle(&mut follow_up, FollowUpState::Cancelled, reason.to_owned(), now);
                    cancelled.push(follow_up);
                }
            }
        }
        let count = cancelled.len();
        if count > 0 {
            self.write_follow_ups(cancelled, Vec::new()).await?;
        }
        Ok(count)
    }

    /// Returns the tenant's dead follow-ups (all, or those of `ids`) to pending, due at
    /// `now`, with a fresh retry budget; returns how many.
    async fn retry_dead(
        &self,
        ids: Option<&[FollowUpId]>,
        now: DateTime<Utc>,
    ) -> Result<usize, DispatchError> {
        let store = &self.deps.store;
        let mut revived = Vec::new();
        let mut after = None;
        loop {
            let page = store.follow_ups_page(self.tenant, after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for mut follow_up in page {
                let listed = ids.is_none_or(|ids| ids.contains(&follow_up.id));
                if follow_up.state == FollowUpState::Dead && listed {
                    follow_up.state = FollowUpState::Pending;
                    follow_up.due_at = now;
                    follow_up.attempts_before_retry = follow_up.attempts;
                    follow_up.reason = Some("retried by an operator after it went dead".into());
                    follow_up.updated_at = now;
                    revived.push(follow_up);
                }
            }
        }
        let count = revived.len();
        if count > 0 {
            self.write_follow_ups(revived, Vec::new()).await?;
        }
        Ok(count)
    }

    async fn run(&self, now: DateTime<Utc>) -> Result<RoundReport, DispatchError> {
        if self.gate.is_stopped() || !self.lease.allows_sends(Utc::now()) {
            return Ok(RoundReport::default());
        }
        // A paused tenant's follow-ups stay as they are; resuming wakes its driver.
        if self.gate.is_paused() {
            return Ok(RoundReport::default());
        }
        let standing = self.billing_standing(now).await?;
        if !standing.allows_sends() {
            // Nothing is claimed, so the follow-ups stay pending until a webhook (payment,
            // new subscription) wakes the tenant again. A standing that changes by time alone
            // needs no wake of its own: it is read again by every round, which runs when a
            // follow-up is due.
            metrics::counter!(telemetry::BILLING_PAUSED_ROUNDS, "standing" => standing.label())
                .increment(1);
            return Ok(RoundReport::default());
        }
        self.release_held_of_past_periods(now).await?;
        let connections = self.deps.store.connections(self.tenant).await?;
        // The channels run side by side: they take disjoint follow-ups, and a send that stalls
        // on one channel must not hold the others back until its timeout.
        let channels = Channel::ALL.map(|channel| self.run_channel(channel, &connections, now));
        let results = futures_util::future::join_all(channels).await;
        let mut report = RoundReport::default();
        for (channel, result) in Channel::ALL.into_iter().zip(results) {
            // One channel's error must not stop the others; it is tried again a tick later.
            match result {
                Ok(channel_report) => report.merge(channel_report),
                Err(error) => {
                    let key = format!("dispatch failed {} {channel}", self.tenant);
                    if let Some(suppressed) = telemetry::repeated_errors().allow(&key) {
                        tracing::error!(tenant = %self.tenant, %channel, %error, suppressed, "dispatch failed");
                    }
                    let retry_at = now + chrono::Duration::seconds(1);
                    report.merge(RoundReport { settled_or_sent: 0, next_wake: Some(retry_at) });
                }
            }
        }
        Ok(report)
    }

    async fn run_channel(
        &self,
        channel: Channel,
        connections: &[Connection],
        now: DateTime<Utc>,
    ) -> Result<RoundReport, DispatchError> {
        let store = &self.deps.store;
        let connection = connections.iter().find(|c| c.provider.carries(channel));

        // A paused connection waits for the tenant to replace its credentials, which wakes
        // the engine; reading its due follow-ups every tick would be wasted.
        if connection.is_some_and(|c| c.paused_reason.is_some()) {
            return Ok(RoundReport::default());
        }
        let read_limit = self.read_limit(channel);
        let mut due = store.due_follow_ups(self.tenant, channel, now, read_limit).await?;
        if due.is_empty() {
            let next_wake = store.next_due_at(self.tenant, channel).await?;
            return Ok(RoundReport { settled_or_sent: 0, next_wake });
        }

        // A channel without a connection cannot send.
        let Some(connection) = connection else {
            let reason = format!("no {channel} connection: connect one to send this channel");
            let settled = self.settle_all(due, FollowUpState::Skipped, &reason, now).await?;
            return Ok(RoundReport { settled_or_sent: settled, next_wake: Some(now) });
        };

        // Follow-ups past their step's maximum lateness are skipped or planned again before
        // anything is admitted, so that an outage's backlog does not go out at the wrong hour.
        let stale = self.guard_stale(&mut due, now).await?;
        if due.is_empty() {
            return Ok(RoundReport { settled_or_sent: stale, next_wake: Some(now) });
        }

        // An access token about to expire is refreshed before anything is admitted; while it
        // cannot be, the due follow-ups stay pending, untouched.
        let connection = &match self.deps.tokens.credentials_for_send(connection).await {
            TokenStatus::Ready(credentials) => Connection { credentials, ..connection.clone() },
            TokenStatus::WaitUntil(at) => {
                return Ok(RoundReport { settled_or_sent: 0, next_wake: Some(at) });
            }
            TokenStatus::Paused => return Ok(RoundReport::default()),
        };

        // Admission comes first, so that only follow-ups that may go out now are prepared: a
        // paced connection admits one at a time, and preparing the whole batch each time
        // would redo the same work. Permits of follow-ups settled in preparation (no address,
        // quota used up) are given back to the daily window.
        let wanted = due.len();
        let admission = self.admit(connection, channel, &mut due).await?;
        let admitted = due.len();
        self.note_admission(channel, wanted, admitted)?;
        let (mut sendable, mut settled) = self.prepare(due, channel, connection, now).await?;
        let reservation = self.reserve_quota(channel, &mut sendable, &mut settled, now).await?;
        self.refund(connection, channel, admitted - sendable.len()).await?;
        let count = settled.len() + sendable.len();

        // The reservation is settled on every path after it, errors included, so that a failed
        // write or send cannot keep quota reserved until a restart.
        let delivered = self.write_and_deliver(connection, channel, settled, sendable, now).await;
        let used = match &delivered {
            Ok(used) => *used,
            Err(failure) => failure.used,
        };
        if let Some(reservation) = reservation.filter(|r| r.granted > 0) {
            let settle = Settle {
                tenant: self.tenant,
                channel,
                period: reservation.period,
                reserved: reservation.granted,
                used,
            };
            self.deps.billing.send(settle).await?;
        }
        delivered.map_err(|failure| failure.error)?;

        // Work held back by a rate limit waits for the limit; otherwise more may be due now.
        let next_wake = admission.next_free_at.or(Some(now));
        Ok(RoundReport { settled_or_sent: count, next_wake })
    }

    /// Splits due follow-ups into those that can be sent, with their rendered messages, and
    /// those settled here: no address, template field missing, sequence gone.
    async fn prepare(
        &self,
        due: Vec<FollowUp>,
        channel: Channel,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Sendable>, Vec<FollowUp>), DispatchError> {
        let contact_ids = due.iter().map(|f| f.contact).collect();
        let contacts: HashMap<_, Contact> = self
            .deps
            .store
            .contacts(self.tenant, contact_ids)
            .await?
            .into_iter()
            .map(|contact| (contact.id, contact))
            .collect();
        let scope = self.suppression_scope().await?;
        let mut sendable = Vec::with_capacity(due.len());
        let mut settled = Vec::new();
        for mut follow_up in due {
            let rendered = match contacts.get(&follow_up.contact) {
                None => Err((FollowUpState::Failed, "contact record not found".to_owned())),
                Some(contact) => self
                    .render(&follow_up, contact, channel, connection)
                    .await?
                    .map(|message| (message, keys_stopping(contact, channel, scope))),
            };
            match rendered {
                Ok((message, stop_keys)) => {
                    sendable.push(Sendable { follow_up, message, stop_keys });
                }
                Err((state, reason)) => {
                    settle(&mut follow_up, state, reason, now);
                    settled.push(follow_up);
                }
            }
        }
        Ok((sendable, settled))
    }

    /// Returns the URL of the connection's Twilio status webhook for an SMS or call, if the
    /// engine has a public base URL. It names the follow-up, and Twilio signs the whole URL, so
    /// the webhook can match the status to its follow-up.
    fn status_callback(
        &self,
        channel: Channel,
        connection: &Connection,
        follow_up: &FollowUp,
    ) -> Option<String> {
        let base = self.deps.public_base_url.as_deref()?.trim_end_matches('/');
        let twilio = connection.provider == Provider::Twilio && channel != Channel::Email;
        twilio.then(|| {
            format!("{base}/webhooks/twilio/{}/status?follow_up={}", connection.id, follow_up.id)
        })
    }

    /// Renders the message of one follow-up, or returns the state and reason it settles with.
    async fn render(
        &self,
        follow_up: &FollowUp,
        contact: &Contact,
        channel: Channel,
        connection: &Connection,
    ) -> Result<Result<OutboundMessage, (FollowUpState, String)>, DispatchError> {
        let Some(to) = contact.address(channel) else {
            let reason = Contact::missing_address_reason(channel);
            return Ok(Err((FollowUpState::Skipped, reason)));
        };
        let Some(sequence) = self.sequence(follow_up.sequence).await? else {
            return Ok(Err((FollowUpState::Failed, "sequence not found".to_owned())));
        };
        let sequence = match sequence {
            Ok(sequence) => sequence,
            Err(reason) => return Ok(Err((FollowUpState::Failed, reason))),
        };
        let Some(step) = sequence.steps.get(usize::from(follow_up.id.step)) else {
            return Ok(Err((FollowUpState::Failed, "sequence has no such step".to_owned())));
        };
        let rendered = match RenderedStep::render(&sequence, step, contact, channel) {
            Ok(rendered) => rendered,
            Err(missing) => {
                return Ok(Err((FollowUpState::Failed, format!("template: {missing}"))));
            }
        };
        let RenderedStep { body, subject, html_body, mut unsubscribe_url } = rendered;
        if unsubscribe_url.is_none()
            && channel == Channel::Email
            && let Some(links) = &self.deps.unsubscribe_links
        {
            unsubscribe_url = Some(links.link(self.tenant, contact.id).await?);
        }
        Ok(Ok(OutboundMessage {
            follow_up: follow_up.id,
            channel,
            from: connection.sender.clone(),
            to: to.to_owned(),
            to_name: contact.full_name.clone().or_else(|| {
                let parts = [contact.first_name.as_deref(), contact.last_name.as_deref()];
                let name = parts.into_iter().flatten().collect::<Vec<_>>().join(" ");
                (!name.is_empty()).then_some(name)
            }),
            subject,
            body,
            html_body,
            unsubscribe_url,
            status_callback: self.status_callback(channel, connection, follow_up),
        }))
    }

    /// Returns the sequence with its templates compiled, cached for the actor's life. Sequences are
    /// never changed once created, so the cache needs no invalidation.
    async fn sequence(
        &self,
        id: SequenceId,
    ) -> Result<Option<Result<Arc<CompiledSequence>, String>>, DispatchError> {
        if let Some(found) = self.sequences.lock().map_err(poisoned)?.get(&id) {
            return Ok(Some(Ok(found.clone())));
        }
        let Some(sequence) = self.deps.store.sequence(self.tenant, id).await? else {
            return Ok(None);
        };
        let compiled = match CompiledSequence::compile(&sequence) {
            Ok(compiled) => Arc::new(compiled),
            Err(reason) => return Ok(Some(Err(format!("invalid template: {reason}")))),
        };
        self.sequences.lock().map_err(poisoned)?.insert(id, compiled.clone());
        Ok(Some(Ok(compiled)))
    }

    /// Reserves quota for `sendable`. Follow-ups beyond the plan are skipped or held, as the
    /// plan sets. Returns the reservation, or `None` when there was nothing to reserve.
    async fn reserve_quota(
        &self,
        channel: Channel,
        sendable: &mut Vec<Sendable>,
        settled: &mut Vec<FollowUp>,
        now: DateTime<Utc>,
    ) -> Result<Option<Reservation>, DispatchError> {
        if sendable.is_empty() {
            return Ok(None);
        }
        let wanted = sendable.len() as u64;
        let reserve = Reserve { tenant: self.tenant, channel, wanted, now };
        let reservation = self.deps.billing.send(reserve).await??;
        let granted = usize::try_from(reservation.granted).unwrap_or(usize::MAX);
        if granted < sendable.len() {
            let over = sendable.split_off(granted);
            let metric = match reservation.over_quota {
                OverQuota::Skip => telemetry::QUOTA_REJECTIONS,
                OverQuota::Hold => telemetry::QUOTA_HELD,
            };
            metrics::counter!(metric, "channel" => channel.as_str()).increment(over.len() as u64);
            let reason = format!(
                "monthly {channel} {QUOTA_REASON_MARK} {} ({}) used up in {}",
                reservation.plan, reservation.monthly_limit, reservation.period
            );
            for item in over {
                let mut follow_up = item.follow_up;
                match reservation.over_quota {
                    OverQuota::Skip => {
                        settle(&mut follow_up, FollowUpState::Skipped, reason.clone(), now);
                    }
                    OverQuota::Hold => {
                        let reason = format!("{reason}; held until the next period or an upgrade");
                        settle(&mut follow_up, FollowUpState::Held, reason, now);
                    }
                }
                settled.push(follow_up);
            }
        }
        Ok(Some(reservation))
    }

    /// Reads the tenant's billing standing at `now`, and logs a change since the last round that
    /// came from the clock alone; the webhook that changes an account logs its own changes.
    async fn billing_standing(&self, now: DateTime<Utc>) -> Result<BillingStanding, DispatchError> {
        let account = self.deps.store.stripe_account(self.tenant).await?;
        let standing = standing_of(account.as_ref(), now);
        let Some(account) = account else { return Ok(standing) };
        let seen = (account.updated_at, standing.label());
        let previous = self.billing_seen.lock().map_err(poisoned)?.replace(seen);
        if let Some((updated_at, label)) = previous
            && updated_at == account.updated_at
            && label != standing.label()
        {
            tracing::info!(tenant = %self.tenant, from = label, to = standing.label(),
                cause = "time", sends_allowed = standing.allows_sends(),
                "tenant billing standing changed");
            metrics::counter!(telemetry::BILLING_TRANSITIONS, "to" => standing.label())
                .increment(1);
        }
        Ok(standing)
    }

    /// Returns the tenant's held follow-ups to pending, at most once per billing period: those
    /// held before the period of `now` began, when this node first runs a round in it.
    async fn release_held_of_past_periods(&self, now: DateTime<Utc>) -> Result<(), DispatchError> {
        let period = BillingPeriod::containing(now);
        if *self.held_checked.lock().map_err(poisoned)? == Some(period) {
            return Ok(());
        }
        // Counting is cheaper than reading every follow-up, and most tenants hold none.
        let counts = self.deps.store.count_follow_ups(Some(self.tenant)).await?;
        let holds_any =
            counts.iter().any(|((_, state), n)| *state == FollowUpState::Held && *n > 0);
        if holds_any {
            self.release_held(now, Some(period.start())).await?;
        }
        *self.held_checked.lock().map_err(poisoned)? = Some(period);
        Ok(())
    }

    /// Returns held follow-ups to pending, those held before `held_before` or all, so that the
    /// next rounds reserve quota for them again. Returns how many.
    ///
    /// NOTE: the store has no index of held follow-ups, so this pages through all of the
    /// tenant's follow-ups; it runs once per period and node, and after a plan change.
    async fn release_held(
        &self,
        now: DateTime<Utc>,
        held_before: Option<DateTime<Utc>>,
    ) -> Result<usize, DispatchError> {
        let mut after = None;
        let mut released = 0;
        loop {
            let page = self.deps.store.follow_ups_page(self.tenant, after, HELD_SCAN_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            let held: Vec<FollowUp> = page
                .into_iter()
                .filter(|follow_up| follow_up.state == FollowUpState::Held)
                .filter(|follow_up| held_before.is_none_or(|before| follow_up.updated_at < before))
                .map(|mut follow_up| {
                    follow_up.state = FollowUpState::Pending;
                    follow_up.reason = None;
                    // Planned again from its release, so that the stale-send guard does not
                    // take the hold itself for lateness and skip it.
                    follow_up.planned_at = follow_up.planned_at.max(now);
                    follow_up.updated_at = now;
                    follow_up
                })
                .collect();
            for follow_up in &held {
                metrics::counter!(telemetry::QUOTA_HELD_RELEASED, "channel" => follow_up.channel.as_str())
                    .increment(1);
            }
            released += held.len();
            if !held.is_empty() {
                self.write_follow_ups(held, Vec::new()).await?;
            }
        }
        if released > 0 {
            tracing::info!(tenant = %self.tenant, released, "held follow-ups returned to pending");
        }
        Ok(released)
    }

    /// Asks the provider actor how many of `due` may go out now and keeps only those; the
    /// rest stay pending, untouched.
    async fn admit(
        &self,
        connection: &Connection,
        channel: Channel,
        due: &mut Vec<FollowUp>,
    ) -> Result<crate::limiter::Admission, DispatchError> {
        let limits = ConnectionLimits::of(connection, channel);
        let Some(provider) = self.deps.providers.get(&connection.provider) else {
            // Every provider has an actor from start-up, so this is unreachable in practice;
            // a far wake keeps the driver from spinning if it ever happens.
            let later = self.deps.clock.now() + chrono::Duration::hours(1);
            due.clear();
            return Ok(crate::limiter::Admission { granted: 0, next_free_at: Some(later) });
        };
        let wanted = u32::try_from(due.len()).unwrap_or(u32::MAX);
        if wanted == 0 {
            return Ok(crate::limiter::Admission { granted: 0, next_free_at: None });
        }
        let admission =
            provider.send(Admit { connection: connection.id, channel, limits, wanted }).await?;
        due.truncate(admission.granted as usize);
        Ok(admission)
    }

    /// Returns how many due follow-ups the channel's round reads: the batch size, or, while a
    /// rate limit paces the channel, twice what it last admitted. A paced connection admits a
    /// send or two a round (one every 5 ms under the default Gmail project limit). While every
    /// round read a whole batch, a run paced by that limit used 30 times the CPU per send of an
    /// unpaced one (BENCHMARKS.md, "Rounds of a paced connection").
    fn read_limit(&self, channel: Channel) -> usize {
        let batch_size = self.deps.config.batch_size.max(1);
        let index = channel_index(channel);
        let limits = self.read_limits.lock().map(|limits| limits[index]).unwrap_or(None);
        limits.map_or(batch_size, |limit| limit.clamp(1, batch_size))
    }

    /// Records what the channel's limiter admitted of `wanted`, for the next `read_limit`.
    fn note_admission(
        &self,
        channel: Channel,
        wanted: usize,
        admitted: usize,
    ) -> Result<(), DispatchError> {
        let paced = admitted < wanted;
        let next = paced.then(|| admitted.saturating_mul(2).max(1));
        self.read_limits.lock().map_err(poisoned)?[channel_index(channel)] = next;
        Ok(())
    }

    /// Gives back daily-window permits taken for follow-ups that did not go out.
    async fn refund(
        &self,
        connection: &Connection,
        channel: Channel,
        unused: usize,
    ) -> Result<(), DispatchError> {
        if unused == 0 {
            return Ok(());
        }
        if let Some(provider) = self.deps.providers.get(&connection.provider) {
            let count = u32::try_from(unused).unwrap_or(u32::MAX);
            provider.send(Refund { connection: connection.id, channel, count }).await?;
        }
        Ok(())
    }

    /// Writes the settled follow-ups and the ones about to leave in one durable batch, then
    /// sends. The write comes before any request goes out: after a crash a sending follow-up
    /// becomes in-doubt instead of being sent again. Returns how many the provider accepted or
    /// left in doubt.
    async fn write_and_deliver(
        &self,
        connection: &Connection,
        channel: Channel,
        settled: Vec<FollowUp>,
        mut sendable: Vec<Sendable>,
        now: DateTime<Utc>,
    ) -> Result<u64, DeliveryFailure> {
        // Held until every outcome is written, so that stopping the tenant waits for sends
        // already under way and none starts after it.
        let Some(_open) = self.gate.enter().await else {
            return Ok(0);
        };
        // Checked after the gate, just before the write that lets requests leave, so that no
        // send starts after the lease may have passed to another node.
        if !self.lease.allows_sends(Utc::now()) {
            return Ok(0);
        }
        // The last look at the suppression list before requests leave: a stop stored while
        // this round was preparing wins over the send.
        let mut settled = settled;
        let held = self.hold_back_suppressed(&mut sendable, &mut settled, now).await;
        let held = held.map_err(|error| DeliveryFailure { used: 0, error })?;
        let refunded = self.refund(connection, channel, held).await;
        refunded.map_err(|error| DeliveryFailure { used: 0, error })?;
        for item in &mut sendable {
            item.follow_up.state = FollowUpState::Sending;
            item.follow_up.attempts += 1;
            item.follow_up.updated_at = now;
        }
        let mut written = settled;
        written.extend(sendable.iter().map(|item| item.follow_up.clone()));
        if !written.is_empty() {
            let result = self.write_follow_ups(written, Vec::new()).await;
            result.map_err(|error| DeliveryFailure { used: 0, error: error.into() })?;
        }
        self.deliver(connection, channel, sendable, now).await
    }

    /// Sends through the provider actor and writes each outcome. Returns how many the
    /// provider accepted or left in doubt.
    async fn deliver(
        &self,
        connection: &Connection,
        channel: Channel,
        sendable: Vec<Sendable>,
        started_at: DateTime<Utc>,
    ) -> Result<u64, DeliveryFailure> {
        if sendable.is_empty() {
            return Ok(0);
        }
        let Some(provider) = self.deps.providers.get(&connection.provider) else {
            return Ok(0);
        };
        let (follow_ups, messages): (Vec<_>, Vec<_>) =
            sendable.into_iter().map(|item| (item.follow_up, item.message)).unzip();
        let recipients: Vec<String> = messages.iter().map(|message| message.to.clone()).collect();
        let mut opted_out = Vec::new();
        let mut kept_messages: Vec<Option<SentMessage>> = messages
            .iter()
            .map(|message| {
                self.deps.keep_sent_messages.then(|| SentMessage {
                    subject: message.subject.clone(),
                    body: message.body.clone(),
                })
            })
            .collect();
        let outcomes = provider
            .send(Deliver {
                connection: connection.id,
                channel,
                credentials: connection.credentials.clone(),
                messages,
                lease: self.lease.clone(),
            })
            .await
            .map_err(|error| DeliveryFailure { used: 0, error: error.into() })?;
        let finished_at = self.deps.clock.now();
        let mut accepted = 0;
        // In-doubt sends may have reached the contact, so they use quota as sent ones do.
        let mut in_doubt = 0;
        let mut pause_reason = None;
        let mut written = Vec::with_capacity(follow_ups.len());
        let mut attempts = Vec::with_capacity(follow_ups.len());
        for (((mut follow_up, outcome), kept), recipient) in
            follow_ups.into_iter().zip(outcomes).zip(&mut kept_messages).zip(recipients)
        {
            let detail = self.apply_outcome(&mut follow_up, &outcome, finished_at);
            if followup_adapters::twilio::response::is_opted_out(&outcome) {
                opted_out.push(recipient);
            }
            // A lost answer on a channel that resends leaves the follow-up to retry, but this
            // attempt may have reached the contact all the same, so it uses quota too.
            let resent_in_doubt = matches!(outcome, SendOutcome::InDoubt { .. });
            match follow_up.state {
                FollowUpState::Sent => accepted += 1,
                FollowUpState::InDoubt => in_doubt += 1,
                _ if resent_in_doubt => in_doubt += 1,
                _ => {}
            }
            if let SendOutcome::Unauthorized { reason } = &outcome {
                pause_reason = Some(reason.clone());
            }
            // A refused send stays pending; its own label keeps it apart from the others.
            let outcome_label = match outcome {
                SendOutcome::Unauthorized { .. } => "unauthorized",
                SendOutcome::NotSent { .. } => "not_sent",
                _ => follow_up.state.as_str(),
            };
            metrics::counter!(
                telemetry::SENDS,
                "provider" => connection.provider.as_str(),
                "outcome" => outcome_label
            )
            .increment(1);
            self.note_outcome(connection.provider, &follow_up, outcome_label, detail.as_deref());
            attempts.push(Attempt {
                follow_up: follow_up.id,
                number: follow_up.attempts,
                provider: connection.provider,
                started_at,
                finished_at,
                result: follow_up.state,
                detail,
                // Only a message that reached the contact, or may have, is worth keeping.
                message: kept.take().filter(|_| {
                    matches!(follow_up.state, FollowUpState::Sent | FollowUpState::InDoubt)
                }),
            });
            written.push(follow_up);
        }
        let failure = |error: DispatchError| DeliveryFailure { used: accepted + in_doubt, error };
        self.write_outcomes(written, attempts).await.map_err(|error| failure(error.into()))?;
        self.suppress_opted_out(opted_out, finished_at).await.map_err(failure)?;
        // A refused OAuth token is refreshed, and the refused sends go out with the new one
        // in the next round; without a refresh token the tenant must connect again.
        if let Some(reason) = pause_reason
            && !self.deps.tokens.refresh_refused(connection).await
        {
            self.pause_connection(connection, channel, &reason).await.map_err(failure)?;
        }
        Ok(accepted + in_doubt)
    }

    /// Writes the outcomes of requests that left, retrying while the store is unavailable:
    /// the sends happened, so their outcomes must be stored, or the follow-ups would stay in
    /// sending until the next start-up turned them in-doubt. Waits double from 100 ms to 5 s;
    /// after [`OUTCOME_RETRY_FOR`] the error is returned, and start-up recovery settles them.
    async fn write_outcomes(
        &self,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    ) -> Result<(), StoreError> {
        let give_up_at = std::time::Instant::now() + OUTCOME_RETRY_FOR;
        let mut wait = std::time::Duration::from_millis(100);
        let mut failures = 0_u32;
        loop {
            match self.write_follow_ups(follow_ups.clone(), attempts.clone()).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(tenant = %self.tenant, failures, "outcomes stored after the store came back");
                    }
                    return Ok(());
                }
                Err(StoreError::Unavailable(reason)) if std::time::Instant::now() < give_up_at => {
                    if failures == 0 {
                        tracing::warn!(tenant = %self.tenant, %reason, "store unavailable while writing outcomes; retrying");
                    }
                    failures += 1;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Counts an attempt's outcome in the operator's live figures, and keeps a failed one
    /// (scrubbed of addresses and tokens) among the recent failures.
    fn note_outcome(
        &self,
        provider: Provider,
        follow_up: &FollowUp,
        outcome_label: &str,
        detail: Option<&str>,
    ) {
        use crate::operator_view::QueueEvent;
        let live = &self.deps.live;
        match outcome_label {
            "not_sent" => {}
            "sent" | "in_doubt" => live.count(provider, follow_up.channel, QueueEvent::Send),
            kind => {
                live.count(provider, follow_up.channel, QueueEvent::Error);
                live.record_failure(FailureRecord {
                    at: follow_up.updated_at,
                    tenant: self.tenant,
                    follow_up: follow_up.id.to_string(),
                    provider: provider.as_str().to_owned(),
                    channel: follow_up.channel.as_str().to_owned(),
                    kind: kind.to_owned(),
                    reason: detail.unwrap_or("no reason given").to_owned(),
                });
            }
        }
    }

    /// Moves a follow-up to the state its outcome calls for; returns the attempt's detail.
    fn apply_outcome(
        &self,
        follow_up: &mut FollowUp,
        outcome: &SendOutcome,
        now: DateTime<Utc>,
    ) -> Option<String> {
        follow_up.updated_at = now;
        match outcome {
            SendOutcome::Accepted { provider_message_id } => {
                follow_up.state = FollowUpState::Sent;
                follow_up.sent_at = Some(now);
                follow_up.provider_message_id = Some(provider_message_id.clone());
                follow_up.reason = None;
                let late = (now - follow_up.planned_at).num_milliseconds().max(0);
                metrics::histogram!(telemetry::DISPATCH_LATENESS).record(late as f64 / 1_000.0);
                if let Ok(mut lateness) = self.deps.lateness.lock() {
                    lateness.record(late.unsigned_abs());
                }
                self.deps.live.record_lateness(late.unsigned_abs());
                None
            }
            SendOutcome::Retryable { reason, retry_after } => {
                self.retry_or_bury(follow_up, reason.clone(), *retry_after, now);
                Some(reason.clone())
            }
            SendOutcome::Permanent { reason } => {
                settle(follow_up, FollowUpState::Failed, reason.clone(), now);
                Some(reason.clone())
            }
            SendOutcome::InDoubt { reason }
                if self.deps.config.resend_in_doubt.contains(&follow_up.channel) =>
            {
                let reason =
                    format!("resent after a lost answer, so it may arrive twice: {reason}");
                metrics::counter!(telemetry::IN_DOUBT_RESENDS, "channel" => follow_up.channel.as_str())
                    .increment(1);
                self.retry_or_bury(follow_up, reason.clone(), None, now);
                Some(reason)
            }
            SendOutcome::InDoubt { reason } => {
                // Sending again could deliver twice, so it is settled as in doubt.
                settle(follow_up, FollowUpState::InDoubt, reason.clone(), now);
                Some(reason.clone())
            }
            SendOutcome::Unauthorized { reason } => {
                // The send waits for the connection to be reconnected. The attempt stays
                // counted, so that attempt numbers never repeat.
                follow_up.state = FollowUpState::Pending;
                follow_up.reason = Some(format!("waiting for valid credentials: {reason}"));
                Some(reason.clone())
            }
            SendOutcome::NotSent { reason } => {
                // Due again as it was. This write is fenced: once another node owns the
                // tenant it is rejected, and the new owner settles the follow-up from the
                // store. The attempt stays counted, so that attempt numbers never repeat.
                follow_up.state = FollowUpState::Pending;
                follow_up.reason = Some(reason.clone());
                Some(reason.clone())
            }
        }
    }

    /// Schedules another attempt after a backoff, or settles the follow-up dead with `reason`
    /// once its retry budget is spent.
    fn retry_or_bury(
        &self,
        follow_up: &mut FollowUp,
        reason: String,
        retry_after: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) {
        if follow_up.budgeted_attempts() >= self.deps.config.retry_budget {
            let reason =
                format!("gave up after {} attempts; last error: {reason}", follow_up.attempts);
            settle(follow_up, FollowUpState::Dead, reason, now);
        } else {
            let wait = self.backoff(follow_up.budgeted_attempts(), retry_after);
            follow_up.state = FollowUpState::Retry;
            follow_up.due_at = now + wait;
            follow_up.reason = Some(reason);
        }
    }

    /// Exponential backoff with jitter: `2^(attempt-1)` seconds plus up to one second, capped,
    /// and never shorter than what the provider asked for.
    fn backoff(&self, attempt: u32, retry_after: Option<std::time::Duration>) -> chrono::Duration {
        // Capped at a day, so that a huge configured maximum cannot overflow the arithmetic.
        let cap = self.deps.config.max_backoff_seconds.clamp(1, 86_400);
        let exponential = 1u64.checked_shl(attempt.saturating_sub(1)).unwrap_or(u64::MAX).min(cap);
        let jitter_ms = rand::rng().random_range(0..1_000);
        let mut wait = chrono::Duration::seconds(exponential as i64)
            + chrono::Duration::milliseconds(jitter_ms);
        if let Some(asked) = retry_after.and_then(|d| chrono::Duration::from_std(d).ok()) {
            wait = wait.max(asked);
        }
        wait
    }

    async fn pause_connection(
        &self,
        connection: &Connection,
        channel: Channel,
        reason: &str,
    ) -> Result<(), DispatchError> {
        // The tenant may have replaced the connection while the send was out: the record is
        // read again and paused only if it still contains the refused credentials, and then with
        // every other change kept.
        // NOTE: the store has no compare-and-set, so a replacement landing between this read
        // and the write below is still overwritten; the window is one store round trip.
        let current = self.deps.store.connections(self.tenant).await?;
        let Some(mut paused) = current.into_iter().find(|c| c.id == connection.id) else {
            return Ok(());
        };
        if paused.credentials != connection.credentials {
            tracing::info!(
                tenant = %self.tenant,
                provider = %connection.provider,
                "credentials were refused, but the tenant has replaced them since; not pausing"
            );
            return Ok(());
        }
        paused.paused_reason =
            Some(format!("{} refused the credentials: {reason}", paused.provider));
        tracing::warn!(
            tenant = %self.tenant,
            provider = %connection.provider,
            %channel,
            reason,
            "connection paused: credentials refused"
        );
        self.deps.store.put_connection(paused).await?;
        Ok(())
    }

    async fn settle_all(
        &self,
        mut follow_ups: Vec<FollowUp>,
        state: FollowUpState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, DispatchError> {
        for follow_up in &mut follow_ups {
            settle(follow_up, state, reason.to_owned(), now);
        }
        let count = follow_ups.len();
        self.write_follow_ups(follow_ups, Vec::new()).await?;
        Ok(count)
    }

    /// Writes follow-ups and attempts under the tenant's lease. A write fenced off by a newer
    /// lease revokes this one, so that the actor starts no further send.
    async fn write_follow_ups(
        &self,
        follow_ups: Vec<FollowUp>,
        attempts: Vec<Attempt>,
    ) -> Result<(), StoreError> {
        let epoch = self.lease.epoch();
        let result = self.deps.store.update_follow_ups(self.tenant, epoch, follow_ups, attempts);
        let result = result.await;
        if let Err(StoreError::Fenced { current, .. }) = &result {
            tracing::warn!(
                tenant = %self.tenant,
                epoch,
                current,
                "write fenced off by a newer lease; this node stops dispatching the tenant"
            );
            metrics::counter!(telemetry::FENCE_REJECTIONS).increment(1);
            self.lease.revoke();
        }
        result
    }
}

fn settle(follow_up: &mut FollowUp, state: FollowUpState, reason: String, now: DateTime<Utc>) {
    follow_up.state = state;
    follow_up.reason = Some(reason);
    follow_up.updated_at = now;
}

/// Position of `channel` in `Channel::ALL`.
fn channel_index(channel: Channel) -> usize {
    Channel::ALL.iter().position(|&known| known == channel).unwrap_or(0)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> DispatchError {
    DispatchError::Store(StoreError::Unavailable("sequence cache lock poisoned".into()))
}
