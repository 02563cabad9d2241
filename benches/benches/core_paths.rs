//! Benchmarks of the CPU-bound hot paths of ingest, planning and dispatch: reading CSV,
//! validating rows, planning due instants, rendering templates and checking a connection's rate
//! limit.
//!
//! Run with `cargo bench -p followup-benches`; record figures in BENCHMARKS.md.

use std::hint::black_box;

use std::sync::Arc;

use chrono::{NaiveTime, TimeZone, Utc, Weekday};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use followup_core::clock::{SystemClock, VirtualClock};
use followup_core::domain::{Channel, SendWindow, Step};
use followup_core::ingest::{
    ColumnMapping, Format, IngestLimits, RecordReader, ValidationContext, validate,
};
use followup_core::limits::{ConnectionLimits, SendLimits};
use followup_core::plan::plan_steps;
use followup_core::template::Template;
use followup_dispatcher::limiter::ConnectionLimiter;

const ROWS: usize = 10_000;

/// A CSV of `ROWS` contacts shaped like a CRM export: quoted companies, US phone numbers.
fn sample_csv() -> Vec<u8> {
    let mut csv = String::from("Customer Id,First Name,Last Name,Email,Phone,Company,Timezone\n");
    for n in 0..ROWS {
        csv.push_str(&format!(
            "C{n:06},Ada{n},Lovelace,ada{n}@example.com,+1 202-555-01{:02},\"Engines, Ltd {n}\",\
             America/New_York\n",
            n % 100
        ));
    }
    csv.into_bytes()
}

fn read_all(bytes: &[u8]) -> usize {
    let mut reader = RecordReader::new(Format::Csv, IngestLimits::default());
    let mut out = Vec::new();
    for chunk in bytes.chunks(64 * 1024) {
        reader.push(chunk, &mut out).expect("valid csv");
    }
    reader.finish(&mut out).expect("valid csv");
    out.len()
}

fn csv_reading(c: &mut Criterion) {
    let bytes = sample_csv();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("read_csv_10k_rows", |b| b.iter(|| read_all(black_box(&bytes))));
    group.finish();
}

fn row_validation(c: &mut Criterion) {
    let bytes = sample_csv();
    let mut reader = RecordReader::new(Format::Csv, IngestLimits::default());
    let mut records = Vec::new();
    reader.push(&bytes, &mut records).expect("valid csv");
    reader.finish(&mut records).expect("valid csv");
    let records: Vec<_> = records.into_iter().filter_map(Result::ok).collect();
    let mapping = ColumnMapping::guess(reader.headers().expect("header read"));
    let context = ValidationContext {
        default_region: "US".into(),
        default_timezone: chrono_tz::America::New_York,
        required_fields: vec!["first_name".into()],
        channels: vec![Channel::Email, Channel::Sms],
        now: Utc::now(),
    };
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("validate_10k_rows", |b| {
        b.iter(|| {
            records.iter().filter(|record| validate(record, &mapping, &context).is_ok()).count()
        })
    });
    group.finish();
}

fn planning(c: &mut Criterion) {
    let steps = [
        Step {
            channel: Channel::Email,
            delay_seconds: 0,
            subject: None,
            body: String::new(),
            html_body: None,
            max_lateness_seconds: None,
        },
        Step {
            channel: Channel::Sms,
            delay_seconds: 2 * 86_400,
            subject: None,
            body: String::new(),
            html_body: None,
            max_lateness_seconds: None,
        },
        Step {
            channel: Channel::Call,
            delay_seconds: 5 * 86_400,
            subject: None,
            body: String::new(),
            html_body: None,
            max_lateness_seconds: None,
        },
    ];
    let window = SendWindow {
        weekdays: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
        start: NaiveTime::from_hms_opt(9, 0, 0).expect("valid time"),
        end: NaiveTime::from_hms_opt(17, 0, 0).expect("valid time"),
    };
    let start = Utc.with_ymd_and_hms(2026, 12, 5, 20, 0, 0).single().expect("valid instant");
    c.bench_function("plan/three_steps_weekday_window", |b| {
        b.iter(|| plan_steps(black_box(start), chrono_tz::America::New_York, &steps, &window))
    });
}

fn rendering(c: &mut Criterion) {
    let template = Template::parse(
        "Hello {{first_name|there}}, thanks for your interest in {{company|our product}}. \
         Reply to book a call with {{owner|our team}}.",
    )
    .expect("valid template");
    let lookup = |name: &str| match name {
        "first_name" => Some("Ada"),
        "company" => Some("Engines, Ltd"),
        _ => None,
    };
    c.bench_function("template/render_three_fields", |b| {
        b.iter(|| template.render(black_box(lookup)).expect("renders"))
    });
}

/// The cost of one admission check of a connection's limiter (governor's GCRA pace, the
/// rolling daily window and the local-day cap), when it grants a send and when the pace
/// keeps it back.
fn rate_limit_check(c: &mut Criterion) {
    let limits = |per_minute| ConnectionLimits {
        send: SendLimits { per_minute, per_day: u32::MAX },
        per_local_day: Some(u32::MAX),
        timezone: chrono_tz::America::New_York,
        max_in_flight: 8,
    };
    // A pace far above the check rate grants every send. The daily window then fills, so it
    // is cleared every 100,000 checks, as sends age out of the window in a real run.
    let mut open = ConnectionLimiter::new(limits(u32::MAX), Arc::new(SystemClock));
    let mut checks = 0u32;
    c.bench_function("limiter/admit_granted", |b| {
        b.iter(|| {
            checks += 1;
            if checks == 100_000 {
                checks = 0;
                open = ConnectionLimiter::new(limits(u32::MAX), Arc::new(SystemClock));
            }
            black_box(open.admit(black_box(1)))
        })
    });
    // A stopped virtual clock: after the first send, every check is held back by the pace.
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).single().expect("valid instant");
    let mut paced = ConnectionLimiter::new(limits(60), Arc::new(VirtualClock::new(start)));
    paced.admit(1);
    c.bench_function("limiter/admit_held_back", |b| {
        b.iter(|| black_box(paced.admit(black_box(1))))
    });
}

criterion_group!(benches, csv_reading, row_validation, planning, rendering, rate_limit_check);
criterion_main!(benches);
