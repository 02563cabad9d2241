//! State of the console and key handling.
//!
//! The `App` does no I/O: the feed hands it snapshots and link states, it records the pages
//! and actions it needs as [`Request`]s for the event loop ([`crate::event_loop`]) to send, and it
//! takes the responses back. Time comes in through [`App::tick`], so tests drive it exactly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use followup_core::api::{AdminSnapshot, DeadLetterPage, QueueSummary, TenantDetail};
use followup_core::ids::TenantId;
use ratatui::Frame;
use ratatui::layout::Rect;

use crate::feed::{FeedUpdate, LinkState};
use crate::requests::{Action, DeadLetterQuery, Request, Response};
use crate::tenants::TenantTable;
use crate::view;

/// Snapshots kept for the throughput sparklines: one minute at one snapshot a second.
pub const HISTORY_LEN: usize = 60;

/// Age after which the detail view and the dead letters on screen are fetched again.
pub const DETAIL_REFRESH: Duration = Duration::from_secs(2);

/// The screens of the console, in the order Tab walks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Totals, throughput, queues, lateness and paused items.
    #[default]
    Overview,
    Tenants,
    /// Recent failures and the dead letters.
    Failures,
    /// One tenant, opened with Enter on the tenant table.
    Detail,
}

/// Mode of keyboard input, which decides whether characters are commands or filter text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputMode {
    /// Characters are commands such as `s` and `q`.
    #[default]
    Normal,
    /// Characters are added to the tenant filter, after `/`.
    Filter,
}

/// One line of news for the operator, such as the outcome of an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    /// Whether the line reports a failure, which is drawn as an accent.
    pub error: bool,
}

/// Sends and errors per second of each snapshot received, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Throughput {
    pub sends_per_s: VecDeque<f64>,
    pub errors_per_s: VecDeque<f64>,
}

impl Throughput {
    /// Adds the rates of `snapshot`, the one received after `previous`.
    ///
    /// An engine that fills the queues' `provider` also fills their rates, which count failed
    /// attempts that will be retried. An older engine leaves the rates at zero, so the rates
    /// are then the growth of the queues' sent and failed counts between the two snapshots
    /// over the time between them by the engine's clock, which misses retried attempts.
    fn record(&mut self, previous: Option<&AdminSnapshot>, snapshot: &AdminSnapshot) {
        let has_rates = snapshot.queues.iter().any(|queue| !queue.provider.is_empty());
        let rates = if has_rates {
            let sends = snapshot.queues.iter().map(|queue| queue.sends_per_s).sum();
            let errors = snapshot.queues.iter().map(|queue| queue.errors_per_s).sum();
            Some((sends, errors))
        } else {
            previous.and_then(|previous| rates_between(previous, snapshot))
        };
        let Some((sends, errors)) = rates else { return };

        for (series, value) in [(&mut self.sends_per_s, sends), (&mut self.errors_per_s, errors)] {
            if series.len() == HISTORY_LEN {
                series.pop_front();
            }
            series.push_back(value);
        }
    }
}

/// Returns the sends and failures per second between two snapshots, from their counts and
/// engine clocks, or `None` when a clock does not parse or does not move forward.
fn rates_between(earlier: &AdminSnapshot, later: &AdminSnapshot) -> Option<(f64, f64)> {
    let instant = |snapshot: &AdminSnapshot| DateTime::parse_from_rfc3339(&snapshot.now).ok();
    let elapsed = (instant(later)? - instant(earlier)?).as_seconds_f64();
    if elapsed <= 0.0 {
        return None;
    }
    let sum = |snapshot: &AdminSnapshot, count: fn(&QueueSummary) -> u64| -> u64 {
        snapshot.queues.iter().map(count).sum()
    };
    // A count can shrink, when retention deletes old follow-ups; that is no negative rate.
    let sent = sum(later, |queue| queue.sent).saturating_sub(sum(earlier, |queue| queue.sent));
    let failed =
        sum(later, |queue| queue.failed).saturating_sub(sum(earlier, |queue| queue.failed));
    Some((sent as f64 / elapsed, failed as f64 / elapsed))
}

/// Outcome of one snapshot request made outside the feed.
#[derive(Clone, Debug)]
pub enum PollOutcome {
    Snapshot(Arc<AdminSnapshot>),
    /// The request failed for the reason in the text.
    Failed(String),
}

/// The tenant the detail view shows and the engine's last response about it.
#[derive(Debug)]
pub struct DetailState {
    pub tenant: TenantId,
    pub name: String,
    pub detail: Option<TenantDetail>,
    pub error: Option<String>,
    /// Index of the selected connection in `detail.connections`.
    pub selected_connection: usize,
    answered_at: Option<Instant>,
    in_flight: bool,
}

/// The page of dead letters the failures view shows.
#[derive(Debug, Default)]
pub struct DeadLetterState {
    pub offset: u64,
    /// Dead letters per page, from the terminal's size.
    pub limit: u64,
    pub page: Option<DeadLetterPage>,
    pub error: Option<String>,
    answered_at: Option<Instant>,
    in_flight: Option<DeadLetterQuery>,
}

/// The operator console.
#[derive(Debug)]
pub struct App {
    /// Address of the engine shown on screen, without credentials.
    server: String,
    now: Instant,
    /// Latest snapshot received, kept while the engine is unreachable.
    snapshot: Option<Arc<AdminSnapshot>>,
    /// When the latest snapshot arrived.
    updated_at: Option<Instant>,
    link: LinkState,
    throughput: Throughput,
    view: View,
    input: InputMode,
    help: bool,
    tenants: TenantTable,
    detail: Option<DetailState>,
    dead_letters: DeadLetterState,
    /// The action waiting for `y` or `n`.
    confirm: Option<Action>,
    status: Option<Status>,
    /// Requests recorded and not yet taken by the event loop.
    outbox: Vec<Request>,
    viewport: Rect,
    quit: bool,
}

impl App {
    /// Creates a console for the engine at `server`, shown on screen as given, with a
    /// terminal of size `viewport`.
    pub fn new(server: impl Into<String>, viewport: Rect) -> Self {
        Self::starting_at(server, viewport, Instant::now())
    }

    /// Creates a console as [`App::new`] does, with its clock at `now`, so that tests can
    /// drive time.
    pub fn starting_at(server: impl Into<String>, viewport: Rect, now: Instant) -> Self {
        let mut app = Self {
            server: server.into(),
            now,
            snapshot: None,
            updated_at: None,
            link: LinkState::Connecting,
            throughput: Throughput::default(),
            view: View::default(),
            input: InputMode::Normal,
            help: false,
            tenants: TenantTable::default(),
            detail: None,
            dead_letters: DeadLetterState::default(),
            confirm: None,
            status: None,
            outbox: Vec::new(),
            viewport,
            quit: false,
        };
        app.resize(viewport);
        app
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn snapshot(&self) -> Option<&AdminSnapshot> {
        self.snapshot.as_deref()
    }

    pub fn updated_at(&self) -> Option<Instant> {
        self.updated_at
    }

    pub fn link(&self) -> &LinkState {
        &self.link
    }

    pub fn throughput(&self) -> &Throughput {
        &self.throughput
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn input_mode(&self) -> InputMode {
        self.input
    }

    pub fn help_visible(&self) -> bool {
        self.help
    }

    pub fn tenants(&self) -> &TenantTable {
        &self.tenants
    }

    pub fn detail(&self) -> Option<&DetailState> {
        self.detail.as_ref()
    }

    pub fn dead_letters(&self) -> &DeadLetterState {
        &self.dead_letters
    }

    /// Returns the action the confirmation dialog is open for, if any.
    pub fn pending_confirmation(&self) -> Option<&Action> {
        self.confirm.as_ref()
    }

    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// Returns whether the operator requested to quit.
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Returns the name of a tenant the console has seen, for tables that carry only ids.
    pub fn tenant_name(&self, tenant: TenantId) -> Option<&str> {
        if let Some(detail) = self.detail.as_ref().filter(|detail| detail.tenant == tenant) {
            return Some(&detail.name);
        }
        let snapshot = self.snapshot.as_deref()?;
        let in_snapshot = snapshot.tenants.iter().find(|summary| summary.id == tenant);
        let paused = snapshot.paused.iter().find(|item| item.tenant == tenant);
        in_snapshot.map(|summary| summary.name.as_str()).or(paused.map(|p| p.tenant_name.as_str()))
    }

    /// Draws the screen. It reads the state only, so a test can draw onto a `TestBackend`.
    pub fn render(&self, frame: &mut Frame) {
        view::render(self, frame);
    }

    /// Takes the requests recorded since the last call, for the event loop to send.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    /// Advances the console's clock to `now` and records the requests that came due: a
    /// debounced filter, a refresh of the rows on screen.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        if let Some(query) = self.tenants.next_request(now) {
            self.outbox.push(Request::TenantPage(query));
        }
        if self.view == View::Detail {
            self.request_detail_if_stale();
        }
        if self.view == View::Failures {
            self.request_dead_letters_if_stale();
        }
    }

    /// Takes one message of the feed.
    pub fn apply_feed(&mut self, update: FeedUpdate) {
        match update {
            FeedUpdate::Snapshot(snapshot) => {
                self.throughput.record(self.snapshot.as_deref(), &snapshot);
                self.tenants.set_snapshot_tenants(&snapshot.tenants);
                self.snapshot = Some(snapshot);
                self.updated_at = Some(self.now);
            }
            FeedUpdate::Link(state) => self.link = state,
        }
    }

    /// Takes the outcome of a snapshot request made by the caller, for callers that fetch
    /// snapshots themselves instead of running the feed.
    pub fn apply_poll(&mut self, outcome: PollOutcome) {
        match outcome {
            PollOutcome::Snapshot(snapshot) => self.apply_feed(FeedUpdate::Snapshot(snapshot)),
            PollOutcome::Failed(reason) => {
                self.apply_feed(FeedUpdate::Link(LinkState::Stopped { reason }));
            }
        }
    }

    /// Takes the engine's response to a request.
    pub fn apply_response(&mut self, response: Response) {
        match response {
            Response::TenantPage(query, result) => self.tenants.apply_page(query, result, self.now),
            Response::TenantDetail(tenant, result) => {
                let Some(detail) = self.detail.as_mut().filter(|detail| detail.tenant == tenant)
                else {
                    return;
                };
                detail.in_flight = false;
                detail.answered_at = Some(self.now);
                match result {
                    Ok(answer) => {
                        detail.name.clone_from(&answer.summary.name);
                        let last = answer.connections.len().saturating_sub(1);
                        detail.selected_connection = detail.selected_connection.min(last);
                        detail.detail = Some(answer);
                        detail.error = None;
                    }
                    Err(error) => detail.error = Some(error.to_string()),
                }
            }
            Response::DeadLetters(query, result) => {
                let state = &mut self.dead_letters;
                if state.in_flight.as_ref() == Some(&query) {
                    state.in_flight = None;
                }
                state.answered_at = Some(self.now);
                match result {
                    Ok(page) if query.offset == state.offset => {
                        state.page = Some(page);
                        state.error = None;
                    }
                    Ok(_) => {}
                    Err(error) => state.error = Some(error.to_string()),
                }
            }
            Response::Action(action, result) => self.apply_action_outcome(&action, result),
        }
    }

    fn apply_action_outcome(
        &mut self,
        action: &Action,
        result: Result<followup_core::api::ActionOutcome, crate::client::FetchError>,
    ) {
        self.status = Some(match result {
            Ok(outcome) => Status {
                text: format!(
                    "{}: {} affected (audit record {})",
                    action.done(),
                    outcome.affected,
                    outcome.audit_id
                ),
                error: false,
            },
            Err(error) => {
                Status { text: format!("failed to {}: {error}", action.attempted()), error: true }
            }
        });

        // Show the effect at once instead of at the next refresh.
        match self.view {
            View::Detail => self.request_detail(),
            View::Failures => self.request_dead_letters(),
            View::Tenants | View::Overview => {}
        }
    }

    /// Updates the state for one terminal event: a key press or a resize.
    pub fn handle_event(&mut self, event: &Event) {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.handle_key(*key),
            Event::Resize(width, height) => self.resize(Rect::new(0, 0, *width, *height)),
            _ => {}
        }
    }

    fn resize(&mut self, viewport: Rect) {
        self.viewport = viewport;
        self.tenants.set_page_rows(view::tenant_page_rows(viewport));
        let dead_rows = view::dead_letter_page_rows(viewport) as u64;
        if dead_rows != self.dead_letters.limit {
            self.dead_letters.limit = dead_rows.max(1);
            self.dead_letters.offset = 0;
            self.dead_letters.answered_at = None;
        }
    }

    fn handle_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.confirm.is_some() {
            self.handle_confirmation(key.code);
            return;
        }
        match self.input {
            InputMode::Normal => self.handle_command(key),
            InputMode::Filter => self.handle_filter_input(key.code),
        }
    }

    fn handle_confirmation(&mut self, code: KeyCode) {
        let Some(action) = self.confirm.take() else { return };
        match code {
            KeyCode::Char('y' | 'Y') => {
                self.status =
                    Some(Status { text: format!("sent: {}", action.attempted()), error: false });
                self.outbox.push(Request::Action(action));
            }
            KeyCode::Char('n' | 'N') | KeyCode::Esc => {
                self.status = Some(Status {
                    text: format!("cancelled: {}", action.attempted()),
                    error: false,
                });
            }
            // Any other key leaves the question open.
            _ => self.confirm = Some(action),
        }
    }

    fn handle_command(&mut self, key: KeyEvent) {
        if self.help {
            // The help overlay closes on its own keys and lets the rest through.
            if matches!(key.code, KeyCode::Esc | KeyCode::Char('?')) {
                self.help = false;
                return;
            }
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.switch_view(self.next_view(1)),
            KeyCode::BackTab => self.switch_view(self.next_view(-1)),
            KeyCode::Char('1') => self.switch_view(View::Overview),
            KeyCode::Char('2') => self.switch_view(View::Tenants),
            KeyCode::Char('3') => self.switch_view(View::Failures),
            KeyCode::Char('4') if self.detail.is_some() => self.switch_view(View::Detail),
            KeyCode::Char('/') => {
                self.switch_view(View::Tenants);
                self.input = InputMode::Filter;
            }
            KeyCode::Char('s') if self.view == View::Tenants => self.tenants.next_sort(),
            KeyCode::Enter if self.view == View::Tenants => self.open_detail(),
            KeyCode::Esc => self.back(),
            KeyCode::Char('p') => self.ask_pause_or_resume(true),
            KeyCode::Char('r') => self.ask_pause_or_resume(false),
            KeyCode::Char('R') => self.ask_retry(),
            code => self.navigate(code),
        }
    }

    fn handle_filter_input(&mut self, code: KeyCode) {
        match code {
            KeyCode::Enter => self.input = InputMode::Normal,
            KeyCode::Esc => {
                self.input = InputMode::Normal;
                self.tenants.set_filter("", self.now);
            }
            KeyCode::Backspace => {
                let mut filter = self.tenants.filter().to_owned();
                filter.pop();
                self.tenants.set_filter(&filter, self.now);
            }
            KeyCode::Char(character) => {
                let filter = format!("{}{character}", self.tenants.filter());
                self.tenants.set_filter(&filter, self.now);
            }
            code => self.navigate(code),
        }
    }

    /// Moves in the current view for the arrow, page and j/k keys.
    fn navigate(&mut self, code: KeyCode) {
        let step: isize = match code {
            KeyCode::Up | KeyCode::Char('k') => -1,
            KeyCode::Down | KeyCode::Char('j') => 1,
            KeyCode::PageUp => -1000,
            KeyCode::PageDown => 1000,
            KeyCode::Home => isize::MIN,
            KeyCode::End => isize::MAX,
            _ => return,
        };
        match self.view {
            View::Tenants => match step {
                -1 | 1 => self.tenants.move_selection(step),
                isize::MIN => self.tenants.select_first(),
                isize::MAX => self.tenants.select_last(),
                _ => self.tenants.move_page(step.signum()),
            },
            View::Failures => self.page_dead_letters(step),
            View::Detail => {
                if let Some(detail) = self.detail.as_mut() {
                    let count = detail.detail.as_ref().map_or(0, |d| d.connections.len());
                    let selected = detail.selected_connection.saturating_add_signed(step);
                    detail.selected_connection = selected.min(count.saturating_sub(1));
                }
            }
            View::Overview => {}
        }
    }

    fn page_dead_letters(&mut self, step: isize) {
        let state = &mut self.dead_letters;
        let total = state.page.as_ref().map_or(0, |page| page.total);
        let last_page = total.saturating_sub(1) / state.limit * state.limit;
        let offset = match step {
            isize::MIN => 0,
            isize::MAX => last_page,
            step if step < 0 => state.offset.saturating_sub(state.limit),
            _ => (state.offset + state.limit).min(last_page),
        };
        if offset != state.offset {
            state.offset = offset;
            self.request_dead_letters();
        }
    }

    fn next_view(&self, step: isize) -> View {
        let mut views = vec![View::Overview, View::Tenants, View::Failures];
        if self.detail.is_some() {
            views.push(View::Detail);
        }
        let index = views.iter().position(|view| *view == self.view).unwrap_or(0);
        let next = (index as isize + step).rem_euclid(views.len() as isize);
        views[usize::try_from(next).unwrap_or(0)]
    }

    fn switch_view(&mut self, view: View) {
        self.view = view;
        self.help = false;
        match view {
            View::Failures => self.request_dead_letters(),
            View::Detail => self.request_detail(),
            View::Overview | View::Tenants => {}
        }
    }

    fn back(&mut self) {
        match self.view {
            View::Detail => self.view = View::Tenants,
            View::Tenants if !self.tenants.filter().is_empty() => {
                self.tenants.set_filter("", self.now);
            }
            _ => self.status = None,
        }
    }

    fn open_detail(&mut self) {
        let Some(tenant) = self.tenants.selected_tenant() else { return };
        let same = self.detail.as_ref().is_some_and(|detail| detail.tenant == tenant.id);
        if !same {
            self.detail = Some(DetailState {
                tenant: tenant.id,
                name: tenant.name.clone(),
                detail: None,
                error: None,
                selected_connection: 0,
                answered_at: None,
                in_flight: false,
            });
        }
        self.switch_view(View::Detail);
    }

    /// Returns the tenant the keys p, r and R act on: the detail view's, or the selected row
    /// of the tenant table.
    fn target_tenant(&self) -> Option<(TenantId, String)> {
        match self.view {
            View::Detail => self.detail.as_ref().map(|detail| (detail.tenant, detail.name.clone())),
            View::Tenants => {
                self.tenants.selected_tenant().map(|tenant| (tenant.id, tenant.name.clone()))
            }
            View::Overview | View::Failures => None,
        }
    }

    fn ask_pause_or_resume(&mut self, pause: bool) {
        let Some((tenant, name)) = self.target_tenant() else {
            let text = "select a tenant first: p and r act in the tenant and detail views";
            self.status = Some(Status { text: text.to_owned(), error: true });
            return;
        };

        // In the detail view the keys act on the selected connection, if the tenant has any.
        let connection = (self.view == View::Detail)
            .then(|| self.detail.as_ref()?.detail.as_ref())
            .flatten()
            .and_then(|detail| {
                let selected = self.detail.as_ref().map_or(0, |d| d.selected_connection);
                detail.connections.get(selected)
            })
            .map(|connection| connection.provider.clone());
        let action = match (connection, pause) {
            (Some(provider), true) => Action::PauseConnection { tenant, name, provider },
            (Some(provider), false) => Action::ResumeConnection { tenant, name, provider },
            (None, true) => Action::PauseTenant { tenant, name },
            (None, false) => Action::ResumeTenant { tenant, name },
        };
        self.confirm = Some(action);
    }

    fn ask_retry(&mut self) {
        let tenant = self.target_tenant();
        if tenant.is_none() && matches!(self.view, View::Tenants | View::Detail) {
            // An empty table must not turn R into a retry of every tenant's dead letters.
            let text = "select a tenant first: R retries all dead letters only in the overview \
                        and the failures view";
            self.status = Some(Status { text: text.to_owned(), error: true });
            return;
        }
        let seen = match self.view {
            View::Detail => {
                self.detail.as_ref().and_then(|d| d.detail.as_ref()).map(|d| d.summary.dead)
            }
            View::Tenants => self.tenants.selected_tenant().map(|summary| summary.dead),
            View::Overview | View::Failures => self.snapshot.as_ref().map(|s| s.dead_letters),
        };
        self.confirm = Some(Action::RetryDeadLetters { tenant, seen });
    }

    fn request_detail(&mut self) {
        let Some(detail) = self.detail.as_mut() else { return };
        if !detail.in_flight {
            detail.in_flight = true;
            self.outbox.push(Request::TenantDetail(detail.tenant));
        }
    }

    fn request_detail_if_stale(&mut self) {
        let stale = self.detail.as_ref().is_some_and(|detail| {
            detail.answered_at.is_none_or(|at| self.now.duration_since(at) >= DETAIL_REFRESH)
        });
        if stale {
            self.request_detail();
        }
    }

    fn request_dead_letters(&mut self) {
        let state = &mut self.dead_letters;
        let query = DeadLetterQuery { tenant: None, offset: state.offset, limit: state.limit };
        if state.in_flight.as_ref() != Some(&query) {
            state.in_flight = Some(query.clone());
            self.outbox.push(Request::DeadLetters(query));
        }
    }

    fn request_dead_letters_if_stale(&mut self) {
        let state = &self.dead_letters;
        if state.answered_at.is_none_or(|at| self.now.duration_since(at) >= DETAIL_REFRESH) {
            self.request_dead_letters();
        }
    }
}
