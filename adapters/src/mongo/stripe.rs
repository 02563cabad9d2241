//! Tenants' Stripe accounts: one document per tenant, with the customer id in an indexed field
//! that a unique index keeps to one tenant.

use followup_core::store::StoreError;
use followup_core::store::subscription::StripeAccount;
use mongodb::bson::doc;

use super::collections::STRIPE_ACCOUNTS;
use super::{MongoStore, documents, errors};

impl MongoStore {
    /// Writes a Stripe account unless its customer id belongs to another tenant. The check
    /// names the owner; the unique index enforces it when two writes race.
    pub(super) async fn write_stripe_account(
        &self,
        account: StripeAccount,
    ) -> Result<(), StoreError> {
        self.check_not_deleted(account.tenant).await?;
        let id = documents::tenant(account.tenant);
        let taken = doc! { "customer": &account.customer_id, "_id": { "$ne": &id } };
        let target = self.collection(STRIPE_ACCOUNTS);
        let owner = target.find_one(taken).projection(doc! { "_id": 1 }).await;
        let owner = owner.map_err(|e| errors::unavailable(STRIPE_ACCOUNTS, "find_one", &e))?;
        let conflict = |owner: &str| {
            StoreError::Conflict(format!(
                "tenant {}: Stripe customer {} is already linked to tenant {owner}",
                account.tenant, account.customer_id
            ))
        };
        if let Some(owner) = owner {
            return Err(conflict(owner.get_str("_id").unwrap_or("another tenant")));
        }
        let fields = doc! { "customer": &account.customer_id };
        let document = documents::with_record(STRIPE_ACCOUNTS, id.clone(), fields, &account)?;
        let filter = doc! { "_id": &id };
        match target.replace_one(filter, document).upsert(true).await {
            Ok(_) => Ok(()),
            Err(error) if errors::is_duplicate_key(&error) => Err(conflict("another tenant")),
            Err(error) => Err(errors::unavailable(STRIPE_ACCOUNTS, "replace_one", &error)),
        }
    }
}
