//! Authentication: tenant API keys on `/v1` and the operator token on `/admin`.
//!
//! A client address that fails to authenticate too often is rejected for a while (see
//! `limits`), and an authenticated tenant's requests count against its rate.
//!
//! A tenant API key is 32 random bytes shown once, at tenant creation; the store keeps only its
//! SHA-256, so a copy of the store does not give access.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use base64::Engine as _;
use followup_core::domain::Tenant;
use followup_core::sensitive::Sensitive;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::AppState;
use super::error::ApiError;
use crate::config::{Config, DEFAULT_OPERATOR};

/// Prefix of tenant API keys, so that a leaked key is recognisable in a secret scanner.
const API_KEY_PREFIX: &str = "fu_";

/// Creates a new API key and returns it with its SHA-256 (lowercase hex).
pub fn generate_api_key() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal("system random generator failed".into()))?;
    let key = format!(
        "{API_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = sha256_hex(&key);
    Ok((key, hash))
}

pub fn sha256_hex(text: &str) -> String {
    digest::digest(&digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// The tenant whose API key authenticated the request.
#[derive(Debug)]
pub struct AuthenticatedTenant(pub Tenant);

impl FromRequest for AuthenticatedTenant {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let key = bearer(request).map(str::to_owned);
        let client = request.peer_addr().map(|addr| addr.ip());
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("app state missing".into()))?;
            state.limits.check_client(client)?;
            let key = key.ok_or_else(|| {
                ApiError::Unauthorized("missing API key: send Authorization: Bearer <key>".into())
            })?;
            let tenant = state.engine.store().tenant_by_api_key(sha256_hex(&key)).await?;
            let Some(tenant) = tenant else {
                let unauthorized = ApiError::Unauthorized("invalid API key".into());
                return Err(state.limits.record_failed_auth(client, unauthorized));
            };
            state.limits.check_tenant(tenant.id)?;
            Ok(AuthenticatedTenant(tenant))
        })
    }
}

/// Proof that the request carried an operator token, with the name of that credential:
/// `operator` for `FOLLOWUP_ADMIN_TOKEN`, else the name of an `[[admin.operators]]` entry.
#[derive(Debug)]
pub struct Operator {
    pub name: String,
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = request.app_data::<web::Data<AppState>>();
        let client = request.peer_addr().map(|addr| addr.ip());
        if let Some(Err(error)) = state.map(|state| state.limits.check_client(client)) {
            return std::future::ready(Err(error));
        }
        let credentials = state.map(|state| operator_credentials(state.engine.config()));
        let result = match (credentials.unwrap_or_default(), bearer(request)) {
            (credentials, _) if credentials.is_empty() => Err(ApiError::Unauthorized(
                "operator API disabled: set FOLLOWUP_ADMIN_TOKEN to enable it".into(),
            )),
            (_, None) => Err(ApiError::Unauthorized(
                "missing operator token: send Authorization: Bearer <token>".into(),
            )),
            // Comparing digests keeps the comparison's duration independent of where the
            // tokens first differ; every credential is compared, found or not.
            (credentials, Some(given)) => {
                let given = sha256_hex(given);
                let mut found = None;
                for (name, token) in credentials {
                    if sha256_hex(token.expose()) == given && found.is_none() {
                        found = Some(name);
                    }
                }
                match found {
                    Some(name) => Ok(Operator { name }),
                    None => {
                        let unauthorized = ApiError::Unauthorized("invalid operator token".into());
                        Err(match state {
                            Some(state) => state.limits.record_failed_auth(client, unauthorized),
                            None => unauthorized,
                        })
                    }
                }
            }
        };
        std::future::ready(result)
    }
}

/// Every operator credential of the configuration, by name.
fn operator_credentials(config: &Config) -> Vec<(String, Sensitive<String>)> {
    let default = config.admin_token.clone().map(|token| (DEFAULT_OPERATOR.to_owned(), token));
    let named =
        config.admin.operators.iter().filter_map(|operator| {
            operator.token.clone().map(|token| (operator.name.clone(), token))
        });
    default.into_iter().chain(named).collect()
}
