//! The OAuth 2.0 `refresh_token` grant against Google's and Microsoft's token endpoints, with
//! the `oauth2` crate over our own reqwest client.
//!
//! `oauth2` 5.0 implements its HTTP client trait only for a reqwest 0.12 `Client`, so our
//! reqwest 0.13 client cannot be passed to it, and its default features add reqwest 0.12.28
//! beside 0.13 (a scratch crate with both resolved 120 crates against 117 without them). It
//! is therefore built without features, and [`OAuthRefresher`] hands it a closure that sends
//! the request with a reqwest 0.13 client on the workspace's rustls setup.

use std::time::Duration;

use followup_core::domain::Provider;
use followup_core::sensitive::Sensitive;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};

use crate::http::HttpSettings;

#[cfg(test)]
mod tests;

/// Microsoft tenant used when a connection names none: any work, school or personal account.
pub const DEFAULT_MICROSOFT_TENANT: &str = "common";

/// Scopes asked for when refreshing a Microsoft grant: send-only mail and a refresh token.
pub const MICROSOFT_SCOPES: [&str; 2] = ["offline_access", "https://graph.microsoft.com/Mail.Send"];

/// One OAuth client registered with a provider: the engine's application.
#[derive(Clone, Debug)]
pub struct OAuthClientSettings {
    pub client_id: String,
    pub client_secret: Sensitive<String>,
    /// Token endpoint. Microsoft's contains `{tenant}`, replaced per connection.
    pub token_url: String,
}

/// Tokens a refresh returned.
#[derive(Clone, Debug)]
pub struct RefreshedTokens {
    pub access_token: Sensitive<String>,
    /// Lifetime of the access token, when the endpoint stated one.
    pub expires_in: Option<Duration>,
    /// A new refresh token, when the endpoint rotated it (Microsoft does on every refresh).
    pub refresh_token: Option<Sensitive<String>>,
}

/// The reason a refresh failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The grant is revoked or expired (`invalid_grant`), or Microsoft needs the user to sign
    /// in again (`interaction_required`, `consent_required`): only a new consent helps.
    #[error("{0}")]
    GrantRevoked(String),
    /// The endpoint could not respond now (5xx, `temporarily_unavailable`, timeout, connection
    /// failure); trying again later may succeed.
    #[error("{0}")]
    Transient(String),
    /// The endpoint rejected the engine's own request or client (`invalid_client`,
    /// `unauthorized_client`, a malformed request) or no client is configured. The operator
    /// must fix the configuration; the tenant's grant may be fine.
    #[error("{0}")]
    Rejected(String),
}

/// Refreshes access tokens of Gmail and Outlook connections.
#[derive(Clone, Debug)]
pub struct OAuthRefresher {
    http: reqwest::Client,
    google: Option<OAuthClientSettings>,
    microsoft: Option<OAuthClientSettings>,
}

/// A transport failure, or a 5xx response, which `oauth2` would otherwise try to read as an
/// OAuth error body and lose the status of.
#[derive(Debug, thiserror::Error)]
enum TransportError {
    #[error("token endpoint request failed: {0}")]
    Send(#[from] reqwest::Error),
    #[error("token endpoint returned HTTP {0}")]
    ServerError(u16),
    #[error("invalid token endpoint request: {0}")]
    Request(String),
}

impl OAuthRefresher {
    /// Builds a refresher with its own HTTP client: the same web PKI roots and timeouts as the
    /// provider clients, and no redirects, so that a refresh token is never sent to an address
    /// other than the configured endpoint.
    pub fn new(
        settings: &HttpSettings,
        google: Option<OAuthClientSettings>,
        microsoft: Option<OAuthClientSettings>,
    ) -> reqwest::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .tls_certs_only(crate::http::web_pki_roots()?)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, google, microsoft })
    }

    /// Returns whether a client is configured for `provider`.
    pub fn can_refresh(&self, provider: Provider) -> bool {
        self.settings(provider).is_some()
    }

    /// Runs the `refresh_token` grant for a `provider` connection. `microsoft_tenant` fills
    /// `{tenant}` of Microsoft's endpoint; [`DEFAULT_MICROSOFT_TENANT`] when `None`.
    pub fn refresh(
        &self,
        provider: Provider,
        refresh_token: Sensitive<String>,
        microsoft_tenant: Option<String>,
    ) -> impl Future<Output = Result<RefreshedTokens, RefreshError>> + Send + 'static {
        // Owned, so that the future can run on a task of its own.
        let refresher = self.clone();
        async move { refresher.run_refresh(provider, refresh_token, microsoft_tenant).await }
    }

    async fn run_refresh(
        &self,
        provider: Provider,
        refresh_token: Sensitive<String>,
        microsoft_tenant: Option<String>,
    ) -> Result<RefreshedTokens, RefreshError> {
        let Some(settings) = self.settings(provider) else {
            return Err(RefreshError::Rejected(format!(
                "no OAuth client is configured for {provider}; set its client id and secret"
            )));
        };
        let tenant = microsoft_tenant.as_deref().unwrap_or(DEFAULT_MICROSOFT_TENANT);
        let url = settings.token_url.replace("{tenant}", tenant);
        let token_url = TokenUrl::new(url.clone()).map_err(|error| {
            RefreshError::Rejected(format!("invalid {provider} token endpoint {url:?}: {error}"))
        })?;
        let client = BasicClient::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(settings.client_secret.expose().clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);

        let refresh_token = RefreshToken::new(refresh_token.expose().clone());
        let mut request = client.exchange_refresh_token(&refresh_token);
        if provider == Provider::Outlook {
            request = request.add_scopes(MICROSOFT_SCOPES.map(|scope| Scope::new(scope.into())));
        }
        let http = self.http.clone();
        let send = move |request: oauth2::HttpRequest| send(http.clone(), request);
        let response = request.request_async(&send).await.map_err(|e| classify(provider, e))?;

        Ok(RefreshedTokens {
            access_token: Sensitive::new(response.access_token().secret().clone()),
            expires_in: response.expires_in(),
            refresh_token: response.refresh_token().map(|t| Sensitive::new(t.secret().clone())),
        })
    }

    fn settings(&self, provider: Provider) -> Option<&OAuthClientSettings> {
        match provider {
            Provider::Gmail => self.google.as_ref(),
            Provider::Outlook => self.microsoft.as_ref(),
            Provider::Twilio => None,
        }
    }
}

/// Sends one request of `oauth2` with our client. A 5xx response becomes an error here.
async fn send(
    http: reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TransportError> {
    let (parts, body) = request.into_parts();
    let url = reqwest::Url::parse(&parts.uri.to_string())
        .map_err(|error| TransportError::Request(error.to_string()))?;
    let response = http.request(parts.method, url).headers(parts.headers).body(body).send().await?;
    let status = response.status();
    if status.is_server_error() {
        return Err(TransportError::ServerError(status.as_u16()));
    }
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    let mut converted = oauth2::HttpResponse::new(body.to_vec());
    *converted.status_mut() = status;
    *converted.headers_mut() = headers;
    Ok(converted)
}

/// Sorts a failed refresh into revoked grant, transient failure or rejected request. The
/// description the endpoint gave is kept for the tenant to read; it carries no token.
fn classify(
    provider: Provider,
    error: RequestTokenError<TransportError, oauth2::basic::BasicErrorResponse>,
) -> RefreshError {
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error().to_string();
            let description = response.error_description().cloned().unwrap_or_default();
            let reason = format!("{provider} token endpoint returned {code}: {description}");
            match response.error() {
                BasicErrorResponseType::InvalidGrant => RefreshError::GrantRevoked(reason),
                BasicErrorResponseType::Extension(name) => match name.as_str() {
                    "interaction_required" | "consent_required" | "login_required" => {
                        RefreshError::GrantRevoked(reason)
                    }
                    "temporarily_unavailable" | "server_error" => RefreshError::Transient(reason),
                    _ => RefreshError::Rejected(reason),
                },
                _ => RefreshError::Rejected(reason),
            }
        }
        RequestTokenError::Request(transport) => {
            RefreshError::Transient(format!("{provider} {transport}"))
        }
        RequestTokenError::Parse(error, _) => RefreshError::Transient(format!(
            "{provider} token endpoint response unreadable: {error}"
        )),
        RequestTokenError::Other(message) => {
            RefreshError::Transient(format!("{provider} token endpoint: {message}"))
        }
    }
}
