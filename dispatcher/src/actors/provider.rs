//! Provider actors: one per provider kind. Each keeps the rate limiters and circuit breakers of
//! the connections it serves and groups sends into the provider's batch requests. It bounds the
//! requests in flight, per provider and per connection, over one pooled HTTP client.
//!
//! Admission and sending are separate messages: a tenant actor first asks how many of its due
//! follow-ups may go out now, records them as sending, and only then hands them over. Work
//! that a limit or an open breaker keeps back stays pending in the store with its due
//! instant. The admission returns when the connection frees up, so no task sleeps on
//! throttled work.
//!
//! Batching: a batch contains the sends of one connection, which arrive together in one round, so
//! it is complete on arrival and leaves without a linger. Gmail's batch endpoint also takes
//! parts with their own `Authorization`, so with `shared_batches` one batch carries the sends
//! of many mailboxes. A send then waits at most the linger for others to join its batch, and
//! only while other connections are sending (a lone connection would wait for nobody); a full
//! batch leaves at once. Sharing is off by default: when one call of a batch stalls, the whole
//! batch times out, and every send in it, other tenants' included, ends in doubt.
//! Twilio has no batch endpoint: each send is its own request on the pooled keep-alive
//! connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use followup_adapters::gmail::GmailClient;
use followup_adapters::outbound::{OutboundMessage, SendCredentials, SendOutcome};
use followup_adapters::outlook::GraphClient;
use followup_adapters::twilio::TwilioClient;
use followup_core::clock::Clock;
use followup_core::domain::{Channel, Credentials, Provider};
use followup_core::ids::ConnectionId;
use followup_core::limits::{ConnectionLimits, SendLimits};
use futures_util::future::join_all;
use tokio::sync::{Semaphore, oneshot};

use crate::actors::null_provider::NullProvider;
use crate::actors::tenant::earliest;
use crate::breaker::{BreakerAdmission, BreakerSettings, CircuitBreaker, Transition};
use crate::cluster::TenantLease;
use crate::limiter::{Admission, ConnectionLimiter};
use crate::operator_view::{LiveStats, QueueEvent};
use crate::telemetry;

/// The HTTP client of one provider.
#[derive(Debug)]
pub enum ProviderClient {
    Gmail(GmailClient),
    Outlook(GraphClient),
    Twilio(TwilioClient),
    /// Accepts every send in-process (`--providers null`), for measuring the engine alone.
    Null(NullProvider),
}

fn send_credentials(credentials: &Credentials) -> SendCredentials<'_> {
    match credentials {
        Credentials::OAuth { access_token, .. } => SendCredentials::Bearer(access_token.expose()),
        Credentials::Twilio { account_sid, auth_token } => {
            SendCredentials::Basic { account_sid, auth_token: auth_token.expose() }
        }
    }
}

impl ProviderClient {
    async fn send(&self, credentials: &Credentials, message: &OutboundMessage) -> SendOutcome {
        let credentials = send_credentials(credentials);
        match self {
            ProviderClient::Gmail(client) => client.send(credentials, message).await,
            ProviderClient::Outlook(client) => client.send(credentials, message).await,
            ProviderClient::Twilio(client) => client.send(credentials, message).await,
            ProviderClient::Null(null) => null.accept(),
        }
    }

    /// Sends a group formed by the batcher as one request where the provider has batches:
    /// one outcome per item, in order.
    async fn send_group(&self, items: &[QueuedSend]) -> Vec<SendOutcome> {
        match (self, items) {
            (_, []) => Vec::new(),
            (_, [item]) => vec![self.send(&item.credentials, &item.message).await],
            // Graph groups hold one connection's sends, so the first item's token is theirs.
            (ProviderClient::Outlook(client), [first, ..]) => {
                let messages: Vec<OutboundMessage> =
                    items.iter().map(|item| item.message.clone()).collect();
                client.send_batch(send_credentials(&first.credentials), &messages).await
            }
            // Gmail parts carry their own token, so one batch mixes mailboxes.
            (ProviderClient::Gmail(client), _) => {
                let parts: Vec<(SendCredentials<'_>, &OutboundMessage)> = items
                    .iter()
                    .map(|item| (send_credentials(&item.credentials), &item.message))
                    .collect();
                client.send_batch(&parts).await
            }
            (ProviderClient::Null(null), _) => items.iter().map(|_| null.accept()).collect(),
            // The batcher never groups Twilio sends; if it did, each would go on its own.
            (ProviderClient::Twilio(_), _) => {
                join_all(items.iter().map(|item| self.send(&item.credentials, &item.message))).await
            }
        }
    }
}

/// Settings of a provider actor.
#[derive(Clone, Copy, Debug)]
pub struct ProviderSettings {
    /// Limits of the engine's own account at the provider, shared by every connection: the
    /// Google Cloud project or the Entra application.
    pub provider_limits: Option<SendLimits>,
    /// Requests in flight at once for the whole provider; a batch request counts as one.
    pub max_requests_in_flight: usize,
    /// Sends per batch request; 1 sends each on its own.
    pub batch_size: usize,
    /// Whether Gmail batches may mix the sends of several connections (each part carries its
    /// own token). Otherwise a batch contains one connection's sends.
    pub shared_batches: bool,
    /// How long a send waits for others to share its batch.
    pub linger: Duration,
    pub breaker: BreakerSettings,
}

/// The scope of the sends that may share a batch request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum BatchKey {
    /// Any sends of the provider (Gmail parts carry their own credentials).
    Provider,
    /// Sends of one connection (Graph runs a batch under one token).
    Connection(ConnectionId),
}

impl BatchKey {
    /// Returns the connection slots a batch of this key takes. A per-connection batch takes
    /// slots of its connection. A provider-wide batch mixes connections, so only the provider's
    /// slots bound it.
    fn connection_slots(self, slots: &Option<ConnectionSlots>) -> Option<ConnectionSlots> {
        match self {
            BatchKey::Connection(_) => slots.clone(),
            BatchKey::Provider => None,
        }
    }
}

/// The request slots of one connection.
#[derive(Clone, Debug)]
struct ConnectionSlots {
    semaphore: Arc<Semaphore>,
    /// Slots in all: the connection's `max_in_flight`.
    total: u32,
}

/// A send waiting in a batch.
#[derive(Debug)]
struct QueuedSend {
    credentials: Credentials,
    message: OutboundMessage,
    /// The sender's lease on the tenant, checked again just before the request leaves.
    lease: Arc<TenantLease>,
    reply: oneshot::Sender<SendOutcome>,
}

/// Limits, breaker and request slots of one connection.
#[derive(Debug)]
struct ConnectionState {
    limiters: HashMap<Channel, ConnectionLimiter>,
    breaker: CircuitBreaker,
    /// Requests of this connection in flight, at most `max_in_flight`.
    slots: ConnectionSlots,
}

#[derive(Debug)]
pub struct ProviderActor {
    provider: Provider,
    client: Arc<ProviderClient>,
    clock: Arc<dyn Clock>,
    settings: ProviderSettings,
    requests: Arc<Semaphore>,
    /// The pace and daily cap of `settings.provider_limits`.
    provider_limiter: Option<ConnectionLimiter>,
    connections: HashMap<ConnectionId, ConnectionState>,
    batches: HashMap<BatchKey, Vec<QueuedSend>>,
    /// When each connection last handed over sends, to tell whether a send arriving now could
    /// share a provider-wide batch with another connection's.
    last_delivery: HashMap<ConnectionId, Instant>,
    /// Live counters of the operator API.
    live: Arc<LiveStats>,
}

impl ProviderActor {
    /// Gives back the rate-limit places of `count` admitted sends that never left.
    fn refund(&mut self, connection: ConnectionId, channel: Channel, count: u32) {
        if let Some(state) = self.connections.get_mut(&connection) {
            if let Some(limiter) = state.limiters.get_mut(&channel) {
                limiter.refund(count);
            }
            // A half-open breaker admits one send, so a refund means the trial never left.
            if count > 0 {
                state.breaker.release_trial();
            }
        }
        if let Some(shared) = &mut self.provider_limiter {
            shared.refund(count);
        }
    }

    pub fn new(
        provider: Provider,
        client: ProviderClient,
        clock: Arc<dyn Clock>,
        mut settings: ProviderSettings,
    ) -> Self {
        settings.max_requests_in_flight = settings.max_requests_in_flight.max(1);
        settings.batch_size = settings.batch_size.max(1);
        let provider_limiter = settings.provider_limits.map(|send| {
            let limits = ConnectionLimits {
                send,
                per_local_day: None,
                timezone: chrono_tz::UTC,
                max_in_flight: u32::MAX,
            };
            ConnectionLimiter::new(limits, clock.clone())
        });
        Self {
            provider,
            client: Arc::new(client),
            clock,
            requests: Arc::new(Semaphore::new(settings.max_requests_in_flight)),
            provider_limiter,
            settings,
            connections: HashMap::new(),
            batches: HashMap::new(),
            last_delivery: HashMap::new(),
            live: Arc::default(),
        }
    }

    /// Counts this actor's requests in flight and rate-limit waits in `live`, which the
    /// operator API reads, instead of in counters of its own.
    pub fn with_live_stats(mut self, live: Arc<LiveStats>) -> Self {
        self.live = live;
        self
    }

    /// Records a delivery of `connection` and returns whether another connection delivered
    /// within the last `SENDING_RECENTLY`.
    fn others_sending(&mut self, connection: ConnectionId) -> bool {
        const SENDING_RECENTLY: Duration = Duration::from_secs(1);
        let now = Instant::now();
        if self.last_delivery.len() > 4_096 {
            self.last_delivery.retain(|_, at| now.duration_since(*at) < SENDING_RECENTLY);
        }
        let others = self
            .last_delivery
            .iter()
            .any(|(id, at)| *id != connection && now.duration_since(*at) < SENDING_RECENTLY);
        self.last_delivery.insert(connection, now);
        others
    }

    fn batch_key(&self, connection: ConnectionId) -> Option<BatchKey> {
        if self.settings.batch_size <= 1 {
            return None;
        }
        // A connection that failed lately sends alone: one stalled call stalls its whole batch,
        // and would leave the sends of healthy mailboxes sharing it in doubt.
        let healthy = self.connections.get(&connection).is_none_or(|state| {
            state.breaker.state() == crate::breaker::BreakerState::Closed { failures: 0 }
        });
        match self.provider {
            Provider::Gmail if self.settings.shared_batches && healthy => Some(BatchKey::Provider),
            Provider::Gmail | Provider::Outlook => Some(BatchKey::Connection(connection)),
            Provider::Twilio => None,
        }
    }

    /// Sends the queued sends of `key` now, in requests of at most `batch_size`.
    fn flush(&mut self, key: BatchKey, connection_slots: Option<ConnectionSlots>) {
        let Some(mut queued) = self.batches.remove(&key) else {
            return;
        };
        while !queued.is_empty() {
            let rest = queued.split_off(queued.len().min(self.settings.batch_size));
            let group = std::mem::replace(&mut queued, rest);
            self.spawn_request(group, connection_slots.clone());
        }
    }

    /// Sends one group as one request, once a provider slot (and slots of the connection, for
    /// per-connection groups) are free, and hands each outcome to its waiting sender.
    fn spawn_request(&self, group: Vec<QueuedSend>, connection_slots: Option<ConnectionSlots>) {
        let client = self.client.clone();
        let requests = self.requests.clone();
        let provider = self.provider;
        let provider_name = provider.as_str();
        let live = self.live.clone();
        actix::spawn(async move {
            // The connection's slots come first, so that a request waiting for its busy
            // connection keeps no provider slot that other connections could use. A batch
            // takes a slot per call it carries, up to all of them: Graph runs the calls of a
            // `$batch` side by side, and they count against the mailbox's concurrency.
            let _connection_slots = match connection_slots {
                Some(slots) => {
                    let calls = u32::try_from(group.len()).unwrap_or(u32::MAX);
                    Some(slots.semaphore.acquire_many_owned(calls.clamp(1, slots.total)).await)
                }
                None => None,
            };
            let _provider_slot = requests.acquire_owned().await;
            // A send may wait here for slots longer than its tenant's lease lasts. Once the
            // lease may have passed to another node, which then takes the follow-up as sent
            // or not by what the store says, the request must not leave.
            let now = Utc::now();
            let (group, held_back): (Vec<_>, Vec<_>) =
                group.into_iter().partition(|queued| queued.lease.allows_sends(now));
            for queued in held_back {
                let _ = queued.reply.send(SendOutcome::NotSent {
                    reason: "held back: the lease on the tenant ran out before the request left"
                        .into(),
                });
            }
            if group.is_empty() {
                return;
            }
            let in_flight = metrics::gauge!(telemetry::IN_FLIGHT, "provider" => provider_name);
            in_flight.increment(1.0);
            let channel = group[0].message.channel;
            live.in_flight(provider, channel, 1);
            let started = Instant::now();
            let outcomes = client.send_group(&group).await;
            metrics::histogram!(telemetry::PROVIDER_REQUEST_DURATION, "provider" => provider_name)
                .record(started.elapsed().as_secs_f64());
            in_flight.decrement(1.0);
            live.in_flight(provider, channel, -1);
            for (queued, outcome) in group.into_iter().zip(outcomes) {
                // The tenant actor waiting for it may be gone after a restart; nothing to do.
                let _ = queued.reply.send(outcome);
            }
        });
    }

    /// Feeds the outcomes of one connection's sends to its breaker and limiter.
    fn record_outcomes(
        &mut self,
        connection: ConnectionId,
        channel: Channel,
        outcomes: &[SendOutcome],
    ) {
        let now = self.clock.now();
        let provider = self.provider;
        let settings = self.settings.breaker;
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        for outcome in outcomes {
            let transition = match outcome {
                SendOutcome::Accepted { .. } | SendOutcome::Permanent { .. } => {
                    state.breaker.record_success(&settings)
                }
                SendOutcome::Retryable { retry_after, .. } => {
                    if let Some(wait) = retry_after.and_then(|d| chrono::Duration::from_std(d).ok())
                        && let Some(limiter) = state.limiters.get_mut(&channel)
                    {
                        limiter.pause_until(now + wait);
                    }
                    state.breaker.record_failure(&settings, now)
                }
                SendOutcome::InDoubt { .. } => state.breaker.record_failure(&settings, now),
                // The tenant actor refreshes the token or pauses the connection, so the next send
                // carries new credentials. A trial send ends here too, so that the new
                // credentials get a trial of their own.
                SendOutcome::Unauthorized { .. } => {
                    state.breaker.release_trial();
                    None
                }
                // Nothing reached the provider, so the breaker learnt nothing.
                SendOutcome::NotSent { .. } => {
                    state.breaker.release_trial();
                    None
                }
            };
            log_transition(provider, connection, transition);
        }
    }
}

/// Returns the state of connection `id`, created on first use, with its request slots resized
/// to `limits`.
fn connection_state<'a>(
    connections: &'a mut HashMap<ConnectionId, ConnectionState>,
    breaker: &BreakerSettings,
    id: ConnectionId,
    limits: ConnectionLimits,
) -> &'a mut ConnectionState {
    let total = limits.max_in_flight.max(1);
    let state = connections.entry(id).or_insert_with(|| ConnectionState {
        limiters: HashMap::new(),
        breaker: CircuitBreaker::new(breaker),
        slots: ConnectionSlots { semaphore: Arc::new(Semaphore::new(total as usize)), total },
    });
    let slots = &mut state.slots;
    if slots.total < total {
        slots.semaphore.add_permits((total - slots.total) as usize);
    } else if slots.total > total {
        // NOTE: only free slots can be taken away. While more requests than the new limit are
        // in flight, their slots come back with them, so the limit is exceeded until they end.
        slots.semaphore.forget_permits((slots.total - total) as usize);
    }
    slots.total = total;
    state
}

fn log_transition(provider: Provider, connection: ConnectionId, transition: Option<Transition>) {
    match transition {
        Some(Transition::Opened { until, failures }) => {
            tracing::warn!(
                %provider, %connection, failures, reopens_at = %until,
                "circuit breaker opened: sends of this connection stop until then"
            );
            metrics::counter!(telemetry::BREAKER_OPENINGS, "provider" => provider.as_str())
                .increment(1);
        }
        Some(Transition::Closed) => {
            tracing::info!(%provider, %connection, "circuit breaker closed: sends resume");
        }
        None => {}
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
    }
}

/// Asks to send up to `wanted` follow-ups through one connection now.
#[derive(Debug, Message)]
#[rtype(result = "Admission")]
pub struct Admit {
    pub connection: ConnectionId,
    pub channel: Channel,
    pub limits: ConnectionLimits,
    pub wanted: u32,
}

impl Handler<Admit> for ProviderActor {
    type Result = MessageResult<Admit>;

    fn handle(&mut self, msg: Admit, _: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        let clock = self.clock.clone();
        let provider = self.provider;
        let state = connection_state(
            &mut self.connections,
            &self.settings.breaker,
            msg.connection,
            msg.limits,
        );
        let allowed = match state.breaker.admit(msg.wanted, now) {
            BreakerAdmission::Allow(allowed) => allowed,
            BreakerAdmission::WaitUntil(until) => {
                return MessageResult(Admission { granted: 0, next_free_at: Some(until) });
            }
        };
        let limiter = state
            .limiters
            .entry(msg.channel)
            .or_insert_with(|| ConnectionLimiter::new(msg.limits, clock));
        limiter.set_limits(msg.limits);
        let mut admission = limiter.admit(allowed);
        // The provider-wide limit comes second: the connection's own is usually the tighter,
        // and its daily places taken for sends the provider limit holds back are given back.
        if let Some(shared) = &mut self.provider_limiter
            && admission.granted > 0
        {
            let shared_admission = shared.admit(admission.granted);
            if shared_admission.granted < admission.granted {
                limiter.refund(admission.granted - shared_admission.granted);
                admission = Admission {
                    granted: shared_admission.granted,
                    next_free_at: earliest(admission.next_free_at, shared_admission.next_free_at),
                };
            }
        }
        if allowed < msg.wanted {
            // Only a trial send is allowed; the others wait for its outcome.
            let trial_known_by = now + chrono::Duration::seconds(1);
            admission.next_free_at = Some(admission.next_free_at.unwrap_or(trial_known_by));
            if admission.granted == 0 {
                state.breaker.release_trial();
            }
        }
        if admission.granted < msg.wanted {
            metrics::counter!(telemetry::RATE_LIMIT_WAITS, "provider" => provider.as_str())
                .increment(1);
            self.live.count(provider, msg.channel, QueueEvent::RateLimitWait);
        }
        MessageResult(admission)
    }
}

/// Counts sends a connection made before the engine started, so that its daily caps hold
/// across a restart. Ignored when the connection's limiter on that channel already exists.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RestoreSends {
    pub connection: ConnectionId,
    pub channel: Channel,
    pub limits: ConnectionLimits,
    /// Instants of the sends, oldest first.
    pub sent_at: Vec<DateTime<Utc>>,
}

impl Handler<RestoreSends> for ProviderActor {
    type Result = ();

    fn handle(&mut self, msg: RestoreSends, _: &mut Self::Context) {
        let clock = self.clock.clone();
        let state = connection_state(
            &mut self.connections,
            &self.settings.breaker,
            msg.connection,
            msg.limits,
        );
        if let std::collections::hash_map::Entry::Vacant(slot) = state.limiters.entry(msg.channel) {
            slot.insert(ConnectionLimiter::new(msg.limits, clock)).restore(&msg.sent_at);
            // The shared limit counts every connection's sends, so each adds its own.
            if let Some(shared) = &mut self.provider_limiter {
                shared.restore(&msg.sent_at);
            }
        }
    }
}

/// Gives back `count` daily permits of a connection, taken by [`Admit`] for follow-ups that did
/// not go out after all.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Refund {
    pub connection: ConnectionId,
    pub channel: Channel,
    pub count: u32,
}

impl Handler<Refund> for ProviderActor {
    type Result = ();

    fn handle(&mut self, msg: Refund, _: &mut Self::Context) {
        self.refund(msg.connection, msg.channel, msg.count);
    }
}

/// Sends admitted follow-ups of one connection and returns one outcome per message, in order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SendOutcome>")]
pub struct Deliver {
    pub connection: ConnectionId,
    pub channel: Channel,
    pub credentials: Credentials,
    pub messages: Vec<OutboundMessage>,
    /// The lease the sends are made under: no request leaves once it allows no sends.
    pub lease: Arc<TenantLease>,
}

impl Handler<Deliver> for ProviderActor {
    type Result = ResponseActFuture<Self, Vec<SendOutcome>>;

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) -> Self::Result {
        let Deliver { connection, channel, credentials, messages, lease } = msg;
        let connection_slots = self.connections.get(&connection).map(|state| state.slots.clone());
        let mut replies = Vec::with_capacity(messages.len());
        let batch_key = self.batch_key(connection);
        let linger = batch_key == Some(BatchKey::Provider) && self.others_sending(connection);
        for message in messages {
            let (reply, outcome) = oneshot::channel();
            replies.push(outcome);
            let queued = QueuedSend {
                credentials: credentials.clone(),
                message,
                lease: lease.clone(),
                reply,
            };
            let Some(key) = batch_key else {
                self.spawn_request(vec![queued], connection_slots.clone());
                continue;
            };
            let slots = key.connection_slots(&connection_slots);
            let queue = self.batches.entry(key).or_default();
            queue.push(queued);
            if queue.len() >= self.settings.batch_size {
                self.flush(key, slots);
            } else if queue.len() == 1 && linger {
                ctx.run_later(self.settings.linger, move |actor, _| actor.flush(key, slots));
            }
        }
        if !linger && let Some(key) = batch_key {
            self.flush(key, key.connection_slots(&connection_slots));
        }
        let outcomes = async move {
            let mut outcomes = Vec::with_capacity(replies.len());
            for reply in replies {
                outcomes.push(reply.await.unwrap_or_else(|_| SendOutcome::InDoubt {
                    reason: "the send task ended without an outcome".into(),
                }));
            }
            outcomes
        };
        Box::pin(outcomes.into_actor(self).map(move |outcomes, actor, _| {
            actor.record_outcomes(connection, channel, &outcomes);
            // Sends held back before they left keep no place in the day's limits.
            let not_sent = outcomes.iter().filter(|o| matches!(o, SendOutcome::NotSent { .. }));
            let not_sent = u32::try_from(not_sent.count()).unwrap_or(u32::MAX);
            if not_sent > 0 {
                actor.refund(connection, channel, not_sent);
            }
            outcomes
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use followup_adapters::fakes::{FakeConfig, FakeProviders};
    use followup_adapters::outbound::{OutboundMessage, SendOutcome};
    use followup_adapters::twilio::TwilioClient;
    use followup_core::clock::{Clock, SystemClock};
    use followup_core::domain::{Channel, Credentials, Provider};
    use followup_core::ids::{ConnectionId, FollowUpId, ScheduleId};
    use followup_core::sensitive::Sensitive;

    use super::*;
    use crate::cluster::TenantLease;

    fn sms(to: &str) -> OutboundMessage {
        OutboundMessage {
            follow_up: FollowUpId { schedule: ScheduleId::generate(), step: 1 },
            channel: Channel::Sms,
            from: "+15005550006".to_owned(),
            to: to.to_owned(),
            to_name: None,
            subject: None,
            body: "hello".to_owned(),
            html_body: None,
            unsubscribe_url: None,
            status_callback: None,
        }
    }

    /// A send whose lease ran out while it waited never reaches the provider; one under a
    /// live lease does.
    #[actix_rt::test]
    async fn send_is_held_back_once_its_lease_ran_out() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let fakes = FakeProviders::start(FakeConfig::open(clock.clone())).await.expect("fakes");
        let http = followup_adapters::http::build_http_client(&Default::default()).expect("http");
        let client = ProviderClient::Twilio(TwilioClient::new(http, fakes.twilio_url()));
        let settings = ProviderSettings {
            provider_limits: None,
            max_requests_in_flight: 4,
            batch_size: 1,
            shared_batches: false,
            linger: Duration::ZERO,
            breaker: BreakerSettings {
                failure_threshold: 5,
                open_for: chrono::Duration::seconds(30),
                max_open_for: chrono::Duration::minutes(5),
            },
        };
        let actor = ProviderActor::new(Provider::Twilio, client, clock, settings).start();
        let credentials = Credentials::Twilio {
            account_sid: "AC00000000000000000000000000000001".to_owned(),
            auth_token: Sensitive::new("token".to_owned()),
        };
        let deliver = |to: &str, lease: TenantLease| Deliver {
            connection: ConnectionId::generate(),
            channel: Channel::Sms,
            credentials: credentials.clone(),
            messages: vec![sms(to)],
            lease: Arc::new(lease),
        };

        let live = TenantLease::new(1, Utc::now() + chrono::Duration::minutes(1));
        let outcomes = actor.send(deliver("+15005550001", live)).await.expect("actor answers");
        assert_eq!(outcomes[0].kind(), "accepted", "{outcomes:?}");

        let lapsed = TenantLease::new(1, Utc::now() - chrono::Duration::seconds(1));
        let outcomes = actor.send(deliver("+15005550002", lapsed)).await.expect("actor answers");
        assert!(matches!(outcomes[0], SendOutcome::NotSent { .. }), "{outcomes:?}");

        let received: Vec<String> = fakes.received().into_iter().map(|m| m.to).collect();
        assert_eq!(received, ["+15005550001"], "only the send under a live lease arrived");
        fakes.shutdown().await;
    }
}
