//! Streaming NDJSON reader: one JSON object per line, each line parsed on its own.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{IngestError, RawRecord, RowCounter, RowError, quoted};

#[derive(Debug)]
pub(crate) struct NdjsonReader {
    max_record_bytes: usize,
    /// The line being read, without its line break.
    line: Vec<u8>,
    /// 1-based number of the line being read.
    line_number: u64,
    headers: Option<Vec<String>>,
}

impl NdjsonReader {
    pub(crate) fn new(max_record_bytes: usize) -> Self {
        Self { max_record_bytes, line: Vec::new(), line_number: 1, headers: None }
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
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            self.append(&rest[..end])?;
            self.finish_line(rows, out)?;
            rest = &rest[end + 1..];
        }
        self.append(rest)
    }

    pub(crate) fn finish(
        &mut self,
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        self.finish_line(rows, out)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        // One byte of slack for the CR of a CRLF line end, which is not part of the record.
        let size = self.line.len() + bytes.len();
        if size > self.max_record_bytes.saturating_add(1) {
            let line = self.line_number;
            return Err(IngestError::RecordTooLong { line, limit: self.max_record_bytes });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn finish_line(
        &mut self,
        rows: &mut RowCounter,
        out: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestError> {
        let line_number = self.line_number;
        self.line_number += 1;
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max_record_bytes {
            let limit = self.max_record_bytes;
            return Err(IngestError::RecordTooLong { line: line_number, limit });
        }

        if line.iter().all(|byte| matches!(byte, b' ' | b'\t' | b'\r')) {
            self.line = reuse(line);
            return Ok(());
        }
        rows.count()?;
        let record = self.parse_line(&line, line_number);
        out.push(record);
        self.line = reuse(line);
        Ok(())
    }

    fn parse_line(&mut self, line: &[u8], line_number: u64) -> Result<RawRecord, RowError> {
        let Ok(text) = std::str::from_utf8(line) else {
            let reason = "line is not valid UTF-8; encode the upload as UTF-8";
            return Err(RowError::row(line_number, reason));
        };
        let object: Object<'_> =
            serde_json::from_str(text).map_err(|error| json_error(&error, line_number))?;

        if self.headers.is_none() {
            let keys = object.0.iter().map(|(key, _)| key.clone()).collect();
            self.headers = Some(keys);
        }

        let mut seen = BTreeSet::new();
        let mut fields = Vec::with_capacity(object.0.len());
        for (key, raw) in object.0 {
            if !seen.insert(key.clone()) {
                let reason = format!("duplicate key {}; keep one of them", quoted(&key));
                return Err(RowError::field(line_number, key, reason));
            }
            let value = field_value(raw).map_err(|reason| {
                let reason = format!(
                    "{reason} values are not supported; send a string, number, boolean or null"
                );
                RowError::field(line_number, key.clone(), reason)
            })?;
            fields.push((key, value));
        }
        Ok(RawRecord { line: line_number, fields })
    }
}

/// Returns an emptied buffer for the next line, giving back memory after an unusually long one.
fn reuse(mut buffer: Vec<u8>) -> Vec<u8> {
    const KEEP_BYTES: usize = 64 * 1024;
    buffer.clear();
    if buffer.capacity() > KEEP_BYTES {
        buffer.shrink_to(KEEP_BYTES);
    }
    buffer
}

/// Converts a JSON value to a field value: strings as they are, numbers and booleans as their
/// JSON text, null as empty. Returns the kind of value for nested arrays and objects.
fn field_value(raw: &RawValue) -> Result<String, &'static str> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).map_err(|_| "string"),
        Some(b'{') => Err("nested object"),
        Some(b'[') => Err("array"),
        Some(b'n') => Ok(String::new()),
        _ => Ok(text.to_owned()),
    }
}

fn json_error(error: &serde_json::Error, line_number: u64) -> RowError {
    if error.classify() == serde_json::error::Category::Data {
        let reason = "line is not a JSON object; write one object per line, such as \
                      {\"email\": \"ana@example.com\"}";
        return RowError::row(line_number, reason);
    }

    // serde_json appends " at line L column C"; the line is always 1 here, so keep the column.
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or_default();
    let reason = format!(
        "invalid JSON at column {}: {message}; write one JSON object per line",
        error.column()
    );
    RowError::row(line_number, reason)
}

/// A JSON object with its keys in the order written, and each value left as raw JSON text.
struct Object<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

struct ObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
    type Value = Object<'a>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(256));
        while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
            entries.push((key, value));
        }
        Ok(Object(entries))
    }
}
