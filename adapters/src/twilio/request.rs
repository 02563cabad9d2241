//! The form bodies of CreateMessage and CreateCall, and the TwiML of a spoken call.

use serde::{Deserialize, Serialize};

/// Maximum length of inline TwiML that Twilio accepts on CreateCall, in characters.
pub const MAX_TWIML_CHARS: usize = 4_000;

/// The form of `POST /Accounts/{sid}/Messages.json`. Twilio names form fields in PascalCase.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateMessageForm {
    /// Recipient, E.164.
    pub to: String,
    /// Sender: a Twilio number of the account, E.164.
    pub from: String,
    /// The text, at most 1,600 characters.
    pub body: String,
    /// URL to which Twilio posts each status change after the initial one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status_callback: Option<String>,
}

/// The form of `POST /Accounts/{sid}/Calls.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCallForm {
    pub to: String,
    pub from: String,
    /// The TwiML run when the call is answered.
    pub twiml: String,
    /// URL to which Twilio posts the call's status; without `StatusCallbackEvent` only the
    /// `completed` event is sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status_callback: Option<String>,
}

/// Returned when a call's TwiML would exceed [`MAX_TWIML_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("twilio call twiml is {chars} characters, more than the maximum of {MAX_TWIML_CHARS}")]
pub struct TwimlTooLong {
    pub chars: usize,
}

/// Builds `<Response><Say>text</Say></Response>` with `text` escaped for XML.
pub fn say_twiml(text: &str) -> Result<String, TwimlTooLong> {
    let twiml = format!("<Response><Say>{}</Say></Response>", escape_xml(text));
    let chars = twiml.chars().count();
    if chars > MAX_TWIML_CHARS {
        return Err(TwimlTooLong { chars });
    }
    Ok(twiml)
}

/// Escapes the five XML special characters and drops control characters, which XML 1.0
/// does not allow even when escaped (tab, line feed and carriage return excepted).
pub fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\t' | '\n' | '\r' => escaped.push(c),
            c if c.is_control() => {}
            c => escaped.push(c),
        }
    }
    escaped
}
