//! `GET /admin/v1/stream`: the operator snapshot as server-sent events.
//!
//! Every `admin.stream_period_millis` the stream writes an `event: snapshot` whose data is the
//! [`AdminSnapshot`] JSON, built from the cached overview and the live counters, so a client
//! costs no store work (unless counting per request is configured). Every fifth period it also
//! writes a comment line, which keeps proxies from closing a quiet connection. At most
//! `admin.max_streams` streams are open at once; one more is answered 503. When the server
//! stops, every stream writes `event: end` and finishes, so a graceful stop does not wait for
//! clients to leave.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};

use super::AppState;
use super::admin_api::build_snapshot;
use super::auth::Operator;

/// Comment heartbeats are written every this many periods.
const HEARTBEAT_EVERY: u64 = 5;

/// The limit on open streams and the signal that ends them.
#[derive(Debug)]
pub struct StreamGate {
    slots: Arc<Semaphore>,
    max: usize,
    closing: watch::Sender<bool>,
}

impl StreamGate {
    pub fn new(max: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(max)), max, closing: watch::Sender::new(false) }
    }

    /// Ends every open stream and answers new ones 503.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.slots.close();
    }
}

/// What one open stream carries from one event to the next.
struct StreamState {
    app: web::Data<AppState>,
    /// Released when the client goes away and actix drops the body.
    _slot: OwnedSemaphorePermit,
    closing: watch::Receiver<bool>,
    period: Duration,
    events: u64,
    ended: bool,
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl StreamState {
    /// Waits for the next period (or the server's stop) and returns what to write then, or
    /// `None` once the stream has ended.
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Self)> {
        if self.ended {
            return None;
        }
        if self.events > 0 {
            tokio::select! {
                () = tokio::time::sleep(self.period) => {}
                _ = self.closing.wait_for(|closing| *closing) => {}
            }
        }
        if *self.closing.borrow() {
            self.ended = true;
            return Some((Ok(event("end", r#"{"reason":"the server is stopping"}"#)), self));
        }
        self.events += 1;
        let mut chunk = match build_snapshot(&self.app).await {
            Ok(snapshot) => match serde_json::to_string(&snapshot) {
                Ok(json) => event("snapshot", &json).to_vec(),
                Err(error) => error_event(&format!("cannot encode the snapshot: {error}")),
            },
            Err(error) => error_event(&error.to_string()),
        };
        if self.events.is_multiple_of(HEARTBEAT_EVERY) {
            chunk.extend_from_slice(b": heartbeat\n\n");
        }
        Some((Ok(Bytes::from(chunk)), self))
    }
}

fn unavailable(code: &str, message: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "5"))
        .json(json!({"error": {"code": code, "message": message}}))
}

fn error_event(message: &str) -> Vec<u8> {
    event("error", &json!({ "error": message }).to_string()).to_vec()
}

pub async fn stream(state: web::Data<AppState>, _operator: Operator) -> HttpResponse {
    let gate = &state.streams;
    let slot = match gate.slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(TryAcquireError::NoPermits) => {
            let message = format!(
                "{} snapshot streams are open, the most admin.max_streams allows; close one \
                 or poll /admin/v1/snapshot",
                gate.max
            );
            return unavailable("too_many_streams", &message);
        }
        Err(TryAcquireError::Closed) => {
            return unavailable("stopping", "the server is stopping; connect to another node");
        }
    };
    let period = Duration::from_millis(state.engine.config().admin.stream_period_millis.max(100));
    let initial = StreamState {
        closing: gate.closing.subscribe(),
        app: state.clone(),
        _slot: slot,
        period,
        events: 0,
        ended: false,
    };
    // The first chunk tells the client how long to wait before reconnecting.
    let retry = Bytes::from(format!("retry: {}\n\n", period.as_millis() * 2));
    let events = futures_util::stream::unfold(initial, StreamState::next);
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, actix_web::Error>(retry) }),
        events,
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
