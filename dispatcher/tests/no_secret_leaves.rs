//! Secrets planted in a full run of `followup serve` never come back out: not in a log line,
//! an API response, a metrics scrape or a console frame.
//!
//! The engine and the provider fakes run as separate processes, as in production, with debug
//! logs on. The test drives every route a tenant and the operator use and lets follow-ups go
//! out by email and SMS. Then it searches everything the engine emitted for each secret.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use followup_core::sensitive::Sensitive;
use followup_tui::client::SnapshotClient;
use followup_tui::{App, PollOutcome};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use serde_json::{Value, json};
use support::{ChildGuard, free_port, serve_to_fakes, start_fakes, wait_ready};

mod support;

const OPERATOR_TOKEN: &str = "op-planted-7d41c9e2a05b88f3";
/// Master key of the engine: base64 of 32 bytes that spell a planted marker.
const MASTER_KEY: &str = "cGxhbnRlZC1tYXN0ZXIta2V5LW9mLTMyLWJ5dGVzISE=";
const GMAIL_ACCESS_TOKEN: &str = "ya29.planted-gmail-access-5c0e91d7";
const GMAIL_REFRESH_TOKEN: &str = "1//planted-gmail-refresh-8e2d07b4";
const OUTLOOK_ACCESS_TOKEN: &str = "eyJ0planted-outlook-access-3fa8b6c2";
const OUTLOOK_REFRESH_TOKEN: &str = "M.C5planted-outlook-refresh-61f0a9";
const GOOGLE_CLIENT_SECRET: &str = "GOCSPX-planted-client-secret-4b7e";
const MICROSOFT_CLIENT_SECRET: &str = "Qx8~planted-entra-secret-93c1d5";
const STRIPE_SIGNING_SECRET: &str = "whsec_planted-stripe-secret-a71e3c";
const TWILIO_AUTH_TOKEN: &str = "9f3c1a7e5b2d4086a1c3e5f7092b4d6e";
const TWILIO_ACCOUNT_SID: &str = "AC7e0a5c3b1d9f8e6a4c2b0d9e8f7a6b5c";
/// An API key that is not any tenant's; a request carrying it must not see it echoed.
const FORGED_API_KEY: &str = "fu_planted-forged-key-0c6f2e8a4b1d";
const CONTACTS: usize = 40;

/// Starts the engine with debug logs in JSON, writing its stdout and stderr to `log`.
fn start_engine(data_dir: &Path, log: &Path, port: u16, urls: &Value) -> ChildGuard {
    let log_file = std::fs::File::create(log).expect("create the engine log");
    let child = serve_to_fakes(data_dir, port, urls)
        .args(["--log-format", "json"])
        .args(["--google-client-id", "leak-check.apps.example.com"])
        .args(["--microsoft-client-id", "0b5e8f3a-leak-check"])
        .env("FOLLOWUP_GOOGLE_CLIENT_SECRET", GOOGLE_CLIENT_SECRET)
        .env("FOLLOWUP_MICROSOFT_CLIENT_SECRET", MICROSOFT_CLIENT_SECRET)
        .env("FOLLOWUP_STRIPE_SIGNING_SECRETS", STRIPE_SIGNING_SECRET)
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .env("FOLLOWUP_MASTER_KEY", MASTER_KEY)
        .env("RUST_LOG", "debug")
        .stdout(log_file.try_clone().expect("share the log file"))
        .stderr(log_file)
        .spawn()
        .expect("start followup serve");
    ChildGuard(child)
}

/// Every text the engine sent back, by where it came from, to be searched for secrets.
#[derive(Default)]
struct Emitted {
    texts: Vec<(String, String)>,
}

impl Emitted {
    fn add(&mut self, origin: impl Into<String>, text: impl Into<String>) {
        self.texts.push((origin.into(), text.into()));
    }

    /// Sends a request and records its status line and body.
    async fn send(&mut self, origin: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap_or_else(|error| panic!("{origin}: {error}"));
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap_or_else(|error| panic!("{origin}: {error}"));
        self.add(format!("{origin} headers"), headers);
        self.add(origin, body.clone());
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

/// Draws each console view once from the engine's snapshot and returns the frames as text.
async fn console_frames(base: &str) -> Vec<String> {
    let url = reqwest::Url::parse(base).expect("engine URL");
    let client = SnapshotClient::new(&url, Sensitive::new(OPERATOR_TOKEN.to_owned()))
        .expect("console client");
    let snapshot = client.fetch().await.expect("console snapshot");
    let area = Rect::new(0, 0, 140, 40);
    let mut app = App::new(client.server(), area);
    app.apply_poll(PollOutcome::Snapshot(Arc::new(snapshot)));
    let mut terminal = Terminal::new(TestBackend::new(area.width, area.height)).expect("terminal");
    let mut frames = Vec::new();
    for key in [None, Some(KeyCode::Char('s')), Some(KeyCode::Char('?'))] {
        if let Some(code) = key {
            app.handle_event(&Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
        }
        terminal.draw(|frame| app.render(frame)).expect("draw the console");
        let text: String = terminal
            .backend()
            .buffer()
            .content
            .chunks(usize::from(area.width))
            .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>() + "\n")
            .collect();
        frames.push(text);
    }
    frames
}

/// Returns each 12-character window of `secret`, so that a secret cut short or split by a
/// formatter still counts as leaked.
fn windows(secret: &str) -> Vec<&str> {
    const WINDOW: usize = 12;
    (0..=secret.len().saturating_sub(WINDOW)).map(|start| &secret[start..start + WINDOW]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_leave_the_engine() {
    let http =
        followup_adapters::http::build_http_client(&Default::default()).expect("HTTP client");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let log = data_dir.path().join("engine.log");
    let store_dir = data_dir.path().join("store");
    let (_fakes, urls) = start_fakes(6000, 100_000);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let engine = start_engine(&store_dir, &log, port, &urls);
    wait_ready(&http, &base).await;

    let mut emitted = Emitted::default();
    let url = |path: &str| format!("{base}{path}");
    let (status, created) = emitted
        .send(
            "create tenant",
            http.post(url("/admin/v1/tenants"))
                .bearer_auth(OPERATOR_TOKEN)
                .json(&json!({"name": "Leak check", "plan": "pro"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let api_key = created["api_key"].as_str().expect("api key").to_owned();
    // The creation response is the one place the API key is meant to appear.
    emitted.texts.pop();

    let limits = json!({"per_minute": 6000, "per_day": 100000});
    // Access tokens that expire at once, so that the Gmail one is refreshed before the first
    // send. Email goes out through Gmail when both mailboxes are connected, so Outlook's refresh
    // token is stored but not used.
    let gmail = json!({"sender": "sales@example.com", "access_token": GMAIL_ACCESS_TOKEN,
                       "refresh_token": GMAIL_REFRESH_TOKEN, "expires_in": 1, "limits": limits});
    let outlook = json!({"sender": "ops@example.com", "access_token": OUTLOOK_ACCESS_TOKEN,
                         "refresh_token": OUTLOOK_REFRESH_TOKEN, "expires_in": 1,
                         "limits": limits});
    let twilio = json!({"sender": "+15005550006", "account_sid": TWILIO_ACCOUNT_SID,
                        "auth_token": TWILIO_AUTH_TOKEN, "limits": limits});
    let connections = [("gmail", gmail), ("outlook", outlook), ("twilio", twilio)];
    for (provider, body) in &connections {
        let path = format!("/v1/connections/{provider}");
        let request = http.put(url(&path)).bearer_auth(&api_key).json(body);
        let (status, view) = emitted.send(&format!("connect {provider}"), request).await;
        assert_eq!(status, 200, "{view}");
        // The same secrets inside a rejected request must not be echoed in the error.
        let mut invalid = body.clone();
        invalid["sender"] = json!("not an address or number");
        let request = http.put(url(&path)).bearer_auth(&api_key).json(&invalid);
        let (status, _) = emitted.send(&format!("invalid connect {provider}"), request).await;
        assert_eq!(status, 400, "an invalid sender is rejected");
    }

    let sequence = json!({"name": "Leak check", "steps": [
        {"channel": "email", "subject": "Hello {{first_name|there}}", "body": "Hi"},
        {"channel": "sms", "delay": "1s", "body": "Hi again"}]});
    let request = http.post(url("/v1/sequences")).bearer_auth(&api_key).json(&sequence);
    let (status, sequence) = emitted.send("create sequence", request).await;
    assert_eq!(status, 201, "{sequence}");
    let sequence_id = sequence["id"].as_str().expect("sequence id").to_owned();
    let mut csv = String::from("email,phone,first_name\n");
    for n in 0..CONTACTS {
        csv.push_str(&format!("leak{n}@example.com,+1415555{n:04},P{n}\n"));
    }
    let request = http
        .post(url("/v1/schedules/bulk"))
        .query(&[("sequence", sequence_id.as_str())])
        .bearer_auth(&api_key)
        .header("content-type", "text/csv")
        .body(csv);
    let (status, report) = emitted.send("upload", request).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], CONTACTS as u64, "{report}");

    // Wait until both steps of every contact went out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let snapshot: Value = http
            .get(url("/admin/v1/snapshot"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("snapshot answers")
            .json()
            .await
            .expect("snapshot JSON");
        if snapshot["totals"]["sent"] == json!(2 * CONTACTS) {
            break;
        }
        assert!(Instant::now() < deadline, "follow-ups not sent within 60 s: {snapshot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let tenant_routes = [
        "/v1/connections".to_owned(),
        "/v1/sequences".to_owned(),
        format!("/v1/sequences/{sequence_id}"),
        "/v1/schedules?limit=5".to_owned(),
    ];
    let mut schedules = Value::Null;
    for path in &tenant_routes {
        let (status, body) = emitted.send(path, http.get(url(path)).bearer_auth(&api_key)).await;
        assert_eq!(status, 200, "{path}: {body}");
        schedules = body;
    }
    let schedule =
        schedules["schedules"][0]["schedule"].as_str().expect("a schedule id in {schedules}");
    let path = format!("/v1/schedules/{schedule}");
    let (status, body) = emitted.send(&path, http.get(url(&path)).bearer_auth(&api_key)).await;
    assert_eq!(status, 200, "{path}: {body}");
    for path in ["/admin/v1/tenants", "/admin/v1/snapshot", "/admin/v1/clock"] {
        let (status, body) =
            emitted.send(path, http.get(url(path)).bearer_auth(OPERATOR_TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Refused on this engine (live providers, system clock), and the refusals are searched too.
    let path = "/admin/v1/fakes";
    let (status, body) = emitted.send(path, http.get(url(path)).bearer_auth(OPERATOR_TOKEN)).await;
    assert_eq!(status, 404, "{path}: {body}");
    let path = "/admin/v1/clock/run";
    let request = http
        .post(url(path))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"until": "2030-01-01T00:00:00Z"}));
    let (status, body) = emitted.send(path, request).await;
    assert_eq!(status, 409, "{path}: {body}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        emitted.send(path, http.get(url(path))).await;
    }
    for (origin, request) in [
        ("forged API key", http.get(url("/v1/connections")).bearer_auth(FORGED_API_KEY)),
        ("tenant key on admin", http.get(url("/admin/v1/tenants")).bearer_auth(&api_key)),
        ("forged operator token", http.get(url("/admin/v1/tenants")).bearer_auth(FORGED_API_KEY)),
    ] {
        let (status, _) = emitted.send(origin, request).await;
        assert_eq!(status, 401, "{origin} is refused");
    }
    let forged_webhook = http
        .post(url("/webhooks/stripe"))
        .header("stripe-signature", format!("t=1,v1={STRIPE_SIGNING_SECRET}"))
        .body("{}");
    let (status, _) = emitted.send("forged Stripe webhook", forged_webhook).await;
    assert_eq!(status, 403, "a forged Stripe webhook is rejected");
    let metrics = http.get(url("/metrics")).send().await.expect("metrics").text().await;
    let metrics = metrics.expect("metrics text");
    let refreshed = metrics.lines().any(|line| {
        line.starts_with("followup_token_refreshes_total{")
            && line.contains("outcome=\"refreshed\"")
            && line.contains("provider=\"gmail\"")
    });
    assert!(refreshed, "the Gmail refresh token was used:\n{metrics}");
    for (view, frame) in console_frames(&base).await.into_iter().enumerate() {
        emitted.add(format!("console frame {view}"), frame);
    }

    drop(engine);
    let log_text = std::fs::read_to_string(&log).expect("read the engine log");
    assert!(
        log_text.lines().count() > 10 && log_text.contains("DEBUG"),
        "the engine logged at debug level, so the search below covers real log lines:\n{log_text}"
    );
    emitted.add("engine log", log_text);
    let connect_view = emitted
        .texts
        .iter()
        .find(|(origin, _)| origin == "connect twilio")
        .map(|(_, text)| text.clone())
        .unwrap_or_default();
    assert!(
        connect_view.contains("+15005550006"),
        "the search finds what is there: {connect_view}"
    );

    let secrets = [
        ("operator token", OPERATOR_TOKEN),
        ("master key", MASTER_KEY),
        ("tenant API key", api_key.as_str()),
        ("Gmail access token", GMAIL_ACCESS_TOKEN),
        ("Gmail refresh token", GMAIL_REFRESH_TOKEN),
        ("Outlook access token", OUTLOOK_ACCESS_TOKEN),
        ("Outlook refresh token", OUTLOOK_REFRESH_TOKEN),
        ("Google client secret", GOOGLE_CLIENT_SECRET),
        ("Microsoft client secret", MICROSOFT_CLIENT_SECRET),
        ("Stripe signing secret", STRIPE_SIGNING_SECRET),
        ("Twilio auth token", TWILIO_AUTH_TOKEN),
        ("forged API key", FORGED_API_KEY),
    ];
    let mut leaks = Vec::new();
    for (origin, text) in &emitted.texts {
        for (name, secret) in secrets {
            if let Some(window) = windows(secret).into_iter().find(|part| text.contains(part)) {
                leaks.push(format!("{name} ({window}) in {origin}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets left the engine:\n{}", leaks.join("\n"));
}
