//! Benchmarks of the CPU-bound hot paths of ingest and planning: reading CSV, validating rows,
//! planning due instants and rendering templates.
//!
//! Run with `cargo bench -p followup-benches`; record figures in BENCHMARKS.md.

use std::hint::black_box;

use chrono::{NaiveTime, TimeZone, Utc, Weekday};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use followup_core::domain::{Channel, SendWindow, Step};
use followup_core::ingest::{
    ColumnMapping, Format, IngestLimits, RecordReader, ValidationContext, validate,
};
use followup_core::plan::plan_steps;
use followup_core::template::Template;

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
        Step { channel: Channel::Email, delay_seconds: 0, subject: None, body: String::new() },
        Step {
            channel: Channel::Sms,
            delay_seconds: 2 * 86_400,
            subject: None,
            body: String::new(),
        },
        Step {
            channel: Channel::Call,
            delay_seconds: 5 * 86_400,
            subject: None,
            body: String::new(),
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

criterion_group!(benches, csv_reading, row_validation, planning, rendering);
criterion_main!(benches);
