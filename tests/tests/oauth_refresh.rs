//! OAuth token refresh end to end: an engine on a virtual clock sends through the Gmail and
//! Graph fakes, whose access tokens expire on the same clock, and refreshes them at the token
//! endpoint fake. Every check reads the engine's HTTP API, the store or the fakes' records.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use followup_adapters::fakes::{FakeConfig, FakeProviders, TokenMode};
use followup_adapters::http::HttpSettings;
use followup_adapters::oauth::{OAuthClientSettings, OAuthRefresher};
use followup_core::clock::{Clock, VirtualClock};
use followup_core::domain::{Connection, Credentials, Provider};
use followup_core::sensitive::Sensitive;
use followup_core::store::Store;
use followup_dispatcher::config::{Config, ProvidersMode};
use followup_dispatcher::server::RunningEngine;
use followup_dispatcher::tokens::{RefreshPolicy, TokenKeeper, TokenStatus};
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_csv, email_now_sequence};
use serde_json::{Value, json};

const GMAIL_SENDER: &str = "sales@example.com";
const OUTLOOK_SENDER: &str = "sales@contoso.example";

/// Log output of every engine in this process, our crates at debug level.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Sends this process's logs into [`LOGS`]; the first call installs the subscriber.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let filter = "info,followup_dispatcher=debug,followup_adapters=debug";
        let installed = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        installed.expect("no other subscriber in this test process");
        buffer
    });
}

/// A writer that appends to the shared log buffer.
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("log buffer poisoned"))?.extend(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Returns the logs captured so far.
fn captured_logs() -> String {
    let buffer = LOGS.get().expect("capture_logs ran").lock().expect("log buffer");
    String::from_utf8_lossy(&buffer).into_owned()
}

/// Limits high enough that no test waits for them.
fn limits() -> Value {
    json!({"per_minute": 6000, "per_day": 1000000})
}

/// Builds a Gmail connection request with the given tokens and expiry in seconds.
fn gmail_request(access: &str, refresh: &str, expires_in: Option<u64>) -> Value {
    let mut body = json!({"sender": GMAIL_SENDER, "access_token": access,
                          "refresh_token": refresh, "limits": limits()});
    if let Some(seconds) = expires_in {
        body["expires_in"] = json!(seconds);
    }
    body
}

/// Returns the tenant's connection of `provider` as the API lists it.
async fn listed_connection(
    engine: &TestEngine,
    key: &str,
    provider: &str,
) -> anyhow::Result<Value> {
    let listed = engine.get_json(key, "/v1/connections").await?;
    let found = listed.as_array().and_then(|all| all.iter().find(|c| c["provider"] == provider));
    Ok(found.cloned().unwrap_or_default())
}

/// Returns the stored connection of `provider` of the only tenant.
async fn stored_connection(
    store: &Arc<dyn Store>,
    provider: Provider,
) -> anyhow::Result<Connection> {
    let tenant = store.tenants().await?.into_iter().next().expect("one tenant");
    let connections = store.connections(tenant.id).await?;
    let found = connections.into_iter().find(|c| c.provider == provider);
    Ok(found.expect("the connection is stored"))
}

fn refresh_token_of(connection: &Connection) -> Option<String> {
    match &connection.credentials {
        Credentials::OAuth { refresh_token, .. } => {
            refresh_token.as_ref().map(|t| t.expose().clone())
        }
        Credentials::Twilio { .. } => None,
    }
}

/// Counts the tenant's follow-ups in `state`.
async fn count_in_state(store: &Arc<dyn Store>, state: &str) -> anyhow::Result<u64> {
    let counts = store.count_follow_ups(None).await?;
    Ok(counts.iter().filter(|((_, s), _)| s.as_str() == state).map(|(_, n)| n).sum())
}

/// Asserts that none of `secrets` appears in `text`, an API response or the logs.
fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "a token leaked: {text}");
    }
}

/// Asserts that every fake send went to a different recipient: none was sent twice.
fn assert_each_sent_once(fakes: &FakeProviders) {
    let received = fakes.received();
    let mut recipients: Vec<&str> = received.iter().map(|m| m.to.as_str()).collect();
    recipients.sort_unstable();
    recipients.dedup();
    assert_eq!(recipients.len(), received.len(), "a follow-up was sent twice");
}

/// Starts a tenant with a two-step email sequence, the second step a day after the first.
async fn tenant_with_two_steps(engine: &TestEngine) -> anyhow::Result<(String, String)> {
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = json!({
        "name": "two steps",
        "steps": [
            {"channel": "email", "delay": 0, "subject": "Hello", "body": "First."},
            {"channel": "email", "delay": "1d", "subject": "Again", "body": "Second."}
        ]
    });
    let sequence = engine.create_sequence(&key, &sequence).await?;
    Ok((key, sequence))
}

#[actix_rt::test]
async fn refresh_runs_before_expiry() -> anyhow::Result<()> {
    capture_logs();
    let engine = TestEngine::start(|_| {}).await?;
    let (key, sequence) = tenant_with_two_steps(&engine).await?;
    let view = engine
        .connect(&key, "gmail", &gmail_request("gmail-access-1", "gmail-refresh-1", Some(3600)))
        .await?;
    assert_eq!(view["has_refresh_token"], true);
    assert!(view["access_token_expires_at"].is_string(), "{view}");
    assert_no_secret(&view.to_string(), &["gmail-access-1", "gmail-refresh-1"]);

    engine.upload(&key, &sequence, "text/csv", email_csv("before", 3)).await?;
    engine.settle(3).await?;

    // The first step went out with the original token; a day later it had expired and was
    // refreshed once, before any send could be refused.
    let fakes = engine.running.fakes()?;
    let stats = fakes.stats();
    assert_eq!(stats.received(Provider::Gmail), 6);
    assert_eq!(stats.token_requests(Provider::Gmail), 1);
    assert_eq!(stats.rejected_requests, 0, "a send was refused: {stats:?}");
    let listed = listed_connection(&engine, &key, "gmail").await?;
    assert!(listed["paused_reason"].is_null(), "{listed}");
    assert_ne!(listed["access_token_expires_at"], view["access_token_expires_at"]);
    let logs = captured_logs();
    assert!(logs.contains("access token refreshed"), "the refresh was not logged");
    assert_no_secret(&logs, &["gmail-access-1", "gmail-refresh-1", "fake-gmail-access-"]);
    Ok(())
}

#[actix_rt::test]
async fn answer_without_refresh_token_keeps_old_one() -> anyhow::Result<()> {
    capture_logs();
    let engine = TestEngine::start(|_| {}).await?;
    let (key, sequence) = tenant_with_two_steps(&engine).await?;
    engine
        .connect(&key, "gmail", &gmail_request("gmail-access-1", "gmail-refresh-1", Some(60)))
        .await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("keep", 2)).await?;
    engine.settle(3).await?;

    // Google's responses carry no refresh token, so both refreshes presented the original one.
    let fakes = engine.running.fakes()?;
    let requests = fakes.token_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        assert_eq!(request.presented_refresh_token, "gmail-refresh-1");
        assert_eq!(request.issued_refresh_token, None);
    }
    let stored = stored_connection(engine.running.engine.store(), Provider::Gmail).await?;
    assert_eq!(refresh_token_of(&stored).as_deref(), Some("gmail-refresh-1"));
    assert_eq!(fakes.stats().received(Provider::Gmail), 4);
    Ok(())
}

#[actix_rt::test]
async fn refresh_follows_a_refused_token() -> anyhow::Result<()> {
    capture_logs();
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    // No expiry given, so only the provider's 401 can show that the token is gone.
    engine
        .connect(&key, "gmail", &gmail_request("gmail-access-1", "gmail-refresh-1", None))
        .await?;
    let fakes = engine.running.fakes()?;
    let now = engine.virtual_clock().now();
    fakes.set_access_token_expiry(Provider::Gmail, "gmail-access-1", Some(now));
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("refused", 5)).await?;

    engine.settle(1).await?;

    let stats = fakes.stats();
    assert!(stats.rejected_requests >= 1, "the old token was never refused: {stats:?}");
    assert_eq!(stats.token_requests(Provider::Gmail), 1);
    assert_eq!(stats.received(Provider::Gmail), 5);
    assert_each_sent_once(fakes);
    assert_eq!(count_in_state(engine.running.engine.store(), "sent").await?, 5);
    let listed = listed_connection(&engine, &key, "gmail").await?;
    assert!(listed["paused_reason"].is_null(), "{listed}");
    Ok(())
}

#[actix_rt::test]
async fn refused_fresh_token_pauses() -> anyhow::Result<()> {
    capture_logs();
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine
        .connect(&key, "gmail", &gmail_request("gmail-access-1", "gmail-refresh-1", None))
        .await?;
    // The first token is refused, and so is every token the endpoint issues: a refresh does
    // not help, as with a grant that lacks the send scope.
    let fakes = engine.running.fakes()?;
    let now = engine.virtual_clock().now();
    fakes.set_access_token_expiry(Provider::Gmail, "gmail-access-1", Some(now));
    fakes.set_access_token_lifetime(Duration::ZERO);
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("scope", 2)).await?;

    engine.settle(1).await?;

    // One refresh after the first 401 and one because the issued token expired at once; the
    // refusal of that fresh token pauses instead of refreshing in a loop.
    assert_eq!(fakes.stats().token_requests(Provider::Gmail), 2);
    assert_eq!(fakes.stats().received(Provider::Gmail), 0);
    let listed = listed_connection(&engine, &key, "gmail").await?;
    let reason = listed["paused_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("refused the credentials"), "{listed}");
    assert_eq!(count_in_state(engine.running.engine.store(), "pending").await?, 2);
    Ok(())
}

#[actix_rt::test]
async fn many_sends_share_one_refresh() -> anyhow::Result<()> {
    capture_logs();
    let engine = TestEngine::start(|config| config.providers.graph_batch_size = 20).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let request = json!({"sender": OUTLOOK_SENDER, "access_token": "outlook-access-1",
                         "refresh_token": "outlook-refresh-1", "expires_in": 10,
                         "microsoft_tenant": "contoso.example", "limits": limits()});
    engine.connect(&key, "outlook", &request).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("many", 150)).await?;

    engine.settle(1).await?;

    let fakes = engine.running.fakes()?;
    let stats = fakes.stats();
    assert_eq!(stats.received(Provider::Outlook), 150);
    assert_eq!(stats.token_requests(Provider::Outlook), 1);
    assert_each_sent_once(fakes);
    Ok(())
}

#[actix_rt::test]
async fn concurrent_waiters_share_one_refresh() -> anyhow::Result<()> {
    capture_logs();
    let start = Utc.with_ymd_and_hms(2026, 12, 7, 15, 0, 0).single().expect("valid instant");
    let clock = Arc::new(VirtualClock::new(start));
    // The endpoint responds slowly, so that every waiter arrives while the refresh runs.
    let fakes = FakeConfig::new(clock.clone()).with_latency(Duration::from_millis(200));
    let engine = TestEngine::start_with_fakes(|_| {}, fakes).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine
        .connect(&key, "gmail", &gmail_request("gmail-access-1", "gmail-refresh-1", Some(10)))
        .await?;
    let store = engine.running.engine.store().clone();
    let connection = stored_connection(&store, Provider::Gmail).await?;

    let fakes = engine.running.fakes()?;
    let google = OAuthClientSettings {
        client_id: "concurrency-client".into(),
        client_secret: Sensitive::new("concurrency-secret".into()),
        token_url: fakes.google_token_url(),
    };
    fakes.register_oauth_client(Provider::Gmail, "concurrency-client", "concurrency-secret");
    let refresher = OAuthRefresher::new(&HttpSettings::default(), Some(google), None)?;
    let policy = RefreshPolicy {
        margin: chrono::Duration::minutes(5),
        first_backoff: chrono::Duration::seconds(5),
        max_backoff: chrono::Duration::minutes(5),
    };
    let clock: Arc<dyn Clock> = clock;
    let keeper = Arc::new(TokenKeeper::new(refresher, store.clone(), clock, policy));

    let waiters = (0..50).map(|_| keeper.credentials_for_send(&connection));
    let results = futures_util::future::join_all(waiters).await;

    assert_eq!(fakes.stats().token_requests(Provider::Gmail), 1);
    let first = results.first().cloned().expect("fifty results");
    let TokenStatus::Ready(credentials) = &first else { panic!("no credentials: {first:?}") };
    assert_ne!(credentials, &connection.credentials, "the token was not refreshed");
    assert!(results.iter().all(|result| result == &first), "waiters got different tokens");
    let stored = stored_connection(&store, Provider::Gmail).await?;
    assert_eq!(&stored.credentials, credentials, "the new token was not stored");
    Ok(())
}

#[actix_rt::test]
async fn invalid_grant_pauses_until_reconnected() -> anyhow::Result<()> {
    capture_logs();
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let fakes = engine.running.fakes()?;
    fakes.set_token_mode(Provider::Gmail, TokenMode::Revoking);
    engine
        .connect(&key, "gmail", &gmail_request("gmail-access-1", "gmail-refresh-1", Some(0)))
        .await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("revoked", 4)).await?;

    engine.settle(1).await?;

    // Paused with Google's reason, once; the sends wait.
    let listed = listed_connection(&engine, &key, "gmail").await?;
    let reason = listed["paused_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("invalid_grant"), "{listed}");
    assert!(reason.contains("Token has been expired or revoked."), "{listed}");
    assert_no_secret(&listed.to_string(), &["gmail-access-1", "gmail-refresh-1"]);
    assert_eq!(fakes.stats().token_requests(Provider::Gmail), 1);
    assert_eq!(fakes.stats().received(Provider::Gmail), 0);
    let store = engine.running.engine.store();
    assert_eq!(count_in_state(store, "pending").await?, 4);

    // Connecting again with a new grant resumes them, each once.
    fakes.set_token_mode(Provider::Gmail, TokenMode::Normal);
    let view = engine
        .connect(&key, "gmail", &gmail_request("gmail-access-2", "gmail-refresh-2", Some(3600)))
        .await?;
    assert!(view["paused_reason"].is_null(), "{view}");
    engine.settle(1).await?;

    assert_eq!(fakes.stats().received(Provider::Gmail), 4);
    assert_each_sent_once(fakes);
    assert_eq!(count_in_state(store, "sent").await?, 4);
    let logs = captured_logs();
    assert!(logs.contains("connection paused"), "the pause was not logged");
    assert_no_secret(&logs, &["gmail-refresh-1", "gmail-refresh-2", "gmail-access-2"]);
    Ok(())
}

#[actix_rt::test]
async fn transient_token_errors_do_not_pause() -> anyhow::Result<()> {
    capture_logs();
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let fakes = engine.running.fakes()?;
    fakes.set_token_mode(Provider::Gmail, TokenMode::Failing);
    engine
        .connect(&key, "gmail", &gmail_request("gmail-access-1", "gmail-refresh-1", Some(0)))
        .await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("outage", 3)).await?;

    // A minute of virtual time against a failing endpoint: retried with a doubling backoff
    // (5 s, 10 s, 20 s, 40 s), never paused, nothing sent.
    let clock = engine.virtual_clock();
    let deadline = clock.now() + chrono::Duration::seconds(60);
    let waited = engine.running.engine.run_until_settled(clock, deadline, |_| {}).await;
    let error = waited.expect_err("the follow-ups cannot settle while the endpoint fails");
    assert!(error.to_string().contains("still waiting"), "{error}");
    let tries = fakes.stats().token_requests(Provider::Gmail);
    assert!((3..=5).contains(&tries), "{tries} refresh requests in a minute");
    let listed = listed_connection(&engine, &key, "gmail").await?;
    assert!(listed["paused_reason"].is_null(), "{listed}");
    let store = engine.running.engine.store();
    assert_eq!(count_in_state(store, "pending").await?, 3);
    assert_eq!(fakes.stats().received(Provider::Gmail), 0);

    // The endpoint recovers and the sends go out.
    fakes.set_token_mode(Provider::Gmail, TokenMode::Normal);
    engine.settle(1).await?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 3);
    assert_eq!(count_in_state(store, "sent").await?, 3);
    Ok(())
}

/// Master key of the engines of `live_config`: base64 of 32 bytes.
const MASTER_KEY: &str = "b2F1dGgtcmVmcmVzaC10ZXN0cy1tYXN0ZXIta2V5ISE=";

/// Configuration of an engine that sends to fakes it does not own, so that the fakes and the
/// store outlive it.
fn live_config(fakes: &FakeProviders, data_dir: &std::path::Path) -> anyhow::Result<Config> {
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.to_path_buf(),
        admin_token: Some(Sensitive::new(OPERATOR_TOKEN.to_owned())),
        // One key for every engine of a test, so that a second engine opens the first's store.
        master_key: Some(Sensitive::new(MASTER_KEY.to_owned())),
        ..Config::default()
    };
    config.providers.mode = ProvidersMode::Live;
    config.providers.gmail_base_url = fakes.gmail_url().to_string();
    config.providers.graph_base_url = fakes.graph_url().to_string();
    config.providers.twilio_base_url = fakes.twilio_url().to_string();
    config.oauth.google_token_url = fakes.google_token_url();
    config.oauth.microsoft_token_url = fakes.microsoft_token_url();
    config.oauth.microsoft_client_id = Some("entra-app".into());
    config.oauth.microsoft_client_secret = Some(Sensitive::new("entra-secret".into()));
    Ok(config)
}

/// Runs `engine`'s rounds on `clock` until nothing is due, for at most a day.
async fn settle(engine: &RunningEngine, clock: &Arc<VirtualClock>) -> anyhow::Result<()> {
    let deadline = clock.now() + chrono::Duration::days(1);
    engine.engine.run_until_settled(clock, deadline, |_| {}).await
}

#[actix_rt::test]
async fn rotated_refresh_token_survives_restart() -> anyhow::Result<()> {
    capture_logs();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let start = Utc.with_ymd_and_hms(2026, 12, 7, 15, 0, 0).single().expect("valid instant");
    let clock = Arc::new(VirtualClock::new(start));
    let fakes = FakeProviders::start(FakeConfig::new(clock.clone())).await?;
    fakes.register_oauth_client(Provider::Outlook, "entra-app", "entra-secret");
    let data_dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(followup_adapters::embedded::open(data_dir.path())?);
    let http = reqwest::Client::new();

    // First engine: the token expires within the margin, so the first round refreshes it
    // and Microsoft rotates the refresh token.
    let first = RunningEngine::start(
        live_config(&fakes, data_dir.path())?,
        store.clone(),
        clock.clone(),
        None,
    )
    .await?;
    let tenant: Value = http
        .post(format!("{}/admin/v1/tenants", first.url()))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": "contoso", "default_region": "US",
                      "default_timezone": "America/New_York", "plan": "pro"}))
        .send()
        .await?
        .json()
        .await?;
    let key = tenant["api_key"].as_str().unwrap_or_default().to_owned();
    let request = json!({"sender": OUTLOOK_SENDER, "access_token": "outlook-access-1",
                         "refresh_token": "outlook-refresh-1", "expires_in": 60,
                         "limits": limits()});
    let response = http
        .put(format!("{}/v1/connections/outlook", first.url()))
        .bearer_auth(&key)
        .json(&request)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let mailbox_limits = followup_core::limits::SendLimits { per_minute: 6000, per_day: 1_000_000 };
    fakes.register_outlook("outlook-access-1", OUTLOOK_SENDER, mailbox_limits);
    fakes.register_refresh_token(Provider::Outlook, "outlook-refresh-1", OUTLOOK_SENDER);
    let sequence: Value = http
        .post(format!("{}/v1/sequences", first.url()))
        .bearer_auth(&key)
        .json(&email_now_sequence())
        .send()
        .await?
        .json()
        .await?;
    let sequence = sequence["id"].as_str().unwrap_or_default().to_owned();
    let upload = |base: String, csv: String| {
        let http = http.clone();
        let key = key.clone();
        let sequence = sequence.clone();
        async move {
            let url = format!("{base}/v1/schedules/bulk?sequence={sequence}");
            let response = http
                .post(url)
                .bearer_auth(&key)
                .header("content-type", "text/csv")
                .body(csv)
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "upload answered {}", response.status());
            anyhow::Ok(())
        }
    };
    upload(first.url(), email_csv("first", 2)).await?;
    settle(&first, &clock).await?;

    let requests = fakes.token_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let rotated = requests[0].issued_refresh_token.clone().expect("Microsoft rotates the token");
    let stored = stored_connection(first.engine.store(), Provider::Outlook).await?;
    assert_eq!(refresh_token_of(&stored).as_deref(), Some(rotated.as_str()));
    first.stop().await;

    // Second engine on the same store, two hours later: its keeper starts empty, so the
    // refresh token it presents can only come from the store.
    clock.advance(chrono::Duration::hours(2));
    // The store is the same object. The second engine's own file (its webhook log) goes to a
    // directory of its own, because the first engine's workers may still have it open.
    let second_dir = tempfile::tempdir()?;
    let second = RunningEngine::start(
        live_config(&fakes, second_dir.path())?,
        store.clone(),
        clock.clone(),
        None,
    )
    .await?;
    upload(second.url(), email_csv("second", 2)).await?;
    settle(&second, &clock).await?;

    let requests = fakes.token_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].presented_refresh_token, rotated);
    assert_eq!(fakes.stats().received(Provider::Outlook), 4);
    let listed: Value = http
        .get(format!("{}/v1/connections", second.url()))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let newest = requests[1].issued_refresh_token.clone().unwrap_or_default();
    assert_no_secret(
        &listed.to_string(),
        &[rotated.as_str(), newest.as_str(), "outlook-refresh-1"],
    );
    second.stop().await;
    fakes.shutdown().await;
    Ok(())
}
