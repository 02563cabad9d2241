//! The RFC 5322 message of an email follow-up, shared by Gmail (`raw`) and Graph's MIME form.
//!
//! mail-builder (2.0) does the encoding. It writes non-ASCII or control characters in the
//! Subject and display names as RFC 2047 encoded words and folds long headers. It writes a body
//! part whose lines are too long or not ASCII in quoted-printable or base64. So every header is
//! 7-bit and no line exceeds RFC 5322's 998 octets. The one header it cannot fold is
//! `List-Unsubscribe`, which is why the URL's length is checked here.

use std::io;

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::url::URL;

use crate::outbound::OutboundMessage;

#[cfg(test)]
mod tests;

/// Maximum length of a line of a message, CRLF excluded (RFC 5322 section 2.1.1).
pub const MAX_LINE_OCTETS: usize = 998;

/// Maximum length of an address (RFC 5321 section 4.5.3.1.3, a path of 256 octets less the
/// angle brackets).
const MAX_ADDRESS_OCTETS: usize = 254;

/// Maximum length of an unsubscribe URL: the `List-Unsubscribe: <URL>` line must fit in
/// [`MAX_LINE_OCTETS`], because a URL is written whole on one line.
pub const MAX_UNSUBSCRIBE_URL_OCTETS: usize = MAX_LINE_OCTETS - "List-Unsubscribe: <>".len();

/// Builds the RFC 5322 message of `msg`: From, To (with the display name), Subject, Date,
/// Message-ID, the List-Unsubscribe headers when `msg.unsubscribe_url` is set, and a plain-text
/// body, inside `multipart/alternative` with an HTML part when `msg.html_body` is set.
///
/// The Message-ID is derived from the follow-up id, so every attempt at one follow-up carries
/// the same id and a receiving system that deduplicates on it shows the message once.
///
/// Line breaks in the subject and the display name become single spaces, because a header is
/// one line of text to the reader.
///
/// # Errors
///
/// Returns an error of kind [`io::ErrorKind::InvalidInput`] when an address is not a plain
/// ASCII address, or when the unsubscribe URL is not an HTTPS URL that fits on one header line.
pub fn build_message(msg: &OutboundMessage, date: DateTime<Utc>) -> io::Result<Vec<u8>> {
    check_address("sender", &msg.from)?;
    check_address("recipient", &msg.to)?;
    let to_name = msg.to_name.as_deref().map(single_line);
    let to: Address<'_> = match &to_name {
        Some(name) => (name.as_str(), msg.to.as_str()).into(),
        None => msg.to.as_str().into(),
    };

    let mut builder = MessageBuilder::new()
        .from(msg.from.as_str())
        .to(to)
        .subject(single_line(msg.subject.as_deref().unwrap_or_default()))
        .date(date.timestamp())
        .message_id(message_id(msg));

    // RFC 8058 one-click: the URL header names where to POST, and the second header declares to
    // the mailbox provider that a POST of this exact body unsubscribes without a confirmation
    // page.
    if let Some(url) = &msg.unsubscribe_url {
        check_unsubscribe_url(url)?;
        builder = builder
            .header("List-Unsubscribe", URL::new(url.as_str()))
            .header("List-Unsubscribe-Post", Raw::new("List-Unsubscribe=One-Click"));
    }

    builder = builder.text_body(msg.body.as_str());
    if let Some(html) = &msg.html_body {
        builder = builder.html_body(html.as_str());
    }
    builder.write_to_vec()
}

/// Returns the Message-ID of `msg`, without angle brackets: `<follow-up id>@<sender's domain>`.
pub fn message_id(msg: &OutboundMessage) -> String {
    let domain = msg.from.rsplit_once('@').map_or("followup.invalid", |(_, domain)| domain);
    format!("{}@{domain}", msg.follow_up)
}

/// Replaces each run of CR and LF in `text` with one space.
fn single_line(text: &str) -> String {
    text.split(['\r', '\n']).filter(|piece| !piece.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Checks that `address` can be written as it is into a 7-bit header: printable ASCII with
/// no space or angle bracket, text on both sides of the last `@`, and at most 254 octets.
///
/// mail-builder writes an address without encoding it, so a line break here would let the
/// text after it become a header of its own. Addresses with non-ASCII characters need the
/// SMTPUTF8 extension, which this message format does not use.
fn check_address(role: &str, address: &str) -> io::Result<()> {
    let printable =
        address.bytes().all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'<' | b'>'));
    let has_parts = address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if printable && has_parts && address.len() <= MAX_ADDRESS_OCTETS {
        return Ok(());
    }
    Err(invalid_input(format!(
        "invalid {role} address {address:?}: expected local@domain in printable ASCII, at most \
         {MAX_ADDRESS_OCTETS} octets, without spaces or angle brackets"
    )))
}

/// Checks that `url` is an HTTPS URL in printable ASCII that fits on the `List-Unsubscribe`
/// line. RFC 8058 requires HTTPS for one-click unsubscribe.
fn check_unsubscribe_url(url: &str) -> io::Result<()> {
    let printable = url.bytes().all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'<' | b'>'));
    let https = url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    let parses = reqwest::Url::parse(url).is_ok_and(|parsed| parsed.has_host());
    if printable && https && parses && url.len() <= MAX_UNSUBSCRIBE_URL_OCTETS {
        return Ok(());
    }
    // The URL is left out: its token identifies the recipient.
    Err(invalid_input(format!(
        "invalid unsubscribe URL ({} octets): expected an https:// URL in printable ASCII of at \
         most {MAX_UNSUBSCRIBE_URL_OCTETS} octets",
        url.len()
    )))
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
