//! Provider actors: one per provider kind. Each holds the rate limiters of every connection it
//! serves and sends with bounded concurrency over one pooled HTTP client.
//!
//! Admission and sending are separate messages: a tenant actor first asks how many of its due
//! follow-ups may go out now, records them as sending, and only then hands them over. Work
//! that a limit holds back stays pending in the store with its due instant, and the tenant
//! actor is told when the connection frees up, so no task sleeps on throttled work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use followup_adapters::gmail::GmailClient;
use followup_adapters::outbound::{OutboundMessage, SendCredentials, SendOutcome};
use followup_adapters::outlook::GraphClient;
use followup_adapters::twilio::TwilioClient;
use followup_core::clock::Clock;
use followup_core::domain::{Channel, Credentials, Provider};
use followup_core::ids::ConnectionId;
use followup_core::limits::SendLimits;
use futures_util::StreamExt as _;

use crate::limiter::{Admission, ConnectionLimiter};
use crate::telemetry;

/// The HTTP client of one provider.
#[derive(Debug)]
pub enum ProviderClient {
    Gmail(GmailClient),
    Outlook(GraphClient),
    Twilio(TwilioClient),
}

impl ProviderClient {
    async fn send(&self, credentials: &Credentials, message: &OutboundMessage) -> SendOutcome {
        let credentials = match credentials {
            Credentials::OAuth { access_token, .. } => {
                SendCredentials::Bearer(access_token.expose())
            }
            Credentials::Twilio { account_sid, auth_token } => {
                SendCredentials::Basic { account_sid, auth_token: auth_token.expose() }
            }
        };
        match self {
            ProviderClient::Gmail(client) => client.send(credentials, message).await,
            ProviderClient::Outlook(client) => client.send(credentials, message).await,
            ProviderClient::Twilio(client) => client.send(credentials, message).await,
        }
    }
}

/// NOTE: limiters start empty, so after a restart a connection's daily window does not count
/// the sends of the last 24 hours and may send up to a second day's cap within them. Rebuilding
/// it from the sent follow-ups of the last day needs a store query by send time.
#[derive(Debug)]
pub struct ProviderActor {
    provider: Provider,
    client: Arc<ProviderClient>,
    clock: Arc<dyn Clock>,
    /// Sends in flight at once per `Deliver` batch; concurrent batches each get this many.
    concurrency: usize,
    limiters: HashMap<(ConnectionId, Channel), ConnectionLimiter>,
}

impl ProviderActor {
    pub fn new(
        provider: Provider,
        client: ProviderClient,
        clock: Arc<dyn Clock>,
        concurrency: usize,
    ) -> Self {
        Self {
            provider,
            client: Arc::new(client),
            clock,
            concurrency: concurrency.max(1),
            limiters: HashMap::new(),
        }
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
    pub limits: SendLimits,
    pub wanted: u32,
}

impl Handler<Admit> for ProviderActor {
    type Result = MessageResult<Admit>;

    fn handle(&mut self, msg: Admit, _: &mut Self::Context) -> Self::Result {
        let clock = &self.clock;
        let limiter = self
            .limiters
            .entry((msg.connection, msg.channel))
            .or_insert_with(|| ConnectionLimiter::new(msg.limits, clock.clone()));
        limiter.set_limits(msg.limits);
        let admission = limiter.admit(msg.wanted);
        if admission.granted < msg.wanted {
            metrics::counter!(telemetry::RATE_LIMIT_WAITS, "provider" => self.provider.as_str())
                .increment(1);
        }
        MessageResult(admission)
    }
}

/// Gives back `count` daily-window permits of a connection, taken by [`Admit`] for follow-ups
/// that did not go out after all.
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
        if let Some(limiter) = self.limiters.get_mut(&(msg.connection, msg.channel)) {
            limiter.refund(msg.count);
        }
    }
}

/// Sends admitted follow-ups and returns one outcome per message, in order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SendOutcome>")]
pub struct Deliver {
    pub credentials: Credentials,
    pub messages: Vec<OutboundMessage>,
}

impl Handler<Deliver> for ProviderActor {
    type Result = ResponseFuture<Vec<SendOutcome>>;

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) -> Self::Result {
        let client = self.client.clone();
        let provider = self.provider.as_str();
        let concurrency = self.concurrency;
        Box::pin(async move {
            let credentials = &msg.credentials;
            let client = &client;
            futures_util::stream::iter(msg.messages.iter())
                .map(|message| async move {
                    let in_flight = metrics::gauge!(telemetry::IN_FLIGHT, "provider" => provider);
                    in_flight.increment(1.0);
                    let started = Instant::now();
                    let outcome = client.send(credentials, message).await;
                    metrics::histogram!(
                        telemetry::PROVIDER_REQUEST_DURATION,
                        "provider" => provider
                    )
                    .record(started.elapsed().as_secs_f64());
                    in_flight.decrement(1.0);
                    outcome
                })
                .buffered(concurrency)
                .collect()
                .await
        })
    }
}
