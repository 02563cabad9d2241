use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::domain::Channel;

type Output = Vec<Result<RawRecord, RowError>>;

/// Result of reading a whole body: the fatal error, if any, every record, and the headers.
struct Read {
    result: Result<(), IngestError>,
    records: Output,
    headers: Option<Vec<String>>,
    rows: u64,
}

fn read_chunks<'a>(
    format: Format,
    limits: IngestLimits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Read {
    let mut reader = RecordReader::new(format, limits);
    let mut records = Vec::new();
    let mut result = Ok(());
    for chunk in chunks {
        result = reader.push(chunk, &mut records);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = reader.finish(&mut records);
    }
    let headers = reader.headers().map(<[String]>::to_vec);
    Read { result, records, headers, rows: reader.rows_read() }
}

fn read(format: Format, body: &[u8]) -> Read {
    read_chunks(format, IngestLimits::default(), [body])
}

fn read_bytewise(format: Format, body: &[u8]) -> Read {
    read_chunks(format, IngestLimits::default(), body.chunks(1))
}

fn csv(body: &str) -> Read {
    read(Format::Csv, body.as_bytes())
}

fn ndjson(body: &str) -> Read {
    read(Format::Ndjson, body.as_bytes())
}

fn record(read: &Read, index: usize) -> &RawRecord {
    match &read.records[index] {
        Ok(record) => record,
        Err(error) => panic!("record {index} is an error: {error}"),
    }
}

fn row_error(read: &Read, index: usize) -> &RowError {
    match &read.records[index] {
        Ok(record) => panic!("record {index} is not an error: {record:?}"),
        Err(error) => error,
    }
}

fn values(record: &RawRecord) -> Vec<&str> {
    record.fields.iter().map(|(_, value)| value.as_str()).collect()
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn shared_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(name)
}

// --- CSV ---

#[test]
fn csv_comma_delimiter() {
    let read = csv("name,email\nAna,ana@example.com\n");
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.headers, Some(strings(&["name", "email"])));
    assert_eq!(values(record(&read, 0)), ["Ana", "ana@example.com"]);
}

#[test]
fn csv_semicolon_delimiter() {
    let read = csv("name;company\nAna;Smith, Jones and Co\n");
    assert_eq!(read.headers, Some(strings(&["name", "company"])));
    assert_eq!(values(record(&read, 0)), ["Ana", "Smith, Jones and Co"]);
}

#[test]
fn csv_tab_delimiter() {
    let read = csv("name\tcompany\tcity\nAna\tSmith, Jones\tOslo\n");
    assert_eq!(read.headers, Some(strings(&["name", "company", "city"])));
    assert_eq!(values(record(&read, 0)), ["Ana", "Smith, Jones", "Oslo"]);
}

#[test]
fn csv_delimiter_tie_picks_comma() {
    let read = csv("a;b,c\n1;2,3\n");
    assert_eq!(read.headers, Some(strings(&["a;b", "c"])));
}

#[test]
fn csv_delimiter_inside_quotes_ignored() {
    let read = csv("\"a;b;c\",d\n1,2\n");
    assert_eq!(read.headers, Some(strings(&["a;b;c", "d"])));
    assert_eq!(values(record(&read, 0)), ["1", "2"]);
}

#[test]
fn csv_single_column() {
    let read = csv("email\na@example.com\n");
    assert_eq!(read.headers, Some(strings(&["email"])));
    assert_eq!(values(record(&read, 0)), ["a@example.com"]);
}

#[test]
fn csv_bom_stripped() {
    let body = b"\xEF\xBB\xBFemail,name\nx@example.com,X\n";
    for read in [read(Format::Csv, body), read_bytewise(Format::Csv, body)] {
        assert_eq!(read.headers, Some(strings(&["email", "name"])));
        assert_eq!(record(&read, 0).line, 2);
    }
}

#[test]
fn csv_partial_bom_prefix_is_data() {
    // Two bytes that start a BOM, then a different byte: all three are data.
    let body = b"\xEF\xBBx,y\n1,2\n";
    let read = read(Format::Csv, body);
    assert!(matches!(read.result, Err(IngestError::NotUtf8Header { column: 1 })));
}

#[test]
fn csv_quoted_newlines_keep_line_numbers() {
    let body = "name,note\nAna,\"first\nsecond\r\nthird\"\nBob,plain\n\nCy,\"x\"\n";
    let read = csv(body);
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.records.len(), 3);
    assert_eq!(record(&read, 0).line, 2);
    assert_eq!(values(record(&read, 0)), ["Ana", "first\nsecond\r\nthird"]);
    assert_eq!(record(&read, 1).line, 5);
    assert_eq!(record(&read, 2).line, 7);
}

#[test]
fn csv_doubled_quotes() {
    let read = csv("a,b\n\"say \"\"hi\"\"\",\"x,y\"\n");
    assert_eq!(values(record(&read, 0)), ["say \"hi\"", "x,y"]);
}

#[test]
fn csv_crlf_and_lone_cr() {
    let read = csv("a,b\r\n1,2\r\n3,4\r5,6\n");
    assert_eq!(read.records.len(), 3);
    assert_eq!(record(&read, 0).line, 2);
    assert_eq!(record(&read, 1).line, 3);
    assert_eq!(record(&read, 2).line, 4);
    assert_eq!(values(record(&read, 2)), ["5", "6"]);
}

#[test]
fn csv_blank_lines_skipped() {
    let read = csv("\n\r\na,b\n\n1,2\r\n\r\n;\n,\n 3 , 4 \n");
    assert_eq!(read.headers, Some(strings(&["a", "b"])));
    assert_eq!(read.rows, 3);
    assert_eq!(record(&read, 0).line, 5);
    // ";" is one non-blank field, so it is a row with the wrong field count; "," is two blank
    // fields, so it is skipped.
    assert_eq!(row_error(&read, 1).line, 7);
    assert_eq!(values(record(&read, 2)), ["3", "4"]);
    assert_eq!(record(&read, 2).line, 9);
}

#[test]
fn csv_header_line_counts_leading_blank_lines() {
    let read = csv("\n\na,b\n1,2\n");
    assert_eq!(record(&read, 0).line, 4);
}

#[test]
fn csv_values_trimmed() {
    let read = csv("a,b,c,d\n  x ,\" y \",\t, \"z\"\n");
    // A quote after a leading space does not start a quoted field (RFC 4180), so it stays.
    assert_eq!(values(record(&read, 0)), ["x", "y", "", "\"z\""]);
}

#[test]
fn csv_headers_trimmed() {
    let read = csv(" Email , Name\nx,y\n");
    assert_eq!(read.headers, Some(strings(&["Email", "Name"])));
    assert_eq!(record(&read, 0).fields[0].0, "Email");
}

#[test]
fn csv_last_row_without_newline() {
    let read = csv("a,b\n1,2");
    assert_eq!(values(record(&read, 0)), ["1", "2"]);
}

#[test]
fn csv_header_only() {
    let read = csv("a,b");
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.headers, Some(strings(&["a", "b"])));
    assert!(read.records.is_empty());
}

#[test]
fn csv_field_count_mismatch_is_row_error() {
    let read = csv("a,b,c\n1,2\n1,2,3,4\n1,2,3\n");
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.records.len(), 3);
    let short = row_error(&read, 0);
    assert_eq!(short.line, 2);
    assert_eq!(short.field, None);
    assert!(short.reason.contains("expected 3 fields"), "{}", short.reason);
    assert!(short.reason.contains("found 2"), "{}", short.reason);
    assert_eq!(row_error(&read, 1).line, 3);
    assert_eq!(values(record(&read, 2)), ["1", "2", "3"]);
}

#[test]
fn csv_invalid_utf8_in_row_is_row_error() {
    let read = read(Format::Csv, b"name,city\nAna,K\xF6ln\nBob,Oslo\n");
    assert_eq!(read.result, Ok(()));
    let error = row_error(&read, 0);
    assert_eq!(error.line, 2);
    assert_eq!(error.field.as_deref(), Some("city"));
    assert!(error.reason.contains("UTF-8"));
    assert_eq!(values(record(&read, 1)), ["Bob", "Oslo"]);
}

#[test]
fn csv_invalid_utf8_in_header_is_fatal() {
    let read = read(Format::Csv, b"name,st\xE4dt\nAna,Oslo\n");
    assert_eq!(read.result, Err(IngestError::NotUtf8Header { column: 2 }));
}

#[test]
fn csv_utf8_split_across_chunks() {
    let body = "nazwa,firma\nJędrzej Węgrzynowicz,АО «Васильева»\n渡辺 さゆり,x\n".as_bytes();
    let whole = read(Format::Csv, body);
    let bytewise = read_bytewise(Format::Csv, body);
    assert_eq!(whole.records, bytewise.records);
    assert_eq!(values(record(&whole, 0)), ["Jędrzej Węgrzynowicz", "АО «Васильева»"]);
    assert_eq!(values(record(&whole, 1)), ["渡辺 さゆり", "x"]);
}

#[test]
fn csv_duplicate_header_is_fatal() {
    let read = csv("email,Name,email\n1,2,3\n");
    let Err(IngestError::BadHeader { reason }) = read.result else {
        panic!("expected a bad header, got {:?}", read.result);
    };
    assert!(reason.contains("columns 1 and 3"), "{reason}");
}

#[test]
fn csv_empty_header_names_allowed() {
    let read = csv("a;b;;\n1;2;;\n");
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.headers, Some(strings(&["a", "b", "", ""])));
}

#[test]
fn csv_all_empty_header_is_fatal() {
    let read = csv(",,\n1,2,3\n");
    assert!(matches!(read.result, Err(IngestError::BadHeader { .. })));
}

#[test]
fn csv_empty_body_is_missing_header() {
    assert_eq!(csv("").result, Err(IngestError::MissingHeader));
    assert_eq!(csv("\r\n\n\n").result, Err(IngestError::MissingHeader));
    assert_eq!(read(Format::Csv, b"\xEF\xBB\xBF").result, Err(IngestError::MissingHeader));
}

#[test]
fn csv_unterminated_quote_is_row_error() {
    let read = csv("a,b\n1,2\n3,\"open\n4,5\n");
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.records.len(), 2);
    let error = row_error(&read, 1);
    assert_eq!(error.line, 3);
    assert!(error.reason.contains("unterminated"), "{}", error.reason);
}

#[test]
fn csv_text_after_closing_quote_kept() {
    // csv-core keeps bytes after a closing quote as part of the field.
    let read = csv("a,b\n\"x\"y,2\n");
    assert_eq!(values(record(&read, 0)), ["xy", "2"]);
}

#[test]
fn csv_stray_quote_in_header() {
    let read = csv("na\"me,email\n1,2\n");
    assert_eq!(read.headers, Some(strings(&["na\"me", "email"])));
    assert_eq!(values(record(&read, 0)), ["1", "2"]);
}

#[test]
fn csv_bytewise_matches_whole() {
    let body = "\u{feff}Index;Name;Note\r\n1;\"A;B\";\"multi\r\nline\"\r\n\r\n2;C;\"q\"\"q\"\r\n3;D\r\n4;E;F";
    let whole = read(Format::Csv, body.as_bytes());
    let bytewise = read_bytewise(Format::Csv, body.as_bytes());
    assert_eq!(whole.result, Ok(()));
    assert_eq!(whole.records, bytewise.records);
    assert_eq!(whole.headers, bytewise.headers);
    assert_eq!(whole.records.len(), 4);
    assert_eq!(record(&whole, 0).line, 2);
    assert_eq!(values(record(&whole, 0)), ["1", "A;B", "multi\r\nline"]);
    assert_eq!(record(&whole, 1).line, 5);
    assert_eq!(values(record(&whole, 1)), ["2", "C", "q\"q"]);
    assert_eq!(row_error(&whole, 2).line, 6);
    assert_eq!(record(&whole, 3).line, 7);
}

#[test]
fn csv_counters() {
    let body = "a,b\n1,2\n\n3,4\n";
    let mut reader = RecordReader::new(Format::Csv, IngestLimits::default());
    let mut out = Vec::new();
    assert_eq!(reader.push(body.as_bytes(), &mut out), Ok(()));
    assert_eq!(reader.finish(&mut out), Ok(()));
    assert_eq!(reader.bytes_read(), body.len() as u64);
    assert_eq!(reader.rows_read(), 2);
}

// --- limits ---

fn limits(max_bytes: u64, max_rows: u64, max_record_bytes: usize) -> IngestLimits {
    IngestLimits { max_bytes, max_rows, max_record_bytes }
}

#[test]
fn limits_default() {
    let limits = IngestLimits::default();
    assert_eq!(limits.max_bytes, 1024 * 1024 * 1024);
    assert_eq!(limits.max_rows, 5_000_000);
    assert_eq!(limits.max_record_bytes, 64 * 1024);
}

#[test]
fn limit_too_large() {
    let body = b"a,b\n1,2\n3,4\n";
    let read = read_chunks(Format::Csv, limits(10, 100, 100), body.chunks(4));
    assert_eq!(read.result, Err(IngestError::TooLarge { limit: 10 }));
    let exact = read_chunks(Format::Csv, limits(12, 100, 100), body.chunks(4));
    assert_eq!(exact.result, Ok(()));
}

#[test]
fn limit_too_many_rows() {
    let body = b"a,b\n1,2\n\n3,4\n5,6\n";
    let read = read_chunks(Format::Csv, limits(1000, 2, 100), [&body[..]]);
    assert_eq!(read.result, Err(IngestError::TooManyRows { limit: 2 }));
    let exact = read_chunks(Format::Csv, limits(1000, 3, 100), [&body[..]]);
    assert_eq!(exact.result, Ok(()));

    let ndjson = b"{\"a\":1}\n\n{\"a\":2}\nnot json\n";
    let read = read_chunks(Format::Ndjson, limits(1000, 2, 100), [&ndjson[..]]);
    assert_eq!(read.result, Err(IngestError::TooManyRows { limit: 2 }));
}

#[test]
fn limit_record_too_long() {
    let long = "x".repeat(50);
    let body = format!("a,b\n1,2\n\n3,{long}\n5,6\n");
    for read in [
        read_chunks(Format::Csv, limits(10_000, 100, 20), [body.as_bytes()]),
        read_chunks(Format::Csv, limits(10_000, 100, 20), body.as_bytes().chunks(1)),
    ] {
        assert_eq!(read.result, Err(IngestError::RecordTooLong { line: 4, limit: 20 }));
    }

    // Many empty fields count one byte per delimiter.
    let commas = format!("a\n{}\n", ",".repeat(30));
    let read = read_chunks(Format::Csv, limits(10_000, 100, 20), [commas.as_bytes()]);
    assert_eq!(read.result, Err(IngestError::RecordTooLong { line: 2, limit: 20 }));

    let header = format!("{long}\n1\n");
    let read = read_chunks(Format::Csv, limits(10_000, 100, 20), [header.as_bytes()]);
    assert_eq!(read.result, Err(IngestError::RecordTooLong { line: 1, limit: 20 }));

    let ndjson = format!("{{\"a\":1}}\n\n{{\"a\":\"{long}\"}}\n");
    let read = read_chunks(Format::Ndjson, limits(10_000, 100, 20), [ndjson.as_bytes()]);
    assert_eq!(read.result, Err(IngestError::RecordTooLong { line: 3, limit: 20 }));
}

#[test]
fn limit_record_at_limit_accepted() {
    // 9 bytes of fields and one delimiter: exactly 10.
    let body = "a,b\n1234,56789\n";
    let read = read_chunks(Format::Csv, limits(10_000, 100, 10), [body.as_bytes()]);
    assert_eq!(read.result, Ok(()));
    assert_eq!(values(record(&read, 0)), ["1234", "56789"]);
}

#[test]
fn fatal_error_repeats() {
    let mut reader = RecordReader::new(Format::Csv, limits(4, 10, 10));
    let mut out = Vec::new();
    let error = IngestError::TooLarge { limit: 4 };
    assert_eq!(reader.push(b"a,b\n1,2\n", &mut out), Err(error.clone()));
    assert_eq!(reader.push(b"", &mut out), Err(error.clone()));
    assert_eq!(reader.finish(&mut out), Err(error));
}

#[test]
fn ingest_error_messages() {
    let error = IngestError::RecordTooLong { line: 7, limit: 65536 };
    let message = error.to_string();
    assert!(message.contains("line 7"), "{message}");
    assert!(message.contains("65536 bytes"), "{message}");
    assert!(message.starts_with("record too long"), "{message}");
    let missing = IngestError::MappedColumnNotFound { header: "Mail".into() }.to_string();
    assert!(missing.contains("\"Mail\""), "{missing}");
}

// --- NDJSON ---

#[test]
fn ndjson_basic() {
    let read =
        ndjson("{\"email\":\"a@example.com\",\"name\":\"Ana\"}\n{\"name\":\"Bob\",\"age\":3}\n");
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.headers, Some(strings(&["email", "name"])));
    let first = record(&read, 0);
    assert_eq!(first.line, 1);
    assert_eq!(
        first.fields,
        [("email".into(), "a@example.com".into()), ("name".into(), "Ana".into())]
    );
    let second = record(&read, 1);
    assert_eq!(second.line, 2);
    assert_eq!(second.fields, [("name".into(), "Bob".into()), ("age".into(), "3".into())]);
}

#[test]
fn ndjson_scalar_values() {
    let read = ndjson(
        "{\"s\":\"x\\n\\u00e9\",\"i\":-12,\"f\":1.50,\"e\":1e5,\"t\":true,\"n\":null,\"b\":false}",
    );
    assert_eq!(values(record(&read, 0)), ["x\né", "-12", "1.50", "1e5", "true", "", "false"]);
}

#[test]
fn ndjson_nested_value_is_row_error() {
    let read = ndjson("{\"a\":1,\"tags\":[\"x\"]}\n{\"a\":2,\"o\":{\"k\":1}}\n{\"a\":3}\n");
    assert_eq!(read.result, Ok(()));
    let array = row_error(&read, 0);
    assert_eq!(array.line, 1);
    assert_eq!(array.field.as_deref(), Some("tags"));
    assert!(array.reason.contains("array"), "{}", array.reason);
    assert_eq!(row_error(&read, 1).field.as_deref(), Some("o"));
    assert_eq!(values(record(&read, 2)), ["3"]);
}

#[test]
fn ndjson_non_object_line_is_row_error() {
    let read = ndjson("[1,2]\n\"text\"\n{\"a\":\n{\"a\":1}\n");
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.records.len(), 4);
    let array = row_error(&read, 0);
    assert!(array.reason.contains("not a JSON object"), "{}", array.reason);
    assert_eq!(row_error(&read, 1).line, 2);
    let broken = row_error(&read, 2);
    assert_eq!(broken.line, 3);
    assert!(broken.reason.contains("invalid JSON at column"), "{}", broken.reason);
    assert_eq!(record(&read, 3).line, 4);
    // The headers come from the first object, whatever lines precede it.
    assert_eq!(read.headers, Some(strings(&["a"])));
}

#[test]
fn ndjson_blank_lines_and_crlf() {
    let read = ndjson("\r\n{\"a\":1}\r\n  \n\n{\"a\":2}");
    assert_eq!(read.rows, 2);
    assert_eq!(record(&read, 0).line, 2);
    assert_eq!(record(&read, 1).line, 5);
}

#[test]
fn ndjson_duplicate_key_is_row_error() {
    let read = ndjson("{\"a\":1,\"a\":2}\n");
    let error = row_error(&read, 0);
    assert_eq!(error.field.as_deref(), Some("a"));
    assert!(error.reason.contains("duplicate key"), "{}", error.reason);
}

#[test]
fn ndjson_invalid_utf8_is_row_error() {
    let read = read(Format::Ndjson, b"{\"a\":\"\xFF\"}\n{\"a\":1}\n");
    assert!(row_error(&read, 0).reason.contains("UTF-8"));
    assert_eq!(values(record(&read, 1)), ["1"]);
}

#[test]
fn ndjson_bytewise_matches_whole() {
    let body = "\u{feff}{\"name\":\"Węgrzyn\",\"n\":1}\r\n\n[]\n{\"name\":\"渡辺\"}".as_bytes();
    let whole = read(Format::Ndjson, body);
    let bytewise = read_bytewise(Format::Ndjson, body);
    assert_eq!(whole.result, Ok(()));
    assert_eq!(whole.records, bytewise.records);
    assert_eq!(whole.headers, Some(strings(&["name", "n"])));
    assert_eq!(record(&whole, 2).line, 4);
}

#[test]
fn format_from_content_type() {
    assert_eq!(Format::from_content_type("text/csv"), Some(Format::Csv));
    assert_eq!(Format::from_content_type("Text/CSV; charset=utf-8"), Some(Format::Csv));
    assert_eq!(Format::from_content_type("application/x-ndjson"), Some(Format::Ndjson));
    assert_eq!(Format::from_content_type("application/ndjson"), Some(Format::Ndjson));
    assert_eq!(Format::from_content_type("application/jsonl"), Some(Format::Ndjson));
    assert_eq!(Format::from_content_type("application/json"), None);
    assert_eq!(Format::from_content_type(""), None);
}

#[test]
fn row_error_display() {
    let with_field = RowError::field(12, "email", "invalid email address \"x@\": missing domain");
    assert_eq!(
        with_field.to_string(),
        "line 12, field email: invalid email address \"x@\": missing domain"
    );
    assert_eq!(RowError::row(3, "bad").to_string(), "line 3: bad");
    let json = serde_json::to_string(&with_field).unwrap_or_default();
    assert!(json.contains("\"line\":12"), "{json}");
}

// --- shared sample files ---

const CUSTOMER_HEADERS: [&str; 12] = [
    "Index",
    "Customer Id",
    "First Name",
    "Last Name",
    "Company",
    "City",
    "Country",
    "Phone 1",
    "Phone 2",
    "Email",
    "Subscription Date",
    "Website",
];

fn read_file(name: &str, chunk_size: usize) -> Read {
    let path = shared_data(name);
    let body = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    read_chunks(Format::Csv, IngestLimits::default(), body.chunks(chunk_size))
}

#[test]
fn sample_customers_100_comma() {
    let read = read_file("customers-100.csv", 1000);
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.headers, Some(strings(&CUSTOMER_HEADERS)));
    assert_eq!(read.records.len(), 100);
    assert!(read.records.iter().all(Result::is_ok));
    let first = record(&read, 0);
    assert_eq!(first.line, 2);
    assert_eq!(first.fields[1], ("Customer Id".into(), "DD37Cf93aecA6Dc".into()));
    assert_eq!(first.fields[7], ("Phone 1".into(), "229.077.5154".into()));
    assert_eq!(record(&read, 99).line, 101);
    let quoted_company = read.records.iter().flatten().any(|record| {
        record.fields[4].1 == "Dominguez, Mcmillan and Donovan" && record.fields.len() == 12
    });
    assert!(quoted_company);
}

#[test]
fn sample_customers_100_semicolon() {
    let read = read_file("customers-100-excel-semicolon.csv", 333);
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.headers, Some(strings(&CUSTOMER_HEADERS)));
    assert_eq!(read.records.len(), 100);
    assert!(read.records.iter().all(Result::is_ok));
    assert_eq!(record(&read, 0).fields[10].1, "24.08.2020");
    assert!(
        read.records.iter().flatten().any(|r| r.fields[4].1 == "Dominguez, Mcmillan and Donovan")
    );
}

#[test]
fn sample_semicolon_matches_comma_file() {
    let comma = read_file("customers-100.csv", 4096);
    let semicolon = read_file("customers-100-excel-semicolon.csv", 4096);
    for (a, b) in comma.records.iter().flatten().zip(semicolon.records.iter().flatten()) {
        // Columns the spreadsheet did not rewrite: ids, names, company, city, email, website.
        for column in [1, 2, 3, 4, 5, 9, 11] {
            assert_eq!(a.fields[column], b.fields[column], "line {}", a.line);
        }
    }
}

#[test]
fn sample_customers_10000_lf() {
    let read = read_file("customers-10000.csv", 8192);
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.records.len(), 10_000);
    assert!(read.records.iter().all(Result::is_ok));
    assert_eq!(record(&read, 9_999).line, 10_001);
}

#[test]
fn sample_intl_contacts() {
    let read = read_file("contacts-intl-faker-160.csv", 7);
    assert_eq!(read.result, Ok(()));
    assert_eq!(read.headers, Some(strings(&["nazwa", "firma", "telefon", "pesel"])));
    assert_eq!(read.records.len(), 160);
    assert!(read.records.iter().all(Result::is_ok));

    let mapping = ColumnMapping::guess(&strings(&["nazwa", "firma", "telefon", "pesel"]));
    let context = context_for(&[Channel::Sms]);
    let polish = ValidationContext { default_region: "PL".into(), ..context };
    let first = validate(record(&read, 0), &mapping, &polish);
    let contact = first.unwrap_or_else(|errors| panic!("{errors:?}"));
    assert_eq!(contact.full_name.as_deref(), Some("Konrad Tylus"));
    assert_eq!(contact.phone.as_deref(), Some("+48320711703"));
    assert_eq!(contact.custom.get("firma").map(String::as_str), Some("Gabinety Grzech"));
}

// --- mapping ---

#[test]
fn mapping_guess_customer_headers() {
    let mapping = ColumnMapping::guess(&strings(&CUSTOMER_HEADERS));
    let custom = |name: &str| ContactField::Custom(name.into());
    let expected = [
        custom("index"),
        ContactField::ExternalId,
        ContactField::FirstName,
        ContactField::LastName,
        custom("company"),
        custom("city"),
        custom("country"),
        ContactField::Phone,
        custom("phone_2"),
        ContactField::Email,
        custom("subscription_date"),
        custom("website"),
    ];
    for (index, field) in expected.iter().enumerate() {
        assert_eq!(mapping.field_of(index), field, "column {}", CUSTOMER_HEADERS[index]);
    }
    assert_eq!(mapping.field_of(12), &ContactField::Ignore);
    assert_eq!(mapping.describe().len(), 12);
    assert_eq!(mapping.describe()[7], ("Phone 1".into(), ContactField::Phone));
}

#[test]
fn mapping_guess_polish_headers() {
    let mapping = ColumnMapping::guess(&strings(&["nazwa", "firma", "telefon", "pesel"]));
    assert_eq!(mapping.field_of(0), &ContactField::FullName);
    assert_eq!(mapping.field_of(1), &ContactField::Custom("firma".into()));
    assert_eq!(mapping.field_of(2), &ContactField::Phone);
    assert_eq!(mapping.field_of(3), &ContactField::Custom("pesel".into()));
}

#[test]
fn mapping_guess_synonyms() {
    let cases = [
        ("Email", ContactField::Email),
        ("E-mail", ContactField::Email),
        ("Email Address", ContactField::Email),
        ("mail", ContactField::Email),
        ("PHONE", ContactField::Phone),
        ("Phone Number", ContactField::Phone),
        ("Mobile", ContactField::Phone),
        ("Cell", ContactField::Phone),
        ("Tel.", ContactField::Phone),
        ("Telefon", ContactField::Phone),
        ("Teléfono", ContactField::Custom("teléfono".into())),
        ("Telefono", ContactField::Phone),
        ("first_name", ContactField::FirstName),
        ("Given name", ContactField::FirstName),
        ("Last Name", ContactField::LastName),
        ("Surname", ContactField::LastName),
        ("Name", ContactField::FullName),
        ("Full Name", ContactField::FullName),
        ("Contact Name", ContactField::FullName),
        ("Timezone", ContactField::Timezone),
        ("TZ", ContactField::Timezone),
        ("Time Zone", ContactField::Timezone),
        ("Id", ContactField::ExternalId),
        ("External ID", ContactField::ExternalId),
        ("contactId", ContactField::ExternalId),
        ("Region", ContactField::Region),
        ("Country Code", ContactField::Region),
        ("Phone Region", ContactField::Region),
        ("Start At", ContactField::StartAt),
        ("start", ContactField::StartAt),
        ("Subscription Date", ContactField::Custom("subscription_date".into())),
        ("Company", ContactField::Custom("company".into())),
        ("Ulica Główna", ContactField::Custom("ulica_główna".into())),
        ("accountManager", ContactField::Custom("account_manager".into())),
        ("", ContactField::Ignore),
        ("###", ContactField::Custom("column_1".into())),
    ];
    for (header, expected) in cases {
        let mapping = ColumnMapping::guess(&[header.to_owned()]);
        assert_eq!(mapping.field_of(0), &expected, "header {header:?}");
    }
}

#[test]
fn mapping_each_field_once() {
    let headers = strings(&[
        "Mobile",
        "Phone",
        "Email",
        "E-mail",
        "Company",
        "company!",
        "Name",
        "Full Name",
    ]);
    let mapping = ColumnMapping::guess(&headers);
    let fields: Vec<ContactField> = mapping.describe().into_iter().map(|(_, f)| f).collect();
    let custom = |name: &str| ContactField::Custom(name.into());
    assert_eq!(
        fields,
        [
            ContactField::Phone,
            custom("phone_2"),
            ContactField::Email,
            custom("e_mail"),
            custom("company"),
            custom("company_2"),
            ContactField::FullName,
            custom("full_name_2"),
        ]
    );
}

#[test]
fn mapping_from_explicit() {
    let headers = strings(&["Work Phone", "Phone", "Mail", "Notes"]);
    let explicit = BTreeMap::from([
        ("Work Phone".to_owned(), ContactField::Phone),
        ("Notes".to_owned(), ContactField::Ignore),
    ]);
    let mapping = ColumnMapping::from_explicit(&headers, &explicit);
    let mapping = mapping.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(mapping.field_of(0), &ContactField::Phone);
    // "phone" alone would shadow the contact field in templates.
    assert_eq!(mapping.field_of(1), &ContactField::Custom("phone_2".into()));
    assert_eq!(mapping.field_of(2), &ContactField::Email);
    assert_eq!(mapping.field_of(3), &ContactField::Ignore);
}

#[test]
fn mapping_explicit_unknown_header() {
    let headers = strings(&["Email"]);
    let explicit = BTreeMap::from([("E-mail".to_owned(), ContactField::Email)]);
    assert_eq!(
        ColumnMapping::from_explicit(&headers, &explicit),
        Err(IngestError::MappedColumnNotFound { header: "E-mail".into() })
    );
}

#[test]
fn mapping_explicit_field_twice() {
    let headers = strings(&["A", "B"]);
    let explicit = BTreeMap::from([
        ("A".to_owned(), ContactField::Email),
        ("B".to_owned(), ContactField::Email),
    ]);
    let result = ColumnMapping::from_explicit(&headers, &explicit);
    assert_eq!(
        result,
        Err(IngestError::FieldMappedTwice {
            field: "email".into(),
            first: "A".into(),
            second: "B".into()
        })
    );
}

#[test]
fn mapping_field_for_unseen_key() {
    let mapping = ColumnMapping::guess(&strings(&["email", "plan"]));
    assert_eq!(*mapping.field_for("plan"), ContactField::Custom("plan".into()));
    assert_eq!(*mapping.field_for("phone"), ContactField::Phone);
    assert_eq!(*mapping.field_for("E-mail"), ContactField::Custom("e_mail".into()));
    assert_eq!(*mapping.field_for("Plan"), ContactField::Custom("plan_2".into()));
}

#[test]
fn contact_field_serde() {
    let fields =
        vec![ContactField::FirstName, ContactField::Custom("plan".into()), ContactField::Ignore];
    let json = serde_json::to_string(&fields).unwrap_or_default();
    assert_eq!(json, r#"["first_name",{"custom":"plan"},"ignore"]"#);
    let back: Vec<ContactField> = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, fields);
}

// --- validation ---

fn context_for(channels: &[Channel]) -> ValidationContext {
    ValidationContext {
        default_region: "US".into(),
        default_timezone: chrono_tz::America::New_York,
        required_fields: Vec::new(),
        channels: channels.to_vec(),
        now: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).single().unwrap_or_default(),
    }
}

fn row(fields: &[(&str, &str)]) -> (RawRecord, ColumnMapping) {
    let fields: Vec<(String, String)> =
        fields.iter().map(|(h, v)| ((*h).to_owned(), (*v).to_owned())).collect();
    let headers: Vec<String> = fields.iter().map(|(h, _)| h.clone()).collect();
    (RawRecord { line: 9, fields }, ColumnMapping::guess(&headers))
}

fn valid(fields: &[(&str, &str)], context: &ValidationContext) -> ValidContact {
    let (record, mapping) = row(fields);
    validate(&record, &mapping, context).unwrap_or_else(|errors| panic!("{errors:?}"))
}

fn invalid(fields: &[(&str, &str)], context: &ValidationContext) -> Vec<RowError> {
    let (record, mapping) = row(fields);
    match validate(&record, &mapping, context) {
        Ok(contact) => panic!("row passed: {contact:?}"),
        Err(errors) => errors,
    }
}

#[test]
fn validate_full_row() {
    let context = context_for(&[Channel::Email, Channel::Sms]);
    let contact = valid(
        &[
            ("Customer Id", "C-1"),
            ("First Name", "Ana"),
            ("Last Name", "Lopez"),
            ("Email", "Ana.Lopez@Example.COM"),
            ("Phone", "+48 32 071 17 03"),
            ("Timezone", "Europe/Warsaw"),
            ("Start At", "2025-04-01T09:30:00+02:00"),
            ("Company", " Acme "),
            ("Notes", ""),
        ],
        &context,
    );
    assert_eq!(contact.contact_key, "C-1");
    assert_eq!(contact.external_id.as_deref(), Some("C-1"));
    assert_eq!(contact.email.as_deref(), Some("Ana.Lopez@example.com"));
    assert_eq!(contact.phone.as_deref(), Some("+48320711703"));
    assert_eq!(contact.full_name.as_deref(), Some("Ana Lopez"));
    assert_eq!(contact.timezone, chrono_tz::Europe::Warsaw);
    assert_eq!(
        contact.start_at,
        Utc.with_ymd_and_hms(2025, 4, 1, 7, 30, 0).single().unwrap_or_default()
    );
    assert_eq!(contact.custom, BTreeMap::from([("company".to_owned(), "Acme".to_owned())]));
    assert_eq!(contact.line, 9);
}

#[test]
fn validate_invalid_emails() {
    let context = context_for(&[Channel::Email]);
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_total = format!("a@{}.com", "b".repeat(60).repeat(5));
    let cases = [
        ("x@", "missing domain"),
        ("@example.com", "missing the part before"),
        ("ana.example.com", "missing \"@\""),
        ("ana @example.com", "whitespace"),
        ("ana@example", "no dot"),
        ("ana@example..com", "empty label"),
        ("ana@-example.com", "hyphen"),
        ("ana@exa_mple.com", "character"),
        ("a@b@example.com", "more than one"),
        (".ana@example.com", "dot"),
        ("an..a@example.com", "dot"),
        ("ana@[192.0.2.1]", "address literals"),
        ("ana@example.123", "numeric"),
        (long_local.as_str(), "64 bytes"),
        (long_total.as_str(), "254 bytes"),
    ];
    for (address, why) in cases {
        let errors = invalid(&[("email", address)], &context);
        assert_eq!(errors.len(), 1, "{address}: {errors:?}");
        assert_eq!(errors[0].field.as_deref(), Some("email"), "{address}");
        assert!(errors[0].reason.starts_with("invalid email address"), "{}", errors[0].reason);
        assert!(errors[0].reason.contains(why), "{address}: {}", errors[0].reason);
    }
}

#[test]
fn validate_valid_emails() {
    let context = context_for(&[Channel::Email]);
    let cases = [
        ("zunigavanessa@smith.info", "zunigavanessa@smith.info"),
        ("o'conner95@Example.org", "o'conner95@example.org"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("józef@wisła.pl", "józef@wisła.pl"),
    ];
    for (address, expected) in cases {
        let contact = valid(&[("email", address)], &context);
        assert_eq!(contact.email.as_deref(), Some(expected));
        assert_eq!(contact.contact_key, expected);
    }
}

#[test]
fn email_error_display() {
    let errors = invalid(&[("email", "x@")], &context_for(&[Channel::Email]));
    let message = errors[0].to_string();
    assert!(
        message.starts_with("line 9, field email: invalid email address \"x@\": missing domain")
    );
}

#[test]
fn validate_phone_default_region() {
    let context = context_for(&[Channel::Sms]);
    let contact = valid(&[("Phone 1", "(415) 555-2671")], &context);
    assert_eq!(contact.phone.as_deref(), Some("+14155552671"));
    assert_eq!(contact.contact_key, "+14155552671");
}

#[test]
fn validate_phone_sample_us_shapes() {
    let context = context_for(&[Channel::Sms]);
    // Exchange codes that start with 0 or 1 are invalid in the NANP, as in the sample data.
    let errors = invalid(&[("Phone", "229.077.5154")], &context);
    assert_eq!(errors[0].field.as_deref(), Some("phone"));
    assert!(errors[0].reason.contains("region US"), "{}", errors[0].reason);
    let contact = valid(&[("Phone", "229.277.5154")], &context);
    assert_eq!(contact.phone.as_deref(), Some("+12292775154"));
    let contact = valid(&[("Phone", "+1-813-324-8756")], &context);
    assert_eq!(contact.phone.as_deref(), Some("+18133248756"));
}

#[test]
fn validate_phone_extension_dropped() {
    let context = context_for(&[Channel::Call]);
    let contact = valid(&[("phone", "(415) 555-2671 x4995")], &context);
    assert_eq!(contact.phone.as_deref(), Some("+14155552671"));
}

#[test]
fn validate_phone_international() {
    let context = context_for(&[Channel::Sms]);
    let contact = valid(&[("telefon", "+48 32 071 17 03")], &context);
    assert_eq!(contact.phone.as_deref(), Some("+48320711703"));
}

#[test]
fn validate_phone_row_region() {
    let context = context_for(&[Channel::Sms]);
    let contact = valid(&[("phone", "885 862 947"), ("region", "pl")], &context);
    assert_eq!(contact.phone.as_deref(), Some("+48885862947"));
}

#[test]
fn validate_invalid_region() {
    let context = context_for(&[Channel::Sms]);
    let errors = invalid(&[("phone", "885 862 947"), ("Country Code", "Poland")], &context);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field.as_deref(), Some("region"));
    assert!(errors[0].reason.contains("ISO 3166-1 alpha-2"), "{}", errors[0].reason);
}

#[test]
fn validate_invalid_phones() {
    let context = context_for(&[Channel::Sms]);
    for number in ["-1199", "12", "not a number", "+999 123", &"9".repeat(80)] {
        let errors = invalid(&[("phone", number)], &context);
        assert_eq!(errors.len(), 1, "{number}: {errors:?}");
        assert_eq!(errors[0].field.as_deref(), Some("phone"), "{number}");
        assert!(errors[0].reason.starts_with("invalid phone number"), "{}", errors[0].reason);
    }
}

#[test]
fn validate_phone_malformed_input() {
    let mut context = context_for(&[Channel::Sms]);
    for region in ["US", "CH"] {
        context.default_region = region.into();
        for number in ["  2 22#:", "003-836-4618x3001", "+", "x", "00", "+1 (", "\u{FF10}\u{FF12}"]
        {
            let (record, mapping) = row(&[("phone", number)]);
            assert!(validate(&record, &mapping, &context).is_err(), "{region} {number}");
        }
    }
}

#[test]
fn validate_timezone() {
    let context = context_for(&[Channel::Email]);
    let contact = valid(&[("email", "a@example.com"), ("tz", "Asia/Tokyo")], &context);
    assert_eq!(contact.timezone, chrono_tz::Asia::Tokyo);
    let defaulted = valid(&[("email", "a@example.com"), ("tz", "")], &context);
    assert_eq!(defaulted.timezone, chrono_tz::America::New_York);

    let errors = invalid(&[("email", "a@example.com"), ("Time Zone", "Mars/Olympus")], &context);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field.as_deref(), Some("timezone"));
    assert!(errors[0].reason.contains("IANA"), "{}", errors[0].reason);
}

#[test]
fn validate_start_at() {
    let context = context_for(&[Channel::Email]);
    let at = |fields: &[(&str, &str)]| valid(fields, &context).start_at;
    let utc =
        |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap_or_default();

    assert_eq!(at(&[("email", "a@example.com")]), context.now);
    assert_eq!(
        at(&[("email", "a@example.com"), ("start", "2025-06-01T08:00:00Z")]),
        utc(2025, 6, 1, 8, 0)
    );
    // A date is midnight in the contact's timezone.
    assert_eq!(at(&[("email", "a@example.com"), ("start", "2025-06-01")]), utc(2025, 6, 1, 4, 0));
    let tokyo = [("email", "a@example.com"), ("tz", "Asia/Tokyo"), ("start", "2025-06-01")];
    assert_eq!(at(&tokyo), utc(2025, 5, 31, 15, 0));
    // Chile moves its clocks from 00:00 to 01:00 on 2024-09-08, so midnight does not exist.
    let santiago =
        [("email", "a@example.com"), ("tz", "America/Santiago"), ("start", "2024-09-08")];
    assert_eq!(at(&santiago), utc(2024, 9, 8, 4, 0));

    // Samoa skipped 2011-12-30 entirely: the first valid local time is 2011-12-31 00:00 +14.
    let apia = [("email", "a@example.com"), ("tz", "Pacific/Apia"), ("start", "2011-12-30")];
    assert_eq!(at(&apia), utc(2011, 12, 30, 10, 0));

    let errors = invalid(&[("email", "a@example.com"), ("Start At", "24.08.2020")], &context);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field.as_deref(), Some("start_at"));
    assert!(errors[0].reason.contains("RFC 3339"), "{}", errors[0].reason);
}

#[test]
fn validate_missing_template_field() {
    let mut context = context_for(&[Channel::Email]);
    context.required_fields = strings(&["first_name", "company", "name", "Account Manager"]);
    let errors = invalid(&[("email", "a@example.com"), ("Last Name", "Lopez")], &context);
    let fields: Vec<Option<&str>> = errors.iter().map(|e| e.field.as_deref()).collect();
    assert_eq!(fields, [Some("first_name"), Some("company"), Some("Account Manager")]);
    assert!(errors[0].reason.starts_with("missing value for template field \"first_name\""));

    let contact = valid(
        &[
            ("email", "a@example.com"),
            ("First Name", "Ana"),
            ("Company", "Acme"),
            ("Account Manager", "Bo"),
        ],
        &context,
    );
    assert_eq!(contact.full_name.as_deref(), Some("Ana"));
}

#[test]
fn validate_no_address() {
    let both = invalid(&[("First Name", "Ana")], &context_for(&[Channel::Email, Channel::Call]));
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].field, None);
    assert!(both[0].reason.starts_with("no email or phone number: the sequence needs one"));

    let email_only = invalid(&[("phone", "+48 32 071 17 03")], &context_for(&[Channel::Email]));
    assert_eq!(email_only.len(), 1);
    assert_eq!(email_only[0].field.as_deref(), Some("email"));

    let sms_only = invalid(&[("email", "a@example.com")], &context_for(&[Channel::Sms]));
    assert_eq!(sms_only[0].field.as_deref(), Some("phone"));
}

#[test]
fn validate_invalid_address_fails_even_if_other_works() {
    let context = context_for(&[Channel::Email, Channel::Sms]);
    let errors = invalid(&[("email", "a@example.com"), ("phone", "12")], &context);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field.as_deref(), Some("phone"));
}

#[test]
fn validate_reports_all_problems() {
    let mut context = context_for(&[Channel::Email]);
    context.required_fields = strings(&["first_name"]);
    let errors = invalid(
        &[("email", "x@"), ("tz", "Nowhere"), ("start", "soon"), ("region", "ZZZ")],
        &context,
    );
    let fields: Vec<Option<&str>> = errors.iter().map(|e| e.field.as_deref()).collect();
    assert_eq!(
        fields,
        [Some("region"), Some("email"), Some("timezone"), Some("start_at"), Some("first_name")]
    );
    assert!(errors.iter().all(|error| error.line == 9));
}

#[test]
fn validate_contact_key_order() {
    let context = context_for(&[Channel::Email, Channel::Sms]);
    let by_email = valid(&[("email", "A@X.org"), ("phone", "+14155552671")], &context);
    assert_eq!(by_email.contact_key, "a@x.org", "email keys ignore case");
    assert_eq!(by_email.email.as_deref(), Some("A@x.org"), "the address keeps its local part");
    let by_id = valid(&[("id", "7"), ("email", "a@x.org")], &context);
    assert_eq!(by_id.contact_key, "7");

    let errors = invalid(&[("First Name", "Ana")], &context_for(&[]));
    assert!(errors[0].reason.contains("identify the contact"), "{}", errors[0].reason);
}

#[test]
fn validate_ndjson_record_with_later_keys() {
    let read = ndjson(
        "{\"email\":\"a@example.com\"}\n{\"plan\":\"gold\",\"email\":\"b@example.com\",\"phone\":\"+14155552671\"}\n",
    );
    let headers = read.headers.clone().unwrap_or_default();
    let mapping = ColumnMapping::guess(&headers);
    let contact = validate(record(&read, 1), &mapping, &context_for(&[Channel::Sms]));
    let contact = contact.unwrap_or_else(|errors| panic!("{errors:?}"));
    assert_eq!(contact.email.as_deref(), Some("b@example.com"));
    assert_eq!(contact.phone.as_deref(), Some("+14155552671"));
    assert_eq!(contact.custom.get("plan").map(String::as_str), Some("gold"));
}

#[test]
fn validate_sample_file_rows() {
    let read = read_file("customers-100.csv", 4096);
    let mapping = ColumnMapping::guess(&read.headers.clone().unwrap_or_default());
    let context = context_for(&[Channel::Email]);
    let mut accepted = 0;
    for record in read.records.iter().flatten() {
        match validate(record, &mapping, &context) {
            Ok(contact) => {
                accepted += 1;
                assert!(contact.email.is_some());
                assert_eq!(contact.contact_key, record.fields[1].1);
            }
            Err(errors) => {
                // Every email is well formed, so only the US-style phone numbers fail, many
                // of them with area or exchange codes that start with 0 or 1.
                assert!(errors.iter().all(|e| e.field.as_deref() == Some("phone")), "{errors:?}");
            }
        }
    }
    assert_eq!(accepted, 31);
}

// --- properties ---

fn chunked(body: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut rest = body;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk.to_vec());
        rest = tail;
    }
    chunks
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(vec![
        b',', b';', b'\t', b'"', b'\r', b'\n', b'{', b'}', b'[', b':', b'a', b' ', 0xEF, 0xBB,
        0xBF, 0xC3, 0xA9, 0xFF,
    ]);
    prop::collection::vec(prop_oneof![any::<u8>(), interesting], 0..400)
}

proptest! {
    #[test]
    fn any_bytes_any_chunks_same_result(
        body in body_bytes(),
        sizes in prop::collection::vec(1usize..40, 1..8),
        max_record_bytes in prop_oneof![Just(65_536usize), 0usize..40],
        max_rows in prop_oneof![Just(1_000u64), 0u64..5],
    ) {
        let limits = limits(u64::MAX, max_rows, max_record_bytes);
        for format in [Format::Csv, Format::Ndjson] {
            let whole = read_chunks(format, limits, [body.as_slice()]);
            let parts = chunked(&body, &sizes);
            let split = read_chunks(format, limits, parts.iter().map(Vec::as_slice));
            prop_assert_eq!(&whole.result, &split.result);
            prop_assert_eq!(&whole.records, &split.records);
            prop_assert_eq!(&whole.headers, &split.headers);
        }
    }

    #[test]
    fn csv_round_trip(
        rows in prop::collection::vec(
            prop::collection::vec("[a-z ,;\t\"\r\né渡]{0,8}", 3),
            0..12,
        ),
        delimiter in prop::sample::select(vec![b',', b';', b'\t']),
        crlf in any::<bool>(),
        sizes in prop::collection::vec(1usize..30, 1..5),
    ) {
        let delimiter = char::from(delimiter);
        let terminator = if crlf { "\r\n" } else { "\n" };
        let mut body = ["c0", "c1", "c2"].join(&delimiter.to_string()) + terminator;
        let mut starts = Vec::new();
        for row in &rows {
            starts.push(body.len());
            let fields: Vec<String> = row.iter().map(|value| quote_field(value)).collect();
            body.push_str(&fields.join(&delimiter.to_string()));
            body.push_str(terminator);
        }

        let parts = chunked(body.as_bytes(), &sizes);
        let read = read_chunks(Format::Csv, IngestLimits::default(), parts.iter().map(Vec::as_slice));
        prop_assert_eq!(&read.result, &Ok(()));
        prop_assert_eq!(read.headers, Some(strings(&["c0", "c1", "c2"])));

        let expected: Vec<Vec<String>> = rows
            .iter()
            .map(|row| row.iter().map(|value| value.trim().to_owned()).collect::<Vec<_>>())
            .filter(|row| row.iter().any(|value| !value.is_empty()))
            .collect();
        let got: Vec<Vec<String>> = read
            .records
            .iter()
            .flatten()
            .map(|record| record.fields.iter().map(|(_, value)| value.clone()).collect())
            .collect();
        prop_assert_eq!(read.records.len(), got.len());
        prop_assert_eq!(got, expected);

        // Each record starts on the line after every line break before it.
        let expected_lines: Vec<u64> = rows
            .iter()
            .zip(&starts)
            .filter(|(row, _)| row.iter().any(|value| !value.trim().is_empty()))
            .map(|(_, &start)| 1 + line_breaks(&body.as_bytes()[..start]))
            .collect();
        let lines: Vec<u64> = read.records.iter().flatten().map(|record| record.line).collect();
        prop_assert_eq!(lines, expected_lines);
    }

    #[test]
    fn validate_never_panics(
        values in prop::collection::vec("\\PC{0,20}|[0-9 +()x.-]{0,20}", 6),
        channels in prop::collection::vec(prop::sample::select(Channel::ALL.to_vec()), 0..3),
    ) {
        let headers = ["email", "phone", "region", "timezone", "start_at", "first_name"];
        let fields = headers.iter().zip(&values).map(|(h, v)| ((*h).to_owned(), v.clone())).collect();
        let record = RawRecord { line: 2, fields };
        let mapping = ColumnMapping::guess(&strings(&headers));
        let mut context = context_for(&channels);
        context.required_fields = strings(&["first_name", "plan"]);
        let _ = validate(&record, &mapping, &context);
    }
}

/// Counts line breaks: LF, CR LF and a lone CR each end a line.
fn line_breaks(bytes: &[u8]) -> u64 {
    let lone_lf =
        bytes.iter().enumerate().filter(|&(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    let cr = bytes.iter().filter(|&&b| b == b'\r').count();
    (cr + lone_lf.count()) as u64
}

/// Quotes a CSV field whenever it contains a character that needs it.
fn quote_field(value: &str) -> String {
    if value.contains([',', ';', '\t', '"', '\r', '\n']) || value.starts_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}
