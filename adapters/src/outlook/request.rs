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
        if msg.unsubscribe_url.is_none() {
            return Ok(Self::Json(SendMailRequest::new(msg)));
        }
        // The builder checks the URL and writes both one-click headers.
        Ok(Self::Mime(STANDARD.encode(build_message(msg, date)?)))
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
