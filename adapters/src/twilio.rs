//! Twilio client: SMS through the Messages resource and automated calls through the Calls
//! resource of the 2010-04-01 REST API, form-encoded, with HTTP Basic auth.
//!
//! - [`request`] builds the form bodies and the TwiML a call speaks;
//! - [`service`] holds [`TwilioClient`], which sends one follow-up;
//! - [`response`] turns Twilio's response into a [`SendOutcome`](crate::outbound::SendOutcome).

pub mod request;
pub mod response;
pub mod service;

#[cfg(test)]
mod tests;

pub use service::TwilioClient;

/// Path of the Messages list of `account_sid`, relative to the base URL.
pub fn messages_path(account_sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/Messages.json")
}

/// Path of the Calls list of `account_sid`, relative to the base URL.
pub fn calls_path(account_sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/Calls.json")
}
