//! The webhook routes: `POST /webhooks/stripe`, and `POST /webhooks/twilio/{connection}/status`
//! and `/inbound` for each Twilio connection. Each request is verified (see
//! `crate::webhooks`), checked against replays, written to the webhook log, and only then used.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use followup_core::domain::{Credentials, Provider};
use followup_core::ids::{ConnectionId, FollowUpId, TenantId};
use followup_core::sensitive::Sensitive;
use followup_core::store::Store;
use followup_core::suppression::{
    Suppression, SuppressionKind, SuppressionReason, key_of, normalize_value,
};
use futures_util::StreamExt as _;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::config::WebhooksConfig;
use crate::webhooks::event_log::WebhookLog;
use crate::webhooks::replay::ReplayCache;
use crate::webhooks::stripe::{self, StripeEvent};
use crate::webhooks::stripe_billing;
use crate::webhooks::{Rejection, WebhookSource, count_rejection, twilio};

/// State of the webhook routes, shared between requests.
#[derive(Debug)]
pub struct WebhookState {
    pub log: WebhookLog,
    stripe_replays: ReplayCache,
    twilio_replays: ReplayCache,
    twilio_accounts: TwilioAccounts,
    /// Taken while a Stripe event is applied, so that two events for one tenant never read and
    /// write its account at the same time on this node.
    pub stripe_billing: tokio::sync::Mutex<()>,
}

impl WebhookState {
    pub fn new(config: &WebhooksConfig, log: WebhookLog) -> Self {
        // A replayed Stripe request older than the tolerance is stale anyway, so the cache
        // only needs to cover the tolerance on both sides of the clock.
        let stripe_window = chrono::Duration::seconds(2 * config.stripe_tolerance_seconds as i64);
        let twilio_window = chrono::Duration::seconds(config.twilio_replay_window_seconds as i64);
        Self {
            log,
            stripe_replays: ReplayCache::new(stripe_window, config.replay_cache_entries),
            twilio_replays: ReplayCache::new(twilio_window, config.replay_cache_entries),
            twilio_accounts: TwilioAccounts::default(),
            stripe_billing: tokio::sync::Mutex::new(()),
        }
    }
}

/// Responds to a rejected webhook and counts it. The body names the reason, never a secret or
/// whether a connection exists.
fn reject(source: WebhookSource, reason: Rejection) -> HttpResponse {
    count_rejection(source, reason);
    tracing::warn!(source = source.label(), reason = reason.label(), "webhook rejected");
    let body = json!({"error": {"code": "invalid_signature", "message": reason.message()}});
    match reason {
        Rejection::Malformed => HttpResponse::BadRequest().json(body),
        _ => HttpResponse::Forbidden().json(body),
    }
}

/// Largest webhook body read, in bytes: Stripe events and Twilio callbacks are a few KiB.
const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

/// Reads a webhook body of at most `WEBHOOK_BODY_LIMIT` bytes. A longer or broken body is
/// rejected as malformed, with the JSON error every other rejection has.
async fn read_body(
    source: WebhookSource,
    mut payload: web::Payload,
) -> Result<Bytes, HttpResponse> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return Err(reject(source, Rejection::Malformed));
        };
        if body.len() + chunk.len() > WEBHOOK_BODY_LIMIT {
            count_rejection(source, Rejection::Malformed);
            tracing::warn!(source = source.label(), "webhook body over the size limit");
            let message = format!("webhook bodies are limited to {WEBHOOK_BODY_LIMIT} bytes");
            return Err(HttpResponse::PayloadTooLarge()
                .json(json!({"error": {"code": "payload_too_large", "message": message}})));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn not_configured(message: &str) -> HttpResponse {
    tracing::warn!(message, "webhook received but not configured");
    HttpResponse::ServiceUnavailable()
        .json(json!({"error": {"code": "webhook_not_configured", "message": message}}))
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<Result<&'a str, Rejection>> {
    let value = request.headers().get(name)?;
    Some(value.to_str().map_err(|_| Rejection::Malformed))
}

/// `POST /webhooks/stripe`.
pub async fn stripe_event(
    request: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let source = WebhookSource::Stripe;
    let body = match read_body(source, payload).await {
        Ok(body) => body,
        Err(response) => return Ok(response),
    };
    let config = &state.engine.config().webhooks;
    if config.stripe_signing_secrets.is_empty() {
        return Ok(not_configured(
            "Stripe webhooks are off: set webhooks.stripe_signing_secrets to the endpoint's secret",
        ));
    }
    let header = match header(&request, "Stripe-Signature") {
        None => return Ok(reject(source, Rejection::Unsigned)),
        Some(Err(reason)) => return Ok(reject(source, reason)),
        Some(Ok(value)) => value,
    };
    let signature = match stripe::parse_header(header) {
        Ok(signature) => signature,
        Err(reason) => return Ok(reject(source, reason)),
    };
    let secrets: Vec<&str> =
        config.stripe_signing_secrets.iter().map(|s| s.expose().as_str()).collect();
    let now = state.engine.clock().now();
    let verified =
        stripe::verify(&signature, &body, &secrets, now, config.stripe_tolerance_seconds);
    if let Err(reason) = verified {
        return Ok(reject(source, reason));
    }
    let timestamp = signature.timestamp.to_be_bytes();
    if !state.webhooks.stripe_replays.first_sighting(&[&timestamp, &body], now) {
        return Ok(reject(source, Rejection::Replayed));
    }

    let event: StripeEvent = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!("signed body is not a Stripe event: {error}"))
    })?;
    // The log keeps the part of the event billing applies, which is also what a start-up
    // applies again after a crash between recording and applying.
    let mut record = stripe_billing::trimmed_event(&event);
    record["received_at"] = json!(now);
    let record = serde_json::to_vec(&record)
        .map_err(|error| ApiError::Internal(format!("encoding webhook record: {error}")))?;
    let key = format!("{}{}", stripe_billing::LOG_PREFIX, event.id);
    let first = state.webhooks.log.insert_unapplied(key, record).await?;
    if !first {
        tracing::info!(event = %event.id, kind = %event.kind, "Stripe event delivered again");
        return Ok(HttpResponse::Ok().json(json!({"received": true, "duplicate": true})));
    }
    let trimmed: StripeEvent = serde_json::from_value(stripe_billing::trimmed_event(&event))
        .map_err(|error| ApiError::Internal(format!("trimming a Stripe event: {error}")))?;
    let outcome = apply_to_billing(&state, &trimmed).await;
    Ok(HttpResponse::Ok().json(json!({"received": true, "duplicate": false, "outcome": outcome})))
}

/// Hands a verified Stripe event, recorded once in the webhook log, to billing, one event at
/// a time per node. Returns the outcome's name. A failure is logged and leaves the event
/// unapplied for the next start, and Stripe still gets a 2xx: it would only deliver the same
/// event again, which the log already holds.
async fn apply_to_billing(state: &AppState, event: &StripeEvent) -> &'static str {
    let _applying = state.webhooks.stripe_billing.lock().await;
    let applied = stripe_billing::apply_and_mark(&state.engine, &state.webhooks.log, event).await;
    match applied {
        Ok(outcome) => outcome.label(),
        Err(error) => {
            tracing::error!(event = %event.id, kind = %event.kind, error = %format!("{error:#}"),
                "applying a Stripe event failed; it stays unapplied until the next start");
            "failed"
        }
    }
}

/// A Twilio webhook that passed verification.
struct TwilioRequest {
    tenant: TenantId,
    connection: ConnectionId,
    params: Vec<(String, String)>,
    received_at: DateTime<Utc>,
}

impl TwilioRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Reads and verifies a Twilio webhook for the connection named in the path, or returns the
/// response that rejects it. An unknown connection gets the same response as a wrong signature.
async fn verify_twilio(
    request: &HttpRequest,
    state: &AppState,
    connection: &str,
    payload: web::Payload,
) -> Result<TwilioRequest, HttpResponse> {
    let source = WebhookSource::Twilio;
    let body = read_body(source, payload).await?;
    let body = body.as_ref();
    let Some(base_url) = &state.engine.config().webhooks.public_base_url else {
        return Err(not_configured(
            "Twilio webhooks are off: set webhooks.public_base_url to the URL Twilio calls",
        ));
    };
    let signature = match header(request, "X-Twilio-Signature") {
        None => return Err(reject(source, Rejection::Unsigned)),
        Some(Err(reason)) => return Err(reject(source, reason)),
        Some(Ok(value)) => value,
    };
    let params = form_params(request, body).map_err(|reason| reject(source, reason))?;

    let account = match connection.parse::<ConnectionId>() {
        Ok(id) => state.webhooks.twilio_accounts.find(state.engine.store().as_ref(), id).await,
        Err(_) => None,
    };
    let Some(account) = account else {
        return Err(reject(source, Rejection::Forged));
    };
    // The cache may still contain the connection of a tenant deleted since it was loaded. A
    // deleted tenant has no tenant record, so its webhooks are rejected like unknown ones.
    match state.engine.store().tenant(account.tenant).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(reject(source, Rejection::Forged)),
        Err(error) => {
            tracing::error!(%error, tenant = %account.tenant, "reading a webhook's tenant failed");
            return Err(reject(source, Rejection::Forged));
        }
    }

    let path_and_query = request.uri().path_and_query().map_or("", |value| value.as_str());
    let url = format!("{}{path_and_query}", base_url.trim_end_matches('/'));
    if let Err(reason) = twilio::verify(signature, &url, &params, account.auth_token.expose()) {
        return Err(reject(source, reason));
    }
    let now = state.engine.clock().now();
    if !state
        .webhooks
        .twilio_replays
        .first_sighting(&[signature.as_bytes(), url.as_bytes(), body], now)
    {
        return Err(reject(source, Rejection::Replayed));
    }
    Ok(TwilioRequest {
        tenant: account.tenant,
        connection: account.connection,
        params,
        received_at: now,
    })
}

/// Reads the form parameters of a Twilio webhook.
///
/// Only a form body is covered by the signature. Twilio's JSON webhooks sign the URL alone and
/// carry the body's hash in a query parameter, which is not checked here, so they are rejected
/// rather than accepted with an unverified body.
fn form_params(request: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, Rejection> {
    let is_form = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(Rejection::Malformed);
    }
    serde_urlencoded::from_bytes(body).map_err(|_| Rejection::Malformed)
}

/// `POST /webhooks/twilio/{connection}/status`: a message or call status callback.
///
/// The status is written to the webhook log under the message or call SID and the status. The
/// engine's sends name their follow-up in the callback URL's `follow_up` query parameter, so
/// the record names the follow-up when its provider message id is this SID.
/// NOTE: the status is not written onto the follow-up record, which has no field for it, and
/// a callback URL without the parameter cannot be matched: the store has no index of
/// follow-ups by provider message id.
pub async fn twilio_status(
    request: HttpRequest,
    state: web::Data<AppState>,
    connection: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let callback = match verify_twilio(&request, &state, &connection, payload).await {
        Ok(callback) => callback,
        Err(response) => return Ok(response),
    };
    let (sid, status) = match (callback.param("MessageSid"), callback.param("CallSid")) {
        (Some(sid), _) => (sid, callback.param("MessageStatus")),
        (None, Some(sid)) => (sid, callback.param("CallStatus")),
        (None, None) => {
            return Err(ApiError::BadRequest(
                "invalid status callback: it has neither MessageSid nor CallSid".into(),
            ));
        }
    };
    let status = status.unwrap_or("unknown");
    let follow_up =
        matching_follow_up(&request, state.engine.store().as_ref(), &callback, sid).await?;
    let record = json!({
        "tenant": callback.tenant,
        "connection": callback.connection,
        "follow_up": follow_up,
        "sid": sid,
        "status": status,
        "error_code": callback.param("ErrorCode"),
        "received_at": callback.received_at,
    });
    let record = serde_json::to_vec(&record)
        .map_err(|error| ApiError::Internal(format!("encoding webhook record: {error}")))?;
    let first = state.webhooks.log.insert_new(format!("twilio/{sid}/{status}"), record).await?;
    tracing::info!(tenant = %callback.tenant, sid, status, first, "Twilio status callback");
    Ok(HttpResponse::NoContent().finish())
}

/// Returns the follow-up named by the callback URL's `follow_up` parameter if it belongs to
/// the connection's tenant and was sent as `sid`.
async fn matching_follow_up(
    request: &HttpRequest,
    store: &dyn Store,
    callback: &TwilioRequest,
    sid: &str,
) -> Result<Option<FollowUpId>, ApiError> {
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(request.query_string()).unwrap_or_default();
    let named = query.iter().find(|(name, _)| name == "follow_up");
    let Some(id) = named.and_then(|(_, value)| value.parse::<FollowUpId>().ok()) else {
        return Ok(None);
    };
    let follow_up = store.follow_up(callback.tenant, id).await?;
    let sent_as_sid = follow_up.and_then(|f| f.provider_message_id).is_some_and(|s| s == sid);
    if !sent_as_sid {
        tracing::warn!(tenant = %callback.tenant, follow_up = %id, sid,
            "Twilio status names a follow-up not sent with this SID");
    }
    Ok(sent_as_sid.then_some(id))
}

/// Empty TwiML: Twilio sends no reply to the inbound message.
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// `POST /webhooks/twilio/{connection}/inbound`: an SMS a contact sent to the tenant's number.
pub async fn twilio_inbound(
    request: HttpRequest,
    state: web::Data<AppState>,
    connection: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let message = match verify_twilio(&request, &state, &connection, payload).await {
        Ok(message) => message,
        Err(response) => return Ok(response),
    };
    handle_inbound_message(&state, &message).await?;
    Ok(HttpResponse::Ok().content_type("text/xml").body(EMPTY_TWIML))
}

/// Twilio's default opt-out keywords on long codes: STOP, UNSUBSCRIBE, END, QUIT, STOPALL,
/// REVOKE, OPTOUT and CANCEL (Twilio docs, "Customize users' opt-in and opt-out experience
/// with Advanced Opt-Out", twilio.com/docs/messaging/tutorials/advanced-opt-out). Twilio then
/// refuses further messages from the number to the sender with error 21610.
const OPT_OUT_KEYWORDS: &[&str] =
    &["STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"];

/// Twilio's default opt-in keywords, which lift an opt-out: START, YES and UNSTOP (Twilio
/// support, "Twilio support for opt-out keywords (SMS STOP filtering)").
const OPT_IN_KEYWORDS: &[&str] = &["START", "YES", "UNSTOP"];

/// Twilio's default help keywords, which Twilio answers itself on long codes: HELP and INFO.
const HELP_KEYWORDS: &[&str] = &["HELP", "INFO"];

/// What an inbound message asks for, by Twilio's default keywords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsKeyword {
    OptOut,
    OptIn,
    Help,
}

impl SmsKeyword {
    /// Reads the keyword of a message body. Like Twilio, only a message that is one keyword
    /// alone counts, in any case and with surrounding whitespace: "STOP PLEASE" is no opt-out.
    pub fn of(body: &str) -> Option<(SmsKeyword, String)> {
        let word = body.trim().to_uppercase();
        let kind = if OPT_OUT_KEYWORDS.contains(&word.as_str()) {
            SmsKeyword::OptOut
        } else if OPT_IN_KEYWORDS.contains(&word.as_str()) {
            SmsKeyword::OptIn
        } else if HELP_KEYWORDS.contains(&word.as_str()) {
            SmsKeyword::Help
        } else {
            return None;
        };
        Some((kind, word))
    }
}

/// Records an inbound message with its SID and keyword, and acts on the keyword the first time
/// the message arrives: an opt-out adds the sender's number to the tenant's suppression list,
/// and an opt-in removes an entry that an opt-out made (not one the tenant imported or made by
/// hand). A help request needs nothing of the engine: Twilio answers it on long codes.
///
/// The sender's number and the text are not kept in the webhook log, because the log is not
/// encrypted the way the store is.
///
/// NOTE: a short code outside a Messaging Service gets no reply from Twilio to HELP or STOP,
/// and the engine sends none either (the answer is empty TwiML).
async fn handle_inbound_message(state: &AppState, message: &TwilioRequest) -> anyhow::Result<()> {
    let sid = message.param("MessageSid").unwrap_or_default();
    let keyword = SmsKeyword::of(message.param("Body").unwrap_or_default());
    let record = serde_json::to_vec(&json!({
        "tenant": message.tenant,
        "connection": message.connection,
        "sid": sid,
        "keyword": keyword.as_ref().map(|(_, word)| word),
        "received_at": message.received_at,
    }))?;
    let first = state.webhooks.log.insert_new(format!("twilio-inbound/{sid}"), record).await?;
    let word = keyword.as_ref().map(|(_, word)| word.as_str());
    tracing::info!(tenant = %message.tenant, sid, keyword = word, first, "Twilio inbound message");
    match keyword {
        Some((kind, _)) if first && kind != SmsKeyword::Help => {
            apply_opt_keyword(state, message, kind).await
        }
        _ => Ok(()),
    }
}

/// Adds the sender's number to the suppression list (opt-out) or removes the entry an
/// opt-out made (opt-in).
async fn apply_opt_keyword(
    state: &AppState,
    message: &TwilioRequest,
    kind: SmsKeyword,
) -> anyhow::Result<()> {
    let from = message.param("From").unwrap_or_default();
    let Ok(number) = normalize_value(SuppressionKind::Phone, from, None) else {
        tracing::warn!(tenant = %message.tenant, "opt keyword from a sender that is not an E.164 number; ignored");
        return Ok(());
    };
    let store = state.engine.store();
    let key = key_of(SuppressionKind::Phone, &number);
    if kind == SmsKeyword::OptOut {
        let now = message.received_at;
        let reason = SuppressionReason::SmsOptOut;
        let entry = Suppression::new(message.tenant, SuppressionKind::Phone, number, reason, now);
        store.put_suppressions(message.tenant, vec![entry]).await?;
        tracing::info!(tenant = %message.tenant, "number opted out by SMS; suppressed");
        return Ok(());
    }
    let current = store.suppressions(message.tenant, vec![key.clone()]).await?;
    let made_by_opt_out = current.iter().any(|entry| {
        matches!(entry.reason, SuppressionReason::SmsOptOut | SuppressionReason::ProviderOptOut)
    });
    if made_by_opt_out {
        store.remove_suppressions(message.tenant, vec![key]).await?;
        tracing::info!(tenant = %message.tenant, "number opted back in by SMS; suppression removed");
    }
    Ok(())
}

/// The Twilio account of one connection, as webhook verification needs it.
#[derive(Clone)]
struct TwilioAccount {
    tenant: TenantId,
    connection: ConnectionId,
    auth_token: Sensitive<String>,
}

/// Twilio connections by id, read from the store and refreshed on a miss.
#[derive(Default)]
struct TwilioAccounts {
    cache: Mutex<(HashMap<ConnectionId, TwilioAccount>, Option<Instant>)>,
}

impl std::fmt::Debug for TwilioAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TwilioAccounts { .. }")
    }
}

/// Minimum time between two reloads of the connections, so that requests naming unknown
/// connections cannot make the engine scan the store again and again.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Age after which a cached connection is read again, so that a changed auth token is used
/// within this time.
const MAX_AGE: Duration = Duration::from_secs(30);

impl TwilioAccounts {
    async fn find(&self, store: &dyn Store, id: ConnectionId) -> Option<TwilioAccount> {
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            let age = cache.1.map(|loaded| loaded.elapsed());
            let cached = cache.0.get(&id);
            if cached.is_some() && age.is_some_and(|age| age < MAX_AGE) {
                return cached.cloned();
            }
            if age.is_some_and(|age| age < RELOAD_INTERVAL) {
                return cached.cloned();
            }
        }
        // NOTE: a reload reads every tenant's connections, which is fine for thousands of
        // tenants. The store has no lookup of a connection by id alone yet.
        let accounts = match load_twilio_accounts(store).await {
            Ok(accounts) => accounts,
            Err(error) => {
                tracing::error!(%error, "reading Twilio connections for a webhook failed");
                return None;
            }
        };
        let found = accounts.get(&id).cloned();
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) =
            (accounts, Some(Instant::now()));
        found
    }
}

async fn load_twilio_accounts(
    store: &dyn Store,
) -> anyhow::Result<HashMap<ConnectionId, TwilioAccount>> {
    let mut accounts = HashMap::new();
    for tenant in store.tenants().await? {
        for connection in store.connections(tenant.id).await? {
            if let (Provider::Twilio, Credentials::Twilio { auth_token, .. }) =
                (connection.provider, &connection.credentials)
            {
                let account = TwilioAccount {
                    tenant: tenant.id,
                    connection: connection.id,
                    auth_token: auth_token.clone(),
                };
                accounts.insert(connection.id, account);
            }
        }
    }
    Ok(accounts)
}
