//! Message templates: text with `{{field}}` and `{{field|fallback}}` placeholders.
//!
//! Syntax:
//! - `{{first_name}}` is replaced by the contact's value of `first_name`. Rendering fails with
//!   [`MissingField`] when the value is missing or empty.
//! - `{{first_name|there}}` is replaced by the value, or by `there` when the value is missing or
//!   empty. The fallback may be empty (`{{first_name|}}`). Everything after the first `|` up to
//!   the closing `}}` is the fallback, so a fallback may itself contain `|`.
//! - Whitespace around the field name and around the fallback is trimmed, so
//!   `{{ first_name | there }}` is the same placeholder as `{{first_name|there}}`.
//! - A field name is made of letters (any script), digits, `_`, `-` and `.`.
//! - Everything outside placeholders is kept verbatim, including a lone `{` or `}` and a `}}`
//!   that closes nothing. In a run of three or more `{`, the last two open the placeholder and
//!   the others are text, so `{{{x}}}` renders as `{`, the value of `x`, then `}`.
//!
//! NOTE: there is no escape for a literal `{{`: it always opens a placeholder.

use std::str::FromStr;

#[cfg(test)]
mod tests;

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

/// A parsed template, ready to render many times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    /// Distinct field names in order of first use, each with whether any use lacks a fallback.
    fields: Vec<FieldUse>,
}

/// A run of literal text or one placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field { name: String, fallback: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldUse {
    name: String,
    required: bool,
}

/// A syntax error in a template. Offsets are in bytes from the start of the source; lines and
/// columns count from 1, and columns count characters, not bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unclosed placeholder at byte {offset} (line {line}, column {column}): \
         close the `{{{{` with `}}}}`"
    )]
    Unclosed { offset: usize, line: usize, column: usize },

    #[error(
        "empty placeholder at byte {offset} (line {line}, column {column}): \
         write a field name between the braces, e.g. `{{{{first_name}}}}`"
    )]
    EmptyField { offset: usize, line: usize, column: usize },

    #[error(
        "invalid field name {name:?} at byte {offset} (line {line}, column {column}): \
         use only letters, digits, `_`, `-` and `.`"
    )]
    InvalidField { offset: usize, line: usize, column: usize, name: String },
}

impl TemplateError {
    /// Byte offset of the opening `{{` of the placeholder at fault.
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::Unclosed { offset, .. }
            | TemplateError::EmptyField { offset, .. }
            | TemplateError::InvalidField { offset, .. } => *offset,
        }
    }
}

/// A field that rendering needed, whose value is missing or empty and which has no fallback.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "template field {name:?} has no value and no fallback: \
     give the contact a value or write `{{{{{name}|fallback}}}}`"
)]
pub struct MissingField {
    pub name: String,
}

impl Template {
    /// Parses `source`, rejecting an unclosed, empty or invalid placeholder.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut cursor = 0;

        while let Some(found) = source[cursor..].find(OPEN) {
            let open = last_open_of_run(source, cursor + found);
            let inner_start = open + OPEN.len();

            // The placeholder ends at the first `}}`. A `{{` before it means the first one was
            // never closed.
            let Some(inner_len) = source[inner_start..].find(CLOSE) else {
                return Err(unclosed(source, open));
            };
            let inner = &source[inner_start..inner_start + inner_len];
            if inner.contains(OPEN) {
                return Err(unclosed(source, open));
            }

            push_text(&mut parts, &source[cursor..open]);
            parts.push(parse_placeholder(source, open, inner)?);
            cursor = inner_start + inner_len + CLOSE.len();
        }
        push_text(&mut parts, &source[cursor..]);

        let fields = collect_fields(&parts);
        Ok(Template { source: source.to_owned(), parts, fields })
    }

    /// Returns the text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Returns every field the template refers to, each once, in order of first use.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|field| field.name.as_str())
    }

    /// Returns the fields that rendering cannot do without, which are those used at least once
    /// without a fallback. Each appears once, in order of first use.
    pub fn required_fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().filter(|field| field.required).map(|field| field.name.as_str())
    }

    /// Lists the required fields for which `lookup` returns no value or an empty one, so that a
    /// caller can report all of them at once instead of only the first.
    pub fn missing_fields<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> Vec<&str> {
        self.required_fields().filter(|name| value_of(&lookup, name).is_none()).collect()
    }

    /// Renders the template, reading each field's value from `lookup`.
    ///
    /// An empty value counts as missing. A missing value is replaced by the placeholder's
    /// fallback; without a fallback, rendering fails on the first such field.
    pub fn render<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<String, MissingField> {
        self.render_encoded(lookup, |value, output| output.push_str(value))
    }

    /// Renders the template as [`Template::render`] does, but writes each field value through
    /// `encode`, so that a contact's value cannot become markup or syntax of the output (HTML
    /// escaping, URL percent-encoding). Fallbacks are part of the template and are written as
    /// they are.
    pub fn render_encoded<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a str>,
        encode: impl Fn(&str, &mut String),
    ) -> Result<String, MissingField> {
        let mut output = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => output.push_str(text),
                Part::Field { name, fallback } => match value_of(&lookup, name) {
                    Some(value) => encode(value, &mut output),
                    None => {
                        let fallback = fallback.as_deref();
                        let fallback =
                            fallback.ok_or_else(|| MissingField { name: name.clone() })?;
                        output.push_str(fallback);
                    }
                },
            }
        }
        Ok(output)
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        Template::parse(source)
    }
}

/// Appends `value` to `output` with the five characters that HTML gives meaning to (`&`, `<`,
/// `>`, `"`, `'`) written as character references, so it reads as text in element content and
/// in quoted attribute values.
pub fn escape_html(value: &str, output: &mut String) {
    for character in value.chars() {
        match character {
            '&' => output.push_str("&amp;"),
            '<' => output.push_str("&lt;"),
            '>' => output.push_str("&gt;"),
            '"' => output.push_str("&quot;"),
            '\'' => output.push_str("&#39;"),
            other => output.push(other),
        }
    }
}

/// Moves `open` to the last `{{` of a run of braces, so the extra leading braces stay text.
fn last_open_of_run(source: &str, mut open: usize) -> usize {
    while source[open + OPEN.len()..].starts_with('{') {
        open += 1;
    }
    open
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text(text.to_owned()));
    }
}

/// Parses the text between `{{` and `}}` of the placeholder that opens at byte `open`.
fn parse_placeholder(source: &str, open: usize, inner: &str) -> Result<Part, TemplateError> {
    let (name, fallback) = match inner.split_once('|') {
        Some((name, fallback)) => (name.trim(), Some(fallback.trim().to_owned())),
        None => (inner.trim(), None),
    };

    let (line, column) = line_and_column(source, open);
    if name.is_empty() {
        return Err(TemplateError::EmptyField { offset: open, line, column });
    }
    if !name.chars().all(is_field_char) {
        let name = name.to_owned();
        return Err(TemplateError::InvalidField { offset: open, line, column, name });
    }

    Ok(Part::Field { name: name.to_owned(), fallback })
}

fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn collect_fields(parts: &[Part]) -> Vec<FieldUse> {
    let mut fields: Vec<FieldUse> = Vec::new();
    for part in parts {
        let Part::Field { name, fallback } = part else {
            continue;
        };
        let required = fallback.is_none();
        match fields.iter_mut().find(|field| field.name == *name) {
            Some(field) => field.required |= required,
            None => fields.push(FieldUse { name: name.clone(), required }),
        }
    }
    fields
}

/// The value `lookup` returns for `name`, with an empty value read as missing.
fn value_of<'a>(lookup: &impl Fn(&str) -> Option<&'a str>, name: &str) -> Option<&'a str> {
    lookup(name).filter(|value| !value.is_empty())
}

fn unclosed(source: &str, open: usize) -> TemplateError {
    let (line, column) = line_and_column(source, open);
    TemplateError::Unclosed { offset: open, line, column }
}

/// Computes the 1-based line and character column of byte `offset` in `source`.
fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
