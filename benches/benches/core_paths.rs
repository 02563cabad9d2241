//! Benchmarks of the CPU-bound hot paths of ingest, planning and dispatch: reading CSV and
//! NDJSON, validating rows, planning due instants, rendering templates and checking a connection's rate
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
    ColumnMapping, Format, IngestLimits, RawRecord, RecordReader, RowError, ValidationContext,
    validate,
};
use followup_core::limits::{ConnectionLimits, SendLimits};
use followup_core::plan::plan_steps;
use followup_core::template::Template;
use followup_dispatcher::limiter::ConnectionLimiter;

const ROWS: usize = 10_000;

/// The columns of the sample contacts, in the order of the CSV header and the NDJSON keys.
const COLUMNS: [&str; 7] =
    ["Customer Id", "First Name", "Last Name", "Email", "Phone", "Company", "Timezone"];

/// `ROWS` contacts shaped like a CRM export: companies with commas, US phone numbers.
fn sample_rows() -> Vec<[String; 7]> {
    (0..ROWS)
        .map(|n| {
            [
                format!("C{n:06}"),
                format!("Ada{n}"),
                "Lovelace".to_owned(),
                format!("ada{n}@example.com"),
                format!("+1 202-555-01{:02}", n % 100),
                format!("Engines, Ltd {n}"),
                "America/New_York".to_owned(),
            ]
        })
        .collect()
}

/// The sample rows as CSV with a header row, companies quoted.
fn sample_csv() -> Vec<u8> {
    let mut csv = COLUMNS.join(",");
    csv.push('\n');
    for [id, first, last, email, phone, company, timezone] in sample_rows() {
        csv.push_str(&format!("{id},{first},{last},{email},{phone},\"{company}\",{timezone}\n"));
    }
    csv.into_bytes()
}

/// The same rows as NDJSON: one object per line, keys named like the CSV columns.
fn sample_ndjson() -> Vec<u8> {
    let mut ndjson = Vec::new();
    for row in sample_rows() {
        let object: serde_json::Map<String, serde_json::Value> = COLUMNS
            .iter()
            .zip(row)
            .map(|(column, value)| ((*column).to_owned(), serde_json::Value::String(value)))
            .collect();
        serde_json::to_writer(&mut ndjson, &object).expect("a map of strings serializes");
        ndjson.push(b'\n');
    }
    ndjson
}

/// Reads `bytes` in 64 KiB chunks, as an upload arrives; returns the records and the reader.
fn read_records(format: Format, bytes: &[u8]) -> (Vec<Result<RawRecord, RowError>>, RecordReader) {
    let mut reader = RecordReader::new(format, IngestLimits::default());
    let mut out = Vec::new();
    for chunk in bytes.chunks(64 * 1024) {
        reader.push(chunk, &mut out).expect("valid upload");
    }
    reader.finish(&mut out).expect("valid upload");
    (out, reader)
}

fn reading(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    for (name, format, bytes) in [
        ("read_csv_10k_rows", Format::Csv, sample_csv()),
        ("read_ndjson_10k_rows", Format::Ndjson, sample_ndjson()),
    ] {
        assert_eq!(read_records(format, &bytes).0.len(), ROWS, "{name} reads every row");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| b.iter(|| read_records(format, black_box(&bytes)).0.len()));
    }
    group.finish();
}

fn row_validation(c: &mut Criterion) {
    let context = ValidationContext {
        default_region: "US".into(),
        default_timezone: chrono_tz::America::New_York,
        required_fields: vec!["first_name".into()],
        channels: vec![Channel::Email, Channel::Sms],
        now: Utc::now(),
    };
    let mut valid_rows = None;
    let mut group = c.benchmark_group("ingest");
    // The CSV keeps the name its figures were first recorded under.
    for (name, format, bytes) in [
        ("validate_10k_rows", Format::Csv, sample_csv()),
        ("validate_10k_ndjson_rows", Format::Ndjson, sample_ndjson()),
    ] {
        let (records, reader) = read_records(format, &bytes);
        let records: Vec<_> = records.into_iter().filter_map(Result::ok).collect();
        let mapping = ColumnMapping::guess(reader.headers().expect("header read"));
        let valid = |records: &[RawRecord]| {
            records.iter().filter(|record| validate(record, &mapping, &context).is_ok()).count()
        };
        // Both formats carry the same rows, so they must validate alike to compare.
        let count = valid(records.as_slice());
        assert_eq!(*valid_rows.get_or_insert(count), count, "{name}: valid rows differ by format");
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_function(name, |b| b.iter(|| valid(black_box(records.as_slice()))));
    }
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

criterion_group!(benches, reading, row_validation, planning, rendering, rate_limit_check);
criterion_main!(benches);
