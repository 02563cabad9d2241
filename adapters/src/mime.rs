//! The RFC 5322 message of an email follow-up, shared by Gmail (`raw`) and Graph's MIME form.

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;

use crate::outbound::OutboundMessage;

/// Builds the RFC 5322 message of `msg`: From, To (with the display name), Subject, Date,
/// Message-ID and a plain-text body.
///
/// The Message-ID is derived from the follow-up id, so every attempt at one follow-up carries
/// the same id and a receiving system that deduplicates on it shows the message once.
pub fn build_message(msg: &OutboundMessage, date: DateTime<Utc>) -> std::io::Result<Vec<u8>> {
    let to: Address<'_> = match &msg.to_name {
        Some(name) => (name.as_str(), msg.to.as_str()).into(),
        None => msg.to.as_str().into(),
    };

    MessageBuilder::new()
        .from(msg.from.as_str())
        .to(to)
        .subject(msg.subject.as_deref().unwrap_or_default())
        .date(date.timestamp())
        .message_id(message_id(msg))
        .text_body(msg.body.as_str())
        .write_to_vec()
}

/// The Message-ID of `msg`, without angle brackets: `<follow-up id>@<sender's domain>`.
pub fn message_id(msg: &OutboundMessage) -> String {
    let domain = msg.from.rsplit_once('@').map_or("followup.invalid", |(_, domain)| domain);
    format!("{}@{domain}", msg.follow_up)
}
