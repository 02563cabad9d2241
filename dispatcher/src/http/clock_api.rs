//! The operator endpoints of the engine's clock, and of the built-in fakes' addresses, for load
//! tests and measurements: `followup serve --virtual-clock` runs under a virtual clock that
//! does not move until `POST /admin/v1/clock/run` moves it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use followup_core::clock::{Clock as _, VirtualClock};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::Operator;
use super::error::ApiError;
use super::json::ApiJson;

/// Wall time one clock run may take when the request does not set it, in milliseconds.
pub const DEFAULT_MAX_WALL_MILLIS: u64 = 2_000;
/// Maximum wall time one clock run may take, in milliseconds.
pub const MAX_WALL_MILLIS: u64 = 60_000;

/// The virtual clock of an engine started with `--virtual-clock`, and the lock that lets one
/// clock run at a time: two runs interleaved would each jump the clock past the other's work.
#[derive(Debug)]
pub struct VirtualClockControl {
    clock: Arc<VirtualClock>,
    run_lock: tokio::sync::Mutex<()>,
}

impl VirtualClockControl {
    pub fn new(clock: Arc<VirtualClock>) -> Self {
        Self { clock, run_lock: tokio::sync::Mutex::new(()) }
    }
}

/// Body of `GET /admin/v1/clock`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClockView {
    /// Whether the engine runs under a virtual clock rather than the system clock.
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// Whether `POST /admin/v1/clock/run` moves the clock: only under `--virtual-clock`. The
    /// virtual clock of `followup demo` or of a test is moved by the process that owns it.
    pub operator_driven: bool,
    /// The engine's current instant.
    pub now: DateTime<Utc>,
}

/// Body of `POST /admin/v1/clock/run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunClockRequest {
    /// The instant up to which follow-ups are dispatched.
    pub until: DateTime<Utc>,
    /// Wall time this request may dispatch for, 1 to [`MAX_WALL_MILLIS`].
    #[serde(default)]
    pub max_wall_millis: Option<u64>,
}

/// Body of `GET /admin/v1/fakes`: the base URLs of the built-in fakes, in the shape
/// `followup fakes` prints them. Every fake also serves `/_fake/received` and `/_fake/stats`.
#[derive(Debug, Serialize)]
pub struct FakeUrlsView {
    pub gmail: String,
    pub graph: String,
    pub twilio: String,
    pub google_token: String,
    pub microsoft_token: String,
}

pub async fn get_clock(
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let clock = state.engine.clock();
    let view = ClockView {
        is_virtual: clock.is_virtual(),
        operator_driven: state.virtual_clock.is_some(),
        now: clock.now(),
    };
    Ok(HttpResponse::Ok().json(view))
}

/// Dispatches under the virtual clock up to `until`, for at most `max_wall_millis`.
///
/// A run is bounded in wall time, and the caller repeats the request until the outcome is
/// `settled` or `until_reached`, because a dispatch of days of follow-ups can take minutes. One
/// request that long would outlast client timeouts, show the caller no progress, and keep
/// dispatching after a caller that gave up.
pub async fn run_clock(
    state: web::Data<AppState>,
    _operator: Operator,
    body: ApiJson<RunClockRequest>,
) -> Result<HttpResponse, ApiError> {
    let Some(control) = &state.virtual_clock else {
        let message = if state.engine.clock().is_virtual() {
            "the engine's virtual clock is moved by the process that started it (followup demo \
             or a test), not through this endpoint"
        } else {
            "the engine runs on the system clock, which this endpoint cannot move; start it with \
             `followup serve --virtual-clock --providers fake` to drive its clock"
        };
        return Err(ApiError::Conflict(message.to_owned()));
    };
    let request = body.0;
    let max_wall_millis = request.max_wall_millis.unwrap_or(DEFAULT_MAX_WALL_MILLIS);
    if !(1..=MAX_WALL_MILLIS).contains(&max_wall_millis) {
        return Err(ApiError::BadRequest(format!(
            "max_wall_millis is {max_wall_millis}: expected 1 to {MAX_WALL_MILLIS}"
        )));
    }
    // The clock never goes back, and a round dispatches what is due at the clock's instant,
    // so a run to an earlier instant would send follow-ups due after it.
    let now = control.clock.now();
    if request.until < now {
        return Err(ApiError::BadRequest(format!(
            "until is {}, before the clock's current instant {now}: the clock never goes back",
            request.until
        )));
    }
    let Ok(_running) = control.run_lock.try_lock() else {
        return Err(ApiError::Conflict(
            "another clock run is in progress; retry when its request has returned".to_owned(),
        ));
    };
    let budget = Duration::from_millis(max_wall_millis);
    let run = state.engine.run_virtual_clock(&control.clock, request.until, budget).await;
    tracing::info!(
        now = %run.now,
        outcome = ?run.outcome,
        rounds = run.rounds,
        "virtual clock run ended"
    );
    Ok(HttpResponse::Ok().json(run))
}

pub async fn get_fakes(
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let Some(fakes) = &state.fakes else {
        return Err(ApiError::NotFound(
            "built-in fakes (the engine runs with providers mode live or null, not fake)"
                .to_owned(),
        ));
    };
    let view = FakeUrlsView {
        gmail: fakes.gmail_url().to_string(),
        graph: fakes.graph_url().to_string(),
        twilio: fakes.twilio_url().to_string(),
        google_token: fakes.google_token_url(),
        microsoft_token: fakes.microsoft_token_url(),
    };
    Ok(HttpResponse::Ok().json(view))
}
