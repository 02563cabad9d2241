//! Incremental parser of a server-sent event stream (the `text/event-stream` format of the
//! WHATWG HTML standard).
//!
//! Bytes are pushed as they arrive, in chunks that may end anywhere, even between the CR and
//! the LF of a line end or inside a multi-byte character. Only the fields the console needs
//! are kept: `event` and `data`. `id` and `retry` are ignored, because the console reconnects
//! with its own backoff and the engine's stream does not replay.

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field, `message` when the event had none.
    pub event: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
}

/// Maximum line the parser buffers, in bytes. A snapshot of a few thousand tenants stays well
/// under it. A stream that sends more without a line end is taken for broken.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Failure to parse a stream.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event stream line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended with CR, so an LF at the start of the next one belongs to it.
    after_cr: bool,
    /// Whether the byte-order mark that may open the stream has been looked for.
    started: bool,
    event: String,
    data: String,
    /// Whether any `data` field arrived since the last dispatch. The standard drops an event
    /// without one.
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `chunk` and returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        let mut bytes = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }

        while let Some(end) = bytes.iter().position(|&byte| byte == b'\n' || byte == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line) {
                events.push(event);
            }

            // A CR followed by LF is one line end. A CR at the end of the chunk may be the
            // first half of one, which the next chunk decides.
            let is_cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if is_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }

        if self.line.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(events)
    }

    fn process_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(b":") {
            // A comment, which servers send as a heartbeat.
            return None;
        }

        let (name, value) = match line.iter().position(|&byte| byte == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.event = value.into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        let event = if event.is_empty() { "message".to_owned() } else { event };
        Some(SseEvent { event, data })
    }
}
