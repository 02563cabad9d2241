//! Tests of the operator API client and the feed against small HTTP servers on loopback
//! ports, written here: plain answers, an event stream, a server that goes away and comes
//! back, and the requests of the operator's actions.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use followup_core::api::{
    ActionOutcome, AdminSnapshot, DeadLetter, DeadLetterPage, OperatorAction, QueueSummary,
    TenantPage, TenantSummary,
};
use followup_core::ids::TenantId;
use followup_core::sensitive::Sensitive;
use followup_tui::{
    Action, AdminClient, Backoff, DeadLetterQuery, FeedUpdate, FetchError, LinkState, SortKey,
    TenantQuery, spawn_feed_with,
};
use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;

const TOKEN: &str = "operator-test-token";

fn tenant_id(number: u128) -> TenantId {
    format!("00000000-0000-0000-0000-{number:012x}").parse().expect("valid uuid")
}

fn tenant(number: u128, name: &str) -> TenantSummary {
    TenantSummary {
        id: tenant_id(number),
        name: name.to_owned(),
        plan: "pro".to_owned(),
        backlog: 3,
        sent: 9,
        failed: 0,
        paused_connections: vec!["gmail: token revoked".to_owned()],
        held: 3,
        quota_used_percent: Some(80),
        paused_reason: None,
        dead: 0,
    }
}

fn snapshot(now: &str) -> AdminSnapshot {
    AdminSnapshot {
        now: now.to_owned(),
        totals: BTreeMap::from([("pending".to_owned(), 3), ("sent".to_owned(), 9)]),
        queues: vec![QueueSummary {
            channel: "email".to_owned(),
            provider: "gmail".to_owned(),
            waiting: 3,
            sent: 9,
            sends_per_s: 2.5,
            ..QueueSummary::default()
        }],
        tenants: vec![tenant(1, "Acme Corp")],
        tenant_count: 1,
        ..AdminSnapshot::default()
    }
}

/// A request as the test server read it.
#[derive(Clone, Debug)]
struct Recorded {
    /// Request line and headers, as sent.
    head: String,
    body: String,
}

impl Recorded {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    fn has_header(&self, line: &str) -> bool {
        self.head.to_ascii_lowercase().lines().any(|header| header == line)
    }
}

/// What the test server does with one request.
enum Reply {
    Json {
        status: &'static str,
        body: String,
    },
    /// An event stream: each chunk written and flushed after its delay, then the connection
    /// closed.
    Stream(Vec<(Duration, String)>),
}

fn ok(body: &impl serde::Serialize) -> Reply {
    Reply::Json { status: "200 OK", body: serde_json::to_string(body).expect("serialize") }
}

fn route_not_found() -> Reply {
    let body = r#"{"error":{"code":"route_not_found","message":"no such endpoint"}}"#;
    Reply::Json { status: "404 Not Found", body: body.to_owned() }
}

/// One `snapshot` event with `snapshot` as its data.
fn snapshot_event(snapshot: &AdminSnapshot) -> String {
    format!("event: snapshot\ndata: {}\n\n", serde_json::to_string(snapshot).expect("serialize"))
}

/// Serves `connections` connections on `listener`, one request each, in turn, then drops the
/// listener. Returns the requests read, in order.
fn serve(
    listener: TcpListener,
    connections: usize,
    reply: impl Fn(&Recorded) -> Reply + Send + 'static,
) -> (Arc<Mutex<Vec<Recorded>>>, JoinHandle<()>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    let server = thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let stream = stream.expect("accept");
            let request = read_request(&stream);
            recorded.lock().expect("lock").push(request.clone());
            answer(stream, reply(&request));
        }
    });
    (requests, server)
}

fn bind() -> (TcpListener, Url) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = url_of(listener.local_addr().expect("local address"));
    (listener, url)
}

fn url_of(address: SocketAddr) -> Url {
    Url::parse(&format!("http://{address}")).expect("valid URL")
}

fn read_request(stream: &TcpStream) -> Recorded {
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
    let length = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|line| line.strip_prefix("content-length: ").map(str::to_owned))
        .map_or(0, |value| value.trim().parse().expect("numeric content-length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read body");
    Recorded { head, body: String::from_utf8(body).expect("UTF-8 body") }
}

fn answer(mut stream: TcpStream, reply: Reply) {
    match reply {
        Reply::Json { status, body } => {
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).expect("write response");
        }
        Reply::Stream(chunks) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        cache-control: no-cache\r\nconnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).expect("write head");
            for (delay, chunk) in chunks {
                thread::sleep(delay);
                // The client may have gone, which ends the stream early; that is fine.
                if stream.write_all(chunk.as_bytes()).and_then(|()| stream.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

fn client(url: &Url) -> AdminClient {
    AdminClient::new(url, Sensitive::new(TOKEN.to_owned())).expect("valid client")
}

#[tokio::test]
async fn fetch_returns_snapshot() {
    let (listener, url) = bind();
    let (requests, server) = serve(listener, 1, |_| ok(&snapshot("2025-03-04T05:06:07Z")));

    let fetched = client(&url).fetch_snapshot().await.expect("fetch succeeds");
    assert_eq!(fetched, snapshot("2025-03-04T05:06:07Z"));

    server.join().expect("server thread");
    let request = requests.lock().expect("lock")[0].clone();
    assert_eq!(request.request_line(), "GET /admin/v1/snapshot HTTP/1.1");
    assert!(request.has_header(&format!("authorization: bearer {TOKEN}")), "{request:?}");
}

#[tokio::test]
async fn fetch_keeps_path_prefix_drops_credentials() {
    let (listener, url) = bind();
    let (requests, server) = serve(listener, 1, |_| ok(&snapshot("2025-03-04T05:06:07Z")));
    let mut prefixed = url.join("followup/").expect("valid URL");
    prefixed.set_username("user").expect("http URL");
    prefixed.set_password(Some("secret")).expect("http URL");

    client(&prefixed).fetch_snapshot().await.expect("fetch succeeds");

    server.join().expect("server thread");
    let request = requests.lock().expect("lock")[0].clone();
    assert_eq!(request.request_line(), "GET /followup/admin/v1/snapshot HTTP/1.1");
    assert!(request.has_header(&format!("authorization: bearer {TOKEN}")), "{request:?}");
    assert!(!request.head.to_ascii_lowercase().contains("basic"), "basic auth sent");
    assert_eq!(client(&prefixed).server(), url.origin().ascii_serialization());
}

#[tokio::test]
async fn fetch_errors_read_plainly() {
    let (listener, url) = bind();
    let replies = [
        ("401 Unauthorized", "{}".to_owned()),
        ("503 Service Unavailable", "{}".to_owned()),
        (
            "409 Conflict",
            r#"{"error":{"code":"conflict","message":"tenant is already paused"}}"#.to_owned(),
        ),
        ("200 OK", r#"{"now": 5}"#.to_owned()),
    ];
    let (_, server) = serve(listener, replies.len(), {
        let replies = replies.clone();
        let next = Mutex::new(0);
        move |_| {
            let mut index = next.lock().expect("lock");
            let (status, body) = replies[*index].clone();
            *index += 1;
            Reply::Json { status, body }
        }
    });
    let client = client(&url);

    let error = client.fetch_snapshot().await.expect_err("401");
    assert!(matches!(error, FetchError::Unauthorized(StatusCode::UNAUTHORIZED)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "operator token rejected with HTTP 401 Unauthorized: check FOLLOWUP_ADMIN_TOKEN"
    );
    let error = client.fetch_snapshot().await.expect_err("503");
    assert_eq!(error.to_string(), "engine returned HTTP 503 Service Unavailable");
    let error = client.fetch_snapshot().await.expect_err("409");
    assert_eq!(error.to_string(), "engine returned HTTP 409 Conflict: tenant is already paused");
    let error = client.fetch_snapshot().await.expect_err("invalid JSON");
    assert!(error.to_string().starts_with("invalid JSON from the engine: "), "{error}");

    server.join().expect("server thread");
    assert!(!format!("{client:?}").contains(TOKEN), "Debug of the client shows the token");
}

#[tokio::test]
async fn fetch_refused_connection() {
    // Bind then drop a listener, so the port is very likely closed for the request.
    let (listener, url) = bind();
    drop(listener);

    let error = client(&url).fetch_snapshot().await.expect_err("nothing listens");
    assert_eq!(error.to_string(), "connect failed: connection refused");
}

#[tokio::test]
async fn stream_yields_snapshots_from_pieces() {
    let first = snapshot("2025-03-04T05:06:07Z");
    let second = snapshot("2025-03-04T05:06:08Z");
    let event = snapshot_event(&first);
    let (head, tail) = event.split_at(event.len() / 2);
    let chunks = vec![
        (Duration::ZERO, ": heartbeat\n\n".to_owned()),
        (Duration::ZERO, head.to_owned()),
        (Duration::from_millis(50), tail.to_owned()),
        (Duration::from_millis(50), format!(": heartbeat\n\n{}", snapshot_event(&second))),
    ];
    let (listener, url) = bind();
    let (requests, server) = serve(listener, 1, move |_| Reply::Stream(chunks.clone()));

    let mut stream = client(&url).open_stream().await.expect("stream opens");
    assert_eq!(stream.next_snapshot().await.expect("first snapshot"), first);
    assert_eq!(stream.next_snapshot().await.expect("second snapshot"), second);
    let error = stream.next_snapshot().await.expect_err("the server closed the stream");
    assert_eq!(error.to_string(), "the engine closed the event stream");

    server.join().expect("server thread");
    let request = requests.lock().expect("lock")[0].clone();
    assert_eq!(request.request_line(), "GET /admin/v1/stream HTTP/1.1");
    assert!(request.has_header("accept: text/event-stream"), "{request:?}");
    assert!(request.has_header(&format!("authorization: bearer {TOKEN}")), "{request:?}");
}

#[tokio::test]
async fn stream_silence_counts_as_dropped() {
    // The server sends the head, one heartbeat, then nothing for longer than the timeout.
    let chunks = vec![
        (Duration::ZERO, ": heartbeat\n\n".to_owned()),
        (Duration::from_millis(1500), ": too late\n\n".to_owned()),
    ];
    let (listener, url) = bind();
    let (_, server) = serve(listener, 1, move |_| Reply::Stream(chunks.clone()));
    let client = client(&url).with_stream_idle_timeout(Duration::from_millis(300));

    let mut stream = client.open_stream().await.expect("stream opens");
    let started = std::time::Instant::now();
    let error = stream.next_snapshot().await.expect_err("silence");
    assert!(matches!(error, FetchError::StreamIdle(_)), "{error:?}");
    assert_eq!(error.to_string(), "no data on the event stream for 0.3 s");
    assert!(started.elapsed() < Duration::from_millis(1200), "gave up after the timeout");
    drop(stream);
    server.join().expect("server thread");
}

/// Waits for the feed's next update, at most 5 s.
async fn next_update(feed: &mut mpsc::Receiver<FeedUpdate>) -> FeedUpdate {
    tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("an update within 5 s")
        .expect("feed running")
}

fn fast_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_millis(400))
}

#[tokio::test]
async fn feed_polls_engine_without_stream() {
    let (listener, url) = bind();
    let (requests, server) = serve(listener, 3, |request| {
        if request.request_line().starts_with("GET /admin/v1/stream ") {
            route_not_found()
        } else {
            ok(&snapshot("2025-03-04T05:06:07Z"))
        }
    });
    let mut feed = spawn_feed_with(client(&url), fast_backoff(), Duration::from_millis(50));

    assert!(matches!(next_update(&mut feed).await, FeedUpdate::Link(LinkState::Polling)));
    for _ in 0..2 {
        match next_update(&mut feed).await {
            FeedUpdate::Snapshot(fetched) => assert_eq!(*fetched, snapshot("2025-03-04T05:06:07Z")),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
    drop(feed);
    server.join().expect("server thread");
    let lines: Vec<String> =
        requests.lock().expect("lock").iter().map(|r| r.request_line().to_owned()).collect();
    assert_eq!(
        lines,
        [
            "GET /admin/v1/stream HTTP/1.1",
            "GET /admin/v1/snapshot HTTP/1.1",
            "GET /admin/v1/snapshot HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn feed_reconnects_after_engine_restart() {
    let before = snapshot("2025-03-04T05:06:07Z");
    let after = snapshot("2025-03-04T05:09:00Z");
    let (listener, url) = bind();
    let address = listener.local_addr().expect("local address");
    let chunks = vec![(Duration::ZERO, snapshot_event(&before))];
    let (_, first_engine) = serve(listener, 1, move |_| Reply::Stream(chunks.clone()));
    let mut feed = spawn_feed_with(client(&url), fast_backoff(), Duration::from_millis(50));

    assert!(matches!(next_update(&mut feed).await, FeedUpdate::Link(LinkState::Streaming)));
    assert!(matches!(next_update(&mut feed).await, FeedUpdate::Snapshot(s) if *s == before));
    first_engine.join().expect("server thread");

    // The engine is gone: the stream ends, then connections are refused, with a longer wait
    // each time.
    let mut waits = Vec::new();
    let mut reasons = Vec::new();
    while waits.len() < 3 {
        match next_update(&mut feed).await {
            FeedUpdate::Link(LinkState::Retrying { reason, attempt, retry_at }) => {
                assert_eq!(attempt as usize, waits.len() + 1);
                waits.push(retry_at);
                reasons.push(reason);
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
    assert_eq!(reasons[0], "the engine closed the event stream");
    assert_eq!(reasons[1], "connect failed: connection refused");
    assert!(waits[2] - waits[1] > waits[1] - waits[0], "backoff grows: {waits:?}");

    // The engine comes back on the same port.
    let listener = TcpListener::bind(address).expect("bind the same port again");
    let chunks = vec![(Duration::ZERO, snapshot_event(&after))];
    let (_, second_engine) = serve(listener, 1, move |_| Reply::Stream(chunks.clone()));
    loop {
        match next_update(&mut feed).await {
            FeedUpdate::Link(LinkState::Retrying { .. }) => continue,
            FeedUpdate::Link(LinkState::Streaming) => break,
            other => panic!("expected the stream again, got {other:?}"),
        }
    }
    assert!(matches!(next_update(&mut feed).await, FeedUpdate::Snapshot(s) if *s == after));
    second_engine.join().expect("server thread");

    // A snapshot resets the backoff: the next failure is attempt 1 again.
    match next_update(&mut feed).await {
        FeedUpdate::Link(LinkState::Retrying { attempt, .. }) => assert_eq!(attempt, 1),
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test]
async fn pages_and_detail_requests() {
    let page = TenantPage { total: 120, offset: 20, tenants: vec![tenant(7, "Acme & Co")] };
    let dead = DeadLetterPage {
        total: 1,
        offset: 0,
        dead_letters: vec![DeadLetter {
            follow_up: "f-1".to_owned(),
            tenant: tenant_id(7),
            channel: "sms".to_owned(),
            attempts: 5,
            failed_at: None,
            reason: "20429 too many requests".to_owned(),
        }],
    };
    let (listener, url) = bind();
    let (requests, server) = serve(listener, 3, {
        let page = page.clone();
        let dead = dead.clone();
        move |request| {
            let line = request.request_line();
            if line.starts_with("GET /admin/v1/tenant-summaries?") {
                ok(&page)
            } else if line.starts_with("GET /admin/v1/dead-letters?") {
                ok(&dead)
            } else {
                let body = r#"{"error":{"code":"not_found","message":"no such tenant"}}"#;
                Reply::Json { status: "404 Not Found", body: body.to_owned() }
            }
        }
    });
    let client = client(&url);

    let query =
        TenantQuery { sort: SortKey::Quota, filter: "acme & co".to_owned(), offset: 20, limit: 30 };
    assert_eq!(client.tenant_page(&query).await.expect("page"), page);
    let query = DeadLetterQuery { tenant: Some(tenant_id(7)), offset: 0, limit: 8 };
    assert_eq!(client.dead_letters(&query).await.expect("dead letters"), dead);
    let error = client.tenant_detail(tenant_id(9)).await.expect_err("unknown tenant");
    assert_eq!(error.to_string(), "engine returned HTTP 404 Not Found: no such tenant");
    assert!(error.is_not_found());

    server.join().expect("server thread");
    let lines: Vec<String> =
        requests.lock().expect("lock").iter().map(|r| r.request_line().to_owned()).collect();
    assert_eq!(
        lines,
        [
            "GET /admin/v1/tenant-summaries?sort=quota&filter=acme+%26+co&offset=20&limit=30 \
             HTTP/1.1",
            "GET /admin/v1/dead-letters?offset=0&limit=8&tenant=00000000-0000-0000-0000-000000000007 \
             HTTP/1.1",
            "GET /admin/v1/tenants/00000000-0000-0000-0000-000000000009/detail HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn actions_post_expected_requests() {
    let tenant = tenant_id(7);
    let name = "Acme".to_owned();
    let actions = [
        Action::PauseTenant { tenant, name: name.clone() },
        Action::ResumeTenant { tenant, name: name.clone() },
        Action::PauseConnection { tenant, name: name.clone(), provider: "gmail".to_owned() },
        Action::ResumeConnection { tenant, name: name.clone(), provider: "twilio".to_owned() },
        Action::RetryDeadLetters { tenant: Some((tenant, name)), seen: Some(2) },
        Action::RetryDeadLetters { tenant: None, seen: None },
    ];
    let (listener, url) = bind();
    let (requests, server) = serve(listener, actions.len(), |_| {
        ok(&ActionOutcome { audit_id: "audit-1".to_owned(), affected: 4 })
    });
    let client = client(&url);

    for action in &actions {
        let outcome = client.act(action).await.expect("action succeeds");
        assert_eq!(outcome, ActionOutcome { audit_id: "audit-1".to_owned(), affected: 4 });
    }

    server.join().expect("server thread");
    let requests = requests.lock().expect("lock").clone();
    let id = "00000000-0000-0000-0000-000000000007";
    let no_tenant = OperatorAction::default();
    let one_tenant = OperatorAction { tenant: Some(tenant), ..OperatorAction::default() };
    let expected = [
        (format!("POST /admin/v1/tenants/{id}/pause HTTP/1.1"), &no_tenant),
        (format!("POST /admin/v1/tenants/{id}/resume HTTP/1.1"), &no_tenant),
        (format!("POST /admin/v1/tenants/{id}/connections/gmail/pause HTTP/1.1"), &no_tenant),
        (format!("POST /admin/v1/tenants/{id}/connections/twilio/resume HTTP/1.1"), &no_tenant),
        ("POST /admin/v1/dead-letters/retry HTTP/1.1".to_owned(), &one_tenant),
        ("POST /admin/v1/dead-letters/retry HTTP/1.1".to_owned(), &no_tenant),
    ];
    for (request, (line, body)) in requests.iter().zip(&expected) {
        assert_eq!(request.request_line(), line);
        // Read as the engine reads it, unknown fields rejected.
        let sent: OperatorAction = serde_json::from_str(&request.body).expect("action body");
        assert_eq!(&sent, *body, "body of {line}");
        assert!(request.has_header("content-type: application/json"), "{request:?}");
        assert!(request.has_header(&format!("authorization: bearer {TOKEN}")), "{request:?}");
    }
    assert_eq!(requests.len(), expected.len());
}

#[test]
fn backoff_doubles_to_cap() {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let waits: Vec<(u32, Duration)> = (0..7).map(|_| backoff.fail()).collect();
    let millis: Vec<(u32, u128)> = waits.iter().map(|(n, wait)| (*n, wait.as_millis())).collect();
    assert_eq!(
        millis,
        [(1, 500), (2, 1_000), (3, 2_000), (4, 4_000), (5, 8_000), (6, 10_000), (7, 10_000)]
    );

    backoff.reset();
    assert_eq!(backoff.fail(), (1, Duration::from_millis(500)), "a snapshot starts over");
    for _ in 0..100 {
        backoff.fail();
    }
    assert_eq!(backoff.fail().1, Duration::from_secs(10), "long outages stay at the cap");
}

#[test]
fn client_rejects_bad_settings() {
    let url = Url::parse("ftp://127.0.0.1/").expect("valid URL");
    let error = AdminClient::new(&url, Sensitive::new(TOKEN.to_owned())).expect_err("ftp");
    assert_eq!(error.to_string(), "invalid engine URL scheme \"ftp\": expected http or https");

    let url = Url::parse("http://user:secret@127.0.0.1:9/").expect("valid URL");
    let error = AdminClient::new(&url, Sensitive::new(" ".to_owned())).expect_err("blank");
    assert_eq!(error.to_string(), "operator token is empty: set --token or FOLLOWUP_ADMIN_TOKEN");

    let client = AdminClient::new(&url, Sensitive::new(TOKEN.to_owned())).expect("valid");
    assert_eq!(client.server(), "http://127.0.0.1:9", "credentials stay off the screen");
}
