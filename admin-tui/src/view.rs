//! Drawing of the console's screen from the state of an [`App`].
//!
//! Styles use only the terminal's default colors with bold and reverse, so that the screen
//! reads the same on dark and light themes.

use chrono::{DateTime, Utc};
use followup_core::api::{AdminSnapshot, QueueSummary, TenantSummary};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};

use crate::app::{App, Connection, InputMode};

/// Keys listed by the help overlay, as (keys, effect).
const HELP: [(&str, &str); 10] = [
    ("↑ ↓  k j", "scroll one row"),
    ("PgUp PgDn", "scroll one page"),
    ("Home End", "first or last row"),
    ("s", "sort by backlog, name or sent"),
    ("/", "filter tenants by name"),
    ("Enter", "stop typing, keep the filter"),
    ("Esc", "clear the filter"),
    ("?", "show or hide this help"),
    ("q", "quit"),
    ("Ctrl-C", "quit, also while typing"),
];

/// Width of the key column of the help overlay, in cells.
const HELP_KEY_WIDTH: usize = 11;

/// Rows of the tenant table's frame that show no tenant: two borders and the column header.
const TENANT_TABLE_CHROME: u16 = 3;

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// The regions of the main screen, top to bottom.
#[derive(Clone, Copy, Debug)]
struct Areas {
    totals: Rect,
    connection: Rect,
    queues: Rect,
    tenants: Rect,
    footer: Rect,
}

impl Areas {
    fn split(area: Rect, queue_count: usize) -> Self {
        // Two borders and the column header around one row per channel.
        let queue_height = u16::try_from(queue_count).unwrap_or(u16::MAX).saturating_add(3);
        let [totals, connection, queues, tenants, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(queue_height),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        Self { totals, connection, queues, tenants, footer }
    }
}

/// Returns how many tenant rows fit on a screen of size `area`, the length of one page.
pub(crate) fn tenant_page_rows(area: Rect, queue_count: usize) -> usize {
    let tenants = Areas::split(area, queue_count).tenants;
    usize::from(tenants.height.saturating_sub(TENANT_TABLE_CHROME))
}

/// Draws the whole screen of `app` onto `frame`.
pub(crate) fn render(app: &App, frame: &mut Frame) {
    let snapshot = app.snapshot();
    let queue_count = snapshot.map_or(0, |snapshot| snapshot.queues.len());
    let areas = Areas::split(frame.area(), queue_count);

    render_totals(snapshot, frame, areas.totals);
    render_connection(app, frame, areas.connection);
    render_queues(snapshot.map_or(&[], |snapshot| &snapshot.queues), frame, areas.queues);
    render_tenants(app, frame, areas.tenants);
    render_footer(app, frame, areas.footer);

    if app.help_visible() {
        render_help(frame);
    }
}

/// Draws the totals on the left and the engine clock on the right.
fn render_totals(snapshot: Option<&AdminSnapshot>, frame: &mut Frame, area: Rect) {
    let Some(snapshot) = snapshot else {
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

fn render_connection(app: &App, frame: &mut Frame, area: Rect) {
    let server = app.server();
    let line = match app.connection() {
        Connection::Connecting => Line::from(format!("connecting to {server}")),
        Connection::Connected => Line::from(format!("connected to {server}")),
        Connection::Reconnected { .. } => Line::styled(format!("reconnected to {server}"), bold()),
        // The figures of the last snapshot stay on screen, and the engine clock in the header
        // shows how old they are.
        Connection::Disconnected { reason } => Line::styled(
            format!("disconnected: {reason}, retrying"),
            bold().add_modifier(Modifier::REVERSED),
        ),
    };
    frame.render_widget(line, area);
}

fn render_queues(queues: &[QueueSummary], frame: &mut Frame, area: Rect) {
    let header =
        Row::new([Cell::from("channel"), right("waiting"), right("sent"), right("failed")])
            .style(bold());
    let rows = queues.iter().map(|queue| {
        Row::new([
            Cell::from(queue.channel.as_str()),
            right(grouped(queue.waiting)),
            right(grouped(queue.sent)),
            right(grouped(queue.failed)),
        ])
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(11),
    ];
    let table = Table::new(rows, widths).header(header).block(Block::bordered().title(" Queues "));
    frame.render_widget(table, area);
}

/// Draws the visible page of the tenant table. Only the rows on screen are built, so the cost
/// of a frame does not grow with the number of tenants.
fn render_tenants(app: &App, frame: &mut Frame, area: Rect) {
    let page_rows = usize::from(area.height.saturating_sub(TENANT_TABLE_CHROME));
    let order = app.tenant_order().rows();
    let first = app.scroll().min(order.len().saturating_sub(page_rows));
    let last = (first + page_rows).min(order.len());

    let Some(snapshot) = app.snapshot() else {
        let block = Block::bordered().title(" Tenants ");
        frame.render_widget(Paragraph::new("waiting for the first snapshot").block(block), area);
        return;
    };

    let title = tenant_title(first, last, order.len(), snapshot.tenants.len());
    let block = Block::bordered().title(title);
    if order.is_empty() {
        let message = if app.tenant_order().filter().is_empty() {
            "no tenants".to_owned()
        } else {
            format!("no tenant name contains {:?}", app.tenant_order().filter())
        };
        frame.render_widget(Paragraph::new(message).block(block), area);
        return;
    }

    let header = Row::new([
        Cell::from("name"),
        Cell::from("plan"),
        right("backlog"),
        right("sent"),
        right("failed"),
        right("held"),
        right("quota"),
        Cell::from("paused connections"),
    ])
    .style(bold());
    let rows = order[first..last].iter().map(|&index| tenant_row(&snapshot.tenants[index]));
    let widths = [
        Constraint::Fill(3),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Fill(2),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

/// Returns the title of the tenant table, such as ` Tenants 1-20 of 3,000 `.
fn tenant_title(first: usize, last: usize, matching: usize, total: usize) -> String {
    let range = if matching == 0 {
        "0".to_owned()
    } else {
        format!("{}-{}", grouped(first as u64 + 1), grouped(last as u64))
    };
    if matching == total {
        format!(" Tenants {range} of {} ", grouped(matching as u64))
    } else {
        format!(
            " Tenants {range} of {} matching, {} in all ",
            grouped(matching as u64),
            grouped(total as u64)
        )
    }
}

fn tenant_row(tenant: &TenantSummary) -> Row<'_> {
    Row::new([
        Cell::from(tenant.name.as_str()),
        Cell::from(tenant.plan.as_str()),
        right(grouped(tenant.backlog)),
        right(grouped(tenant.sent)),
        right(grouped(tenant.failed)),
        right(grouped(tenant.held)),
        // The largest share of a channel's monthly quota taken; unknown plan, no figure.
        right(tenant.quota_used_percent.map_or_else(|| "-".to_owned(), |p| format!("{p}%"))),
        Cell::from(tenant.paused_connections.join("; ")),
    ])
}

/// Draws the sort key, the filter and the key hints.
fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let order = app.tenant_order();
    let mut spans = vec![Span::raw("sort: "), Span::styled(order.sort().to_string(), bold())];
    let typing = app.input_mode() == InputMode::Filter;
    if typing || !order.filter().is_empty() {
        spans.push(Span::raw("  filter: "));
        spans.push(Span::styled(order.filter().to_owned(), bold()));
    }
    let left = Line::from(spans);

    let hints = if typing { "Enter keep  Esc clear" } else { "s sort  / filter  ? help  q quit" };
    let hints_width = u16::try_from(hints.len()).unwrap_or(u16::MAX);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(hints_width)]).areas(area);

    // While typing, the terminal cursor sits where the next character will appear.
    if typing {
        let typed = u16::try_from(left.width()).unwrap_or(u16::MAX);
        let column = left_area.x.saturating_add(typed).min(left_area.right().saturating_sub(1));
        frame.set_cursor_position((column, left_area.y));
    }
    frame.render_widget(left, left_area);
    frame.render_widget(Line::from(hints).right_aligned(), right_area);
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
    let area = frame.area().centered(Constraint::Length(46), Constraint::Length(height));

    frame.render_widget(Clear, area);
    let block = Block::bordered().title(" Keys ").title_bottom(" ? or Esc to close ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Returns a cell whose text sits at the right edge, for numbers.
fn right<'a>(text: impl Into<String>) -> Cell<'a> {
    Cell::from(Line::from(text.into()).right_aligned())
}

/// Formats `value` with a comma between groups of three digits, such as `1,234,567`.
pub(crate) fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Formats the engine's RFC 3339 instant `now` as UTC in at most `room` cells: with the date
/// when it fits, the time of day only when not, and nothing on a very narrow terminal. An
/// instant that does not parse is shown as received.
fn engine_clock(now: &str, room: usize) -> String {
    let candidates = match DateTime::parse_from_rfc3339(now) {
        Ok(instant) => {
            let utc = instant.with_timezone(&Utc);
            vec![
                utc.format("engine clock %Y-%m-%d %H:%M:%S UTC").to_string(),
                utc.format("clock %H:%M:%S UTC").to_string(),
            ]
        }
        Err(_) => vec![format!("engine clock {now}")],
    };
    candidates.into_iter().find(|text| text.len() <= room).unwrap_or_default()
}
