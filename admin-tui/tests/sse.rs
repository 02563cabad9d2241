//! Tests of the server-sent event parser on streams cut at every place.

use followup_tui::sse::{MAX_LINE_BYTES, SseError};
use followup_tui::{SseEvent, SseParser};

fn event(name: &str, data: &str) -> SseEvent {
    SseEvent { event: name.to_owned(), data: data.to_owned() }
}

/// Feeds `stream` in pieces cut at `cuts` and returns every event.
fn parse_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        events.extend(parser.push(&stream[start..cut]).expect("valid stream"));
        start = cut;
    }
    events
}

#[test]
fn parser_reads_whole_events() {
    let stream =
        b"event: snapshot\ndata: {\"a\":1}\n\n: heartbeat\n\nevent: snapshot\ndata: {}\n\n";
    assert_eq!(
        parse_in_pieces(stream, &[]),
        [event("snapshot", "{\"a\":1}"), event("snapshot", "{}")]
    );
}

#[test]
fn parser_survives_every_split() {
    // CRLF, CR and LF line ends, a comment, multi-line data, a field without a space after
    // the colon, an unknown field, an id, and a character of several bytes.
    let stream = "\u{feff}: hello\r\nevent: snapshot\r\ndata: line one\r\ndata:line two\r\n\r\n\
                  id: 7\rretry: 100\rdata: caf\u{e9}\r\rfoo: bar\nevent: other\ndata\n\n";
    let bytes = stream.as_bytes();
    let expected =
        [event("snapshot", "line one\nline two"), event("message", "café"), event("other", "")];

    assert_eq!(parse_in_pieces(bytes, &[]), expected, "in one piece");
    for cut in 1..bytes.len() {
        assert_eq!(parse_in_pieces(bytes, &[cut]), expected, "cut at byte {cut}");
    }
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(parse_in_pieces(bytes, &every_byte), expected, "one byte at a time");
}

#[test]
fn parser_skips_comments_and_empty_events() {
    // Heartbeats alone, and an event name without data, dispatch nothing.
    let stream = b":\n: keep-alive\n\nevent: snapshot\n\n\n";
    assert!(parse_in_pieces(stream, &[3, 9]).is_empty());

    // The event name does not leak into the next event.
    let stream = b"event: snapshot\n\ndata: x\n\n";
    assert_eq!(parse_in_pieces(stream, &[]), [event("message", "x")]);
}

#[test]
fn parser_holds_unfinished_event() {
    let mut parser = SseParser::new();
    assert!(parser.push(b"event: snapshot\ndata: {\"now\"").expect("valid").is_empty());
    assert!(parser.push(b": 1}\n").expect("valid").is_empty(), "no blank line yet");
    assert_eq!(parser.push(b"\n").expect("valid"), [event("snapshot", "{\"now\": 1}")]);
}

#[test]
fn parser_rejects_endless_line() {
    let mut parser = SseParser::new();
    let chunk = vec![b'a'; 1024 * 1024];
    let mut result = Ok(Vec::new());
    for _ in 0..=MAX_LINE_BYTES / chunk.len() {
        result = parser.push(&chunk);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(SseError::LineTooLong));
}
