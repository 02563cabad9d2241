//! The wire form of a Google batch: a `multipart/mixed` body whose parts (`application/http`)
//! each contain one whole HTTP/1.1 request, and a response of the same form whose parts each
//! contain one whole HTTP/1.1 response.
//!
//! Writing the request and reading the response are done by hand here. The line ends are CRLF,
//! and the CRLF before a boundary delimiter belongs to the delimiter (RFC 2046 section 5.1.1).

use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::http::RawResponse;

/// Maximum number of headers read from one part or one embedded response. Google sends about
/// ten, and a part with more is rejected as unreadable rather than cut short.
const MAX_HEADERS: usize = 64;

/// One call of a batch request.
#[derive(Debug)]
pub(crate) struct RequestPart<'a> {
    /// The part's `Content-ID`, without angle brackets. The response part for it carries
    /// `response-` and this id.
    pub(crate) content_id: String,
    /// The access token of the mailbox this call sends from.
    pub(crate) token: &'a str,
    /// The JSON body of the call.
    pub(crate) body: &'a [u8],
}

/// One part of a batch response, with the id of the request part it belongs to.
#[derive(Debug)]
pub(crate) struct ResponsePart {
    /// The `Content-ID` without angle brackets and without the `response-` prefix.
    pub(crate) content_id: Option<String>,
    pub(crate) response: RawResponse,
}

/// An error reading a batch response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BatchResponseError {
    #[error("batch response content type {0:?} is not multipart with a boundary")]
    NotMultipart(String),
    #[error("batch response contains no boundary delimiter")]
    NoDelimiter,
    #[error("batch part has invalid headers: {0}")]
    PartHeaders(httparse::Error),
    #[error("batch part ends inside its headers")]
    PartHeadersTruncated,
    #[error("batch part holds an invalid HTTP response: {0}")]
    EmbeddedResponse(String),
    #[error("batch part's HTTP response ends before its headers do")]
    EmbeddedTruncated,
    #[error(
        "batch part's HTTP response body has {actual} bytes, its Content-Length says {declared}"
    )]
    BodyLength { declared: usize, actual: usize },
}

/// Returns a new random boundary. It contains only characters that RFC 2046 allows in a
/// boundary without quotes.
pub(crate) fn new_boundary() -> String {
    let mut rng = rand::rng();
    format!("batch_{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

/// Writes the batch body: one `application/http` part per call, each a `POST` of `path` with
/// its own `Content-Type` and `Authorization` headers.
///
/// The caller checks that tokens contain only characters allowed in a header value, and picks
/// a boundary that occurs in no body ([`contains_boundary`]).
pub(crate) fn encode_request(boundary: &str, path: &str, parts: &[RequestPart<'_>]) -> Vec<u8> {
    let size: usize = parts.iter().map(|part| part.body.len() + part.token.len() + 256).sum();
    let mut out = Vec::with_capacity(size + boundary.len() + 8);
    for part in parts {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: application/http\r\n");
        out.extend_from_slice(format!("Content-ID: <{}>\r\n\r\n", part.content_id).as_bytes());
        out.extend_from_slice(format!("POST {path} HTTP/1.1\r\n").as_bytes());
        out.extend_from_slice(b"Content-Type: application/json\r\n");
        out.extend_from_slice(format!("Authorization: Bearer {}\r\n", part.token).as_bytes());
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", part.body.len()).as_bytes());
        out.extend_from_slice(part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

/// Returns whether `boundary` occurs in any part's body or token, where it would end the part
/// early.
pub(crate) fn contains_boundary(boundary: &str, parts: &[RequestPart<'_>]) -> bool {
    let needle = boundary.as_bytes();
    parts.iter().any(|part| {
        part.body.windows(needle.len()).any(|window| window == needle)
            || part.token.contains(boundary)
    })
}

/// Reads a batch response whose `Content-Type` is `content_type`.
///
/// Returns the readable parts. A part that cannot be read is left out, so its call counts as
/// unanswered. Content after the last delimiter is left out too when the closing delimiter is
/// missing, because it may be cut short.
pub(crate) fn decode_response(
    content_type: &str,
    body: &[u8],
) -> Result<Vec<ResponsePart>, BatchResponseError> {
    let boundary = multipart_boundary(content_type)
        .ok_or_else(|| BatchResponseError::NotMultipart(content_type.to_owned()))?;
    let parts = split_parts(body, &boundary)?;

    let mut read = Vec::with_capacity(parts.len());
    for part in parts {
        match read_response_part(part) {
            Ok(part) => read.push(part),
            Err(err) => tracing::warn!(error = %err, "gmail: skipped an unreadable batch part"),
        }
    }
    Ok(read)
}

/// Returns the `boundary` parameter of a `multipart/*` content type, without quotes.
pub(crate) fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    let media_type = pieces.next()?.trim();
    let is_multipart = media_type
        .split_once('/')
        .is_some_and(|(kind, _)| kind.trim().eq_ignore_ascii_case("multipart"));
    if !is_multipart {
        return None;
    }

    pieces.find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// Splits a multipart body into the contents of its parts, between delimiter lines. The
/// preamble before the first delimiter and the epilogue after the closing one are dropped.
fn split_parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>, BatchResponseError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();

    let mut at = find_delimiter(body, delimiter, 0).ok_or(BatchResponseError::NoDelimiter)?;
    let mut parts = Vec::new();
    loop {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            return Ok(parts);
        }
        // The rest of the delimiter line is transport padding (spaces or tabs), then the part.
        let Some(line_end) = body[after..].iter().position(|&byte| byte == b'\n') else {
            return Ok(parts);
        };
        let start = after + line_end + 1;

        let Some(next) = find_delimiter(body, delimiter, start) else {
            // No closing delimiter: the last part may be cut short, so it is not read.
            return Ok(parts);
        };
        parts.push(strip_line_end(&body[start..next]));
        at = next;
    }
}

/// Returns the position of the next `delimiter` from `from` that starts a line.
fn find_delimiter(body: &[u8], delimiter: &[u8], from: usize) -> Option<usize> {
    let mut search = from;
    while search + delimiter.len() <= body.len() {
        let offset = body[search..].windows(delimiter.len()).position(|w| w == delimiter)?;
        let found = search + offset;
        if found == 0 || body[found - 1] == b'\n' {
            return Some(found);
        }
        search = found + 1;
    }
    None
}

/// Drops the line end before a delimiter, which belongs to the delimiter.
fn strip_line_end(content: &[u8]) -> &[u8] {
    let content = content.strip_suffix(b"\n").unwrap_or(content);
    content.strip_suffix(b"\r").unwrap_or(content)
}

/// Reads one response part: its MIME headers, then the embedded HTTP response.
fn read_response_part(part: &[u8]) -> Result<ResponsePart, BatchResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (offset, headers) = match httparse::parse_headers(part, &mut headers) {
        Ok(httparse::Status::Complete(parsed)) => parsed,
        Ok(httparse::Status::Partial) => return Err(BatchResponseError::PartHeadersTruncated),
        Err(err) => return Err(BatchResponseError::PartHeaders(err)),
    };
    let content_id = headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-id"))
        .and_then(|header| std::str::from_utf8(header.value).ok())
        .map(response_content_id);

    let response = read_embedded_response(&part[offset..])?;
    Ok(ResponsePart { content_id, response })
}

/// Turns `<response-ID>` into `ID`. Angle brackets and the prefix are each optional, so that
/// an id written either way pairs with its request.
fn response_content_id(value: &str) -> String {
    let value = value.trim();
    let value = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')).unwrap_or(value);
    value.strip_prefix("response-").unwrap_or(value).to_owned()
}

/// Reads `HTTP/1.1 <status> <reason>`, the headers and the body of an embedded response.
fn read_embedded_response(bytes: &[u8]) -> Result<RawResponse, BatchResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let offset = match response.parse(bytes) {
        Ok(httparse::Status::Complete(offset)) => offset,
        Ok(httparse::Status::Partial) => return Err(BatchResponseError::EmbeddedTruncated),
        Err(err) => return Err(BatchResponseError::EmbeddedResponse(err.to_string())),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| BatchResponseError::EmbeddedResponse(format!("status {code}")))?;

    let mut header_map = HeaderMap::new();
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes());
        let value = HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            header_map.append(name, value);
        }
    }

    let body = &bytes[offset..];
    let declared = header_map
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<usize>().ok());
    let body = match declared {
        Some(declared) if declared > body.len() => {
            return Err(BatchResponseError::BodyLength { declared, actual: body.len() });
        }
        Some(declared) => &body[..declared],
        None => body,
    };
    Ok(RawResponse { status, headers: header_map, body: bytes::Bytes::copy_from_slice(body) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_from_content_type() {
        let cases = [
            ("multipart/mixed; boundary=batch_abc", Some("batch_abc")),
            ("multipart/mixed; boundary=\"batch abc\"", Some("batch abc")),
            ("Multipart/Mixed;charset=utf-8;BOUNDARY=x", Some("x")),
            ("multipart/mixed", None),
            ("multipart/mixed; boundary=", None),
            ("application/json; boundary=x", None),
        ];
        for (content_type, expected) in cases {
            let boundary = multipart_boundary(content_type);
            assert_eq!(boundary.as_deref(), expected, "content type {content_type:?}");
        }
    }

    #[test]
    fn response_parts_are_read() {
        let body = "preamble\r\n--b1\r\nContent-Type: application/http\r\n\
            Content-ID: <response-x+0>\r\n\r\nHTTP/1.1 200 OK\r\n\
            Content-Type: application/json\r\n\r\n{\"id\":\"m1\"}\r\n\
            --b1\r\nContent-ID: response-x+1\r\n\r\nHTTP/1.1 429 Too Many Requests\r\n\
            Content-Length: 2\r\nRetry-After: 5\r\n\r\n{}\r\n--b1--\r\nepilogue";
        let parts = decode_response("multipart/mixed; boundary=b1", body.as_bytes())
            .expect("response decodes");

        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_id.as_deref(), Some("x+0"));
        assert_eq!(parts[0].response.status, StatusCode::OK);
        assert_eq!(&parts[0].response.body[..], b"{\"id\":\"m1\"}");
        assert_eq!(parts[1].content_id.as_deref(), Some("x+1"));
        assert_eq!(parts[1].response.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(parts[1].response.header("retry-after"), Some("5"));
        assert_eq!(&parts[1].response.body[..], b"{}");
    }

    #[test]
    fn unterminated_last_part_is_dropped() {
        let body = "--b1\r\nContent-ID: <response-a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{}\r\n\
            --b1\r\nContent-ID: <response-b>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{\"id\":";
        let parts = decode_response("multipart/mixed; boundary=b1", body.as_bytes())
            .expect("response decodes");

        let ids: Vec<_> = parts.iter().map(|part| part.content_id.as_deref()).collect();
        assert_eq!(ids, [Some("a")]);
    }

    #[test]
    fn broken_parts_are_skipped() {
        let body = "--b1\r\nContent-ID: <response-a>\r\n\r\nnot http at all\r\n\
            --b1\r\nContent-ID: <response-b>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}\r\n\
            --b1\r\nContent-ID: <response-c>\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n\r\n\r\n\
            --b1--";
        let parts = decode_response("multipart/mixed; boundary=b1", body.as_bytes())
            .expect("response decodes");

        let ids: Vec<_> = parts.iter().map(|part| part.content_id.as_deref()).collect();
        assert_eq!(ids, [Some("c")]);
    }

    #[test]
    fn delimiter_must_start_a_line() {
        let body = "x--b1\r\n";
        let err = decode_response("multipart/mixed; boundary=b1", body.as_bytes());
        assert_eq!(err.err(), Some(BatchResponseError::NoDelimiter));

        let err = decode_response("application/json", b"{}");
        let expected = BatchResponseError::NotMultipart("application/json".to_owned());
        assert_eq!(err.err(), Some(expected));
    }

    #[test]
    fn request_encoding_round_trips() {
        let parts = [
            RequestPart { content_id: "k+0".to_owned(), token: "tok-a", body: b"{\"raw\":\"YQ\"}" },
            RequestPart { content_id: "k+1".to_owned(), token: "tok-b", body: b"{}" },
        ];
        let encoded = encode_request("b1", "/gmail/v1/users/me/messages/send", &parts);
        let text = String::from_utf8(encoded.clone()).expect("ascii");

        assert!(
            text.starts_with("--b1\r\nContent-Type: application/http\r\nContent-ID: <k+0>\r\n")
        );
        assert!(text.contains("POST /gmail/v1/users/me/messages/send HTTP/1.1\r\n"));
        assert!(text.contains("Authorization: Bearer tok-b\r\n"));
        assert!(text.ends_with("\r\n--b1--\r\n"));
        let split = split_parts(&encoded, "b1").expect("splits");
        assert_eq!(split.len(), 2);
        assert!(split[1].ends_with(b"\r\n\r\n{}"), "part 2 ends with its body: {:?}", split[1]);
    }

    #[test]
    fn boundary_collisions_are_found() {
        let parts = [RequestPart { content_id: "k".to_owned(), token: "t", body: b"..--b1.." }];
        assert!(contains_boundary("b1", &parts));
        assert!(!contains_boundary("b2", &parts));
        assert!(new_boundary().starts_with("batch_"));
        assert_ne!(new_boundary(), new_boundary());
    }
}
