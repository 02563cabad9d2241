//! The detail view of one tenant: figures, states, quota use, connections and failures.

use followup_core::api::{ConnectionSummary, TenantDetail};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::format::{grouped, right, time_of_day};
use super::{TABLE_CHROME, alert, bold, selected};
use crate::app::{App, DetailState};

/// Draws the detail view into `area`.
pub(super) fn render(app: &App, frame: &mut Frame, area: Rect) {
    let Some(state) = app.detail() else {
        frame
            .render_widget(Paragraph::new("no tenant open: press Enter on the tenant table"), area);
        return;
    };
    let Some(detail) = &state.detail else {
        let text = match &state.error {
            Some(error) => {
                Line::styled(format!("detail of {} failed: {error}", state.name), alert())
            }
            None => Line::from(format!("loading the detail of {}", state.name)),
        };
        frame.render_widget(Paragraph::new(text), area);
        return;
    };

    let connection_height =
        u16::try_from(detail.connections.len().max(1)).unwrap_or(u16::MAX) + TABLE_CHROME;
    let [summary, connections, failures] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(connection_height),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(summary_lines(detail)), summary);
    render_connections(state, detail, frame, connections);
    render_failures(detail, frame, failures);
}

fn summary_lines(detail: &TenantDetail) -> Vec<Line<'_>> {
    let summary = &detail.summary;
    let mut first = vec![
        Span::styled(summary.name.as_str(), bold()),
        Span::raw(format!("  plan {}  id {}", summary.plan, summary.id)),
    ];
    if let Some(reason) = &summary.paused_reason {
        first.push(Span::styled(format!("  PAUSED: {reason}"), alert()));
    }

    let quota = summary.quota_used_percent.map_or_else(|| "-".to_owned(), |p| format!("{p}%"));
    let figures = format!(
        "backlog {}  sent {}  failed {}  dead {}  held {}  quota {quota}",
        grouped(summary.backlog),
        grouped(summary.sent),
        grouped(summary.failed),
        grouped(summary.dead),
        grouped(summary.held),
    );
    let states: Vec<String> =
        detail.states.iter().map(|(state, count)| format!("{state} {}", grouped(*count))).collect();
    let usage: Vec<String> = detail
        .usage
        .iter()
        .map(|usage| match usage.limit {
            Some(limit) => {
                format!("{} {} of {}", usage.channel, grouped(usage.used), grouped(limit))
            }
            None => format!("{} {} (no limit)", usage.channel, grouped(usage.used)),
        })
        .collect();
    vec![
        Line::from(first),
        Line::from(figures),
        Line::from(format!("states: {}", states.join("  "))),
        Line::from(format!("usage this period: {}", usage.join("  "))),
    ]
}

fn render_connections(state: &DetailState, detail: &TenantDetail, frame: &mut Frame, area: Rect) {
    let mut block = Block::bordered().title(" Connections ");
    if let Some(error) = &state.error {
        block = block.title_bottom(Line::styled(format!(" refresh failed: {error} "), alert()));
    }
    if detail.connections.is_empty() {
        frame.render_widget(Paragraph::new("no connection").block(block), area);
        return;
    }
    let header = Row::new([
        Cell::from("provider"),
        right("per minute"),
        right("per day"),
        Cell::from("state"),
    ])
    .style(bold());
    let rows = detail.connections.iter().enumerate().map(|(index, connection)| {
        let row = connection_row(connection);
        if index == state.selected_connection { row.style(selected()) } else { row }
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Fill(1),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

fn connection_row(connection: &ConnectionSummary) -> Row<'_> {
    let state = connection
        .paused_reason
        .as_ref()
        .map_or_else(|| "sending".to_owned(), |reason| format!("paused: {reason}"));
    Row::new([
        Cell::from(connection.provider.as_str()),
        right(grouped(u64::from(connection.per_minute))),
        right(grouped(u64::from(connection.per_day))),
        Cell::from(state),
    ])
}

fn render_failures(detail: &TenantDetail, frame: &mut Frame, area: Rect) {
    let block = Block::bordered().title(" Recent failures of this tenant ");
    if detail.recent_failures.is_empty() {
        frame.render_widget(Paragraph::new("no failed attempt recently").block(block), area);
        return;
    }
    let header = Row::new(["at", "provider", "channel", "kind", "reason"]).style(bold());
    let rows = detail.recent_failures.iter().map(|failure| {
        Row::new([
            Cell::from(time_of_day(&failure.at)),
            Cell::from(failure.provider.as_str()),
            Cell::from(failure.channel.as_str()),
            Cell::from(failure.kind.as_str()),
            Cell::from(failure.reason.as_str()),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}
