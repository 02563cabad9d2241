//! The filtered and sorted order of the tenant table.
//!
//! The order is a list of indices into the snapshot's tenants, rebuilt only when the snapshot,
//! the filter or the sort key changes, so that drawing a frame never sorts 100,000 rows.

use std::cmp::Ordering;
use std::fmt;

use followup_core::api::TenantSummary;

/// Column the tenant table is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Largest backlog first, the order the engine sends.
    #[default]
    Backlog,
    /// Name in ascending order.
    Name,
    /// Most follow-ups sent first.
    Sent,
}

impl SortKey {
    /// Returns the key that `s` switches to: backlog, then name, then sent, then backlog again.
    pub fn next(self) -> Self {
        match self {
            SortKey::Backlog => SortKey::Name,
            SortKey::Name => SortKey::Sent,
            SortKey::Sent => SortKey::Backlog,
        }
    }

    fn compare(self, a: &TenantSummary, b: &TenantSummary) -> Ordering {
        let primary = match self {
            SortKey::Backlog => b.backlog.cmp(&a.backlog),
            SortKey::Name => Ordering::Equal,
            SortKey::Sent => b.sent.cmp(&a.sent),
        };

        // Ties fall back to name, then id, so that rows keep their place between snapshots.
        primary.then_with(|| a.name.cmp(&b.name)).then_with(|| a.id.cmp(&b.id))
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SortKey::Backlog => "backlog",
            SortKey::Name => "name",
            SortKey::Sent => "sent",
        })
    }
}

/// The rows of the tenant table: which tenants pass the filter, in which order.
#[derive(Clone, Debug, Default)]
pub struct TenantOrder {
    sort: SortKey,
    /// Text typed after `/`, matched against tenant names ignoring case.
    filter: String,
    /// Indices into the snapshot's tenants, in display order.
    rows: Vec<usize>,
}

impl TenantOrder {
    /// Returns the active sort key.
    pub fn sort(&self) -> SortKey {
        self.sort
    }

    /// Returns the active filter, which is empty when every tenant is shown.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Returns the indices into the snapshot's tenants, in display order.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    /// Sets the sort key and reorders `tenants`.
    pub fn set_sort(&mut self, sort: SortKey, tenants: &[TenantSummary]) {
        self.sort = sort;
        self.rebuild(tenants);
    }

    /// Sets the filter and recomputes which of `tenants` are shown.
    pub fn set_filter(&mut self, filter: &str, tenants: &[TenantSummary]) {
        filter.clone_into(&mut self.filter);
        self.rebuild(tenants);
    }

    /// Recomputes the rows for `tenants`, which must be the list the indices will refer to.
    pub fn rebuild(&mut self, tenants: &[TenantSummary]) {
        let needle = self.filter.to_lowercase();
        self.rows.clear();
        self.rows.extend(
            tenants
                .iter()
                .enumerate()
                .filter(|(_, tenant)| contains_ignoring_case(&tenant.name, &needle))
                .map(|(index, _)| index),
        );

        let sort = self.sort;
        self.rows.sort_unstable_by(|&a, &b| sort.compare(&tenants[a], &tenants[b]));
    }
}

/// Whether `haystack` contains `needle`, which must already be lowercase.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }

    // Most names are ASCII: compare bytes in place instead of allocating a lowercase copy per
    // tenant on every key press.
    if haystack.is_ascii() && needle.is_ascii() {
        return haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()));
    }
    haystack.to_lowercase().contains(needle)
}
