//! `GET /admin/v1/stream` over real HTTP: snapshot events and heartbeats, the limit on open
//! streams, and the end of every stream when the server stops.

use std::time::{Duration, Instant};

use followup_core::api::AdminSnapshot;
use followup_tests::{OPERATOR_TOKEN, TestEngine};
use futures_util::StreamExt as _;

/// Reads the stream until `enough` says its text so far suffices, or `limit` passes; returns
/// the text and whether the stream ended.
async fn read_stream(
    response: reqwest::Response,
    limit: Duration,
    enough: impl Fn(&str) -> bool,
) -> (String, bool) {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Some(Err(_)) | None) => return (text, true),
            Err(_) => return (text, false),
        }
        if enough(&text) {
            return (text, false);
        }
    }
}

async fn open(engine: &TestEngine) -> anyhow::Result<reqwest::Response> {
    let url = engine.url("/admin/v1/stream");
    Ok(engine.http.get(url).bearer_auth(OPERATOR_TOKEN).send().await?)
}

fn snapshots(text: &str) -> Vec<AdminSnapshot> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("event: snapshot\ndata: "))
        .map(|data| serde_json::from_str(data).expect("snapshot JSON"))
        .collect()
}

#[actix_rt::test]
async fn stream_sends_snapshots_and_heartbeats() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| config.admin.stream_period_millis = 100).await?;
    engine.create_tenant("Streamed", "pro").await?;

    let unauthenticated = engine.http.get(engine.url("/admin/v1/stream")).send().await?;
    assert_eq!(unauthenticated.status(), 401);

    let response = open(&engine).await?;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str()?.to_owned();
    assert_eq!(content_type, "text/event-stream");
    let started = Instant::now();
    let (text, ended) =
        read_stream(response, Duration::from_secs(10), |text| text.contains(": heartbeat")).await;
    assert!(!ended, "the stream ended early: {text}");
    assert!(text.starts_with("retry: 200\n\n"), "{text}");
    let received = snapshots(&text);
    assert_eq!(received.len(), 5, "a heartbeat follows every fifth snapshot: {text}");
    assert!(received.iter().all(|snapshot| snapshot.tenant_count == 1), "{text}");
    assert_eq!(received[0].tenants[0].name, "Streamed");
    // Five events 100 ms apart: the first at once, the fifth after four periods.
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    Ok(())
}

#[actix_rt::test]
async fn streams_beyond_the_limit_are_refused() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.admin.stream_period_millis = 100;
        config.admin.max_streams = 2;
    })
    .await?;
    let first = open(&engine).await?;
    let second = open(&engine).await?;
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    let third = open(&engine).await?;
    assert_eq!(third.status(), 503);
    let error: serde_json::Value = third.json().await?;
    assert_eq!(error["error"]["code"], "too_many_streams", "{error}");
    assert!(error.to_string().contains("admin.max_streams"), "{error}");

    // A client that leaves frees its place once the server's next write fails.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = open(&engine).await?;
        if again.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed stream's place was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
    Ok(())
}

#[actix_rt::test]
async fn stop_ends_open_streams() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| config.admin.stream_period_millis = 100).await?;
    let response = open(&engine).await?;
    let reader = tokio::spawn(read_stream(response, Duration::from_secs(20), |_| false));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let TestEngine { running, .. } = engine;
    running.stop().await;
    let (text, ended) = reader.await?;
    assert!(ended, "the stream did not end: {text}");
    assert!(
        text.ends_with("event: end\ndata: {\"reason\":\"the server is stopping\"}\n\n"),
        "{text}"
    );
    // Without the end of the streams, a graceful stop waits 30 s for them.
    assert!(started.elapsed() < Duration::from_secs(5), "stop took {:?}", started.elapsed());
    Ok(())
}
