//! Benchmarks of batch encoding: the body of a Gmail batch request of 50 sends and of a Graph
//! `$batch` of 20, each built from the follow-ups' messages as the clients build it (the RFC
//! 5322 message, its base64 and JSON wrapping, then the batch body), without sending it.
//!
//! Run with `cargo bench -p followup-benches --bench batch_encoding`; record figures in
//! BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use followup_adapters::gmail::GmailClient;
use followup_adapters::outbound::{OutboundMessage, SendCredentials};
use followup_adapters::outlook::GraphClient;
use followup_core::domain::Channel;
use followup_core::ids::{FollowUpId, ScheduleId};

/// Sends per Gmail batch: the engine's default, the size Google advises at most.
const GMAIL_BATCH: usize = 50;
/// Requests per Graph `$batch`: the most Graph accepts.
const GRAPH_BATCH: usize = 20;

/// An access token of the length Google and Microsoft issue (a few hundred characters).
const TOKEN: &str = "ya29.a0AfB_byC1-benchmark-token-000000000000000000000000000000000000000000\
                     00000000000000000000000000000000000000000000000000000000000000000000000000";

/// A rendered first email of a sequence: a personal subject and about 400 bytes of text.
fn message(n: usize) -> OutboundMessage {
    OutboundMessage {
        follow_up: FollowUpId { schedule: ScheduleId::generate(), step: 1 },
        channel: Channel::Email,
        from: "owner@shop.example".to_owned(),
        to: format!("ada{n}@example.com"),
        to_name: Some(format!("Ada Lovelace {n}")),
        subject: Some(format!("Following up, Ada {n}")),
        body: format!(
            "Hello Ada {n},\n\nthanks for your interest in Engines, Ltd. We have put together a \
             short overview of what the analytical engine can do for your team, with prices \
             for teams of every size.\n\nReply to this email to book a call with our team, or \
             pick a time that suits you on our calendar.\n\nBest regards,\nThe Engines team\n"
        ),
        html_body: None,
        unsubscribe_url: None,
        status_callback: None,
    }
}

fn http() -> reqwest::Client {
    followup_adapters::http::build_http_client(&Default::default()).expect("http client builds")
}

/// A base URL that is never contacted: nothing is sent.
fn unused_url() -> reqwest::Url {
    "http://127.0.0.1:9/".parse().expect("valid url")
}

fn gmail_batch(c: &mut Criterion) {
    let client = GmailClient::new(http(), unused_url());
    let messages: Vec<OutboundMessage> = (0..GMAIL_BATCH).map(message).collect();
    let items: Vec<(SendCredentials<'_>, &OutboundMessage)> =
        messages.iter().map(|msg| (SendCredentials::Bearer(TOKEN), msg)).collect();
    let size = client.encode_batch(&items).expect("batch encodes").body.len();
    println!("gmail batch of {GMAIL_BATCH}: {size} bytes");

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(GMAIL_BATCH as u64));
    group.bench_function("gmail_batch_of_50", |b| {
        b.iter(|| client.encode_batch(black_box(&items)).expect("batch encodes"))
    });
    group.finish();
}

fn graph_batch(c: &mut Criterion) {
    let client = GraphClient::new(http(), unused_url());
    let messages: Vec<OutboundMessage> = (0..GRAPH_BATCH).map(message).collect();
    let mut with_unsubscribe = messages.clone();
    for msg in &mut with_unsubscribe {
        msg.unsubscribe_url = Some(format!("https://app.example/unsubscribe/{}", msg.to));
    }
    for (form, batch) in [("JSON", &messages), ("MIME", &with_unsubscribe)] {
        let size = client.encode_batch(batch).expect("batch encodes").len();
        println!("graph $batch of {GRAPH_BATCH}, {form} form: {size} bytes");
    }

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(GRAPH_BATCH as u64));
    group.bench_function("graph_batch_of_20_json", |b| {
        b.iter(|| client.encode_batch(black_box(&messages)).expect("batch encodes"))
    });
    // With an unsubscribe URL, Graph needs the MIME form, which builds the whole message.
    group.bench_function("graph_batch_of_20_mime", |b| {
        b.iter(|| client.encode_batch(black_box(&with_unsubscribe)).expect("batch encodes"))
    });
    group.finish();
}

criterion_group!(benches, gmail_batch, graph_batch);
criterion_main!(benches);
