//! Drawing of the console's screens from the state of an [`App`].
//!
//! Text uses the terminal's default foreground and background, with bold and reverse for
//! emphasis, so the screen reads the same on dark and light themes. Red is the only colour,
//! an accent on failures, and every red text also states in words what is wrong.

mod detail;
mod failures;
mod format;
mod overview;
mod tenants;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::{App, InputMode, View};
use crate::feed::LinkState;
pub(crate) use format::grouped;
use format::{age, engine_clock};

/// Keys listed by the help overlay, as (keys, effect).
const HELP: [(&str, &str); 15] = [
    ("Tab S-Tab", "next or previous view"),
    ("1 2 3 4", "overview, tenants, failures, detail"),
    ("↑ ↓  k j", "select a tenant or a connection"),
    ("PgUp PgDn", "page tenants or dead letters"),
    ("Home End", "first or last row or page"),
    ("s", "sort tenants: backlog, name, failed, quota"),
    ("/", "filter tenants by name or id"),
    ("Enter", "open the tenant; stop typing the filter"),
    ("Esc", "back; clear the filter"),
    ("p", "pause the tenant, or the connection"),
    ("r", "resume the tenant, or the connection"),
    ("R", "retry dead letters: the tenant's or all"),
    ("y n", "confirm or cancel an action"),
    ("?", "show or hide this help"),
    ("q Ctrl-C", "quit"),
];

/// Width of the key column of the help overlay, in cells.
const HELP_KEY_WIDTH: usize = 11;

/// Rows of a bordered table that show no data: two borders and the column header.
pub(crate) const TABLE_CHROME: u16 = 3;

/// Rows of the screen outside the view's body: totals, link, tabs, status and footer.
const SCREEN_CHROME: u16 = 5;

pub(crate) fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// Style of text that reports a failure: red as an accent, bold so that it also stands out
/// on a terminal without colours.
pub(crate) fn alert() -> Style {
    bold().fg(Color::Red)
}

pub(crate) fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// The regions of the screen, top to bottom.
struct Areas {
    totals: Rect,
    link: Rect,
    tabs: Rect,
    body: Rect,
    status: Rect,
    footer: Rect,
}

impl Areas {
    fn split(area: Rect) -> Self {
        let [totals, link, tabs, body, status, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area);
        Self { totals, link, tabs, body, status, footer }
    }
}

fn body_height(viewport: Rect) -> u16 {
    viewport.height.saturating_sub(SCREEN_CHROME)
}

/// Returns how many tenant rows fit on a screen of size `viewport`, the length of one page.
pub(crate) fn tenant_page_rows(viewport: Rect) -> usize {
    usize::from(body_height(viewport).saturating_sub(TABLE_CHROME))
}

/// Returns how many dead letters fit on the failures view of a screen of size `viewport`.
pub(crate) fn dead_letter_page_rows(viewport: Rect) -> usize {
    usize::from(failures::dead_letter_rows(body_height(viewport)))
}

/// Draws the whole screen of `app` onto `frame`.
pub(crate) fn render(app: &App, frame: &mut Frame) {
    let areas = Areas::split(frame.area());

    render_totals(app, frame, areas.totals);
    render_link(app, frame, areas.link);
    render_tabs(app, frame, areas.tabs);
    match app.view() {
        View::Overview => overview::render(app, frame, areas.body),
        View::Tenants => tenants::render(app, frame, areas.body),
        View::Failures => failures::render(app, frame, areas.body),
        View::Detail => detail::render(app, frame, areas.body),
    }
    render_status(app, frame, areas.status);
    render_footer(app, frame, areas.footer);

    if app.help_visible() {
        render_help(frame);
    }
    if let Some(action) = app.pending_confirmation() {
        render_confirmation(&action.describe(), frame);
    }
}

/// Draws the totals on the left and the engine clock on the right.
fn render_totals(app: &App, frame: &mut Frame, area: Rect) {
    let Some(snapshot) = app.snapshot() else {
        frame.render_widget(Line::from("no snapshot yet"), area);
        return;
    };

    // The engine counts each state separately. The header groups them as the queue table
    // does, so waiting is pending plus retry, and failed includes dead follow-ups.
    let total = |states: &[&str]| -> u64 {
        states.iter().filter_map(|state| snapshot.totals.get(*state)).sum()
    };
    let figures = [
        ("waiting", total(&["pending", "retry"])),
        ("sent", total(&["sent"])),
        ("failed", total(&["failed", "dead"])),
        ("skipped", total(&["skipped"])),
        ("in doubt", total(&["in_doubt"])),
    ];
    let mut spans = Vec::new();
    for (label, value) in figures {
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::raw(format!("{label} ")));
        spans.push(Span::styled(grouped(value), bold()));
    }

    let totals = Line::from(spans);
    let room = usize::from(area.width).saturating_sub(totals.width() + 2);
    let clock = engine_clock(&snapshot.now, room);
    let clock_width = u16::try_from(clock.len()).unwrap_or(u16::MAX);
    let [left, right] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(clock_width)]).areas(area);
    frame.render_widget(totals, left);
    frame.render_widget(Line::from(clock).right_aligned(), right);
}

/// Draws how snapshots arrive, how old the figures on screen are and, while the link is
/// down, why and when the next attempt starts.
fn render_link(app: &App, frame: &mut Frame, area: Rect) {
    let server = app.server();
    let updated = app.updated_at().map_or_else(
        || "no update yet".to_owned(),
        |at| format!("updated {}", age(app.now().saturating_duration_since(at))),
    );
    let line = match app.link() {
        LinkState::Connecting => Line::from(format!("connecting to {server}")),
        LinkState::Streaming => Line::from(format!("live from {server} (event stream), {updated}")),
        LinkState::Polling => {
            Line::from(format!("polling {server} each second (no event stream), {updated}"))
        }
        LinkState::Retrying { attempt, retry_at, .. } => {
            // Round up, so the countdown reads 1 s until the attempt starts. The reason is on
            // the status line, where it has the whole width.
            let wait = retry_at.saturating_duration_since(app.now());
            let seconds = wait.as_millis().div_ceil(1000);
            Line::styled(
                format!("reconnecting to {server} in {seconds} s (attempt {attempt}), {updated}"),
                alert(),
            )
        }
        LinkState::Stopped { reason } => Line::styled(format!("stopped: {reason}"), alert()),
    };
    frame.render_widget(line, area);
}

fn render_tabs(app: &App, frame: &mut Frame, area: Rect) {
    let dead = app.snapshot().map_or(0, |snapshot| snapshot.dead_letters);
    let mut tabs = vec![
        (View::Overview, "1 Overview".to_owned()),
        (View::Tenants, "2 Tenants".to_owned()),
        (View::Failures, format!("3 Failures ({} dead)", grouped(dead))),
    ];
    if let Some(detail) = app.detail() {
        tabs.push((View::Detail, format!("4 {}", detail.name)));
    }

    let mut spans = Vec::new();
    for (view, label) in tabs {
        if !spans.is_empty() {
            spans.push(Span::raw(" "));
        }
        let style =
            if view == app.view() { selected().add_modifier(Modifier::BOLD) } else { Style::new() };
        spans.push(Span::styled(format!(" {label} "), style));
    }
    render_beside(Line::from(spans), "? help  q quit", frame, area);
}

/// Draws `left` and, if both fit with a cell between them, `hints` at the right edge. On a
/// narrow terminal the hints give way, because `left` says where the operator is.
fn render_beside(left: Line<'_>, hints: &str, frame: &mut Frame, area: Rect) -> Rect {
    let hints = Line::from(hints);
    let hints_width = u16::try_from(hints.width()).unwrap_or(u16::MAX);
    let left_width = u16::try_from(left.width()).unwrap_or(u16::MAX);
    if left_width.saturating_add(hints_width).saturating_add(1) > area.width {
        frame.render_widget(left, area);
        return area;
    }
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(hints_width)]).areas(area);
    frame.render_widget(left, left_area);
    frame.render_widget(hints.right_aligned(), right_area);
    left_area
}

/// Draws why the link is down while it is, and otherwise the outcome of the last action.
fn render_status(app: &App, frame: &mut Frame, area: Rect) {
    if let LinkState::Retrying { reason, .. } = app.link() {
        frame.render_widget(Line::styled(format!("last attempt failed: {reason}"), alert()), area);
    } else if let Some(status) = app.status() {
        let style = if status.error { alert() } else { bold() };
        frame.render_widget(Line::styled(status.text.as_str(), style), area);
    }
}

/// Draws what the view shows on the left and its keys on the right.
fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let typing = app.input_mode() == InputMode::Filter;
    let table = app.tenants();
    let left = match app.view() {
        View::Tenants => {
            let mut spans =
                vec![Span::raw("sort: "), Span::styled(table.sort().to_string(), bold())];
            if typing || !table.filter().is_empty() {
                spans.push(Span::raw("  filter: "));
                spans.push(Span::styled(table.filter().to_owned(), bold()));
            }
            Line::from(spans)
        }
        _ => Line::default(),
    };
    let hints = match app.view() {
        _ if typing => "Enter keep  Esc clear",
        View::Overview => "Tab views  R retry all dead letters",
        View::Tenants => "s sort  / filter  Enter open  p pause  r resume  R retry",
        View::Failures => "PgUp PgDn page  R retry all dead letters",
        View::Detail => "↑↓ connection  p pause  r resume  R retry  Esc back",
    };
    // While typing, the terminal cursor sits where the next character will appear.
    let typed = u16::try_from(left.width()).unwrap_or(u16::MAX);
    let left_area = render_beside(left, hints, frame, area);
    if typing {
        let column = left_area.x.saturating_add(typed).min(left_area.right().saturating_sub(1));
        frame.set_cursor_position((column, left_area.y));
    }
}

/// Draws the key list in a box over the middle of the screen.
fn render_help(frame: &mut Frame) {
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, effect)| {
            Line::from(vec![
                Span::styled(format!("{keys:<HELP_KEY_WIDTH$}"), bold()),
                Span::raw(*effect),
            ])
        })
        .collect();
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let area = frame.area().centered(Constraint::Length(56), Constraint::Length(height));

    frame.render_widget(Clear, area);
    let block = Block::bordered().title(" Keys ").title_bottom(" ? or Esc to close ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Draws the question of the confirmation dialog over the middle of the screen.
fn render_confirmation(question: &str, frame: &mut Frame) {
    let area = frame.area().centered(Constraint::Length(60), Constraint::Length(7));
    let keys = Line::from(vec![
        Span::styled("y", bold()),
        Span::raw(" do it    "),
        Span::styled("n", bold()),
        Span::raw(" or "),
        Span::styled("Esc", bold()),
        Span::raw(" cancel"),
    ]);
    let [text_area, keys_area] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)])
        .areas(area.inner(ratatui::layout::Margin::new(1, 1)));

    frame.render_widget(Clear, area);
    frame.render_widget(Block::bordered().title(" Confirm ").border_style(bold()), area);
    frame.render_widget(Paragraph::new(question).wrap(Wrap { trim: true }), text_area);
    frame.render_widget(keys, keys_area);
}
