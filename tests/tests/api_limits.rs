//! The API's abuse limits over HTTP. A tenant over its request rate gets 429 with
//! `Retry-After` while another tenant goes on. An upload over the tenant's own size limit gets
//! 413 naming the limit. A client address that fails to authenticate too often is rejected even
//! with a valid key, while another address is not.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chrono::Utc;
use followup_core::clock::SystemClock;
use followup_core::crypto::{Keyring, generate_master_key};
use followup_core::domain::Tenant;
use followup_core::ids::TenantId;
use followup_core::store::sealed::SealedStore;
use followup_dispatcher::config::{Config, TenantLimits};
use followup_dispatcher::http::auth::generate_api_key;
use followup_dispatcher::server::RunningEngine;
use followup_tests::{TestEngine, email_csv, email_now_sequence};
use serde_json::Value;

/// Sends `GET /v1/sequences` with `key` and returns the status, `Retry-After` and body.
async fn list_sequences(
    http: &reqwest::Client,
    engine: &TestEngine,
    key: &str,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let response = http.get(engine.url("/v1/sequences")).bearer_auth(key).send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Ok((status, retry_after, response.json().await?))
}

#[actix_rt::test]
async fn tenant_over_its_rate_gets_429() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.api_limits.requests_per_second = 1;
        config.api_limits.burst = 3;
    })
    .await?;
    let busy = engine.create_tenant("busy", "pro").await?;
    let quiet = engine.create_tenant("quiet", "pro").await?;

    for attempt in 1..=3 {
        let (status, _, body) = list_sequences(&engine.http, &engine, &busy).await?;
        assert_eq!(status, 200, "request {attempt} within the burst: {body}");
    }
    let (status, retry_after, body) = list_sequences(&engine.http, &engine, &busy).await?;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After header").parse()?;
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(body["error"]["code"], "too_many_requests");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many requests for this tenant"), "{message}");
    assert!(message.contains(&format!("retry after {retry_after} s")), "{message}");

    let (status, _, body) = list_sequences(&engine.http, &engine, &quiet).await?;
    assert_eq!(status, 200, "another tenant is not limited: {body}");
    Ok(())
}

/// Writes a tenant straight to the store, as if created earlier, and returns its id and key.
async fn seed_tenant(
    store: &dyn followup_core::store::Store,
    name: &str,
) -> anyhow::Result<(TenantId, String)> {
    let (key, api_key_sha256) = generate_api_key().map_err(|e| anyhow::anyhow!("{e}"))?;
    let tenant = Tenant {
        id: TenantId::generate(),
        name: name.to_owned(),
        default_region: "US".into(),
        default_timezone: "America/New_York".into(),
        plan: "pro".into(),
        api_key_sha256,
        created_at: Utc::now(),
        suppression_scope: Default::default(),
        paused: None,
    };
    store.put_tenant(tenant.clone()).await?;
    Ok((tenant.id, key))
}

#[actix_rt::test]
async fn upload_over_tenant_limit_gets_413() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data_dir = tempfile::tempdir()?;
    let store = Arc::new(followup_adapters::embedded::open(data_dir.path())?);
    // The tenants are written through a sealed store under the engine's master key, as the
    // admin API would, so that each has its data key.
    let master_key = generate_master_key()?;
    let keyring = Keyring::parse(master_key.expose(), "the test's master key")?;
    let sealed = SealedStore::new(store.clone(), keyring);
    let (small_id, small_key) = seed_tenant(&sealed, "small").await?;
    let (_, large_key) = seed_tenant(&sealed, "large").await?;
    let limits = TenantLimits { max_upload_bytes: Some(100), ..TenantLimits::default() };
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.path().to_path_buf(),
        master_key: Some(master_key),
        ..Config::default()
    };
    let mut config = config;
    config.api_limits.tenants.insert(small_id.to_string(), limits);
    let running = RunningEngine::start(config, store, Arc::new(SystemClock), None).await?;
    let http = reqwest::Client::new();
    let csv = email_csv("limit", 10);
    assert!(csv.len() > 100, "the upload is over the small tenant's limit");

    for (key, expected) in [(&small_key, 413), (&large_key, 200)] {
        let response = http
            .post(format!("{}/v1/sequences", running.url()))
            .bearer_auth(key)
            .json(&email_now_sequence())
            .send()
            .await?;
        let created: Value = response.json().await?;
        let sequence = created["id"].as_str().expect("sequence id");
        let response = http
            .post(format!("{}/v1/schedules/bulk", running.url()))
            .query(&[("sequence", sequence)])
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(csv.clone())
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        assert_eq!(status, expected, "{body}");
        if expected == 413 {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("limit of 100 bytes"), "{message}");
        }
    }
    running.stop().await;
    Ok(())
}

#[actix_rt::test]
async fn repeated_failed_logins_block_the_address() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.api_limits.failed_auth_per_minute = 1;
        config.api_limits.failed_auth_burst = 3;
    })
    .await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let guesser = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()?;

    for guess in 1..=3 {
        let (status, _, body) =
            list_sequences(&guesser, &engine, &format!("fu_guess{guess}")).await?;
        assert_eq!(status, 401, "guess {guess}: {body}");
    }
    let (status, retry_after, body) = list_sequences(&guesser, &engine, "fu_guess4").await?;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After header").parse()?;
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many failed authentications"), "{message}");

    let (status, _, body) = list_sequences(&guesser, &engine, &key).await?;
    assert_eq!(status, 429, "a valid key from a blocked address is refused too: {body}");
    let (status, _, body) = list_sequences(&engine.http, &engine, &key).await?;
    assert_eq!(status, 200, "another address is not blocked: {body}");
    Ok(())
}
