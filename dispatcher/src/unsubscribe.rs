//! Unsubscribe links served by the engine: each email carries a link signed for its contact,
//! whose `GET` shows a confirmation page and whose `POST` (the RFC 8058 one-click request, or
//! the page's button) adds the contact's email address to the tenant's suppression list.

use std::sync::Arc;

use followup_core::ids::{ContactId, TenantId};
use followup_core::store::StoreError;
use followup_core::store::sealed::SealedStore;

/// Path prefix of the unsubscribe links.
pub const PATH: &str = "/unsubscribe";

/// Builds the unsubscribe links of a tenant's contacts.
#[derive(Debug)]
pub struct UnsubscribeLinks {
    /// The engine's public HTTPS base URL, without a trailing slash.
    base_url: String,
    sealed: Arc<SealedStore>,
}

impl UnsubscribeLinks {
    pub fn new(base_url: &str, sealed: Arc<SealedStore>) -> Self {
        Self { base_url: base_url.trim_end_matches('/').to_owned(), sealed }
    }

    /// Returns the link of `contact`: `{base}/unsubscribe/{tenant}/{contact}/{token}`, where the
    /// token is an HMAC of both ids under a key derived from the tenant's data key.
    pub async fn link(&self, tenant: TenantId, contact: ContactId) -> Result<String, StoreError> {
        let key = self.sealed.tenant_key(tenant).await?;
        let token = key.unsubscribe_token(tenant, contact);
        Ok(format!("{}{PATH}/{tenant}/{contact}/{token}", self.base_url))
    }
}
