//! The bodies of Graph `sendMail`: the JSON form, and the MIME form, which carries headers the
//! JSON form cannot.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mime::build_message;
use crate::outbound::OutboundMessage;

/// Content type of the JSON form.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Content type of the MIME form, whose body is an RFC 5322 message in base64.
pub const MIME_CONTENT_TYPE: &str = "text/plain";

/// Maximum length of a header line, in octets, without its CRLF (RFC 5322 section 2.1.1).
const MAX_HEADER_LINE: usize = 998;

/// The body of `POST /me/sendMail` in the JSON form.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMailRequest {
    pub message: GraphMessage,
    /// Always false: a follow-up engine has no use for a copy in Sent Items, and saving one
    /// costs the mailbox storage.
    pub save_to_sent_items: bool,
}

/// The `message` of a `sendMail` request. Graph sends it from the signed-in mailbox, so it
/// has no `from`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphMessage {
    pub subject: String,
    pub body: ItemBody,
    pub to_recipients: Vec<Recipient>,
}

/// A message body: `contentType` is `Text` or `HTML`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    pub content_type: String,
    pub content: String,
}

/// One recipient.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    pub email_address: EmailAddress,
}

/// An address with an optional display name.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmailAddress {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl SendMailRequest {
    /// Builds the JSON request that sends `msg` to its one recipient. The JSON form has a
    /// single body, so an HTML alternative, when present, is sent in place of the plain text.
    pub fn new(msg: &OutboundMessage) -> Self {
        let recipient = Recipient {
            email_address: EmailAddress { address: msg.to.clone(), name: msg.to_name.clone() },
        };
        let body = match &msg.html_body {
            Some(html) => ItemBody { content_type: "HTML".to_owned(), content: html.clone() },
            None => ItemBody { content_type: "Text".to_owned(), content: msg.body.clone() },
        };
        let message = GraphMessage {
            subject: msg.subject.clone().unwrap_or_default(),
            body,
            to_recipients: vec![recipient],
        };
        Self { message, save_to_sent_items: false }
    }
}

/// Returned when the body of a `sendMail` request cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SendMailBodyError {
    /// The URL is left out of the message because it identifies the recipient.
    #[error(
        "outlook: the unsubscribe url is not an absolute https url that fits a header line \
         without spaces or angle brackets; fix the url the follow-up was rendered with"
    )]
    InvalidUnsubscribeUrl,
    #[error("outlook: building the MIME message failed: {0}")]
    Mime(#[from] std::io::Error),
}

/// The body of one `sendMail` request, in either of the forms Graph accepts.
#[derive(Debug)]
pub enum SendMailBody {
    /// The JSON form, for messages without List-Unsubscribe.
    Json(SendMailRequest),
    /// The MIME form: the whole RFC 5322 message, base64 with the standard alphabet and
    /// padding. It is used whenever the message has an unsubscribe URL, because the JSON form
    /// accepts only custom headers whose names start with `x-`, and List-Unsubscribe does not.
    Mime(String),
}

impl SendMailBody {
    /// Builds the body that sends `msg`. A MIME message is dated `date`.
    pub fn new(msg: &OutboundMessage, date: DateTime<Utc>) -> Result<Self, SendMailBodyError> {
        let Some(url) = &msg.unsubscribe_url else {
            return Ok(Self::Json(SendMailRequest::new(msg)));
        };
        check_unsubscribe_url(url)?;
        let message = with_list_unsubscribe(build_message(msg, date)?, url);
        Ok(Self::Mime(STANDARD.encode(message)))
    }

    /// Returns the `Content-Type` this body is sent with.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Json(_) => JSON_CONTENT_TYPE,
            Self::Mime(_) => MIME_CONTENT_TYPE,
        }
    }

    /// Returns the body as the `body` member of a `$batch` request: the JSON object, or the
    /// base64 text as a JSON string.
    pub fn to_batch_value(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Self::Json(request) => serde_json::to_value(request),
            Self::Mime(base64) => Ok(serde_json::Value::String(base64.clone())),
        }
    }
}

/// Checks that `url` can go into a List-Unsubscribe header as `<url>`: RFC 8058 one-click
/// needs an HTTPS URI, and a space, an angle bracket or a line break would break the header
/// or inject another one.
fn check_unsubscribe_url(url: &str) -> Result<(), SendMailBodyError> {
    let fits_header = url.len() + "List-Unsubscribe: <>".len() <= MAX_HEADER_LINE;
    let plain = !url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    let https = reqwest::Url::parse(url).is_ok_and(|parsed| parsed.scheme() == "https");
    if fits_header && plain && https {
        Ok(())
    } else {
        Err(SendMailBodyError::InvalidUnsubscribeUrl)
    }
}

/// Adds the RFC 8058 one-click headers to `message` when its header block lacks them. They are
/// the reason the MIME form is used, so they must be present whether or not
/// [`build_message`] writes them.
fn with_list_unsubscribe(message: Vec<u8>, url: &str) -> Vec<u8> {
    let mut missing = String::new();
    if !has_header(&message, "List-Unsubscribe") {
        missing.push_str(&format!("List-Unsubscribe: <{url}>\r\n"));
    }
    if !has_header(&message, "List-Unsubscribe-Post") {
        missing.push_str("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
    if missing.is_empty() {
        return message;
    }

    // Header order carries no meaning in RFC 5322, so the headers go first.
    let mut complete = missing.into_bytes();
    complete.extend_from_slice(&message);
    complete
}

/// Returns whether the header block of `message` has a field named `name`.
fn has_header(message: &[u8], name: &str) -> bool {
    message
        .split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.iter().position(|&byte| byte == b':').map(|end| &line[..end]))
        .any(|field| field.eq_ignore_ascii_case(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_stops_at_body() {
        let message = b"From: a@b.example\r\nSubject: x\r\n\r\nList-Unsubscribe: <https://u>\r\n";
        assert!(has_header(message, "subject"));
        assert!(!has_header(message, "List-Unsubscribe"), "a body line is no header");
    }

    #[test]
    fn existing_headers_are_kept_once() {
        let message = b"List-Unsubscribe: <https://u.example/1>\r\nFrom: a@b.example\r\n\r\nb";
        let completed = with_list_unsubscribe(message.to_vec(), "https://u.example/1");
        let text = String::from_utf8(completed).expect("ascii");
        assert_eq!(text.matches("List-Unsubscribe:").count(), 1, "{text}");
        assert!(text.starts_with("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    }

    #[test]
    fn unsafe_unsubscribe_urls_are_rejected() {
        let long = format!("https://u.example/{}", "a".repeat(1_000));
        for url in [
            "http://u.example/1",
            "https://u.example/1>\r\nBcc: x@y.example",
            "https://u.example/a b",
            "mailto:u@u.example",
            "/relative",
            long.as_str(),
        ] {
            assert!(check_unsubscribe_url(url).is_err(), "url {url:?}");
        }
        assert!(check_unsubscribe_url("https://u.example/u/tok_123?l=2").is_ok());
    }
}
