//! Outlook client: Microsoft Graph `sendMail` from the tenant's own mailbox with its OAuth
//! access token.
//!
//! - [`request`] builds the JSON body;
//! - [`service`] holds [`GraphClient`], which sends one follow-up;
//! - [`response`] turns Graph's response into a [`SendOutcome`](crate::outbound::SendOutcome).

pub mod request;
pub mod response;
pub mod service;

#[cfg(test)]
mod tests;

pub use service::GraphClient;

/// Path of `sendMail` for the signed-in user, relative to the base URL.
pub const SEND_MAIL_PATH: &str = "/v1.0/me/sendMail";
