use std::io::ErrorKind;

use mail_parser::{Message, MessageParser, MimeHeaders};

use super::{MAX_LINE_OCTETS, MAX_UNSUBSCRIBE_URL_OCTETS, build_message, message_id};
use crate::outbound::OutboundMessage;
use crate::testing::{email, start_instant};

const FROM: &str = "owner@shop.example";
const TO: &str = "ann@example.org";
const UNSUBSCRIBE: &str = "https://links.shop.example/u/opaque-token-123";

fn build(msg: &OutboundMessage) -> Vec<u8> {
    build_message(msg, start_instant()).expect("message builds")
}

fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default().parse(raw).expect("message parses")
}

/// Returns the header section: everything before the first empty line.
fn header_section(raw: &[u8]) -> &[u8] {
    let end = raw.windows(4).position(|window| window == b"\r\n\r\n").expect("header section ends");
    &raw[..end]
}

/// Asserts the RFC 5322 line rules: CRLF line ends only, no line longer than 998 octets, and
/// (with the encodings used here) 7-bit content throughout.
fn assert_wire_form(raw: &[u8]) {
    for (index, &byte) in raw.iter().enumerate() {
        assert!(byte.is_ascii(), "octet {byte:#04x} at {index} is not 7-bit");
        if byte == b'\n' {
            assert_eq!(raw.get(index.wrapping_sub(1)), Some(&b'\r'), "bare LF at {index}");
        }
        if byte == b'\r' {
            assert_eq!(raw.get(index + 1), Some(&b'\n'), "bare CR at {index}");
        }
    }
    for (number, line) in raw.split(|&byte| byte == b'\n').enumerate() {
        let length = line.strip_suffix(b"\r").unwrap_or(line).len();
        assert!(length <= MAX_LINE_OCTETS, "line {number} has {length} octets");
    }
}

fn header_raw<'a>(message: &'a Message<'_>, name: &str) -> Option<&'a str> {
    message.header_raw(name.to_owned()).map(str::trim)
}

#[test]
fn non_ascii_name_and_subject_encoded() {
    let mut msg = email(FROM, TO, "Grüße aus Köln – 10 % Rabatt", "Hallo");
    msg.to_name = Some("Zoë Ångström-Núñez".to_owned());
    let raw = build(&msg);

    assert!(header_section(&raw).is_ascii(), "headers are 7-bit");
    let headers = String::from_utf8_lossy(header_section(&raw)).into_owned();
    assert!(headers.contains("Subject: =?utf-8?"), "subject is an encoded word: {headers}");
    assert!(headers.contains("To: =?utf-8?"), "display name is an encoded word: {headers}");
    assert_wire_form(&raw);

    let parsed = parse(&raw);
    assert_eq!(parsed.subject(), Some("Grüße aus Köln – 10 % Rabatt"));
    let to = parsed.to().and_then(|address| address.first()).expect("to");
    assert_eq!(to.name(), Some("Zoë Ångström-Núñez"));
    assert_eq!(to.address(), Some(TO));
}

#[test]
fn long_subject_is_folded() {
    let subject = "Ein sehr langer Betreff, der länger ist als eine Zeile sein sollte ".repeat(20);
    let raw = build(&email(FROM, TO, &subject, "b"));

    assert_wire_form(&raw);
    assert_eq!(parse(&raw).subject(), Some(subject.as_str()));
}

#[test]
fn long_single_line_bodies_fit_lines() {
    let ascii = "a".repeat(5_000);
    let accented = "é".repeat(5_000);
    let mixed =
        format!("{} {}\nshort line\n{}", "word ".repeat(1_000), "ü".repeat(2_000), "z".repeat(999));
    for body in [ascii, accented, mixed] {
        let raw = build(&email(FROM, TO, "s", &body));
        assert_wire_form(&raw);

        let parsed = parse(&raw);
        let encoding = header_raw(&parsed, "Content-Transfer-Encoding").expect("encoding header");
        assert!(
            matches!(encoding, "quoted-printable" | "base64"),
            "a long line needs quoted-printable or base64, got {encoding}"
        );
        let text = parsed.body_text(0).expect("text body");
        assert_eq!(text.replace("\r\n", "\n"), body, "body survives the encoding");
    }
}

#[test]
fn long_html_body_fits_lines() {
    let mut msg = email(FROM, TO, "s", "plain");
    let html = format!("<p>{}</p>", "ß".repeat(5_000));
    msg.html_body = Some(html.clone());
    let raw = build(&msg);

    assert_wire_form(&raw);
    assert_eq!(parse(&raw).body_html(0).as_deref(), Some(html.as_str()));
}

#[test]
fn message_id_header_is_ours() {
    let msg = email(FROM, TO, "s", "b");
    let raw = build(&msg);

    let parsed = parse(&raw);
    assert_eq!(parsed.message_id(), Some(message_id(&msg).as_str()));
    assert_eq!(message_id(&msg), format!("{}@shop.example", msg.follow_up));
}

#[test]
fn plain_text_only_without_html() {
    let raw = build(&email(FROM, TO, "s", "Hello Ann"));
    let parsed = parse(&raw);

    let content_type = parsed.content_type().expect("content type");
    assert_eq!(content_type.ctype(), "text");
    assert_eq!(content_type.subtype(), Some("plain"));
    assert_eq!(parsed.parts.len(), 1, "a single part, so no HTML alternative");
    assert_eq!(parsed.body_text(0).as_deref().map(str::trim_end), Some("Hello Ann"));
}

#[test]
fn html_makes_multipart_alternative() {
    let mut msg = email(FROM, TO, "s", "Hello Ann");
    msg.html_body = Some("<p>Hello <b>Ann</b></p>".to_owned());
    let raw = build(&msg);
    assert_wire_form(&raw);

    let parsed = parse(&raw);
    let content_type = parsed.content_type().expect("content type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("alternative"));

    // RFC 2046: the last alternative is the preferred one, so HTML follows the plain text.
    let sub_parts = parsed.root_part().sub_parts().expect("sub-parts");
    let kinds: Vec<String> = sub_parts
        .iter()
        .filter_map(|&id| parsed.part(id))
        .filter_map(|part| part.content_type())
        .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()))
        .collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);
    assert_eq!(parsed.body_text(0).as_deref().map(str::trim_end), Some("Hello Ann"));
    assert_eq!(parsed.body_html(0).as_deref(), Some("<p>Hello <b>Ann</b></p>"));
}

#[test]
fn unsubscribe_headers_are_one_click() {
    let mut msg = email(FROM, TO, "s", "b");
    msg.unsubscribe_url = Some(UNSUBSCRIBE.to_owned());
    let raw = build(&msg);
    assert_wire_form(&raw);

    let parsed = parse(&raw);
    let expected = format!("<{UNSUBSCRIBE}>");
    assert_eq!(header_raw(&parsed, "List-Unsubscribe"), Some(expected.as_str()));
    assert_eq!(header_raw(&parsed, "List-Unsubscribe-Post"), Some("List-Unsubscribe=One-Click"));
}

#[test]
fn no_unsubscribe_headers_without_url() {
    let parsed_raw = build(&email(FROM, TO, "s", "b"));
    let parsed = parse(&parsed_raw);

    assert_eq!(header_raw(&parsed, "List-Unsubscribe"), None);
    assert_eq!(header_raw(&parsed, "List-Unsubscribe-Post"), None);
}

#[test]
fn longest_unsubscribe_url_fits_line() {
    let prefix = "https://links.shop.example/u/";
    let url = format!("{prefix}{}", "t".repeat(MAX_UNSUBSCRIBE_URL_OCTETS - prefix.len()));
    let mut msg = email(FROM, TO, "s", "b");
    msg.unsubscribe_url = Some(url.clone());
    let raw = build(&msg);

    assert_wire_form(&raw);
    let line = format!("List-Unsubscribe: <{url}>");
    assert_eq!(line.len(), MAX_LINE_OCTETS);

    msg.unsubscribe_url = Some(format!("{url}t"));
    let err = build_message(&msg, start_instant()).expect_err("one octet too long");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn bad_unsubscribe_urls_rejected() {
    let cases = [
        "http://links.shop.example/u/x",
        "mailto:unsubscribe@shop.example",
        "https://links.shop.example/u/x y",
        "https://links.shop.example/u/x>\r\nBcc: evil@example.org",
        "https://links.shöp.example/u/x",
        "https://",
        "links.shop.example/u/x",
    ];
    for url in cases {
        let mut msg = email(FROM, TO, "s", "b");
        msg.unsubscribe_url = Some(url.to_owned());
        let err = build_message(&msg, start_instant()).expect_err(url);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "url {url:?}");
        assert!(err.to_string().contains("unsubscribe URL"), "message names the URL: {err}");
    }
}

#[test]
fn line_breaks_cannot_add_headers() {
    let mut msg = email(FROM, TO, "Hello\r\nBcc: evil@example.org", "b");
    msg.to_name = Some("Ann\nReply-To: evil@example.org".to_owned());
    let raw = build(&msg);

    let parsed = parse(&raw);
    assert_eq!(parsed.subject(), Some("Hello Bcc: evil@example.org"));
    assert!(parsed.bcc().is_none(), "no Bcc header was added");
    assert!(parsed.reply_to().is_none(), "no Reply-To header was added");
    let to = parsed.to().and_then(|address| address.first()).expect("to");
    assert_eq!(to.name(), Some("Ann Reply-To: evil@example.org"));
}

#[test]
fn bad_addresses_rejected() {
    let cases = [
        ("recipient", "ann@example.org\r\nBcc: evil@example.org"),
        ("recipient", "ann example@example.org"),
        ("recipient", "ann"),
        ("recipient", "@example.org"),
        ("recipient", "ann@"),
        ("recipient", "zoë@example.org"),
        ("recipient", "<ann@example.org>"),
        ("sender", "owner@shop.example\nX-Evil: 1"),
    ];
    for (role, address) in cases {
        let mut msg = email(FROM, TO, "s", "b");
        if role == "sender" {
            msg.from = address.to_owned();
        } else {
            msg.to = address.to_owned();
        }
        let err = build_message(&msg, start_instant()).expect_err(address);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "address {address:?}");
        assert!(err.to_string().contains(role), "message names the {role}: {err}");
    }

    let long = format!("{}@example.org", "a".repeat(250));
    let err = build_message(&email(FROM, &long, "s", "b"), start_instant()).expect_err("too long");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
