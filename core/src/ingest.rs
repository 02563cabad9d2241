//! Bulk ingest: streaming parsing of CSV and NDJSON uploads, column mapping, and validation of
//! each row into a contact.
//!
//! The flow is push-based and does no I/O: the HTTP layer feeds body chunks to a
//! [`RecordReader`] as they arrive, builds a [`ColumnMapping`] once [`RecordReader::headers`]
//! is known, and passes every [`RawRecord`] through [`validate`]. A problem with one row becomes
//! a [`RowError`], and the upload goes on. A problem that makes the rest of the body unreadable,
//! or that breaks a limit, is an [`IngestError`] and stops the upload.

pub(crate) mod address;
mod csv;
mod mapping;
mod ndjson;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use mapping::{ColumnMapping, ContactField};
pub use validate::{ValidContact, ValidationContext, validate};

/// Encoding of an upload body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// RFC 4180 CSV with a header row; the delimiter (comma, semicolon or tab) is detected.
    Csv,
    /// Newline-delimited JSON: one object per line.
    Ndjson,
}

impl Format {
    /// Maps a `Content-Type` header value to a format. Parameters such as `charset` are
    /// ignored, because the body is always read as UTF-8 and invalid bytes are reported per row.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let essence = essence.to_ascii_lowercase();
        match essence.as_str() {
            "text/csv"
            | "application/csv"
            | "text/comma-separated-values"
            | "text/tab-separated-values" => Some(Format::Csv),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines"
            | "application/json-lines" => Some(Format::Ndjson),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size limits of one upload. Breaking any of them stops the upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestLimits {
    /// Maximum body size, in bytes.
    pub max_bytes: u64,
    /// Maximum number of data rows, not counting the CSV header or blank lines.
    pub max_rows: u64,
    /// Maximum size of one record, in bytes: an NDJSON line, or a CSV record's field bytes after
    /// unquoting plus one byte per delimiter. The reader's memory is bounded by this value.
    pub max_record_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self { max_bytes: 1 << 30, max_rows: 5_000_000, max_record_bytes: 64 * 1024 }
    }
}

/// One data row as read from the upload, before mapping and validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// 1-based physical line on which the record starts. In CSV the header is line 1.
    pub line: u64,
    /// Column header (or JSON key) and value, in the order of the row.
    pub fields: Vec<(String, String)>,
}

/// A problem with one row. The row is rejected and the upload goes on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// 1-based physical line on which the row starts.
    pub line: u64,
    /// Canonical contact field name (such as `email`) or the column's name, when one field is
    /// at fault.
    pub field: Option<String>,
    /// Explanation of the problem and of its fix.
    pub reason: String,
}

impl RowError {
    pub(crate) fn row(line: u64, reason: impl Into<String>) -> Self {
        Self { line, field: None, reason: reason.into() }
    }

    pub(crate) fn field(line: u64, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { line, field: Some(field.into()), reason: reason.into() }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, field {field}: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

impl std::error::Error for RowError {}

/// A problem that stops the whole upload. The HTTP layer responds to it with a 4xx status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("upload too large: the body exceeds {limit} bytes; split it into smaller uploads")]
    TooLarge { limit: u64 },
    #[error(
        "too many rows: the upload has more than {limit} data rows; split it into smaller uploads"
    )]
    TooManyRows { limit: u64 },
    #[error(
        "record too long: the record starting on line {line} exceeds {limit} bytes; \
         check it for a missing closing quote, or shorten it"
    )]
    RecordTooLong { line: u64, limit: usize },
    #[error(
        "missing header row: the upload is empty or has only blank lines; \
         the first line must name the columns"
    )]
    MissingHeader,
    #[error("invalid header row: {reason}")]
    BadHeader { reason: String },
    #[error("header row is not valid UTF-8 (column {column}); save the file as UTF-8 and retry")]
    NotUtf8Header { column: usize },
    #[error(
        "column mapping names column {header:?}, which is not in the upload's header row; \
         fix the mapping or the header"
    )]
    MappedColumnNotFound { header: String },
    #[error(
        "column mapping maps both {first:?} and {second:?} to field {field}; \
         map only one column to it"
    )]
    FieldMappedTwice { field: String, first: String, second: String },
}

/// Streaming reader of an upload body in either format.
///
/// Memory stays bounded by [`IngestLimits::max_record_bytes`] whatever the body size, because
/// only the record being read is buffered.
#[derive(Debug)]
pub struct RecordReader {
    limits: IngestLimits,
    parser: Parser,
    bom: BomFilter,
    rows: RowCounter,
    bytes_read: u64,
    /// The fatal error already returned, returned again on any later call.
    failed: Option<IngestError>,
    finished: bool,
}

#[derive(Debug)]
enum Parser {
    Csv(csv::CsvReader),
    Ndjson(ndjson::NdjsonReader),
}

impl RecordReader {
    pub fn new(format: Format, limits: IngestLimits) -> Self {
        let parser = match format {
            Format::Csv => Parser::Csv(csv::CsvReader::new(limits.max_record_bytes)),
            Format::Ndjson => Parser::Ndjson(ndjson::NdjsonReader::new(limits.max_record_bytes)),
        };
        Self {
            limits,
            parser,
            bom: BomFilter::default(),
            rows: RowCounter { rows: 0, max_rows: limits.max_rows },
            bytes_read: 0,
            failed: None,
            finished: false,
        }
    }

    /// Parses the next chunk of the body and appends every record it completes to `out`.
    ///
    /// Chunks may split the body anywhere, including inside a UTF-8 character, a CRLF or a
    /// quoted field. After an error, every later call returns the same error. Calls after
    /// [`RecordReader::finish`] do nothing.
    pub fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        self.check_usable()?;
        if self.finished {
            return Ok(());
        }
        self.bytes_read = self.bytes_read.saturating_add(chunk.len() as u64);
        if self.bytes_read > self.limits.max_bytes {
            return self.fail(IngestError::TooLarge { limit: self.limits.max_bytes });
        }

        let (held, rest) = self.bom.filter(chunk);
        let result = self.feed(&held, out).and_then(|()| self.feed(rest, out));
        result.or_else(|error| self.fail(error))
    }

    /// Ends the body: parses what is left and appends the last record to `out`.
    pub fn finish(
        &mut self,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        self.check_usable()?;
        if self.finished {
            return Ok(());
        }
        self.finished = true;

        let held = self.bom.flush();
        let result = self.feed(&held, out).and_then(|()| match &mut self.parser {
            Parser::Csv(reader) => reader.finish(&mut self.rows, out),
            Parser::Ndjson(reader) => reader.finish(&mut self.rows, out),
        });
        result.or_else(|error| self.fail(error))
    }

    /// Column names: the CSV header row, or the keys of the first NDJSON object. `None` until
    /// they have been read.
    pub fn headers(&self) -> Option<&[String]> {
        match &self.parser {
            Parser::Csv(reader) => reader.headers(),
            Parser::Ndjson(reader) => reader.headers(),
        }
    }

    /// Bytes pushed so far, including any byte order mark.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Data rows read so far, valid or not; blank lines and the CSV header do not count.
    pub fn rows_read(&self) -> u64 {
        self.rows.rows
    }

    fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.parser {
            Parser::Csv(reader) => reader.push(bytes, &mut self.rows, out),
            Parser::Ndjson(reader) => reader.push(bytes, &mut self.rows, out),
        }
    }

    fn check_usable(&self) -> Result<(), IngestError> {
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, error: IngestError) -> Result<(), IngestError> {
        self.failed = Some(error.clone());
        Err(error)
    }
}

/// Counter of data rows that enforces [`IngestLimits::max_rows`].
#[derive(Debug)]
pub(crate) struct RowCounter {
    rows: u64,
    max_rows: u64,
}

impl RowCounter {
    /// Counts one more data row.
    pub(crate) fn count(&mut self) -> Result<(), IngestError> {
        self.rows += 1;
        if self.rows > self.max_rows {
            return Err(IngestError::TooManyRows { limit: self.max_rows });
        }
        Ok(())
    }
}

const UTF8_BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Removes a UTF-8 byte order mark from the start of the body, even when chunks split it.
#[derive(Debug, Default)]
struct BomFilter {
    /// Leading bytes that match the start of a BOM so far.
    held: Vec<u8>,
    decided: bool,
}

impl BomFilter {
    /// Returns the bytes to parse: held bytes that turned out not to be a BOM, then the rest of
    /// `chunk`.
    fn filter<'a>(&mut self, chunk: &'a [u8]) -> (Vec<u8>, &'a [u8]) {
        if self.decided {
            return (Vec::new(), chunk);
        }
        let mut rest = chunk;
        while self.held.len() < UTF8_BOM.len() {
            let Some((&byte, tail)) = rest.split_first() else {
                return (Vec::new(), rest);
            };
            if byte != UTF8_BOM[self.held.len()] {
                self.decided = true;
                return (std::mem::take(&mut self.held), rest);
            }
            self.held.push(byte);
            rest = tail;
        }

        // A whole BOM: drop it.
        self.decided = true;
        self.held.clear();
        (Vec::new(), rest)
    }

    /// Returns held bytes at the end of a body shorter than a BOM.
    fn flush(&mut self) -> Vec<u8> {
        self.decided = true;
        std::mem::take(&mut self.held)
    }
}

/// Quotes `value` for an error message, cut to a readable length.
pub(crate) fn quoted(value: &str) -> String {
    const MAX_CHARS: usize = 60;
    if value.chars().count() <= MAX_CHARS {
        return format!("{value:?}");
    }
    let cut: String = value.chars().take(MAX_CHARS).collect();
    format!("{cut:?}...")
}
