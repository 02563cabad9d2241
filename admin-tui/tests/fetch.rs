//! Tests of the snapshot client against a minimal HTTP server on a loopback port.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use followup_core::api::{AdminSnapshot, QueueSummary, TenantSummary};
use followup_core::sensitive::Sensitive;
use followup_tui::{FetchError, PollOutcome, SnapshotClient, spawn_poller};
use reqwest::{StatusCode, Url};

const TOKEN: &str = "operator-test-token";

fn snapshot() -> AdminSnapshot {
    AdminSnapshot {
        now: "2025-03-04T05:06:07+00:00".to_owned(),
        totals: BTreeMap::from([("pending".to_owned(), 3), ("sent".to_owned(), 9)]),
        queues: vec![QueueSummary {
            channel: "email".to_owned(),
            waiting: 3,
            sent: 9,
            ..QueueSummary::default()
        }],
        tenants: vec![TenantSummary {
            id: "00000000-0000-0000-0000-000000000001".parse().expect("valid uuid"),
            name: "Acme Corp".to_owned(),
            plan: "pro".to_owned(),
            backlog: 3,
            sent: 9,
            failed: 0,
            paused_connections: vec!["gmail: token revoked".to_owned()],
            held: 3,
            quota_used_percent: Some(80),
            paused_reason: None,
            dead: 0,
        }],
        ..AdminSnapshot::default()
    }
}

/// Serves `connections` requests on a free loopback port, each with the response `status`
/// and `body` before the connection closes. The thread returns the request heads it read.
fn serve(status: &'static str, body: String, connections: usize) -> (Url, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = Url::parse(&format!("http://{}", listener.local_addr().expect("local address")))
        .expect("valid URL");
    let server = thread::spawn(move || {
        let mut heads = Vec::new();
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read request");
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            heads.push(head);
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).expect("write response");
        }
        heads
    });
    (url, server)
}

fn client(url: &Url) -> SnapshotClient {
    SnapshotClient::new(url, Sensitive::new(TOKEN.to_owned())).expect("valid client")
}

#[tokio::test]
async fn fetch_returns_snapshot() {
    let body = serde_json::to_string(&snapshot()).expect("serialize");
    let (url, server) = serve("200 OK", body, 1);

    let fetched = client(&url).fetch().await.expect("fetch succeeds");
    assert_eq!(fetched, snapshot());

    let heads = server.join().expect("server thread");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("get /admin/v1/snapshot http/1.1\r\n"), "request line: {head}");
    assert!(head.contains(&format!("authorization: bearer {TOKEN}\r\n")), "headers: {head}");
}

#[tokio::test]
async fn fetch_keeps_path_prefix() {
    let body = serde_json::to_string(&snapshot()).expect("serialize");
    let (url, server) = serve("200 OK", body, 1);
    let prefixed = url.join("followup").expect("valid URL");

    client(&prefixed).fetch().await.expect("fetch succeeds");

    let heads = server.join().expect("server thread");
    assert!(heads[0].starts_with("GET /followup/admin/v1/snapshot "), "request: {}", heads[0]);
}

#[tokio::test]
async fn fetch_drops_url_credentials() {
    let body = serde_json::to_string(&snapshot()).expect("serialize");
    let (mut url, server) = serve("200 OK", body, 1);
    url.set_username("user").expect("http URL");
    url.set_password(Some("secret")).expect("http URL");

    client(&url).fetch().await.expect("fetch succeeds");

    let heads = server.join().expect("server thread");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.contains(&format!("authorization: bearer {TOKEN}\r\n")), "headers: {head}");
    assert!(!head.contains("basic"), "basic authentication sent: {head}");
}

#[tokio::test]
async fn fetch_rejected_token_hides_it() {
    let (url, server) = serve("401 Unauthorized", "{}".to_owned(), 1);

    let error = client(&url).fetch().await.expect_err("401 is an error");
    server.join().expect("server thread");

    assert!(matches!(error, FetchError::Unauthorized(StatusCode::UNAUTHORIZED)), "{error:?}");
    let message = error.to_string();
    assert_eq!(
        message,
        "operator token rejected with HTTP 401 Unauthorized: check FOLLOWUP_ADMIN_TOKEN"
    );
    assert!(!format!("{:?}", client(&url)).contains(TOKEN), "Debug of the client shows the token");
}

#[tokio::test]
async fn fetch_server_error_and_bad_json() {
    let (url, server) = serve("503 Service Unavailable", "{}".to_owned(), 1);
    let error = client(&url).fetch().await.expect_err("503 is an error");
    server.join().expect("server thread");
    assert_eq!(error.to_string(), "engine returned HTTP 503 Service Unavailable");

    let (url, server) = serve("200 OK", r#"{"now": 5}"#.to_owned(), 1);
    let error = client(&url).fetch().await.expect_err("invalid JSON is an error");
    server.join().expect("server thread");
    assert!(matches!(error, FetchError::Decode(_)), "{error:?}");
    assert!(error.to_string().starts_with("invalid snapshot JSON: "), "{error}");
}

#[tokio::test]
async fn fetch_refused_connection() {
    // Bind then drop a listener, so the port is very likely closed for the request.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = Url::parse(&format!("http://{}", listener.local_addr().expect("local address")))
        .expect("valid URL");
    drop(listener);

    let error = client(&url).fetch().await.expect_err("nothing listens");
    assert_eq!(error.to_string(), "connect failed: connection refused");
}

#[tokio::test]
async fn poller_publishes_snapshots() {
    let body = serde_json::to_string(&snapshot()).expect("serialize");
    let (url, server) = serve("200 OK", body, 2);
    let mut updates = spawn_poller(client(&url), Duration::from_millis(50));

    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .expect("an outcome within 5 s")
            .expect("poller running");
        let outcome = updates.borrow_and_update().clone();
        match outcome {
            Some(PollOutcome::Snapshot(fetched)) => assert_eq!(*fetched, snapshot()),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
    assert_eq!(server.join().expect("server thread").len(), 2);
}

#[test]
fn client_rejects_bad_settings() {
    let url = Url::parse("ftp://127.0.0.1/").expect("valid URL");
    let error = SnapshotClient::new(&url, Sensitive::new(TOKEN.to_owned())).expect_err("ftp");
    assert_eq!(error.to_string(), "invalid engine URL scheme \"ftp\": expected http or https");

    let url = Url::parse("http://user:secret@127.0.0.1:9/").expect("valid URL");
    let error = SnapshotClient::new(&url, Sensitive::new(" ".to_owned())).expect_err("blank");
    assert_eq!(error.to_string(), "operator token is empty: set --token or FOLLOWUP_ADMIN_TOKEN");

    let client = SnapshotClient::new(&url, Sensitive::new(TOKEN.to_owned())).expect("valid");
    assert_eq!(client.server(), "http://127.0.0.1:9", "credentials stay off the screen");
}
