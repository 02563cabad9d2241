use chrono::Utc;
use followup_core::domain::Channel;
use followup_core::ingest::{
    ColumnMapping, Format, IngestLimits, RawRecord, RecordReader, ValidationContext, validate,
};

use super::*;

/// Concatenates every chunk of `rows`.
fn csv_text(generator: &ContactGenerator, rows: Range<u64>, chunk_rows: u64) -> String {
    CsvChunks::new(generator.clone(), rows, chunk_rows).map(|(text, _)| text).collect()
}

/// Parses CSV text with the engine's own reader.
fn parse_with_engine(text: &str) -> (Vec<String>, Vec<RawRecord>) {
    let mut reader = RecordReader::new(Format::Csv, IngestLimits::default());
    let mut out = Vec::new();
    reader.push(text.as_bytes(), &mut out).expect("engine reader accepts the body");
    reader.finish(&mut out).expect("engine reader accepts the end of the body");
    let headers = reader.headers().expect("header row read").to_vec();
    let records = out.into_iter().map(|record| record.expect("record parses")).collect();
    (headers, records)
}

fn engine_context() -> ValidationContext {
    ValidationContext {
        default_region: "US".to_owned(),
        default_timezone: chrono_tz::UTC,
        required_fields: Vec::new(),
        channels: vec![Channel::Email, Channel::Sms],
        now: Utc::now(),
    }
}

fn cells_of(row: &ContactRow) -> Vec<String> {
    [
        &row.external_id,
        &row.email,
        &row.phone,
        &row.first_name,
        &row.last_name,
        &row.company,
        &row.timezone,
    ]
    .into_iter()
    .cloned()
    .collect()
}

#[test]
fn rows_are_deterministic() {
    let first = ContactGenerator::new(7, 3, 0.1);
    let again = ContactGenerator::new(7, 3, 0.1);
    for index in 0..200 {
        assert_eq!(first.row(index), again.row(index), "row {index}");
    }
    assert_eq!(csv_text(&first, 0..200, 64), csv_text(&again, 0..200, 64));
}

#[test]
fn seed_and_tenant_change_rows() {
    let base = csv_text(&ContactGenerator::new(7, 3, 0.1), 0..50, 50);
    let other_seed = csv_text(&ContactGenerator::new(8, 3, 0.1), 0..50, 50);
    let other_tenant = csv_text(&ContactGenerator::new(7, 4, 0.1), 0..50, 50);
    assert_ne!(base, other_seed);
    assert_ne!(base, other_tenant);
}

#[test]
fn rows_do_not_depend_on_split() {
    let generator = ContactGenerator::new(1, 0, 0.05);
    let whole = csv_text(&generator, 0..300, 1_000);
    let first = csv_text(&generator, 0..120, 7);
    let second = csv_text(&generator, 120..300, 50);
    let second_rows = second.strip_prefix(CSV_HEADER).expect("second upload has a header");
    assert_eq!(whole, format!("{first}{second_rows}"));
}

#[test]
fn chunks_count_rows() {
    let generator = ContactGenerator::new(1, 0, 0.0);
    let counts: Vec<u64> = CsvChunks::new(generator, 10..35, 10).map(|(_, rows)| rows).collect();
    assert_eq!(counts, vec![10, 10, 5]);
}

#[test]
fn empty_range_sends_header_only() {
    let generator = ContactGenerator::new(1, 0, 0.0);
    let chunks: Vec<(String, u64)> = CsvChunks::new(generator, 5..5, 10).collect();
    assert_eq!(chunks, vec![(CSV_HEADER.to_owned(), 0)]);
}

#[test]
fn invalid_fraction_is_exact() {
    for (fraction, rows, expected) in [
        (0.0, 10_000, 0),
        (0.05, 10_000, 500),
        (0.29, 100, 29),
        (0.333_333, 3_000, 999),
        (1.0, 1_234, 1_234),
    ] {
        let generator = ContactGenerator::new(9, 1, fraction);
        let counted = (0..rows).filter(|&index| generator.is_invalid(index)).count() as u64;
        assert_eq!(counted, expected, "fraction {fraction} over {rows} rows");
        assert_eq!(generator.invalid_in(0..rows), expected, "invalid_in, fraction {fraction}");
        let marked = (0..rows).filter(|&index| generator.row(index).invalid.is_some()).count();
        assert_eq!(marked as u64, expected, "rows marked invalid, fraction {fraction}");
    }
}

#[test]
fn invalid_rows_are_spread_evenly() {
    let generator = ContactGenerator::new(2, 0, 0.1);
    for start in (0..5_000).step_by(100) {
        let window = generator.invalid_in(start..start + 100);
        assert_eq!(window, 10, "rows {start} to {}", start + 100);
    }
    assert_eq!(generator.invalid_in(0..15), 1);
    assert_eq!(generator.invalid_in(1_000..1_005), 0);
}

#[test]
fn every_invalid_kind_occurs() {
    let generator = ContactGenerator::new(3, 0, 0.5);
    let kinds: Vec<InvalidKind> =
        (0..400).filter_map(|index| generator.row(index).invalid).collect();
    for kind in INVALID_KINDS {
        assert!(kinds.contains(kind), "{kind:?} never generated");
    }
}

#[test]
fn csv_cell_quoting() {
    for (cell, expected) in [
        ("plain", "plain"),
        ("", ""),
        ("Smith, Jr.", "\"Smith, Jr.\""),
        ("Acme \"Rockets\"", "\"Acme \"\"Rockets\"\"\""),
        ("Line\nBreak", "\"Line\nBreak\""),
        ("cr\rhere", "\"cr\rhere\""),
        ("O'Brien", "O'Brien"),
        ("Zoë", "Zoë"),
    ] {
        let mut out = String::new();
        push_csv_cell(cell, &mut out);
        assert_eq!(out, expected, "cell {cell:?}");
    }
}

#[test]
fn engine_reads_cells_back() {
    let generator = ContactGenerator::new(4, 2, 0.1);
    let (headers, records) = parse_with_engine(&csv_text(&generator, 0..300, 64));
    let expected_headers: Vec<&str> = CSV_HEADER.trim_end().split(',').collect();
    assert_eq!(headers, expected_headers);
    assert_eq!(records.len(), 300);
    for (index, record) in records.iter().enumerate() {
        let cells: Vec<String> = record.fields.iter().map(|(_, value)| value.clone()).collect();
        assert_eq!(cells, cells_of(&generator.row(index as u64)), "row {index}");
    }
}

#[test]
fn engine_accepts_valid_rows() {
    let generator = ContactGenerator::new(5, 1, 0.0);
    let (headers, records) = parse_with_engine(&csv_text(&generator, 0..500, 100));
    let mapping = ColumnMapping::guess(&headers);
    let context = engine_context();
    for record in &records {
        let contact = validate(record, &mapping, &context);
        assert!(contact.is_ok(), "line {}: {:?}", record.line, contact.err());
    }
}

#[test]
fn engine_rejects_invalid_rows() {
    let generator = ContactGenerator::new(6, 1, 1.0);
    let (headers, records) = parse_with_engine(&csv_text(&generator, 0..200, 100));
    let mapping = ColumnMapping::guess(&headers);
    let context = engine_context();
    for (index, record) in records.iter().enumerate() {
        let kind = generator.row(index as u64).invalid;
        assert!(validate(record, &mapping, &context).is_err(), "row {index} ({kind:?}) accepted");
    }
}

#[test]
fn addresses_are_reserved() {
    let generator = ContactGenerator::new(11, 5, 0.0);
    for index in 0..1_000 {
        let row = generator.row(index);
        let domain = row.email.rsplit('@').next().unwrap_or_default();
        assert!(["example.com", "example.org"].contains(&domain), "email {}", row.email);
        let digits: String = row.phone.chars().filter(char::is_ascii_digit).collect();
        assert_eq!(digits.len(), 11, "phone {}", row.phone);
        assert!(digits.starts_with('1'), "phone {}", row.phone);
        assert_eq!(&digits[4..8], "5550", "phone {}", row.phone);
        let line: u32 = digits[7..].parse().unwrap_or_default();
        assert!((100..=199).contains(&line), "phone {}", row.phone);
    }
}

#[test]
fn start_instants_reach_the_engine() {
    let first = DateTime::from_timestamp(1_800_000_000, 0).expect("valid instant");
    let generator =
        ContactGenerator::new(5, 1, 0.0).with_start(StartInstants { first, spread_seconds: 3 });
    assert!(generator.header().ends_with(",timezone,start_at\n"), "{}", generator.header());
    let (headers, records) = parse_with_engine(&csv_text(&generator, 0..4, 2));
    let mapping = ColumnMapping::guess(&headers);
    let context = engine_context();
    let starts: Vec<i64> = records
        .iter()
        .map(|record| {
            let contact = validate(record, &mapping, &context).expect("valid row");
            contact.start_at.timestamp() - first.timestamp()
        })
        .collect();
    assert_eq!(starts, [0, 1, 2, 0], "row index modulo the spread");
    assert_eq!(generator.start_of(5), Some(first + TimeDelta::seconds(2)));
}

#[test]
fn without_a_start_rows_keep_the_plain_header() {
    let generator = ContactGenerator::new(5, 1, 0.0);
    assert_eq!(generator.header(), CSV_HEADER);
    assert_eq!(generator.start_of(0), None);
    assert_eq!(generator.external_id(7), "lt-5-1-7");
}
