//! The JSON body of `users.messages.send`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::mime::build_message;
use crate::outbound::OutboundMessage;

/// The body of `users.messages.send`: a `Message` resource with only `raw` set.
#[derive(Debug, Serialize)]
pub struct GmailSendRequest {
    /// The whole RFC 5322 message, base64url-encoded.
    pub raw: String,
}

impl GmailSendRequest {
    /// Builds the request for `msg`, dated `date`.
    pub fn new(msg: &OutboundMessage, date: DateTime<Utc>) -> std::io::Result<Self> {
        let message = build_message(msg, date)?;
        Ok(Self { raw: URL_SAFE.encode(message) })
    }
}
