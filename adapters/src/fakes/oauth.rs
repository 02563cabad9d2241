//! The token endpoint fake: the `refresh_token` grant of Google
//! (`POST /token`) and of the Microsoft identity platform
//! (`POST /{tenant}/oauth2/v2.0/token`), form-encoded, with the client authenticated by
//! `client_id` and `client_secret` in the body or by HTTP Basic.
//!
//! An access token it issues is accepted by the Gmail or Graph fake for the refresh token's
//! mailbox until it expires, then refused with 401. Each provider has a [`TokenMode`] that
//! decides the response.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{SecondsFormat, Utc};
use followup_core::domain::Provider;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::server::{basic_credentials, pause, random_hex};
use super::state::FakeState;

/// Scope Google reports for a send-only Gmail grant.
const GMAIL_SEND_SCOPE: &str = "https://www.googleapis.com/auth/gmail.send";

/// Lifetime of issued access tokens unless a test sets another: what both providers report.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3_599);

/// How a provider's token endpoint responds to a valid refresh request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenMode {
    /// A new access token and no refresh token: Google's usual response.
    #[default]
    Normal,
    /// A new access token and a new refresh token: the Microsoft identity platform's usual
    /// response. The old refresh token stays valid, as Microsoft documents.
    Rotating,
    /// `invalid_grant`, worded as the provider words a revoked grant.
    Revoking,
    /// 503 `temporarily_unavailable`, as during an outage.
    Failing,
}

/// One request the token endpoint received, for tests to inspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequestRecord {
    pub provider: Provider,
    /// The refresh token presented; empty when the request had none.
    pub presented_refresh_token: String,
    /// The new refresh token of the answer, when the endpoint rotated it.
    pub issued_refresh_token: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
}

/// The token endpoint's state, kept in the fakes' shared state.
#[derive(Debug, Default)]
pub(crate) struct OAuthState {
    /// Registered OAuth clients: client id to secret, per provider.
    clients: HashMap<(Provider, String), String>,
    /// Refresh token to the lowercase mailbox address it grants, per provider.
    refresh_tokens: HashMap<(Provider, String), String>,
    modes: HashMap<Provider, TokenMode>,
    /// Lifetime of issued access tokens; [`DEFAULT_LIFETIME`] when `None`.
    lifetime: Option<Duration>,
    pub(crate) requests: Vec<TokenRequestRecord>,
}

impl OAuthState {
    pub(crate) fn register_client(&mut self, provider: Provider, id: &str, secret: &str) {
        self.clients.insert((provider, id.to_owned()), secret.to_owned());
    }

    pub(crate) fn register_refresh_token(&mut self, provider: Provider, token: &str, email: &str) {
        self.refresh_tokens.insert((provider, token.to_owned()), email.to_ascii_lowercase());
    }

    pub(crate) fn set_mode(&mut self, provider: Provider, mode: TokenMode) {
        self.modes.insert(provider, mode);
    }

    pub(crate) fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = Some(lifetime);
    }

    pub(crate) fn request_counts(&self) -> std::collections::BTreeMap<Provider, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for record in &self.requests {
            *counts.entry(record.provider).or_default() += 1;
        }
        counts
    }

    /// Returns the mode of `provider`: Google normal and Microsoft rotating unless set.
    fn mode(&self, provider: Provider) -> TokenMode {
        let usual = match provider {
            Provider::Outlook => TokenMode::Rotating,
            Provider::Gmail | Provider::Twilio => TokenMode::Normal,
        };
        self.modes.get(&provider).copied().unwrap_or(usual)
    }
}

pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/token", web::post().to(google_token))
        .route("/{tenant}/oauth2/v2.0/token", web::post().to(microsoft_token));
}

/// The fields of a refresh request; all optional so that a missing one gets the provider's
/// own error.
#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

async fn google_token(
    state: web::Data<FakeState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    pause(&state).await;
    answer(&state, Provider::Gmail, &request, &body)
}

async fn microsoft_token(
    state: web::Data<FakeState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    pause(&state).await;
    answer(&state, Provider::Outlook, &request, &body)
}

/// Checks the request, answers it as `provider`'s endpoint would, and records it.
fn answer(
    state: &FakeState,
    provider: Provider,
    request: &HttpRequest,
    body: &[u8],
) -> HttpResponse {
    let form = read_form(request, body);
    let presented = form.as_ref().ok().and_then(|f| f.refresh_token.clone()).unwrap_or_default();
    let (status, body, issued) = match form {
        Ok(form) => grant(state, provider, request, &form),
        Err(message) => {
            (StatusCode::BAD_REQUEST, error_body(provider, "invalid_request", &message), None)
        }
    };
    let record = TokenRequestRecord {
        provider,
        presented_refresh_token: presented,
        issued_refresh_token: issued,
        status: status.as_u16(),
    };
    state.with_oauth(|oauth| oauth.requests.push(record));
    if status.is_client_error() {
        state.count_rejected();
    }
    HttpResponse::build(status).insert_header(("cache-control", "no-store")).json(body)
}

/// Parses the form body, or returns the reason it is not one.
fn read_form(request: &HttpRequest, body: &[u8]) -> Result<TokenForm, String> {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(format!(
            "Content-Type must be application/x-www-form-urlencoded, not {content_type:?}"
        ));
    }
    serde_urlencoded::from_bytes(body).map_err(|error| format!("invalid form body: {error}"))
}

/// Runs the `refresh_token` grant. Returns the status, the JSON body and the refresh token
/// issued, if any.
fn grant(
    state: &FakeState,
    provider: Provider,
    request: &HttpRequest,
    form: &TokenForm,
) -> (StatusCode, Value, Option<String>) {
    let fail =
        |status, code: &str, message: &str| (status, error_body(provider, code, message), None);
    if form.grant_type.as_deref() != Some("refresh_token") {
        let message = format!("Unsupported grant_type: {:?}", form.grant_type);
        return fail(StatusCode::BAD_REQUEST, "unsupported_grant_type", &message);
    }
    if !client_authenticates(state, provider, request, form) {
        return fail(StatusCode::UNAUTHORIZED, "invalid_client", "The OAuth client was not found.");
    }
    let Some(refresh_token) = form.refresh_token.as_deref().filter(|t| !t.is_empty()) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    if provider == Provider::Outlook && form.scope.as_deref().is_none_or(str::is_empty) {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request body must contain 'scope'.",
        );
    }

    let (mode, mailbox, lifetime) = state.with_oauth(|oauth| {
        let mailbox = oauth.refresh_tokens.get(&(provider, refresh_token.to_owned())).cloned();
        (oauth.mode(provider), mailbox, oauth.lifetime.unwrap_or(DEFAULT_LIFETIME))
    });
    let mailbox = match mailbox {
        Some(mailbox) => mailbox,
        None if state.accounts_open() => open_mailbox(state, provider, refresh_token),
        None => return fail(StatusCode::BAD_REQUEST, "invalid_grant", revoked_message(provider)),
    };
    match mode {
        TokenMode::Revoking => {
            fail(StatusCode::BAD_REQUEST, "invalid_grant", revoked_message(provider))
        }
        TokenMode::Failing => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The service is temporarily unavailable.",
        ),
        TokenMode::Normal | TokenMode::Rotating => {
            issue(state, provider, &mailbox, lifetime, mode == TokenMode::Rotating, form)
        }
    }
}

/// Issues an access token for `mailbox`, and a new refresh token when `rotate` is set.
fn issue(
    state: &FakeState,
    provider: Provider,
    mailbox: &str,
    lifetime: Duration,
    rotate: bool,
    form: &TokenForm,
) -> (StatusCode, Value, Option<String>) {
    let access_token = format!("fake-{provider}-access-{}", random_hex(24));
    let expires_at = state.now() + chrono::Duration::from_std(lifetime).unwrap_or_default();
    state.issue_access_token(provider, &access_token, mailbox, expires_at);
    let seconds = lifetime.as_secs();
    let mut body = match provider {
        Provider::Outlook => json!({
            "token_type": "Bearer",
            "scope": form.scope.as_deref().unwrap_or_default(),
            "expires_in": seconds,
            "ext_expires_in": seconds,
            "access_token": access_token,
        }),
        Provider::Gmail | Provider::Twilio => json!({
            "access_token": access_token,
            "expires_in": seconds,
            "scope": GMAIL_SEND_SCOPE,
            "token_type": "Bearer",
        }),
    };
    let issued = rotate.then(|| format!("fake-{provider}-refresh-{}", random_hex(24)));
    if let Some(refresh_token) = &issued {
        state.with_oauth(|oauth| oauth.register_refresh_token(provider, refresh_token, mailbox));
        body["refresh_token"] = json!(refresh_token);
    }
    (StatusCode::OK, body, issued)
}

/// Returns whether the client id and secret, from the body or HTTP Basic, are registered. With
/// open accounts any non-empty pair is accepted.
fn client_authenticates(
    state: &FakeState,
    provider: Provider,
    request: &HttpRequest,
    form: &TokenForm,
) -> bool {
    let (id, secret) = match (&form.client_id, &form.client_secret) {
        (Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => match basic_credentials(request) {
            Some(pair) => pair,
            None => return false,
        },
    };
    if id.is_empty() || secret.is_empty() {
        return false;
    }
    let registered = state.with_oauth(|oauth| oauth.clients.get(&(provider, id)).cloned());
    match registered {
        Some(expected) => expected == secret,
        None => state.accounts_open(),
    }
}

/// Makes an unknown refresh token the grant of a mailbox of its own, for open accounts.
fn open_mailbox(state: &FakeState, provider: Provider, refresh_token: &str) -> String {
    let mailbox = format!("open-refresh-{}@fake.invalid", random_hex(16));
    state.with_oauth(|oauth| oauth.register_refresh_token(provider, refresh_token, &mailbox));
    state.add_open_mailbox(provider, &mailbox);
    mailbox
}

fn revoked_message(provider: Provider) -> &'static str {
    match provider {
        Provider::Outlook => {
            "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth \
             token is needed."
        }
        Provider::Gmail | Provider::Twilio => "Token has been expired or revoked.",
    }
}

/// An OAuth error body in the provider's shape: Microsoft adds its `AADSTS` code in
/// `error_codes` and trace fields.
fn error_body(provider: Provider, code: &str, message: &str) -> Value {
    match provider {
        Provider::Outlook => {
            let number = match code {
                "invalid_grant" => 50_173,
                "invalid_client" => 7_000_215,
                "temporarily_unavailable" => 50_196,
                _ => 90_014,
            };
            json!({
                "error": code,
                "error_description": message,
                "error_codes": [number],
                "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                "trace_id": uuid::Uuid::new_v4().to_string(),
                "correlation_id": uuid::Uuid::new_v4().to_string(),
                "error_uri": format!("https://login.microsoftonline.com/error?code={number}"),
            })
        }
        Provider::Gmail | Provider::Twilio => json!({"error": code, "error_description": message}),
    }
}
