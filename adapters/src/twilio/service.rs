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
///
/// Twilio's REST API has no batch endpoint, so every SMS and call is one request. The client
/// keeps them cheap by reusing the pooled keep-alive connections of the `reqwest::Client` it
/// is given, which should be the one from [`build_http_client`](crate::http::build_http_client)
/// that every provider client shares.
#[derive(Clone, Debug)]
pub struct TwilioClient {
    http: reqwest::Client,
    base_url: reqwest::Url,
    /// Resolves `Retry-After` headers that carry an HTTP-date.
    clock: Arc<dyn Clock>,
}

/// Account SID and auth token, checked and borrowed from [`SendCredentials::Basic`]. It has no
/// `Debug`, so that the token cannot be printed.
pub(crate) struct BasicAuth<'a> {
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
        let request = basic_auth(creds).map(|auth| (self.sms_request(&auth, msg), auth));
        self.execute(request).await
    }

    /// Places a call from `msg.from` to `msg.to` that speaks `msg.body`.
    pub async fn place_call(
        &self,
        creds: SendCredentials<'_>,
        msg: &OutboundMessage,
    ) -> SendOutcome {
        let request = basic_auth(creds)
            .and_then(|auth| self.call_request(&auth, msg).map(|request| (request, auth)));
        self.execute(request).await
    }

    /// Builds the CreateMessage request of `msg`.
    pub(crate) fn sms_request(
        &self,
        auth: &BasicAuth<'_>,
        msg: &OutboundMessage,
    ) -> reqwest::RequestBuilder {
        let form = CreateMessageForm {
            to: msg.to.clone(),
            from: msg.from.clone(),
            body: msg.body.clone(),
            status_callback: msg.status_callback.clone(),
        };
        self.form_request(auth, &messages_path(auth.account_sid), &form)
    }

    /// Builds the CreateCall request of `msg`, or the permanent outcome of a text too long for
    /// a call.
    pub(crate) fn call_request(
        &self,
        auth: &BasicAuth<'_>,
        msg: &OutboundMessage,
    ) -> Result<reqwest::RequestBuilder, SendOutcome> {
        let twiml = say_twiml(&msg.body)
            .map_err(|err| SendOutcome::Permanent { reason: err.to_string() })?;
        let form = CreateCallForm {
            to: msg.to.clone(),
            from: msg.from.clone(),
            twiml,
            status_callback: msg.status_callback.clone(),
        };
        Ok(self.form_request(auth, &calls_path(auth.account_sid), &form))
    }

    fn form_request(
        &self,
        auth: &BasicAuth<'_>,
        path: &str,
        form: &impl Serialize,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(endpoint(&self.base_url, path))
            .basic_auth(auth.account_sid, Some(auth.auth_token))
            .form(form)
    }

    /// Sends a built request and classifies the response, with the auth token scrubbed from
    /// the reason.
    async fn execute(
        &self,
        request: Result<(reqwest::RequestBuilder, BasicAuth<'_>), SendOutcome>,
    ) -> SendOutcome {
        let (request, auth) = match request {
            Ok(built) => built,
            Err(outcome) => return outcome,
        };
        let outcome = match execute("twilio", request).await {
            Ok(response) => classify(&response, self.clock.now()),
            Err(outcome) => outcome,
        };
        scrub_secret(outcome, auth.auth_token)
    }
}

/// Takes the Account SID and token out of `creds`. The SID goes into the URL path, so it must
/// be plain letters and digits, as every Twilio SID is.
pub(crate) fn basic_auth(creds: SendCredentials<'_>) -> Result<BasicAuth<'_>, SendOutcome> {
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
