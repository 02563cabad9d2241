//! The tenant table: sort key, filter, selection, and where its rows come from.
//!
//! Rows come from `GET /admin/v1/tenant-summaries`, one window of a few screens around the
//! rows on screen, sorted and filtered by the engine, so that the console never keeps all of
//! 100,000 tenants. Until the first page arrives, and for good against an engine that answers
//! 404 for the route, the table sorts and filters the snapshot's own list of tenants instead,
//! which is only the snapshot's first page.

use std::cmp::Ordering;
use std::fmt;
use std::time::{Duration, Instant};

use followup_core::api::{TenantPage, TenantSummary};

use crate::client::FetchError;
use crate::requests::TenantQuery;

/// Wait after the last key typed into the filter before a page is requested, so that typing
/// a name issues one request and not one per character.
pub const FILTER_DEBOUNCE: Duration = Duration::from_millis(300);

/// Age after which the rows on screen are fetched again, so their figures stay current.
pub const PAGE_REFRESH: Duration = Duration::from_secs(2);

/// Minimum rows of a page request, so that a short terminal does not fetch a handful of
/// rows at a time.
const MIN_PAGE_LIMIT: u64 = 30;

/// Column the tenant table is sorted by; the names are those of the `sort` parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Largest backlog first, the order the engine sends.
    #[default]
    Backlog,
    /// Name in ascending order.
    Name,
    /// Most failed follow-ups first.
    Failed,
    /// Largest share of a channel's quota taken first.
    Quota,
}

impl SortKey {
    /// Returns the key that `s` switches to: backlog, name, failed, quota, then backlog again.
    pub fn next(self) -> Self {
        match self {
            SortKey::Backlog => SortKey::Name,
            SortKey::Name => SortKey::Failed,
            SortKey::Failed => SortKey::Quota,
            SortKey::Quota => SortKey::Backlog,
        }
    }

    fn compare(self, a: &TenantSummary, b: &TenantSummary) -> Ordering {
        let primary = match self {
            SortKey::Backlog => b.backlog.cmp(&a.backlog),
            SortKey::Name => Ordering::Equal,
            SortKey::Failed => b.failed.cmp(&a.failed),
            SortKey::Quota => b.quota_used_percent.cmp(&a.quota_used_percent),
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
            SortKey::Failed => "failed",
            SortKey::Quota => "quota",
        })
    }
}

/// Source of the table's rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RowSource {
    /// No page has arrived yet: the snapshot's tenants, sorted and filtered here.
    #[default]
    Snapshot,
    /// Pages from the engine.
    Pages,
    /// The engine responded 404 for the pages route: the snapshot's tenants for good.
    SnapshotOnly,
}

/// One row position of the table: a tenant, or a position whose page has not arrived.
#[derive(Clone, Copy, Debug)]
pub enum Slot<'a> {
    Tenant(&'a TenantSummary),
    Loading,
}

/// The tenant table's state.
#[derive(Debug)]
pub struct TenantTable {
    sort: SortKey,
    /// Text typed after `/`, matched against tenant ids and names ignoring case.
    filter: String,
    /// Position of the selected row among the matching tenants.
    selected: usize,
    /// Position of the first row on screen.
    scroll: usize,
    /// Rows on screen, from the terminal's size.
    page_rows: usize,
    source: RowSource,
    /// Order of the snapshot's tenants, used while `source` is not `Pages`: indices into
    /// `local_tenants`.
    local_order: Vec<usize>,
    local_tenants: Vec<TenantSummary>,
    /// The last page the engine returned for the current sort and filter, with its query.
    window: Option<(TenantQuery, TenantPage)>,
    /// The page request sent last, without a response yet.
    in_flight: Option<TenantQuery>,
    /// When the filter last changed, while its page has not been requested yet.
    filter_changed_at: Option<Instant>,
    /// When the last response arrived, success or error.
    answered_at: Option<Instant>,
    /// Error of the last page request, shown in the table's title until a page arrives.
    error: Option<String>,
}

impl Default for TenantTable {
    fn default() -> Self {
        Self {
            sort: SortKey::default(),
            filter: String::new(),
            selected: 0,
            scroll: 0,
            page_rows: 1,
            source: RowSource::default(),
            local_order: Vec::new(),
            local_tenants: Vec::new(),
            window: None,
            in_flight: None,
            filter_changed_at: None,
            answered_at: None,
            error: None,
        }
    }
}

impl TenantTable {
    pub fn sort(&self) -> SortKey {
        self.sort
    }

    /// Returns the filter, which is empty when every tenant is shown.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn source(&self) -> RowSource {
        self.source
    }

    /// Returns the position of the selected row among the matching tenants.
    pub fn selected(&self) -> usize {
        self.selected
    }

    /// Returns the position of the first row on screen.
    pub fn scroll(&self) -> usize {
        self.scroll
    }

    /// Returns the error of the last page request, if it failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Returns whether the rows on screen wait for a page of the current sort and filter.
    pub fn loading(&self) -> bool {
        self.source != RowSource::SnapshotOnly
            && (self.filter_changed_at.is_some() || self.in_flight.is_some())
    }

    /// Returns the number of tenants that match the filter, as far as the console knows.
    pub fn total(&self) -> usize {
        match (&self.window, self.source) {
            (Some((_, page)), RowSource::Pages) => {
                usize::try_from(page.total).unwrap_or(usize::MAX)
            }
            _ => self.local_order.len(),
        }
    }

    /// Takes the tenants of a new snapshot, for the rows shown before the first page.
    pub fn set_snapshot_tenants(&mut self, tenants: &[TenantSummary]) {
        if self.source == RowSource::Pages {
            return;
        }
        tenants.clone_into(&mut self.local_tenants);
        self.rebuild_local();
        self.clamp();
    }

    /// Sets the number of rows on screen.
    pub fn set_page_rows(&mut self, rows: usize) {
        self.page_rows = rows.max(1);
        self.clamp();
    }

    /// Switches to the next sort key and returns to the top.
    pub fn next_sort(&mut self) {
        self.sort = self.sort.next();
        self.selected = 0;
        self.scroll = 0;
        self.rebuild_local();
    }

    /// Sets the filter and returns to the top. The page is requested after
    /// [`FILTER_DEBOUNCE`] without another change.
    pub fn set_filter(&mut self, filter: &str, now: Instant) {
        if filter == self.filter {
            return;
        }
        filter.clone_into(&mut self.filter);
        self.selected = 0;
        self.scroll = 0;
        self.filter_changed_at = Some(now);
        self.rebuild_local();
    }

    /// Moves the selection by `rows`, up when negative, and scrolls to keep it on screen.
    pub fn move_selection(&mut self, rows: isize) {
        self.selected = self.selected.saturating_add_signed(rows);
        self.clamp();
    }

    /// Moves the selection by one screen.
    pub fn move_page(&mut self, pages: isize) {
        let rows = isize::try_from(self.page_rows).unwrap_or(isize::MAX);
        self.move_selection(pages.saturating_mul(rows));
    }

    pub fn select_first(&mut self) {
        self.selected = 0;
        self.clamp();
    }

    pub fn select_last(&mut self) {
        self.selected = usize::MAX;
        self.clamp();
    }

    /// Returns the slots of the rows on screen, from [`TenantTable::scroll`].
    pub fn visible(&self) -> Vec<Slot<'_>> {
        let last = (self.scroll + self.page_rows).min(self.total());
        (self.scroll..last).map(|position| self.slot(position)).collect()
    }

    /// Returns the selected tenant, if its row has arrived.
    pub fn selected_tenant(&self) -> Option<&TenantSummary> {
        match self.slot(self.selected) {
            Slot::Tenant(tenant) => Some(tenant),
            Slot::Loading => None,
        }
    }

    fn slot(&self, position: usize) -> Slot<'_> {
        if let (Some((_, page)), RowSource::Pages) = (&self.window, self.source) {
            let offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
            return position
                .checked_sub(offset)
                .and_then(|index| page.tenants.get(index))
                .map_or(Slot::Loading, Slot::Tenant);
        }
        self.local_order
            .get(position)
            .and_then(|&index| self.local_tenants.get(index))
            .map_or(Slot::Loading, Slot::Tenant)
    }

    /// Returns the page request the table needs at `now`, if any, and records it as sent.
    ///
    /// A page is requested when the sort or filter changed (the filter after its debounce),
    /// when the rows on screen leave the window held, and every [`PAGE_REFRESH`].
    pub fn next_request(&mut self, now: Instant) -> Option<TenantQuery> {
        if self.source == RowSource::SnapshotOnly {
            return None;
        }
        if let Some(changed_at) = self.filter_changed_at {
            if now.duration_since(changed_at) < FILTER_DEBOUNCE {
                return None;
            }
            self.filter_changed_at = None;
        }

        let requested = self.screen_query();
        let needed = match &self.window {
            Some((query, page)) => {
                !same_order(query, &requested)
                    || !self.window_covers_screen(page)
                    || self.answered_at.is_none_or(|at| now.duration_since(at) >= PAGE_REFRESH)
            }
            None => self.answered_at.is_none_or(|at| now.duration_since(at) >= PAGE_REFRESH),
        };
        // One request at a time for one order, but a new order does not wait for an old response.
        let waiting = self.in_flight.as_ref().is_some_and(|sent| same_order(sent, &requested));
        if !needed || waiting {
            return None;
        }

        self.in_flight = Some(requested.clone());
        Some(requested)
    }

    /// Takes the engine's response to `query`.
    pub fn apply_page(
        &mut self,
        query: TenantQuery,
        result: Result<TenantPage, FetchError>,
        now: Instant,
    ) {
        if self.in_flight.as_ref() == Some(&query) {
            self.in_flight = None;
        }
        let current = TenantQuery { offset: 0, limit: 0, ..self.screen_query() };
        if !same_order(&query, &current) {
            // A response for a sort or filter the operator has since left.
            return;
        }
        self.answered_at = Some(now);
        match result {
            Ok(page) => {
                self.error = None;
                self.source = RowSource::Pages;
                self.window = Some((query, page));
                self.clamp();
            }
            Err(error) if error.is_not_found() => {
                self.error = None;
                self.source = RowSource::SnapshotOnly;
                self.window = None;
                self.clamp();
            }
            Err(error) => self.error = Some(error.to_string()),
        }
    }

    /// Returns the query for the rows on screen, with a screen's worth of rows on either
    /// side, so that scrolling a page does not wait for the engine.
    fn screen_query(&self) -> TenantQuery {
        let rows = self.page_rows as u64;
        TenantQuery {
            sort: self.sort,
            filter: self.filter.clone(),
            offset: (self.scroll as u64).saturating_sub(rows),
            limit: rows.saturating_mul(3).max(MIN_PAGE_LIMIT),
        }
    }

    fn window_covers_screen(&self, page: &TenantPage) -> bool {
        let first = self.scroll as u64;
        let last = (first + self.page_rows as u64).min(page.total);
        let held_end = page.offset + page.tenants.len() as u64;
        first >= page.offset && last <= held_end.max(page.offset)
    }

    fn rebuild_local(&mut self) {
        let needle = self.filter.to_lowercase();
        let tenants = &self.local_tenants;
        self.local_order.clear();
        self.local_order.extend(
            tenants
                .iter()
                .enumerate()
                .filter(|(_, tenant)| {
                    contains_ignoring_case(&tenant.name, &needle)
                        || contains_ignoring_case(&tenant.id.to_string(), &needle)
                })
                .map(|(index, _)| index),
        );
        let sort = self.sort;
        self.local_order.sort_unstable_by(|&a, &b| sort.compare(&tenants[a], &tenants[b]));
    }

    /// Keeps the selection among the rows and the selected row on screen.
    fn clamp(&mut self) {
        self.selected = self.selected.min(self.total().saturating_sub(1));
        if self.selected < self.scroll {
            self.scroll = self.selected;
        }
        if self.selected >= self.scroll + self.page_rows {
            self.scroll = self.selected + 1 - self.page_rows;
        }
        // A shorter list or a taller screen: show as many rows as there are.
        self.scroll = self.scroll.min(self.total().saturating_sub(self.page_rows));
    }
}

fn same_order(a: &TenantQuery, b: &TenantQuery) -> bool {
    a.sort == b.sort && a.filter == b.filter
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
