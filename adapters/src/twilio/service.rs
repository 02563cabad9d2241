//! [`TwilioClient`]: sends one SMS or places one call.

use std::sync::Arc;

use followup_core::clock::{Clock, SystemClock};
use followup_core::domain::Channel;
use serde::Serialize;

use super::request::{CreateCallForm, CreateMessageForm, say_twiml};
use super::response::classify;
use super::{calls_path, messages_path};
use crate::http::{endpoint, execute, scrub_secret};
use crate::outbound::{OutboundMessage, SendCredentials, SendOutcome};

/// A Twilio REST client. Cheap to clone: the HTTP pool is shared.
#[derive(Clone, Debug)]
pub struct TwilioClient {
    http: reqwest::Client,
    base_url: reqwest::Url,
    /// Resolves `Retry-After` headers that carry an HTTP-date.
    clock: Arc<dyn Clock>,
}

/// Account SID and auth token, checked and borrowed from [`SendCredentials::Basic`].
struct BasicAuth<'a> {
    account_sid: &'a str,
    auth_token: &'a str,
}

impl TwilioClient {
    /// Creates a client for the API at `base_url` (`https://api.twilio.com` in production).
    pub fn new(http: reqwest::Client, base_url: reqwest::Url) -> Self {
        Self { http, base_url, clock: Arc::new(SystemClock) }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends `msg` as an SMS or a call, according to its channel.
    pub async fn send(&self, creds: SendCredentials<'_>, msg: &OutboundMessage) -> SendOutcome {
        match msg.channel {
            Channel::Sms => self.send_sms(creds, msg).await,
            Channel::Call => self.place_call(creds, msg).await,
            Channel::Email => {
                SendOutcome::Permanent { reason: "twilio: cannot send on channel email".to_owned() }
            }
        }
    }

    /// Sends `msg.body` as an SMS from `msg.from` to `msg.to`.
    pub async fn send_sms(&self, creds: SendCredentials<'_>, msg: &OutboundMessage) -> SendOutcome {
        let auth = match basic_auth(creds) {
            Ok(auth) => auth,
            Err(outcome) => return outcome,
        };
        let form = CreateMessageForm {
            to: msg.to.clone(),
            from: msg.from.clone(),
            body: msg.body.clone(),
        };
        self.post_form(&auth, &messages_path(auth.account_sid), &form).await
    }

    /// Places a call from `msg.from` to `msg.to` that speaks `msg.body`.
    pub async fn place_call(
        &self,
        creds: SendCredentials<'_>,
        msg: &OutboundMessage,
    ) -> SendOutcome {
        let auth = match basic_auth(creds) {
            Ok(auth) => auth,
            Err(outcome) => return outcome,
        };
        let twiml = match say_twiml(&msg.body) {
            Ok(twiml) => twiml,
            Err(err) => {
                return SendOutcome::Permanent { reason: err.to_string() };
            }
        };
        let form = CreateCallForm { to: msg.to.clone(), from: msg.from.clone(), twiml };
        self.post_form(&auth, &calls_path(auth.account_sid), &form).await
    }

    async fn post_form(
        &self,
        auth: &BasicAuth<'_>,
        path: &str,
        form: &impl Serialize,
    ) -> SendOutcome {
        let request = self
            .http
            .post(endpoint(&self.base_url, path))
            .basic_auth(auth.account_sid, Some(auth.auth_token))
            .form(form);
        let outcome = match execute("twilio", request).await {
            Ok(response) => classify(&response, self.clock.now()),
            Err(outcome) => outcome,
        };
        scrub_secret(outcome, auth.auth_token)
    }
}

/// Takes the Account SID and token out of `creds`. The SID goes into the URL path, so it must
/// be plain letters and digits, as every Twilio SID is.
fn basic_auth(creds: SendCredentials<'_>) -> Result<BasicAuth<'_>, SendOutcome> {
    let SendCredentials::Basic { account_sid, auth_token } = creds else {
        let reason = "twilio: credentials are not an account sid and auth token".to_owned();
        return Err(SendOutcome::Unauthorized { reason });
    };
    if account_sid.is_empty() || !account_sid.chars().all(|c| c.is_ascii_alphanumeric()) {
        let reason = "twilio: account sid is not letters and digits".to_owned();
        return Err(SendOutcome::Unauthorized { reason });
    }
    Ok(BasicAuth { account_sid, auth_token })
}
