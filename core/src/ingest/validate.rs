//! Validation of one mapped row into a contact ready to be stored and scheduled.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use phonenumber::country::Id as Region;

use super::address::{self, PhoneProblem};
use super::{ColumnMapping, ContactField, RawRecord, RowError, quoted};
use crate::domain::Channel;

/// Settings a row is checked against: the tenant's defaults and the sequence it enrolls in.
#[derive(Clone, Debug)]
pub struct ValidationContext {
    /// ISO 3166-1 alpha-2 region for phone numbers written without a country code, when the
    /// row has no region of its own.
    pub default_region: String,
    /// Timezone of rows that name none.
    pub default_timezone: Tz,
    /// Template fields the sequence uses; each must have a value.
    pub required_fields: Vec<String>,
    /// Channels of the sequence's steps; the row needs an address for one of them.
    pub channels: Vec<Channel>,
    /// Start of rows that give none.
    pub now: DateTime<Utc>,
}

/// A row that passed validation, with its addresses normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidContact {
    /// Identity of the contact within the tenant: the external id, else the email address,
    /// else the phone number.
    pub contact_key: String,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The full-name column, or else the first and last names joined by a space.
    pub full_name: Option<String>,
    /// Email address with its domain lowercased.
    pub email: Option<String>,
    /// Phone number in E.164, without any extension.
    pub phone: Option<String>,
    pub timezone: Tz,
    pub start_at: DateTime<Utc>,
    /// Columns mapped to custom fields that have a value.
    pub custom: BTreeMap<String, String>,
    /// Line of the upload the row starts on.
    pub line: u64,
}

/// Checks one row and builds its contact, or returns every problem the row has.
pub fn validate(
    record: &RawRecord,
    mapping: &ColumnMapping,
    context: &ValidationContext,
) -> Result<ValidContact, Vec<RowError>> {
    let row = RowValues::collect(record, mapping);
    let mut check = Checker { line: record.line, errors: Vec::new(), failed: BTreeSet::new() };

    let region = check.region(row.region, &context.default_region);
    let email = row.email.and_then(|value| check.email(value));
    let phone = row.phone.and_then(|value| check.phone(value, region));
    let timezone = check.timezone(row.timezone, context.default_timezone);
    let start_at = check.start_at(row.start_at, timezone, context.now);

    let full_name = row.full_name.map(str::to_owned).or_else(|| join_names(&row));
    let contact = ValidContact {
        contact_key: String::new(),
        external_id: row.external_id.map(str::to_owned),
        first_name: row.first_name.map(str::to_owned),
        last_name: row.last_name.map(str::to_owned),
        full_name,
        email,
        phone,
        timezone,
        start_at,
        custom: row.custom,
        line: record.line,
    };
    check.reachable(&contact, &context.channels);
    check.required_fields(&contact, row.region, &context.required_fields);

    let contact_key = contact_key(&contact);
    if check.errors.is_empty() && contact_key.is_none() {
        let reason = "no external id, email or phone number: a row needs one of them to \
                      identify the contact";
        check.errors.push(RowError::row(record.line, reason));
    }
    match contact_key {
        Some(contact_key) if check.errors.is_empty() => Ok(ValidContact { contact_key, ..contact }),
        _ => Err(check.errors),
    }
}

/// The row's values by contact field, trimmed, with empty values left out.
#[derive(Default)]
struct RowValues<'a> {
    external_id: Option<&'a str>,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    full_name: Option<&'a str>,
    timezone: Option<&'a str>,
    region: Option<&'a str>,
    start_at: Option<&'a str>,
    custom: BTreeMap<String, String>,
}

impl<'a> RowValues<'a> {
    fn collect(record: &'a RawRecord, mapping: &ColumnMapping) -> Self {
        let mut row = Self::default();
        for (index, (header, value)) in record.fields.iter().enumerate() {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }

            // CSV rows have the header's columns in order, so the position finds the field
            // without a name lookup.
            let field = match mapping.column(index) {
                Some((name, field)) if name == header.as_str() => std::borrow::Cow::Borrowed(field),
                _ => mapping.field_for(header),
            };
            row.set(&field, value);
        }
        row
    }

    fn set(&mut self, field: &ContactField, value: &'a str) {
        let slot = match field {
            ContactField::ExternalId => &mut self.external_id,
            ContactField::Email => &mut self.email,
            ContactField::Phone => &mut self.phone,
            ContactField::FirstName => &mut self.first_name,
            ContactField::LastName => &mut self.last_name,
            ContactField::FullName => &mut self.full_name,
            ContactField::Timezone => &mut self.timezone,
            ContactField::Region => &mut self.region,
            ContactField::StartAt => &mut self.start_at,
            ContactField::Custom(name) => {
                self.custom.entry(name.clone()).or_insert_with(|| value.to_owned());
                return;
            }
            ContactField::Ignore => return,
        };
        slot.get_or_insert(value);
    }
}

/// Collects the errors of one row, remembering which fields failed.
struct Checker {
    line: u64,
    errors: Vec<RowError>,
    failed: BTreeSet<&'static str>,
}

impl Checker {
    fn fail(&mut self, field: &'static str, reason: String) {
        self.failed.insert(field);
        self.errors.push(RowError::field(self.line, field, reason));
    }

    /// Returns the region to read phone numbers with: the row's, else the default. An invalid
    /// region in the row is an error; an invalid default means no region.
    fn region(&mut self, value: Option<&str>, default: &str) -> Option<Region> {
        let Some(value) = value else {
            return address::parse_region(default);
        };
        let region = address::parse_region(value);
        if region.is_none() {
            let reason = format!(
                "invalid region {}: expected an ISO 3166-1 alpha-2 country code such as \
                 \"US\" or \"PL\"",
                quoted(value)
            );
            self.fail("region", reason);
        }
        region
    }

    fn email(&mut self, value: &str) -> Option<String> {
        match address::normalize_email(value) {
            Ok(email) => Some(email),
            Err(problem) => {
                let reason = format!(
                    "invalid email address {}: {problem}; correct it or leave the cell empty",
                    quoted(value)
                );
                self.fail("email", reason);
                None
            }
        }
    }

    fn phone(&mut self, value: &str, region: Option<Region>) -> Option<String> {
        let problem = match address::normalize_phone(value, region) {
            Ok(phone) => return Some(phone),
            Err(problem) => problem,
        };

        // An invalid region is already reported, and explains why a national number failed.
        if self.failed.contains("region") {
            return None;
        }
        let international = value.trim_start().starts_with('+');
        let what = match (problem, region) {
            (PhoneProblem::TooLong, _) => "longer than any phone number".to_owned(),
            (PhoneProblem::NotANumber, _) => "not a phone number".to_owned(),
            (PhoneProblem::Invalid, _) if international => {
                "not a valid number for its country code".to_owned()
            }
            (PhoneProblem::Invalid, Some(region)) => {
                format!("not a valid number when read with region {}", region.as_ref())
            }
            (PhoneProblem::Invalid, None) => "not a valid number".to_owned(),
        };
        let advice = if international {
            "check the country code and the digits"
        } else {
            "write it in international format, starting with + and the country code"
        };
        let reason = format!("invalid phone number {}: {what}; {advice}", quoted(value));
        self.fail("phone", reason);
        None
    }

    fn timezone(&mut self, value: Option<&str>, default: Tz) -> Tz {
        let Some(value) = value else {
            return default;
        };
        value.parse::<Tz>().unwrap_or_else(|_| {
            let reason = format!(
                "unknown timezone {}: expected an IANA name such as \"Europe/Warsaw\" or \
                 \"America/New_York\"",
                quoted(value)
            );
            self.fail("timezone", reason);
            default
        })
    }

    fn start_at(&mut self, value: Option<&str>, timezone: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
        let Some(value) = value else {
            return now;
        };
        parse_start(value, timezone).unwrap_or_else(|| {
            let reason = format!(
                "invalid start time {}: expected an RFC 3339 timestamp such as \
                 \"2025-03-01T09:00:00+01:00\" or a date such as \"2025-03-01\"",
                quoted(value)
            );
            self.fail("start_at", reason);
            now
        })
    }

    /// Requires an address for at least one channel of the sequence, unless an invalid
    /// address already explains why the row has none.
    fn reachable(&mut self, contact: &ValidContact, channels: &[Channel]) {
        if channels.is_empty() || channels.iter().any(|&channel| address_of(contact, channel)) {
            return;
        }
        if ["email", "phone", "region"].iter().any(|field| self.failed.contains(*field)) {
            return;
        }

        let wants_email = channels.contains(&Channel::Email);
        let wants_phone = channels.iter().any(|&channel| channel != Channel::Email);
        let (field, reason) = match (wants_email, wants_phone) {
            (true, false) => (
                Some("email"),
                "missing email address: the sequence sends email, so every row needs one",
            ),
            (false, _) => (
                Some("phone"),
                "missing phone number: the sequence sends SMS or calls, so every row needs one",
            ),
            (true, true) => {
                (None, "no email or phone number: the sequence needs one to reach the contact")
            }
        };
        let error =
            RowError { line: self.line, field: field.map(str::to_owned), reason: reason.into() };
        self.errors.push(error);
    }

    /// Requires a value for every template field, unless the field's value is already
    /// reported as invalid.
    fn required_fields(
        &mut self,
        contact: &ValidContact,
        region: Option<&str>,
        required: &[String],
    ) {
        for name in required {
            let name = name.trim();
            if self.failed.contains(name) || has_value(contact, region, name) {
                continue;
            }
            let reason = format!(
                "missing value for template field {}: fill it in, or remove the field from the \
                 sequence's templates",
                quoted(name)
            );
            self.errors.push(RowError::field(self.line, name, reason));
        }
    }
}

fn address_of(contact: &ValidContact, channel: Channel) -> bool {
    match channel {
        Channel::Email => contact.email.is_some(),
        Channel::Sms | Channel::Call => contact.phone.is_some(),
    }
}

/// Checks whether the template field `name` has a value. The name is a contact field's canonical
/// name, or else a custom field's name as written or in snake case.
fn has_value(contact: &ValidContact, region: Option<&str>, name: &str) -> bool {
    match name {
        "external_id" => contact.external_id.is_some(),
        "first_name" => contact.first_name.is_some(),
        "last_name" => contact.last_name.is_some(),
        "full_name" | "name" => contact.full_name.is_some(),
        "email" => contact.email.is_some(),
        "phone" => contact.phone.is_some(),
        "region" => region.is_some(),
        "timezone" | "start_at" => true,
        other => {
            contact.custom.contains_key(other)
                || contact.custom.contains_key(&super::mapping::snake_case(other))
        }
    }
}

fn join_names(row: &RowValues<'_>) -> Option<String> {
    match (row.first_name, row.last_name) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(name), None) | (None, Some(name)) => Some(name.to_owned()),
        (None, None) => None,
    }
}

/// Returns the key that identifies a contact within a tenant: its external id, else its email address
/// in lowercase (mail systems treat addresses without regard to case in practice, so
/// `Ana@x.org` and `ana@x.org` are one person), else its E.164 number.
fn contact_key(contact: &ValidContact) -> Option<String> {
    contact
        .external_id
        .clone()
        .or_else(|| contact.email.as_ref().map(|email| email.to_lowercase()))
        .or_else(|| contact.phone.clone())
}

/// Reads a start time: an RFC 3339 timestamp, or a date, which means midnight in `timezone`.
fn parse_start(value: &str, timezone: Tz) -> Option<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(value) {
        return Some(instant.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    local_to_utc(date.and_time(NaiveTime::MIN), timezone)
}

/// Converts a local time to an instant. A time that occurs twice (clocks going back) takes the
/// first instant. A time that does not exist (clocks going forward) moves to the first minute
/// after it that does. No gap in the tz database is longer than a day (Samoa skipped
/// 2011-12-30 whole), so searching one day of minutes is enough.
fn local_to_utc(local: NaiveDateTime, timezone: Tz) -> Option<DateTime<Utc>> {
    const MINUTES_PER_DAY: i64 = 24 * 60;
    (0..=MINUTES_PER_DAY).find_map(|minutes| {
        let candidate = local.checked_add_signed(TimeDelta::minutes(minutes))?;
        let instant = timezone.from_local_datetime(&candidate).earliest()?;
        Some(instant.with_timezone(&Utc))
    })
}
