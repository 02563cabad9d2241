//! `run` against a fake engine on 127.0.0.1: the fake reads uploads with the engine's own
//! CSV reader and validator, and settles follow-ups one snapshot after they are created.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use followup_core::api::{AdminSnapshot, CreateTenantResponse, TenantSummary};
use followup_core::domain::Channel;
use followup_core::ids::TenantId;
use followup_core::ingest::{
    ColumnMapping, Format, IngestLimits, RecordReader, ValidationContext, validate,
};
use followup_core::sensitive::Sensitive;
use followup_loadtest::{Accounting, LoadOptions, Scenario, run};
use serde_json::json;

const ADMIN_TOKEN: &str = "test-admin-token";

/// What the fake engine stores.
#[derive(Debug, Default)]
struct FakeEngine {
    /// Tenants by API key.
    tenants: BTreeMap<String, FakeTenant>,
    /// Reject every upload with 503 and an empty report.
    fail_uploads: bool,
    /// Never move follow-ups out of `pending`.
    never_settle: bool,
}

#[derive(Debug)]
struct FakeTenant {
    id: TenantId,
    name: String,
    steps: u64,
    pending: u64,
    sent: u64,
    connections: Vec<String>,
}

type Shared = web::Data<Mutex<FakeEngine>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, FakeEngine> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bearer(request: &HttpRequest) -> String {
    let value = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    value.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default().to_owned()
}

async fn create_tenant(
    request: HttpRequest,
    state: Shared,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    if bearer(&request) != ADMIN_TOKEN {
        return HttpResponse::Unauthorized().finish();
    }
    let mut engine = lock(&state);
    let id = TenantId::generate();
    let api_key = format!("fu_test_{}", engine.tenants.len());
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let tenant = FakeTenant { id, name, steps: 0, pending: 0, sent: 0, connections: Vec::new() };
    engine.tenants.insert(api_key.clone(), tenant);
    HttpResponse::Created().json(CreateTenantResponse { id, api_key, stripe_customer_id: None })
}

async fn put_connection(
    request: HttpRequest,
    state: Shared,
    provider: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let mut engine = lock(&state);
    let Some(tenant) = engine.tenants.get_mut(&bearer(&request)) else {
        return HttpResponse::Unauthorized().finish();
    };
    if body["limits"]["per_minute"].as_u64().is_none() {
        return HttpResponse::BadRequest().body("limits missing");
    }
    tenant.connections.push(provider.into_inner());
    HttpResponse::Ok().json(json!({}))
}

async fn create_sequence(
    request: HttpRequest,
    state: Shared,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let mut engine = lock(&state);
    let Some(tenant) = engine.tenants.get_mut(&bearer(&request)) else {
        return HttpResponse::Unauthorized().finish();
    };
    tenant.steps = body["steps"].as_array().map_or(0, Vec::len) as u64;
    HttpResponse::Created().json(json!({"id": "sequence-1", "name": body["name"]}))
}

async fn bulk_upload(request: HttpRequest, state: Shared, body: web::Bytes) -> HttpResponse {
    if lock(&state).fail_uploads {
        let report = json!({"rows": 0, "accepted": 0, "created": 0, "duplicates": 0,
            "rejected": 0, "errors": []});
        return HttpResponse::ServiceUnavailable().json(json!({
            "error": {"code": "store_unavailable", "message": "store unavailable"},
            "report": report,
        }));
    }
    let (rows, accepted) = validate_upload(&body);
    let mut engine = lock(&state);
    let Some(tenant) = engine.tenants.get_mut(&bearer(&request)) else {
        return HttpResponse::Unauthorized().finish();
    };
    tenant.pending += accepted * tenant.steps;
    HttpResponse::Ok().json(json!({
        "rows": rows, "accepted": accepted, "created": accepted, "duplicates": 0,
        "rejected": rows - accepted, "errors": [], "mapping": [],
    }))
}

/// Reads a CSV body with the engine's reader and validator; returns rows and valid rows.
fn validate_upload(body: &[u8]) -> (u64, u64) {
    let mut reader = RecordReader::new(Format::Csv, IngestLimits::default());
    let mut records = Vec::new();
    reader.push(body, &mut records).expect("CSV body parses");
    reader.finish(&mut records).expect("CSV body ends cleanly");
    let mapping = ColumnMapping::guess(reader.headers().expect("header row"));
    let context = ValidationContext {
        default_region: "US".to_owned(),
        default_timezone: chrono_tz::UTC,
        required_fields: Vec::new(),
        channels: vec![Channel::Email, Channel::Sms],
        now: Utc::now(),
    };
    let rows = records.len() as u64;
    let valid = records
        .iter()
        .filter(|record| {
            let record = record.as_ref().expect("record parses");
            validate(record, &mapping, &context).is_ok()
        })
        .count() as u64;
    (rows, valid)
}

/// Returns the snapshot, then settles every pending follow-up, so that each poll after an
/// upload sees it settled.
async fn snapshot(request: HttpRequest, state: Shared) -> HttpResponse {
    if bearer(&request) != ADMIN_TOKEN {
        return HttpResponse::Unauthorized().finish();
    }
    let mut engine = lock(&state);
    let mut totals = BTreeMap::new();
    let mut tenants = Vec::new();
    for tenant in engine.tenants.values() {
        *totals.entry("pending".to_owned()).or_insert(0) += tenant.pending;
        *totals.entry("sent".to_owned()).or_insert(0) += tenant.sent;
        tenants.push(TenantSummary {
            id: tenant.id,
            name: tenant.name.clone(),
            plan: "pro".to_owned(),
            backlog: tenant.pending,
            sent: tenant.sent,
            failed: 0,
            paused_connections: Vec::new(),
            held: 0,
            quota_used_percent: None,
            paused_reason: None,
            dead: 0,
        });
    }
    if !engine.never_settle {
        for tenant in engine.tenants.values_mut() {
            tenant.sent += tenant.pending;
            tenant.pending = 0;
        }
    }
    let snapshot =
        AdminSnapshot { now: Utc::now().to_rfc3339(), totals, tenants, ..AdminSnapshot::default() };
    HttpResponse::Ok().json(snapshot)
}

/// Starts the fake on 127.0.0.1 and a free port.
fn start_fake(engine: FakeEngine) -> (String, Shared) {
    let state: Shared = web::Data::new(Mutex::new(engine));
    let data = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 << 20))
            .route("/admin/v1/tenants", web::post().to(create_tenant))
            .route("/admin/v1/snapshot", web::get().to(snapshot))
            .route("/v1/connections/{provider}", web::put().to(put_connection))
            .route("/v1/sequences", web::post().to(create_sequence))
            .route("/v1/schedules/bulk", web::post().to(bulk_upload))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("bind 127.0.0.1:0");
    let address: SocketAddr = server.addrs()[0];
    tokio::spawn(server.run());
    (format!("http://{address}"), state)
}

fn options(url: String, scenario: Scenario) -> LoadOptions {
    LoadOptions {
        url,
        admin_token: Sensitive::new(ADMIN_TOKEN.to_owned()),
        scenario,
        show_progress: false,
    }
}

fn small_scenario() -> Scenario {
    Scenario {
        name: "test".to_owned(),
        tenants: 3,
        contacts_per_tenant: 400,
        rows_per_upload: 150,
        concurrency: 2,
        timeout_seconds: 30,
        invalid_fraction: 0.05,
        poll_interval_ms: 50,
        ..Scenario::default()
    }
}

#[tokio::test]
async fn run_passes_against_fake() {
    let (url, state) = start_fake(FakeEngine::default());
    let report = run(options(url, small_scenario())).await.expect("run completes");

    let ingest = &report.ingest.totals;
    assert_eq!(ingest.uploads, 9, "3 tenants x 3 uploads");
    assert_eq!(ingest.failed_uploads, 0);
    assert_eq!(ingest.rows_sent, 1_200);
    assert_eq!(ingest.rows, 1_200);
    assert_eq!(ingest.rejected, 60, "5% of 400, for each of 3 tenants");
    assert_eq!(ingest.accepted, 1_140);
    assert_eq!(report.settle.expected_follow_ups, 2_280, "two steps each");
    assert_eq!(report.settle.settled, 2_280);
    assert_eq!(report.settle.accounting, Some(Accounting::Exact));
    assert!(report.checks.all_settled);
    assert_eq!(report.checks.follow_ups_accounted, Some(true));
    assert!(report.passed, "{report}");

    let engine = lock(&state);
    for tenant in engine.tenants.values() {
        assert_eq!(tenant.connections, ["gmail", "twilio"], "tenant {}", tenant.name);
        assert!(tenant.name.starts_with("loadtest-test-"), "{}", tenant.name);
    }
}

#[tokio::test]
async fn failed_uploads_fail_run() {
    let (url, _state) = start_fake(FakeEngine { fail_uploads: true, ..FakeEngine::default() });
    let report = run(options(url, small_scenario())).await.expect("run completes");
    assert_eq!(report.ingest.totals.failed_uploads, 9);
    assert!(!report.checks.all_rows_read);
    assert!(!report.passed);
    assert!(report.problems.iter().any(|problem| problem.contains("503")), "{report}");
}

#[tokio::test]
async fn unsettled_run_times_out() {
    let (url, _state) = start_fake(FakeEngine { never_settle: true, ..FakeEngine::default() });
    let scenario = Scenario { timeout_seconds: 2, poll_interval_ms: 100, ..small_scenario() };
    let report = run(options(url, scenario)).await.expect("run completes");
    assert!(report.settle.timed_out);
    assert!(report.settle.unsettled > 0);
    assert!(!report.passed);
    assert!(report.settle.polls <= 25, "polls bounded by the deadline: {}", report.settle.polls);
}

#[tokio::test]
async fn remote_url_rejected() {
    // 192.0.2.0/24 is reserved for documentation; the guard rejects it before any request.
    let error = run(options("http://192.0.2.1:8080".to_owned(), small_scenario()))
        .await
        .expect_err("not loopback");
    assert!(error.to_string().contains("loopback"), "{error}");
}

#[tokio::test]
async fn wrong_admin_token_fails_setup() {
    let (url, _state) = start_fake(FakeEngine::default());
    let mut options = options(url, small_scenario());
    options.admin_token = Sensitive::new("wrong".to_owned());
    let error = run(options).await.expect_err("unauthorized");
    assert!(format!("{error:#}").contains("401"), "{error:#}");
}
