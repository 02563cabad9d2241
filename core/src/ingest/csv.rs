//! Streaming CSV reader on top of `csv-core`, which parses without buffering the input.
//!
//! The first line is held back until it is complete, to detect the delimiter from it. After
//! that, each chunk goes straight to `csv-core`, and only the fields of the current record are
//! buffered.

use std::collections::BTreeMap;

use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

use super::{IngestError, RawRecord, RowCounter, RowError, quoted};

const INITIAL_FIELD_BYTES: usize = 4096;
const INITIAL_FIELDS: usize = 64;

#[derive(Debug)]
pub(crate) struct CsvReader {
    max_record_bytes: usize,
    /// The header line held back until it is complete; `None` once the parser runs.
    pending_header: Option<HeaderLine>,
    /// Built once the delimiter is known.
    parser: Option<Box<Reader>>,
    delimiter: u8,
    headers: Option<Vec<String>>,
    record: RecordBuffer,
    lines: LineCounter,
    /// Line on which the record being read starts; `None` between records.
    record_start: Option<u64>,
    quote: QuoteState,
}

impl CsvReader {
    pub(crate) fn new(max_record_bytes: usize) -> Self {
        Self {
            max_record_bytes,
            pending_header: Some(HeaderLine::default()),
            parser: None,
            delimiter: b',',
            headers: None,
            record: RecordBuffer::new(max_record_bytes),
            lines: LineCounter::default(),
            record_start: None,
            quote: QuoteState::FieldStart,
        }
    }

    pub(crate) fn headers(&self) -> Option<&[String]> {
        self.headers.as_deref()
    }

    pub(crate) fn push(
        &mut self,
        chunk: &[u8],
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        let Some(header) = &mut self.pending_header else {
            return self.parse(chunk, false, rows, out);
        };
        let taken = header.push(chunk, self.max_record_bytes, &mut self.lines)?;
        if !header.complete {
            return Ok(());
        }
        let line = std::mem::take(&mut header.bytes);
        self.start_reading(&line, rows, out)?;
        self.parse(&chunk[taken..], false, rows, out)
    }

    pub(crate) fn finish(
        &mut self,
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        if let Some(header) = &mut self.pending_header {
            let line = std::mem::take(&mut header.bytes);
            self.start_reading(&line, rows, out)?;
        }
        self.parse(&[], true, rows, out)?;
        if self.headers.is_none() {
            return Err(IngestError::MissingHeader);
        }
        Ok(())
    }

    /// Builds the parser for the delimiter of `header_line` and parses the held-back bytes.
    fn start_reading(
        &mut self,
        header_line: &[u8],
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        self.pending_header = None;
        self.delimiter = detect_delimiter(header_line);
        self.parser = Some(Box::new(ReaderBuilder::new().delimiter(self.delimiter).build()));
        self.parse(header_line, false, rows, out)
    }

    /// Runs `csv-core` over `input`; with `eof`, also flushes the last record.
    fn parse(
        &mut self,
        input: &[u8],
        eof: bool,
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        // The parser is taken out for the loop, which needs `self` for the records it finishes.
        let Some(mut parser) = self.parser.take() else {
            return Ok(());
        };
        let result = self.parse_with(&mut parser, input, eof, rows, out);
        self.parser = Some(parser);
        result
    }

    fn parse_with(
        &mut self,
        parser: &mut Reader,
        mut input: &[u8],
        eof: bool,
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        loop {
            // csv-core reads an empty input as the end of the body.
            if input.is_empty() && !eof {
                return Ok(());
            }
            let (output, ends) = self.record.free_space();
            let (result, read, written, ended) = parser.read_record(input, output, ends);
            self.track(&input[..read]);
            input = &input[read..];
            self.record.advance(written, ended);

            match result {
                ReadRecordResult::InputEmpty if eof && read == 0 => return Ok(()),
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.record.grow_fields(self.current_line())?,
                ReadRecordResult::OutputEndsFull => self.record.grow_ends(self.current_line())?,
                ReadRecordResult::Record => self.finish_record(eof, rows, out)?,
                ReadRecordResult::End => return Ok(()),
            }
        }
    }

    /// Follows the bytes that `csv-core` consumed, to know on which line each record starts and
    /// whether the body ends inside a quoted field.
    fn track(&mut self, consumed: &[u8]) {
        for &byte in consumed {
            let line = self.lines.current();
            self.lines.advance_byte(byte);

            // csv-core skips line breaks between records, so a record starts at the first
            // other byte.
            if self.record_start.is_none() {
                if byte == b'\r' || byte == b'\n' {
                    continue;
                }
                self.record_start = Some(line);
            }
            self.quote = self.quote.next(byte, byte == self.delimiter);
        }
    }

    fn current_line(&self) -> u64 {
        self.record_start.unwrap_or_else(|| self.lines.current())
    }

    fn finish_record(
        &mut self,
        eof: bool,
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        let line = self.current_line();
        let unterminated = eof && self.quote == QuoteState::Quoted;
        self.record_start = None;
        self.quote = QuoteState::FieldStart;

        let size = self.record.size();
        if size > self.max_record_bytes {
            return Err(IngestError::RecordTooLong { line, limit: self.max_record_bytes });
        }
        let fields: Vec<&[u8]> = self.record.fields().collect();
        let result = match &self.headers {
            None => {
                self.headers = Some(header_names(&fields, unterminated)?);
                Ok(())
            }
            Some(headers) => data_row(headers, &fields, line, unterminated, rows, out),
        };
        self.record.clear();
        result
    }
}

/// Checks one data row and appends it, or its error, to `out`. Rows of blank fields are
/// skipped, because spreadsheets often save them below the data.
fn data_row(
    headers: &[String],
    fields: &[&[u8]],
    line: u64,
    unterminated: bool,
    rows: &mut RowCounter,
    out: &mut Vec<Result<RawRecord, RowError>>,
) -> Result<(), IngestError> {
    if fields.iter().all(|field| field.trim_ascii().is_empty()) {
        return Ok(());
    }
    rows.count()?;

    if unterminated {
        let reason = "unterminated quoted field: the upload ends inside quotes; \
                      add the closing quote";
        out.push(Err(RowError::row(line, reason)));
        return Ok(());
    }
    if fields.len() != headers.len() {
        let reason = format!(
            "expected {} fields as in the header row, found {}; check the row for an \
             unquoted delimiter or a missing quote",
            headers.len(),
            fields.len()
        );
        out.push(Err(RowError::row(line, reason)));
        return Ok(());
    }

    let mut values = Vec::with_capacity(fields.len());
    for (header, bytes) in headers.iter().zip(fields) {
        let Ok(value) = std::str::from_utf8(bytes) else {
            let reason = "value is not valid UTF-8; save the file as UTF-8 and upload it again";
            out.push(Err(RowError::field(line, header.clone(), reason)));
            return Ok(());
        };
        values.push((header.clone(), value.trim().to_owned()));
    }
    out.push(Ok(RawRecord { line, fields: values }));
    Ok(())
}

/// Reads the header row: UTF-8, trimmed, with no name used twice. Empty names are allowed,
/// because spreadsheets add them for trailing empty columns; the mapping ignores them.
fn header_names(fields: &[&[u8]], unterminated: bool) -> Result<Vec<String>, IngestError> {
    if unterminated {
        let reason = "unterminated quoted field: add the closing quote".to_owned();
        return Err(IngestError::BadHeader { reason });
    }

    let mut names = Vec::with_capacity(fields.len());
    let mut first_column: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, bytes) in fields.iter().enumerate() {
        let name = std::str::from_utf8(bytes)
            .map_err(|_| IngestError::NotUtf8Header { column: index + 1 })?
            .trim();
        if !name.is_empty()
            && let Some(first) = first_column.insert(name, index + 1)
        {
            let reason = format!(
                "column name {} appears in columns {first} and {}; rename one of them",
                quoted(name),
                index + 1
            );
            return Err(IngestError::BadHeader { reason });
        }
        names.push(name.to_owned());
    }

    if names.iter().all(String::is_empty) {
        let reason = "the first line has no column names; add a header row".to_owned();
        return Err(IngestError::BadHeader { reason });
    }
    Ok(names)
}

const CANDIDATE_DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

/// Picks the delimiter that occurs most often outside quotes in the header line. A tie, or a
/// line with none, gives comma.
fn detect_delimiter(header_line: &[u8]) -> u8 {
    let mut counts = CANDIDATE_DELIMITERS.map(|delimiter| (delimiter, 0usize));
    let mut quote = QuoteState::FieldStart;
    for &byte in header_line {
        let inside_quotes = quote == QuoteState::Quoted;
        quote = quote.next(byte, CANDIDATE_DELIMITERS.contains(&byte));
        if !inside_quotes && let Some(entry) = counts.iter_mut().find(|(d, _)| *d == byte) {
            entry.1 += 1;
        }
    }

    // Comma comes first, and `max_by_key` keeps the last maximum, so scan in reverse.
    counts.iter().rev().max_by_key(|(_, count)| *count).map_or(b',', |(delimiter, _)| *delimiter)
}

/// The header line, held back until its line break (outside quotes) arrives.
#[derive(Debug)]
struct HeaderLine {
    bytes: Vec<u8>,
    /// Quoting so far. The delimiter is not known yet, so every candidate ends a field.
    quote: QuoteState,
    complete: bool,
}

impl Default for HeaderLine {
    fn default() -> Self {
        Self { bytes: Vec::new(), quote: QuoteState::FieldStart, complete: false }
    }
}

impl HeaderLine {
    /// Takes bytes of `chunk` up to the end of the header line and returns how many it took.
    /// Blank lines before the header are counted in `lines` and dropped.
    fn push(
        &mut self,
        chunk: &[u8],
        max_record_bytes: usize,
        lines: &mut LineCounter,
    ) -> Result<usize, IngestError> {
        for (index, &byte) in chunk.iter().enumerate() {
            let is_break = byte == b'\r' || byte == b'\n';
            if self.bytes.is_empty() && is_break {
                lines.advance_byte(byte);
                continue;
            }
            if is_break && self.quote != QuoteState::Quoted {
                self.complete = true;
                return Ok(index);
            }
            self.quote = self.quote.next(byte, CANDIDATE_DELIMITERS.contains(&byte));
            if self.bytes.len() >= max_record_bytes {
                let limit = max_record_bytes;
                return Err(IngestError::RecordTooLong { line: lines.current(), limit });
            }
            self.bytes.push(byte);
        }
        Ok(chunk.len())
    }
}

/// Fields of the record being read, as `csv-core` writes them: unquoted bytes, and the end
/// offset of each field.
#[derive(Debug)]
struct RecordBuffer {
    max_record_bytes: usize,
    bytes: Vec<u8>,
    bytes_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
}

impl RecordBuffer {
    fn new(max_record_bytes: usize) -> Self {
        let bytes = INITIAL_FIELD_BYTES.min(max_record_bytes.saturating_add(1));
        let ends = INITIAL_FIELDS.min(max_record_bytes.saturating_add(2));
        Self {
            max_record_bytes,
            bytes: vec![0; bytes.max(1)],
            bytes_len: 0,
            ends: vec![0; ends.max(1)],
            ends_len: 0,
        }
    }

    fn free_space(&mut self) -> (&mut [u8], &mut [usize]) {
        (&mut self.bytes[self.bytes_len..], &mut self.ends[self.ends_len..])
    }

    fn advance(&mut self, written: usize, ended: usize) {
        self.bytes_len += written;
        self.ends_len += ended;
    }

    /// Size of the record for the limit: field bytes after unquoting plus one byte per
    /// delimiter, which bounds both buffers.
    fn size(&self) -> usize {
        self.bytes_len + self.ends_len.saturating_sub(1)
    }

    /// Doubles the field bytes, up to one byte more than the limit, so that a record over the
    /// limit is seen as such.
    fn grow_fields(&mut self, line: u64) -> Result<(), IngestError> {
        let cap = self.max_record_bytes.saturating_add(1);
        if self.bytes.len() >= cap {
            return Err(IngestError::RecordTooLong { line, limit: self.max_record_bytes });
        }
        let new_len = self.bytes.len().saturating_mul(2).min(cap);
        self.bytes.resize(new_len, 0);
        Ok(())
    }

    /// Doubles the field ends; a record of n fields has n - 1 delimiters, so more than
    /// limit + 1 fields is over the limit.
    fn grow_ends(&mut self, line: u64) -> Result<(), IngestError> {
        let cap = self.max_record_bytes.saturating_add(2);
        if self.ends.len() >= cap {
            return Err(IngestError::RecordTooLong { line, limit: self.max_record_bytes });
        }
        let new_len = self.ends.len().saturating_mul(2).min(cap);
        self.ends.resize(new_len, 0);
        Ok(())
    }

    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let ends = &self.ends[..self.ends_len];
        let starts = std::iter::once(0).chain(ends.iter().copied());
        starts.zip(ends.iter().copied()).map(|(start, end)| &self.bytes[start..end])
    }

    fn clear(&mut self) {
        self.bytes_len = 0;
        self.ends_len = 0;
    }
}

/// Physical line counter: a line ends at LF, CR LF, or a lone CR.
#[derive(Debug, Default)]
struct LineCounter {
    breaks: u64,
    previous_was_cr: bool,
}

impl LineCounter {
    /// 1-based number of the line the next byte is on.
    fn current(&self) -> u64 {
        self.breaks + 1
    }

    fn advance_byte(&mut self, byte: u8) {
        if byte == b'\r' || (byte == b'\n' && !self.previous_was_cr) {
            self.breaks += 1;
        }
        self.previous_was_cr = byte == b'\r';
    }
}

/// Position of a byte within a field, under the quoting rules of `csv-core`. A quote opens a
/// quoted field only as the field's first byte, and a doubled quote inside one is a literal
/// quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: it closes the field unless another quote follows.
    QuoteInQuoted,
}

impl QuoteState {
    fn next(self, byte: u8, is_delimiter: bool) -> Self {
        let ends_field = is_delimiter || byte == b'\r' || byte == b'\n';
        match self {
            QuoteState::Quoted if byte == b'"' => QuoteState::QuoteInQuoted,
            QuoteState::Quoted => QuoteState::Quoted,
            QuoteState::QuoteInQuoted if byte == b'"' => QuoteState::Quoted,
            QuoteState::FieldStart if byte == b'"' => QuoteState::Quoted,
            _ if ends_field => QuoteState::FieldStart,
            _ => QuoteState::Unquoted,
        }
    }
}
