//! Stop signals: finding the contacts a stop names and ending their schedules.
//!
//! A stop is first stored as a suppression entry of the contact, durably, and only then are
//! the contact's schedules cancelled through the tenant's actor. A round that is preparing a
//! send to the contact while the stop arrives therefore finds the entry in its last check
//! before the request leaves, even though the cancellation waits for that round to end.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use followup_core::domain::{Contact, Tenant};
use followup_core::ids::{ContactId, ScheduleId};
use followup_core::suppression::{
    Suppression, SuppressionKind, SuppressionReason, normalize_value,
};

use crate::engine::Engine;

/// Contacts read per page when a stop names an email address or phone number.
const SCAN_PAGE: usize = 500;

/// How a stop names its contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactRef {
    Id(ContactId),
    /// The tenant's own id of the contact, as uploaded.
    ExternalId(String),
    /// Every contact with this email address, compared without regard to case.
    Email(String),
    /// Every contact with this number, read in the tenant's default region unless in E.164.
    Phone(String),
}

/// Result of one stop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// The contacts stopped.
    pub contacts: Vec<ContactId>,
    /// Follow-ups cancelled now. Follow-ups of a tenant that another node dispatches are
    /// cancelled by that node's rounds when they come due, and are not counted here.
    pub cancelled: usize,
}

/// Finds the contacts each reference names, in the order of `refs`; an empty list for a
/// reference that names none. An email address or phone number that does not parse is an
/// error naming it.
///
/// NOTE: contacts are found by an email address or phone number by reading every contact of
/// the tenant (once per call, whatever the number of references), because the store keeps
/// addresses sealed and has no index of them. That is fine for tens of thousands of contacts,
/// slow for millions; a keyed-hash index, as the suppression list has, would fix it.
pub async fn find_contacts(
    engine: &Engine,
    tenant: &Tenant,
    refs: &[ContactRef],
) -> Result<Vec<Vec<Contact>>, FindError> {
    let store = engine.store();
    let tenant_key = engine.sealed_store().tenant_key(tenant.id).await?;
    let mut wanted_addresses: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut found: Vec<Vec<Contact>> = vec![Vec::new(); refs.len()];
    for (index, reference) in refs.iter().enumerate() {
        let id = match reference {
            ContactRef::Id(id) => *id,
            ContactRef::ExternalId(external_id) => {
                tenant_key.record_ids().contact(external_id.trim())
            }
            ContactRef::Email(email) => {
                let email = normalize_value(SuppressionKind::Email, email, None)
                    .map_err(FindError::Invalid)?;
                wanted_addresses.entry(email).or_default().push(index);
                continue;
            }
            ContactRef::Phone(phone) => {
                let region = Some(tenant.default_region.as_str());
                let phone = normalize_value(SuppressionKind::Phone, phone, region)
                    .map_err(FindError::Invalid)?;
                wanted_addresses.entry(phone).or_default().push(index);
                continue;
            }
        };
        found[index] = store.contacts(tenant.id, vec![id]).await?;
    }
    if wanted_addresses.is_empty() {
        return Ok(found);
    }
    let mut after = None;
    loop {
        let page = store.contacts_page(tenant.id, after, SCAN_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for contact in page {
            let email = contact.email.as_ref().map(|email| email.to_lowercase());
            let addresses = [email.as_ref(), contact.phone.as_ref()];
            for address in addresses.into_iter().flatten() {
                for index in wanted_addresses.get(address).into_iter().flatten() {
                    found[*index].push(contact.clone());
                }
            }
        }
    }
    Ok(found)
}

/// Errors of [`find_contacts`].
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// A reference's value is not an email address or phone number; the text names it.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] followup_core::store::StoreError),
}

/// Stops `contacts`: stores a suppression entry for each, then cancels every follow-up of
/// their schedules that has not left yet, with the reason. Sends already handed to a
/// provider are not recalled.
pub async fn stop_contacts(
    engine: &Engine,
    tenant: &Tenant,
    contacts: &[Contact],
    reason: SuppressionReason,
    now: DateTime<Utc>,
) -> anyhow::Result<StopOutcome> {
    let mut seen = HashSet::new();
    let contacts: Vec<&Contact> = contacts.iter().filter(|c| seen.insert(c.id)).collect();
    if contacts.is_empty() {
        return Ok(StopOutcome::default());
    }
    let entries: Vec<Suppression> = contacts
        .iter()
        .map(|contact| Suppression::of_contact(tenant.id, contact.id, reason, now))
        .collect();
    let follow_up_reason = entries[0].follow_up_reason();
    engine.store().put_suppressions(tenant.id, entries).await?;

    let schedules = schedules_of(engine, tenant, &contacts).await?;
    let cancelled = engine.cancel_schedules(tenant.id, schedules, follow_up_reason).await?;
    if cancelled.is_none() {
        tracing::info!(
            tenant = %tenant.id,
            "contacts stopped on a node that does not dispatch the tenant; its owner cancels \
             their follow-ups when they come due"
        );
    }
    Ok(StopOutcome {
        contacts: contacts.iter().map(|contact| contact.id).collect(),
        cancelled: cancelled.unwrap_or(0),
    })
}

/// Returns the ids the contacts' schedules would have in each of the tenant's sequences; a
/// contact enrolled in only some of them has no schedule under the other ids.
async fn schedules_of(
    engine: &Engine,
    tenant: &Tenant,
    contacts: &[&Contact],
) -> anyhow::Result<Vec<ScheduleId>> {
    let sequences = engine.store().sequences(tenant.id).await?;
    let key = engine.sealed_store().tenant_key(tenant.id).await?;
    let mut schedules = Vec::new();
    for contact in contacts {
        let Some(identity) = contact.identity_key() else { continue };
        for sequence in &sequences {
            schedules.push(key.record_ids().schedule(sequence.id, &identity));
        }
    }
    Ok(schedules)
}
