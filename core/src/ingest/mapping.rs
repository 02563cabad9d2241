//! Column mapping: which contact field each column of an upload fills.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::IngestError;

/// The contact field a column fills.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactField {
    ExternalId,
    Email,
    Phone,
    FirstName,
    LastName,
    FullName,
    Timezone,
    /// ISO 3166-1 alpha-2 region used to read the row's phone number.
    Region,
    StartAt,
    /// A template field under the given name.
    Custom(String),
    /// A column that is read and dropped.
    Ignore,
}

impl ContactField {
    /// Returns the field's canonical name, as used in templates and error messages, or `None`
    /// for [`ContactField::Ignore`].
    pub fn name(&self) -> Option<&str> {
        let name = match self {
            ContactField::ExternalId => "external_id",
            ContactField::Email => "email",
            ContactField::Phone => "phone",
            ContactField::FirstName => "first_name",
            ContactField::LastName => "last_name",
            ContactField::FullName => "full_name",
            ContactField::Timezone => "timezone",
            ContactField::Region => "region",
            ContactField::StartAt => "start_at",
            ContactField::Custom(name) => name,
            ContactField::Ignore => return None,
        };
        Some(name)
    }
}

/// The field of every column of an upload, by header name and by position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMapping {
    columns: Vec<(String, ContactField)>,
}

static IGNORED: ContactField = ContactField::Ignore;

impl ColumnMapping {
    /// Guesses each column's field from its header, ignoring case, spaces and punctuation.
    ///
    /// Each contact field goes to the first column that looks like it, so a second phone
    /// column (`Phone 2`) becomes the custom field `phone_2`. Unrecognised columns become
    /// custom fields named in snake case; columns with an empty header are ignored.
    pub fn guess(headers: &[String]) -> Self {
        let mut assigner = Assigner::default();
        let columns = headers
            .iter()
            .enumerate()
            .map(|(index, header)| {
                let field = assigner.guess(header, index);
                (header.clone(), field)
            })
            .collect();
        Self { columns }
    }

    /// Builds the mapping from the tenant's header-to-field map. The columns it leaves out are
    /// guessed, and a guess never takes a contact field that the map gives to another column.
    ///
    /// Fails if the map names a header the upload does not have, or gives one contact field
    /// or custom name to two columns.
    pub fn from_explicit(
        headers: &[String],
        explicit: &BTreeMap<String, ContactField>,
    ) -> Result<Self, IngestError> {
        let explicit: BTreeMap<&str, &ContactField> =
            explicit.iter().map(|(header, field)| (header.trim(), field)).collect();
        if let Some(missing) =
            explicit.keys().find(|header| !headers.iter().any(|h| h.trim() == **header))
        {
            return Err(IngestError::MappedColumnNotFound { header: (*missing).to_owned() });
        }

        // Reserve the explicit fields first, so that guesses cannot take them.
        let mut assigner = Assigner::default();
        for header in headers {
            if let Some(field) = explicit.get(header.trim()) {
                assigner.reserve(header, field)?;
            }
        }

        let columns = headers
            .iter()
            .enumerate()
            .map(|(index, header)| {
                let field = match explicit.get(header.trim()) {
                    Some(field) => (*field).clone(),
                    None => assigner.guess(header, index),
                };
                (header.clone(), field)
            })
            .collect();
        Ok(Self { columns })
    }

    /// Returns the field of the column at `header_index`, or [`ContactField::Ignore`] past the
    /// last column.
    pub fn field_of(&self, header_index: usize) -> &ContactField {
        self.columns.get(header_index).map_or(&IGNORED, |(_, field)| field)
    }

    /// Returns the field of the column named `header`. A header the mapping has not seen, such
    /// as a key that only later NDJSON objects have, is guessed. It becomes a custom field if
    /// the guess is a contact field that another column already fills.
    pub fn field_for(&self, header: &str) -> Cow<'_, ContactField> {
        if let Some((_, field)) = self.columns.iter().find(|(name, _)| name == header) {
            return Cow::Borrowed(field);
        }
        let mut assigner = Assigner::default();
        for (name, field) in &self.columns {
            assigner.mark_taken(name, field);
        }
        Cow::Owned(assigner.guess(header, self.columns.len()))
    }

    /// Returns the header and field of the column at `index`.
    pub(crate) fn column(&self, index: usize) -> Option<(&str, &ContactField)> {
        self.columns.get(index).map(|(header, field)| (header.as_str(), field))
    }

    /// Lists every column with its field, in column order.
    pub fn describe(&self) -> Vec<(String, ContactField)> {
        self.columns.clone()
    }
}

/// Hands out fields so that each contact field and custom name goes to one column only.
#[derive(Default)]
struct Assigner {
    /// Contact fields already given to a column, with that column's header.
    taken: BTreeMap<ContactField, String>,
    custom_names: BTreeSet<String>,
}

impl Assigner {
    fn reserve(&mut self, header: &str, field: &ContactField) -> Result<(), IngestError> {
        if matches!(field, ContactField::Ignore) {
            return Ok(());
        }
        if let Some(first) = self.taken.get(field) {
            return Err(IngestError::FieldMappedTwice {
                field: field.name().unwrap_or_default().to_owned(),
                first: first.clone(),
                second: header.to_owned(),
            });
        }
        self.mark_taken(header, field);
        Ok(())
    }

    fn mark_taken(&mut self, header: &str, field: &ContactField) {
        if let ContactField::Custom(name) = field {
            self.custom_names.insert(name.clone());
        }
        if !matches!(field, ContactField::Ignore) {
            self.taken.insert(field.clone(), header.to_owned());
        }
    }

    fn guess(&mut self, header: &str, index: usize) -> ContactField {
        if header.trim().is_empty() {
            return ContactField::Ignore;
        }
        if let Some(field) = guess_contact_field(header)
            && !self.taken.contains_key(&field)
        {
            self.taken.insert(field.clone(), header.to_owned());
            return field;
        }

        let name = self.unique_custom_name(header, index);
        let field = ContactField::Custom(name);
        self.mark_taken(header, &field);
        field
    }

    /// Names a custom column in snake case, adding `_2`, `_3`... when another column already
    /// has the name, and `column_<n>` when the header has no letter or digit.
    fn unique_custom_name(&self, header: &str, index: usize) -> String {
        let mut base = snake_case(header);
        if base.is_empty() {
            base = format!("column_{}", index + 1);
        }
        if !self.custom_names.contains(&base) && !is_contact_field_name(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}_{n}"))
            .find(|name| !self.custom_names.contains(name))
            .unwrap_or(base)
    }
}

/// Whether `name` is a canonical contact field name, which a custom field must not shadow in
/// templates.
fn is_contact_field_name(name: &str) -> bool {
    matches!(
        name,
        "external_id"
            | "email"
            | "phone"
            | "first_name"
            | "last_name"
            | "full_name"
            | "name"
            | "timezone"
            | "region"
            | "start_at"
    )
}

/// Recognises common header names, in English and a few other languages.
fn guess_contact_field(header: &str) -> Option<ContactField> {
    let key = compact(header);

    // Numbered columns such as "Phone 1" or "Email2" count as the plain name.
    let unnumbered = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let field = match unnumbered {
        "email" | "emailaddress" | "mail" | "emailadresse" | "correo" | "correoelectronico" => {
            ContactField::Email
        }
        "phone" | "phonenumber" | "mobile" | "mobilephone" | "mobilenumber" | "cell"
        | "cellphone" | "tel" | "telephone" | "telephonenumber" | "telefon" | "telefono"
        | "telefone" | "telefonnummer" | "handy" => ContactField::Phone,
        _ => match key.as_str() {
            "firstname" | "givenname" | "forename" | "first" => ContactField::FirstName,
            "lastname" | "surname" | "familyname" | "last" => ContactField::LastName,
            "name" | "fullname" | "contactname" | "displayname" | "nazwa" => ContactField::FullName,
            "timezone" | "tz" | "ianatimezone" => ContactField::Timezone,
            "id" | "externalid" | "customerid" | "contactid" => ContactField::ExternalId,
            "region" | "countrycode" | "phoneregion" => ContactField::Region,
            "startat" | "start" | "starttime" | "startdate" => ContactField::StartAt,
            _ => return None,
        },
    };
    Some(field)
}

/// Lowercases `header` and drops every character that is not a letter or digit.
fn compact(header: &str) -> String {
    header.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Converts a header to a snake_case field name: lowercase letters and digits in words joined
/// by `_`. Words split at any other character and where a lowercase letter or digit meets an
/// uppercase letter. Non-ASCII letters are kept.
pub(crate) fn snake_case(header: &str) -> String {
    let mut name = String::with_capacity(header.len());
    let mut separate = false;
    let mut after_lower_or_digit = false;
    for c in header.chars() {
        if !c.is_alphanumeric() {
            separate = true;
            after_lower_or_digit = false;
            continue;
        }
        if c.is_uppercase() && after_lower_or_digit {
            separate = true;
        }
        if separate && !name.is_empty() {
            name.push('_');
        }
        separate = false;
        name.extend(c.to_lowercase());
        after_lower_or_digit = c.is_lowercase() || c.is_numeric();
    }
    name
}
