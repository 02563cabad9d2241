//! Gmail client: `users.messages.send` with a base64url RFC 5322 message, sent from the
//! tenant's own mailbox with its OAuth access token.
//!
//! - [`request`] builds the message and the JSON body;
//! - [`service`] holds [`GmailClient`], which sends one follow-up;
//! - [`response`] turns Gmail's response, including the Google error envelope, into a
//!   [`SendOutcome`](crate::outbound::SendOutcome).

pub mod request;
pub mod response;
pub mod service;

#[cfg(test)]
mod tests;

pub use service::GmailClient;

/// Path of `users.messages.send` for the authenticated user, relative to the base URL.
pub const SEND_PATH: &str = "/gmail/v1/users/me/messages/send";
