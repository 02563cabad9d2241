//! Suppression: the contacts, email addresses, email domains and phone numbers a tenant must
//! not reach any more, and which of them stop a given send.
//!
//! A stop signal (the contact replied, booked a meeting, bounced, or the tenant stopped it by
//! hand) is kept as a suppression of the contact itself and ends every channel of that
//! contact. An unsubscribe, an SMS opt-out or an imported address is kept as a suppression of
//! the address, number or domain; the tenant's [`SuppressionScope`] decides whether it stops
//! only its own channel or every channel of a contact that has it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Channel, Contact};
use crate::ids::{ContactId, TenantId};
use crate::ingest::address::{normalize_email, normalize_phone, parse_region};

/// What a suppression names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionKind {
    /// One contact, by id: every channel of that contact.
    Contact,
    /// An email address, compared without regard to case.
    Email,
    /// Every email address of a domain, compared without regard to case.
    Domain,
    /// A phone number in E.164: SMS and calls to it.
    Phone,
}

impl SuppressionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionKind::Contact => "contact",
            SuppressionKind::Email => "email",
            SuppressionKind::Domain => "domain",
            SuppressionKind::Phone => "phone",
        }
    }
}

impl fmt::Display for SuppressionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a contact, address, number or domain was suppressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// The contact replied (a stop signal).
    Replied,
    /// The contact booked a meeting (a stop signal).
    MeetingBooked,
    /// Mail to the contact bounced (a stop signal).
    Bounced,
    /// The tenant stopped or suppressed it by hand.
    Manual,
    /// The recipient used the unsubscribe link or the one-click unsubscribe.
    Unsubscribed,
    /// The recipient texted an opt-out keyword such as STOP.
    SmsOptOut,
    /// The provider refused a send because the recipient had opted out (Twilio error 21610).
    ProviderOptOut,
    /// Part of a list the tenant imported.
    Imported,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Replied => "replied",
            SuppressionReason::MeetingBooked => "meeting_booked",
            SuppressionReason::Bounced => "bounced",
            SuppressionReason::Manual => "manual",
            SuppressionReason::Unsubscribed => "unsubscribed",
            SuppressionReason::SmsOptOut => "sms_opt_out",
            SuppressionReason::ProviderOptOut => "provider_opt_out",
            SuppressionReason::Imported => "imported",
        }
    }

    /// Returns whether the reason is one a stop signal may give.
    pub fn is_stop_signal(self) -> bool {
        matches!(
            self,
            SuppressionReason::Replied
                | SuppressionReason::MeetingBooked
                | SuppressionReason::Bounced
                | SuppressionReason::Manual
        )
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a suppressed address reaches: a tenant setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionScope {
    /// A suppressed email address or domain stops email to it, and a suppressed number stops
    /// SMS and calls to it; the contact's other channels go on. The default, because an email
    /// unsubscribe says nothing about consent to texts or calls.
    #[default]
    Address,
    /// Any suppressed address, domain or number of a contact stops every channel of that
    /// contact.
    Contact,
}

/// One entry of a tenant's suppression list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub tenant: TenantId,
    /// Key of the entry within the tenant, unique per kind and value (`email:ana@x.org`); a
    /// store keeps entries by it. The sealed store stores a keyed hash in its place.
    pub key: String,
    pub kind: SuppressionKind,
    /// The contact id, the email address or domain in lowercase, or the E.164 number.
    pub value: String,
    pub reason: SuppressionReason,
    pub created_at: DateTime<Utc>,
}

impl Suppression {
    /// Builds an entry from a value already in normal form (see [`normalize_value`]).
    pub fn new(
        tenant: TenantId,
        kind: SuppressionKind,
        value: String,
        reason: SuppressionReason,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self { tenant, key: key_of(kind, &value), kind, value, reason, created_at }
    }

    /// Builds the entry that stops every channel of `contact`.
    pub fn of_contact(
        tenant: TenantId,
        contact: ContactId,
        reason: SuppressionReason,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self::new(tenant, SuppressionKind::Contact, contact.to_string(), reason, created_at)
    }
}

impl Suppression {
    /// Returns the reason recorded on a follow-up this entry stopped. It names the kind of
    /// entry and why it was made, not the address, which the tenant can look up.
    pub fn follow_up_reason(&self) -> String {
        match self.kind {
            SuppressionKind::Contact => format!("contact stopped: {}", self.reason),
            kind => format!("{kind} suppressed: {}", self.reason),
        }
    }
}

/// Returns the key of the entry of `kind` for `value`, which must be in normal form.
pub fn key_of(kind: SuppressionKind, value: &str) -> String {
    format!("{}:{value}", kind.as_str())
}

/// Checks `raw` as a value of `kind` and returns it in normal form: email addresses and domains
/// in lowercase, phone numbers in E.164 (national formats read as numbers of `region`), contact
/// ids as hyphenated UUIDs. The error says what is wrong with the value.
pub fn normalize_value(
    kind: SuppressionKind,
    raw: &str,
    region: Option<&str>,
) -> Result<String, String> {
    let raw = raw.trim();
    match kind {
        SuppressionKind::Contact => raw
            .parse::<ContactId>()
            .map(|id| id.to_string())
            .map_err(|_| format!("contact id {raw:?} is not a UUID")),
        SuppressionKind::Email => normalize_email(raw)
            .map(|address| address.to_lowercase())
            .map_err(|problem| format!("email address {raw:?} is invalid: {problem}")),
        SuppressionKind::Domain => {
            let domain = raw.trim_start_matches('@');
            // A domain is checked as the domain of an address, which is the same rule.
            normalize_email(&format!("postmaster@{domain}"))
                .map(|_| domain.to_lowercase())
                .map_err(|problem| format!("domain {raw:?} is invalid: {problem}"))
        }
        SuppressionKind::Phone => {
            let region = region.and_then(parse_region);
            normalize_phone(raw, region).map_err(|_| {
                format!(
                    "phone number {raw:?} is invalid: give it in E.164 (+ and country code) or \
                     in the national format of the tenant's default region"
                )
            })
        }
    }
}

/// Returns the domain of an email address in lowercase.
fn domain_of(email: &str) -> Option<String> {
    email.rsplit_once('@').map(|(_, domain)| domain.to_lowercase())
}

/// Returns the keys of the contact's own addresses that suppress its `channel`: its email
/// address and domain for email, its number for SMS and calls.
fn address_keys(contact: &Contact, channel: Channel) -> Vec<String> {
    let mut keys = Vec::new();
    match channel {
        Channel::Email => {
            if let Some(email) = &contact.email {
                keys.push(key_of(SuppressionKind::Email, &email.to_lowercase()));
                if let Some(domain) = domain_of(email) {
                    keys.push(key_of(SuppressionKind::Domain, &domain));
                }
            }
        }
        Channel::Sms | Channel::Call => {
            if let Some(phone) = &contact.phone {
                keys.push(key_of(SuppressionKind::Phone, phone));
            }
        }
    }
    keys
}

/// Returns every key whose entry stops a send on `channel` to `contact` under `scope`: the
/// contact's own entry always, then the addresses the scope makes relevant.
pub fn keys_stopping(contact: &Contact, channel: Channel, scope: SuppressionScope) -> Vec<String> {
    let mut keys = vec![key_of(SuppressionKind::Contact, &contact.id.to_string())];
    match scope {
        SuppressionScope::Address => keys.extend(address_keys(contact, channel)),
        SuppressionScope::Contact => {
            keys.extend(address_keys(contact, Channel::Email));
            keys.extend(address_keys(contact, Channel::Sms));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn contact() -> Contact {
        Contact {
            id: ContactId(uuid::Uuid::new_v4()),
            tenant: TenantId::generate(),
            external_id: None,
            first_name: None,
            last_name: None,
            full_name: None,
            email: Some("Ana.Silva@Example.ORG".to_owned()),
            phone: Some("+14155550100".to_owned()),
            timezone: "UTC".to_owned(),
            custom: BTreeMap::new(),
        }
    }

    #[test]
    fn address_scope_keeps_channels_apart() {
        let contact = contact();
        let email = keys_stopping(&contact, Channel::Email, SuppressionScope::Address);
        assert!(email.contains(&"email:ana.silva@example.org".to_owned()));
        assert!(email.contains(&"domain:example.org".to_owned()));
        assert!(!email.contains(&"phone:+14155550100".to_owned()));
        let sms = keys_stopping(&contact, Channel::Sms, SuppressionScope::Address);
        assert!(sms.contains(&"phone:+14155550100".to_owned()));
        assert!(!sms.contains(&"email:ana.silva@example.org".to_owned()));
        assert!(sms.contains(&format!("contact:{}", contact.id)));
    }

    #[test]
    fn contact_scope_joins_channels() {
        let contact = contact();
        let call = keys_stopping(&contact, Channel::Call, SuppressionScope::Contact);
        assert!(call.contains(&"email:ana.silva@example.org".to_owned()));
        assert!(call.contains(&"domain:example.org".to_owned()));
        assert!(call.contains(&"phone:+14155550100".to_owned()));
    }

    #[test]
    fn values_are_normalized() {
        let email = normalize_value(SuppressionKind::Email, " Bob@Example.COM ", None);
        assert_eq!(email.as_deref(), Ok("bob@example.com"));
        let domain = normalize_value(SuppressionKind::Domain, "@Example.COM", None);
        assert_eq!(domain.as_deref(), Ok("example.com"));
        let phone = normalize_value(SuppressionKind::Phone, "(415) 555-0100", Some("US"));
        assert_eq!(phone.as_deref(), Ok("+14155550100"));
    }

    #[test]
    fn invalid_values_name_the_value() {
        let error =
            normalize_value(SuppressionKind::Email, "no-at-sign", None).expect_err("invalid");
        assert!(error.contains("\"no-at-sign\""), "{error}");
        let error =
            normalize_value(SuppressionKind::Domain, "localhost", None).expect_err("invalid");
        assert!(error.contains("\"localhost\""), "{error}");
        let error = normalize_value(SuppressionKind::Phone, "12", Some("US")).expect_err("invalid");
        assert!(error.contains("\"12\""), "{error}");
        let error = normalize_value(SuppressionKind::Contact, "x", None).expect_err("invalid");
        assert!(error.contains("not a UUID"), "{error}");
    }
}
