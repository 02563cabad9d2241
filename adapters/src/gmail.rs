//! Gmail client: `users.messages.send` with a base64url RFC 5322 message, sent from the
//! tenant's own mailbox with its OAuth access token, one at a time or in batches.
//!
//! - [`request`] builds the message and the JSON body;
//! - [`service`] holds [`GmailClient`], which sends one follow-up;
//! - [`batch`] adds [`GmailClient::send_batch`], many sends in one request;
//! - `multipart` writes and reads the `multipart/mixed` form of a batch;
//! - [`response`] turns Gmail's response, including the Google error envelope, into a
//!   [`SendOutcome`](crate::outbound::SendOutcome).

pub mod batch;
pub(crate) mod multipart;
pub mod request;
pub mod response;
pub mod service;

#[cfg(test)]
mod tests;

pub use service::GmailClient;

/// Path of `users.messages.send` for the authenticated user, relative to the base URL.
pub const SEND_PATH: &str = "/gmail/v1/users/me/messages/send";

/// Path of Gmail's batch endpoint, relative to the base URL.
pub const BATCH_PATH: &str = "/batch/gmail/v1";

/// Maximum number of calls in one batch request, as Google documents it.
pub const MAX_BATCH_CALLS: usize = 100;

/// Default number of calls in one batch request. Google advises against batches larger than
/// 50, which tend to trigger rate limiting.
pub const DEFAULT_MAX_BATCH: usize = 50;
