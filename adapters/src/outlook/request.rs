//! The JSON body of Graph `sendMail`.

use serde::{Deserialize, Serialize};

use crate::outbound::OutboundMessage;

/// The body of `POST /me/sendMail`.
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
    /// Builds the request that sends `msg` as plain text to its one recipient.
    pub fn new(msg: &OutboundMessage) -> Self {
        let recipient = Recipient {
            email_address: EmailAddress { address: msg.to.clone(), name: msg.to_name.clone() },
        };
        let message = GraphMessage {
            subject: msg.subject.clone().unwrap_or_default(),
            body: ItemBody { content_type: "Text".to_owned(), content: msg.body.clone() },
            to_recipients: vec![recipient],
        };
        Self { message, save_to_sent_items: false }
    }
}
