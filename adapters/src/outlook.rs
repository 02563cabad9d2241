//! Outlook client: Microsoft Graph `sendMail` from the tenant's own mailbox with its OAuth
//! access token, one message at a time or up to 20 in a JSON `$batch`.
//!
//! - [`request`] builds the `sendMail` body, in the JSON form or the MIME form;
//! - [`batch`] builds `$batch` requests and pairs their responses with the messages;
//! - [`service`] contains [`GraphClient`], which sends follow-ups;
//! - [`response`] turns Graph's response into a [`SendOutcome`](crate::outbound::SendOutcome).

pub mod batch;
pub mod request;
pub mod response;
pub mod service;

#[cfg(test)]
mod tests;

pub use service::GraphClient;

/// Path of `sendMail` for the signed-in user, relative to the base URL.
pub const SEND_MAIL_PATH: &str = "/v1.0/me/sendMail";

/// Path of JSON batching, relative to the base URL.
pub const BATCH_PATH: &str = "/v1.0/$batch";

/// URL of `sendMail` inside a `$batch`, relative to the API version as Graph requires.
pub const BATCH_SEND_MAIL_URL: &str = "/me/sendMail";

/// Maximum of requests Graph accepts in one `$batch`.
pub const MAX_BATCH_REQUESTS: usize = 20;
