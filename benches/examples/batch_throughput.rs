//! Measures sends per second from the provider clients to the loopback fakes: each send as its
//! own request, then in batch requests (Gmail batch of 50, Graph `$batch` of 20). Both modes use
//! the same pooled HTTP client and the same number of requests in flight.
//!
//! Run with `cargo run --release -p followup-benches --example batch_throughput`; figures go
//! in BENCHMARKS.md. The fakes run in this process, so the figure is the cost of building,
//! sending, parsing and classifying on both ends over loopback, not of a real provider's
//! latency (which batching saves far more of).

use std::sync::Arc;
use std::time::{Duration, Instant};

use followup_adapters::fakes::{FakeConfig, FakeProviders};
use followup_adapters::gmail::GmailClient;
use followup_adapters::http::{HttpSettings, build_http_client};
use followup_adapters::outbound::{OutboundMessage, SendCredentials, SendOutcome};
use followup_adapters::outlook::GraphClient;
use followup_core::clock::SystemClock;
use followup_core::domain::Channel;
use followup_core::ids::{FollowUpId, ScheduleId};
use followup_core::limits::SendLimits;
use futures_util::StreamExt as _;

/// Sends per run and mode.
const SENDS: usize = 10_000;
/// Mailboxes the sends are spread over.
const MAILBOXES: usize = 20;
/// Requests in flight at once, as the engine's default provider concurrency.
const IN_FLIGHT: usize = 16;

fn message(mailbox: usize, n: usize) -> OutboundMessage {
    OutboundMessage {
        follow_up: FollowUpId { schedule: ScheduleId::generate(), step: 0 },
        channel: Channel::Email,
        from: format!("sales{mailbox}@bench.example"),
        to: format!("person{n}@example.org"),
        to_name: Some(format!("Person {n}")),
        subject: Some("Following up on our call".to_owned()),
        body: "Hi, thanks for your time yesterday. Here is the summary we discussed.".repeat(4),
        html_body: None,
        unsubscribe_url: Some(format!("https://bench.example/u/{n}")),
        status_callback: None,
    }
}

fn token(mailbox: usize) -> String {
    format!("bench-token-{mailbox}")
}

/// Sends every message of `work` (mailbox, message) and returns sends per second.
async fn run<F, Fut>(work: Vec<Vec<(usize, OutboundMessage)>>, send: F) -> f64
where
    F: Fn(Vec<(usize, OutboundMessage)>) -> Fut,
    Fut: std::future::Future<Output = Vec<SendOutcome>>,
{
    let started = Instant::now();
    let outcomes: Vec<Vec<SendOutcome>> = futures_util::stream::iter(work.into_iter().map(send))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let accepted = outcomes
        .iter()
        .flatten()
        .filter(|outcome| matches!(outcome, SendOutcome::Accepted { .. }))
        .count();
    assert_eq!(accepted, SENDS, "every send accepted");
    SENDS as f64 / elapsed.as_secs_f64()
}

/// Groups the sends of each mailbox into chunks of `size`, taking the mailboxes in turn, so
/// that no mailbox has more requests in flight than Graph allows (4).
fn groups(size: usize) -> Vec<Vec<(usize, OutboundMessage)>> {
    let per_mailbox: Vec<Vec<Vec<(usize, OutboundMessage)>>> = (0..MAILBOXES)
        .map(|mailbox| {
            let sends: Vec<_> = (0..SENDS / MAILBOXES)
                .map(|n| (mailbox, message(mailbox, mailbox * SENDS + n)))
                .collect();
            sends.chunks(size).map(<[_]>::to_vec).collect()
        })
        .collect();
    let rounds = per_mailbox.iter().map(Vec::len).max().unwrap_or(0);
    (0..rounds)
        .flat_map(|round| per_mailbox.iter().filter_map(move |chunks| chunks.get(round).cloned()))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let unlimited = SendLimits { per_minute: u32::MAX, per_day: u32::MAX };
    let fakes = FakeProviders::start(FakeConfig::new(Arc::new(SystemClock))).await?;
    for mailbox in 0..MAILBOXES {
        let address = format!("sales{mailbox}@bench.example");
        fakes.register_gmail(&token(mailbox), &address, unlimited);
        fakes.register_outlook(&format!("graph-{}", token(mailbox)), &address, unlimited);
    }
    let settings = HttpSettings { request_timeout: Duration::from_secs(60), ..Default::default() };
    let http = build_http_client(&settings)?;
    let gmail = GmailClient::new(http.clone(), fakes.gmail_url());
    let graph = GraphClient::new(http, fakes.graph_url());

    println!("{SENDS} sends over {MAILBOXES} mailboxes, {IN_FLIGHT} requests in flight");
    let gmail_single = run(groups(1), |group| {
        let gmail = &gmail;
        async move {
            let (mailbox, message) = &group[0];
            vec![gmail.send(SendCredentials::Bearer(&token(*mailbox)), message).await]
        }
    })
    .await;
    let gmail_batched = run(groups(50), |group| {
        let gmail = &gmail;
        async move {
            let tokens: Vec<String> = group.iter().map(|(mailbox, _)| token(*mailbox)).collect();
            let parts: Vec<(SendCredentials<'_>, &OutboundMessage)> = group
                .iter()
                .zip(&tokens)
                .map(|((_, message), token)| (SendCredentials::Bearer(token), message))
                .collect();
            gmail.send_batch(&parts).await
        }
    })
    .await;
    println!("gmail  one request per send: {gmail_single:>8.0} sends/s");
    println!("gmail  batch of 50:          {gmail_batched:>8.0} sends/s");

    let graph_single = run(groups(1), |group| {
        let graph = &graph;
        async move {
            let (mailbox, message) = &group[0];
            let token = format!("graph-{}", token(*mailbox));
            vec![graph.send(SendCredentials::Bearer(&token), message).await]
        }
    })
    .await;
    let graph_batched = run(groups(20), |group| {
        let graph = &graph;
        async move {
            let token = format!("graph-{}", token(group[0].0));
            let messages: Vec<OutboundMessage> =
                group.into_iter().map(|(_, message)| message).collect();
            graph.send_batch(SendCredentials::Bearer(&token), &messages).await
        }
    })
    .await;
    println!("graph  one request per send: {graph_single:>8.0} sends/s");
    println!("graph  $batch of 20:         {graph_batched:>8.0} sends/s");
    fakes.shutdown().await;
    Ok(())
}
