//! Synthetic contacts, written as CSV.
//!
//! Every row is a function of the seed, the tenant index and the row index alone, so an upload
//! of rows 1,000 to 1,999 is the same whether it is generated first or last. Addresses are
//! unroutable by construction: email domains are `example.com` and `example.org` (reserved by
//! RFC 2606) and phone numbers are NANP 555-0100 to 555-0199, which the North American
//! Numbering Plan reserves for fiction.

use std::ops::Range;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Header row of every upload. Column names are the engine's contact field names, so the
/// engine's mapping guess needs no hints; `company` becomes a custom field.
pub const CSV_HEADER: &str = "external_id,email,phone,first_name,last_name,company,timezone\n";

const FIRST_NAMES: &[&str] = &["Ada", "Grace", "Alan", "Zoë", "Łukasz", "Chidi", "Mei", "José"];
/// Some contain a comma or an apostrophe, so that quoting is exercised.
const LAST_NAMES: &[&str] = &["Lovelace", "Hopper", "O'Brien", "Smith, Jr.", "Nowak", "Okafor"];
/// Some contain a double quote or a line break, which CSV must quote and double.
const COMPANIES: &[&str] =
    &["Example Co", "Acme \"Rockets\"", "Widgets, Inc.", "Line\nBreak Ltd", "Ünïcode GmbH", ""];
const TIMEZONES: &[&str] =
    &["America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Warsaw", "UTC"];
/// Real area codes; with 555-01xx each gives 100 fictional numbers.
const AREA_CODES: &[u16] = &[202, 212, 305, 312, 415, 512, 617, 206];

/// The way a deliberately invalid row is broken. Each breaks one field, which the engine
/// must reject the row for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidKind {
    /// An email address without `@`.
    Email,
    /// A phone number too short to be valid anywhere.
    Phone,
    /// A timezone that is not an IANA name.
    Timezone,
    /// Neither an email address nor a phone number, so no step can reach the contact.
    NoAddress,
}

const INVALID_KINDS: &[InvalidKind] =
    &[InvalidKind::Email, InvalidKind::Phone, InvalidKind::Timezone, InvalidKind::NoAddress];

/// Deterministic contact rows of one tenant.
#[derive(Clone, Debug)]
pub struct ContactGenerator {
    seed: u64,
    tenant: u32,
    /// Invalid rows per million rows.
    invalid_per_million: u64,
    start: Option<StartInstants>,
}

/// The `start_at` values of a run whose follow-ups start at a set instant rather than when
/// their upload is stored: row `index` starts `index % spread_seconds` seconds after `first`,
/// so that a spread of 0 or 1 makes every follow-up of a step due in the same second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInstants {
    pub first: DateTime<Utc>,
    pub spread_seconds: u64,
}

impl StartInstants {
    /// The start of row `index`.
    pub fn of_row(&self, index: u64) -> DateTime<Utc> {
        let offset = index.checked_rem(self.spread_seconds).unwrap_or(0);
        self.first + TimeDelta::seconds(i64::try_from(offset).unwrap_or(i64::MAX))
    }
}

/// The cells of one row, before CSV quoting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactRow {
    pub external_id: String,
    pub email: String,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
    pub company: String,
    pub timezone: String,
    /// The field broken on purpose, or `None` for a valid row.
    pub invalid: Option<InvalidKind>,
}

impl ContactGenerator {
    /// Panics if `invalid_fraction` is outside 0 to 1; a checked scenario never is.
    pub fn new(seed: u64, tenant: u32, invalid_fraction: f64) -> Self {
        assert!((0.0..=1.0).contains(&invalid_fraction), "invalid_fraction out of range");
        // In range 0 to 1, the rounded value fits u64 and is never negative.
        let invalid_per_million = (invalid_fraction * 1_000_000.0).round() as u64;
        Self { seed, tenant, invalid_per_million, start: None }
    }

    /// Gives every row a `start_at` cell.
    pub fn with_start(mut self, start: StartInstants) -> Self {
        self.start = Some(start);
        self
    }

    /// The header row of this generator's uploads.
    pub fn header(&self) -> String {
        match self.start {
            Some(_) => format!("{},start_at\n", CSV_HEADER.trim_end()),
            None => CSV_HEADER.to_owned(),
        }
    }

    /// The external id of row `index`, which the harness also writes into each message to
    /// match what the fakes received with what it uploaded.
    pub fn external_id(&self, index: u64) -> String {
        format!("lt-{}-{}-{index}", self.seed, self.tenant)
    }

    /// When the follow-ups of row `index` start, if the run sets it.
    pub fn start_of(&self, index: u64) -> Option<DateTime<Utc>> {
        self.start.map(|start| start.of_row(index))
    }

    /// Whether row `index` is invalid. Invalid rows are spread evenly, so that any range of
    /// rows contains its share of them, give or take one.
    pub fn is_invalid(&self, index: u64) -> bool {
        self.invalid_before(index + 1) > self.invalid_before(index)
    }

    /// Number of invalid rows in `rows`.
    pub fn invalid_in(&self, rows: Range<u64>) -> u64 {
        self.invalid_before(rows.end) - self.invalid_before(rows.start)
    }

    /// Invalid rows among rows `0..end`: floor(end × fraction), with the fraction rounded to
    /// millionths and integer arithmetic, so that float rounding never shifts the count.
    fn invalid_before(&self, end: u64) -> u64 {
        let product = u128::from(end) * u128::from(self.invalid_per_million);
        u64::try_from(product / 1_000_000).unwrap_or(u64::MAX)
    }

    /// Generates row `index`.
    pub fn row(&self, index: u64) -> ContactRow {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, self.tenant, index));
        let domain = if index.is_multiple_of(2) { "example.com" } else { "example.org" };
        let area = AREA_CODES.choose(&mut rng).copied().unwrap_or(202);
        let line: u16 = rng.random_range(100..=199);
        let mut row = ContactRow {
            external_id: self.external_id(index),
            email: format!("contact{index}.t{}@{domain}", self.tenant),
            phone: format!("+1 {area} 555 0{line}"),
            first_name: pick(&mut rng, FIRST_NAMES),
            last_name: pick(&mut rng, LAST_NAMES),
            company: pick(&mut rng, COMPANIES),
            timezone: pick(&mut rng, TIMEZONES),
            invalid: None,
        };
        if self.is_invalid(index) {
            let kind = INVALID_KINDS.choose(&mut rng).copied().unwrap_or(InvalidKind::Email);
            row.break_field(kind);
        }
        row
    }

    /// Writes row `index` as one CSV record, line ending included.
    pub fn write_row(&self, index: u64, out: &mut String) {
        let row = self.row(index);
        let cells = [
            &row.external_id,
            &row.email,
            &row.phone,
            &row.first_name,
            &row.last_name,
            &row.company,
            &row.timezone,
        ];
        for (position, cell) in cells.into_iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            push_csv_cell(cell, out);
        }
        if let Some(start) = self.start_of(index) {
            out.push(',');
            out.push_str(&start.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
        out.push('\n');
    }
}

impl ContactRow {
    fn break_field(&mut self, kind: InvalidKind) {
        match kind {
            InvalidKind::Email => self.email = self.email.replace('@', "."),
            InvalidKind::Phone => self.phone = "+1 555".to_owned(),
            InvalidKind::Timezone => self.timezone = "Mars/Olympus_Mons".to_owned(),
            InvalidKind::NoAddress => {
                self.email.clear();
                self.phone.clear();
            }
        }
        self.invalid = Some(kind);
    }
}

/// Appends `cell` to `out`, quoted as RFC 4180 requires when it contains a comma, a double
/// quote or a line break, with inner quotes doubled.
pub(crate) fn push_csv_cell(cell: &str, out: &mut String) {
    let needs_quotes = cell.contains([',', '"', '\n', '\r']);
    if !needs_quotes {
        out.push_str(cell);
        return;
    }
    out.push('"');
    for character in cell.chars() {
        if character == '"' {
            out.push('"');
        }
        out.push(character);
    }
    out.push('"');
}

/// The CSV text of one upload, in chunks of about `chunk_rows` rows, header first, so that
/// an upload of any size is generated as it is sent and never held in memory whole.
#[derive(Debug)]
pub struct CsvChunks {
    generator: ContactGenerator,
    next: u64,
    end: u64,
    chunk_rows: u64,
    header_sent: bool,
}

impl CsvChunks {
    /// Panics if `chunk_rows` is 0.
    pub fn new(generator: ContactGenerator, rows: Range<u64>, chunk_rows: u64) -> Self {
        assert!(chunk_rows > 0, "chunk_rows must be at least 1");
        Self { generator, next: rows.start, end: rows.end, chunk_rows, header_sent: false }
    }
}

/// Each item is the chunk's text and its number of data rows.
impl Iterator for CsvChunks {
    type Item = (String, u64);

    fn next(&mut self) -> Option<Self::Item> {
        let mut text = String::new();
        if !self.header_sent {
            self.header_sent = true;
            text.push_str(&self.generator.header());
        }
        let stop = self.end.min(self.next.saturating_add(self.chunk_rows));
        let rows = stop.saturating_sub(self.next);
        for index in self.next..stop {
            self.generator.write_row(index, &mut text);
        }
        self.next = stop;
        if text.is_empty() { None } else { Some((text, rows)) }
    }
}

fn pick(rng: &mut StdRng, choices: &[&str]) -> String {
    choices.choose(rng).copied().unwrap_or_default().to_owned()
}

/// Mixes the three inputs into one seed with SplitMix64 steps, so that neighbouring rows and
/// tenants get unrelated random streams.
fn mix(seed: u64, tenant: u32, index: u64) -> u64 {
    let mut state = seed;
    for value in [u64::from(tenant), index] {
        state = splitmix(state ^ value);
    }
    state
}

fn splitmix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
