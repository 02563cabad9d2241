//! The failures view: the snapshot's recent failures above a page of dead letters.

use followup_core::api::{DeadLetter, FailureRecord};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::format::{day_and_time, grouped, range, right, time_of_day};
use super::{TABLE_CHROME, alert, bold};
use crate::app::App;

/// Recent failures shown above the dead letters; the snapshot carries only the newest few.
const RECENT_FAILURE_ROWS: u16 = 5;

/// Returns how many dead letters fit under the recent failures in a body `height` rows high.
pub(super) fn dead_letter_rows(height: u16) -> u16 {
    height.saturating_sub(RECENT_FAILURE_ROWS + TABLE_CHROME).saturating_sub(TABLE_CHROME)
}

/// Draws the failures view into `area`.
pub(super) fn render(app: &App, frame: &mut Frame, area: Rect) {
    let [recent, dead] = Layout::vertical([
        Constraint::Length(RECENT_FAILURE_ROWS + TABLE_CHROME),
        Constraint::Fill(1),
    ])
    .areas(area);
    render_recent(app, frame, recent);
    render_dead_letters(app, frame, dead);
}

fn render_recent(app: &App, frame: &mut Frame, area: Rect) {
    let failures = app.snapshot().map_or(&[][..], |snapshot| &snapshot.recent_failures);
    let block = Block::bordered().title(" Recent failures ");
    if failures.is_empty() {
        frame.render_widget(Paragraph::new("no failed attempt recently").block(block), area);
        return;
    }
    let header = Row::new(["at", "tenant", "provider", "channel", "kind", "reason"]).style(bold());
    let rows = failures
        .iter()
        .take(usize::from(RECENT_FAILURE_ROWS))
        .map(|failure| failure_row(app, failure));
    let widths = [
        Constraint::Length(8),
        Constraint::Fill(2),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Fill(3),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

fn failure_row<'a>(app: &'a App, failure: &'a FailureRecord) -> Row<'a> {
    Row::new([
        Cell::from(time_of_day(&failure.at)),
        Cell::from(tenant_label(app, failure.tenant)),
        Cell::from(failure.provider.as_str()),
        Cell::from(failure.channel.as_str()),
        Cell::from(failure.kind.as_str()),
        Cell::from(failure.reason.as_str()),
    ])
}

/// Returns the tenant's name if the console has seen it, else its id.
///
/// NOTE: failure records and dead letters carry no tenant name, so a tenant outside the
/// snapshot's first page and the open detail shows as its id.
pub(super) fn tenant_label(app: &App, tenant: followup_core::ids::TenantId) -> String {
    app.tenant_name(tenant).map_or_else(|| tenant.to_string(), str::to_owned)
}

fn render_dead_letters(app: &App, frame: &mut Frame, area: Rect) {
    let state = app.dead_letters();
    let Some(page) = &state.page else {
        let block = Block::bordered().title(" Dead letters ");
        let text = match &state.error {
            Some(error) => Line::styled(format!("dead letters failed: {error}"), alert()),
            None => Line::from("loading dead letters"),
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    };

    let shown = page.dead_letters.len() as u64;
    let mut block = Block::bordered().title(format!(
        " Dead letters {} of {} ",
        range(page.offset, shown),
        grouped(page.total)
    ));
    if let Some(error) = &state.error {
        block = block.title_bottom(Line::styled(format!(" refresh failed: {error} "), alert()));
    }
    if page.dead_letters.is_empty() {
        frame.render_widget(Paragraph::new("no dead letters").block(block), area);
        return;
    }
    let header = Row::new([
        Cell::from("failed at"),
        Cell::from("tenant"),
        Cell::from("channel"),
        right("tries"),
        Cell::from("reason"),
    ])
    .style(bold());
    let rows = page.dead_letters.iter().map(|dead| dead_letter_row(app, dead));
    let widths = [
        Constraint::Length(14),
        Constraint::Fill(2),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Fill(3),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

fn dead_letter_row<'a>(app: &'a App, dead: &'a DeadLetter) -> Row<'a> {
    Row::new([
        Cell::from(dead.failed_at.as_ref().map(day_and_time).unwrap_or_default()),
        Cell::from(tenant_label(app, dead.tenant)),
        Cell::from(dead.channel.as_str()),
        right(dead.attempts.to_string()),
        Cell::from(dead.reason.as_str()),
    ])
}
