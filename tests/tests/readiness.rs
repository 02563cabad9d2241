//! `/readyz` against a real engine on the MongoDB store (the FerretDB fixture): ready while
//! the server answers, 503 naming the store while it is down, ready again once it is back.
//! `/healthz` stays 200 throughout: the process is alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use followup_adapters::ferretdb_fixture::{self, FerretDb};
use followup_adapters::mongo::{MongoStore, StoreUri};
use followup_core::clock::SystemClock;
use followup_core::store::Store;
use followup_dispatcher::server::RunningEngine;
use followup_tests::test_config;

async fn probe(http: &reqwest::Client, base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let response = http.get(format!("{base}{path}")).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// Polls `/readyz` until it answers `status`, for at most 20 s; returns the last body.
async fn wait_for_readyz(
    http: &reqwest::Client,
    base: &str,
    status: u16,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, body) = probe(http, base, "/readyz").await?;
        if got == status {
            return Ok(body);
        }
        anyhow::ensure!(Instant::now() < deadline, "readyz stayed {got} ({body}), not {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn readyz_names_an_unreachable_store() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ferretdb = FerretDb::start().map_err(anyhow::Error::msg)?;
    let uri = StoreUri::new(ferretdb.uri_for(&ferretdb_fixture::unique_database("readyz")));
    let store: Arc<dyn Store> = Arc::new(MongoStore::connect(&uri, Duration::from_secs(2)).await?);
    let (_data_dir, config) = test_config(|_| {})?;
    let running = RunningEngine::start(config, store, Arc::new(SystemClock), None).await?;
    let base = running.url();
    let http = reqwest::Client::new();

    assert_eq!(probe(&http, &base, "/readyz").await?, (200, "ready\n".to_owned()));
    ferretdb.stop();
    let body = wait_for_readyz(&http, &base, 503).await?;
    assert!(body.contains("not ready: store:"), "{body}");
    assert!(!body.contains("127.0.0.1"), "the store's address is not for everyone: {body}");
    assert_eq!(probe(&http, &base, "/healthz").await?.0, 200, "the process is alive");

    ferretdb.restart().map_err(anyhow::Error::msg)?;
    let body = wait_for_readyz(&http, &base, 200).await?;
    assert_eq!(body, "ready\n");
    running.stop().await;
    Ok(())
}
