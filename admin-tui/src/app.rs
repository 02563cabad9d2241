//! State of the console, key handling and the event loop.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use followup_core::api::{AdminSnapshot, TenantSummary};
use ratatui::layout::Rect;
use ratatui::{DefaultTerminal, Frame};
use tokio::sync::watch;

use crate::client::PollOutcome;
use crate::tenants::TenantOrder;
use crate::view;

/// Maximum wait for input before the screen is drawn again. Redrawing costs little because
/// ratatui sends only the cells that changed since the previous frame.
const FRAME_INTERVAL: Duration = Duration::from_millis(200);

/// Successful polls after a reconnection during which the status line shows "reconnected",
/// about five seconds at the one-second poll period.
const RECONNECTED_POLLS: u8 = 5;

/// State of the link to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// No poll has finished yet.
    Connecting,
    Connected,
    /// The engine responds again after a failure, and `polls_left` more successful polls show
    /// this state.
    Reconnected {
        polls_left: u8,
    },
    /// The last poll failed. The console keeps the last snapshot and keeps polling.
    Disconnected {
        reason: String,
    },
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

/// The operator console: the latest snapshot, the link state and what the operator chose to
/// see.
#[derive(Debug)]
pub struct App {
    /// Address of the engine shown on screen, without credentials.
    server: String,
    /// Latest snapshot received, kept while the engine is unreachable.
    snapshot: Option<Arc<AdminSnapshot>>,
    connection: Connection,
    tenants: TenantOrder,
    input: InputMode,
    help: bool,
    /// Index in the tenant order of the first row on screen.
    scroll: usize,
    /// Size of the terminal, which sets the length of a page.
    viewport: Rect,
    quit: bool,
}

impl App {
    /// Creates a console for the engine at `server`, shown on screen as given, with a
    /// terminal of size `viewport`.
    pub fn new(server: impl Into<String>, viewport: Rect) -> Self {
        Self {
            server: server.into(),
            snapshot: None,
            connection: Connection::Connecting,
            tenants: TenantOrder::default(),
            input: InputMode::Normal,
            help: false,
            scroll: 0,
            viewport,
            quit: false,
        }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn snapshot(&self) -> Option<&AdminSnapshot> {
        self.snapshot.as_deref()
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Returns the filter, sort key and row order of the tenant table.
    pub fn tenant_order(&self) -> &TenantOrder {
        &self.tenants
    }

    pub fn input_mode(&self) -> InputMode {
        self.input
    }

    pub fn help_visible(&self) -> bool {
        self.help
    }

    /// Returns the position in the tenant order of the first row on screen.
    pub fn scroll(&self) -> usize {
        self.scroll
    }

    /// Returns whether the operator requested to quit.
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Draws the screen. It reads the state only, so a test can draw onto a `TestBackend`.
    pub fn render(&self, frame: &mut Frame) {
        view::render(self, frame);
    }

    /// Applies the result of one poll: a new snapshot, or a failure that keeps the last one.
    pub fn apply_poll(&mut self, outcome: PollOutcome) {
        match outcome {
            PollOutcome::Snapshot(snapshot) => {
                self.connection = match &self.connection {
                    Connection::Disconnected { .. } if self.snapshot.is_some() => {
                        Connection::Reconnected { polls_left: RECONNECTED_POLLS }
                    }
                    Connection::Reconnected { polls_left } if *polls_left > 1 => {
                        Connection::Reconnected { polls_left: polls_left - 1 }
                    }
                    _ => Connection::Connected,
                };
                self.tenants.rebuild(&snapshot.tenants);
                self.snapshot = Some(snapshot);
                self.clamp_scroll();
            }
            PollOutcome::Failed(reason) => {
                self.connection = Connection::Disconnected { reason };
            }
        }
    }

    /// Updates the state for one terminal event: a key press or a resize.
    pub fn handle_event(&mut self, event: &Event) {
        match event {
            Event::Key(key) if key.kind == KeyEventKind::Press => self.handle_key(*key),
            Event::Resize(width, height) => {
                self.viewport = Rect::new(0, 0, *width, *height);
                self.clamp_scroll();
            }
            _ => {}
        }
    }

    fn handle_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.scroll_key(key.code) {
            return;
        }
        match self.input {
            InputMode::Normal => self.handle_command(key.code),
            InputMode::Filter => self.handle_filter_input(key.code),
        }
    }

    /// Scrolls for the navigation keys, which work in both modes, and returns whether `code`
    /// was one of them.
    fn scroll_key(&mut self, code: KeyCode) -> bool {
        let page = self.page_rows().max(1);
        self.scroll = match code {
            KeyCode::Up => self.scroll.saturating_sub(1),
            KeyCode::Down => self.scroll.saturating_add(1),
            KeyCode::PageUp => self.scroll.saturating_sub(page),
            KeyCode::PageDown => self.scroll.saturating_add(page),
            KeyCode::Home => 0,
            KeyCode::End => usize::MAX,
            _ => return false,
        };
        self.clamp_scroll();
        true
    }

    fn handle_command(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = !self.help,
            KeyCode::Esc if self.help => self.help = false,
            KeyCode::Esc => self.set_filter(""),
            KeyCode::Char('/') => {
                self.help = false;
                self.input = InputMode::Filter;
            }
            KeyCode::Char('s') => {
                let next = self.tenants.sort().next();
                self.tenants.set_sort(next, tenant_list(&self.snapshot));
                self.scroll = 0;
            }
            KeyCode::Char('k') => _ = self.scroll_key(KeyCode::Up),
            KeyCode::Char('j') => _ = self.scroll_key(KeyCode::Down),
            _ => {}
        }
    }

    fn handle_filter_input(&mut self, code: KeyCode) {
        match code {
            KeyCode::Enter => self.input = InputMode::Normal,
            KeyCode::Esc => {
                self.input = InputMode::Normal;
                self.set_filter("");
            }
            KeyCode::Backspace => {
                let mut filter = self.tenants.filter().to_owned();
                filter.pop();
                self.set_filter(&filter);
            }
            KeyCode::Char(character) => {
                let filter = format!("{}{character}", self.tenants.filter());
                self.set_filter(&filter);
            }
            _ => {}
        }
    }

    fn set_filter(&mut self, filter: &str) {
        self.tenants.set_filter(filter, tenant_list(&self.snapshot));
        self.scroll = 0;
    }

    fn page_rows(&self) -> usize {
        let queue_count = self.snapshot.as_ref().map_or(0, |snapshot| snapshot.queues.len());
        view::tenant_page_rows(self.viewport, queue_count)
    }

    /// Keeps the last page full: scrolling stops when the last tenant is on the bottom row.
    fn clamp_scroll(&mut self) {
        let max = self.tenants.rows().len().saturating_sub(self.page_rows());
        self.scroll = self.scroll.min(max);
    }

    /// Runs the console until the operator quits: draws a frame at least every
    /// [`FRAME_INTERVAL`], applies each new poll outcome and handles keys.
    pub fn run(
        mut self,
        terminal: &mut DefaultTerminal,
        mut updates: watch::Receiver<Option<PollOutcome>>,
    ) -> io::Result<()> {
        let size = terminal.size()?;
        self.viewport = Rect::new(0, 0, size.width, size.height);

        while !self.quit {
            self.apply_new_outcome(&mut updates);
            terminal.draw(|frame| self.render(frame))?;
            if event::poll(FRAME_INTERVAL)? {
                // Drain every queued event before the next frame, so that a held key or a
                // pasted filter does not draw one frame per character.
                loop {
                    self.handle_event(&event::read()?);
                    if self.quit || !event::poll(Duration::ZERO)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_new_outcome(&mut self, updates: &mut watch::Receiver<Option<PollOutcome>>) {
        match updates.has_changed() {
            Ok(true) => {
                let outcome = updates.borrow_and_update().clone();
                if let Some(outcome) = outcome {
                    self.apply_poll(outcome);
                }
            }
            Ok(false) => {}
            Err(_) => {
                // The poll task ended, which happens only if it panicked. Nothing will update
                // the screen again, so the status line reports it instead of stale figures.
                let reason = "the poll task stopped, so nothing updates: restart the console";
                let reason = reason.to_owned();
                if self.connection != (Connection::Disconnected { reason: reason.clone() }) {
                    self.apply_poll(PollOutcome::Failed(reason));
                }
            }
        }
    }
}

/// Returns the tenants of `snapshot`, none before the first one arrives.
fn tenant_list(snapshot: &Option<Arc<AdminSnapshot>>) -> &[TenantSummary] {
    snapshot.as_deref().map_or(&[], |snapshot| &snapshot.tenants)
}
