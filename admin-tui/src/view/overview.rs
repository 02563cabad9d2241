//! The overview: throughput sparklines, the queue table, lateness and paused items.

use followup_core::api::{AdminSnapshot, LatenessSummary, PausedItem, QueueSummary};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};

use super::format::{grouped, millis, rate, right, time_of_day};
use super::{TABLE_CHROME, bold};
use crate::app::App;

/// Width of the label and current figure left of each sparkline.
const SPARKLINE_LABEL_WIDTH: u16 = 18;

/// Draws the overview into `area`.
pub(super) fn render(app: &App, frame: &mut Frame, area: Rect) {
    let Some(snapshot) = app.snapshot() else {
        frame.render_widget(Paragraph::new("waiting for the first snapshot"), area);
        return;
    };

    let queue_height = u16::try_from(snapshot.queues.len()).unwrap_or(u16::MAX) + TABLE_CHROME;
    let [sends, errors, queues, lateness, paused] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(queue_height),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(area);

    let throughput = app.throughput();
    render_sparkline("sends/s", &throughput.sends_per_s, frame, sends);
    render_sparkline("errors/s", &throughput.errors_per_s, frame, errors);
    render_queues(&snapshot.queues, frame, queues);
    frame.render_widget(lateness_line(&snapshot.lateness), lateness);
    render_paused(snapshot, frame, paused);
}

/// Draws `label`, the latest value and a sparkline of the values that fit, newest on the
/// right.
fn render_sparkline(
    label: &str,
    series: &std::collections::VecDeque<f64>,
    frame: &mut Frame,
    area: Rect,
) {
    let [label_area, chart_area] =
        Layout::horizontal([Constraint::Length(SPARKLINE_LABEL_WIDTH), Constraint::Fill(1)])
            .areas(area);
    let latest = series.back().copied().unwrap_or(0.0);
    let text = Line::from(vec![
        Span::raw(format!("{label:<9}")),
        Span::styled(format!("{:>8} ", rate(latest)), bold()),
    ]);
    frame.render_widget(text, label_area);

    // The widget scales integer bars, so rates go in hundredths to keep small rates visible.
    let shown = series.len().min(usize::from(chart_area.width));
    let data: Vec<u64> = series
        .iter()
        .skip(series.len() - shown)
        .map(|value| (value * 100.0).round() as u64)
        .collect();
    frame.render_widget(Sparkline::default().data(&data), chart_area);
}

fn render_queues(queues: &[QueueSummary], frame: &mut Frame, area: Rect) {
    let header = Row::new([
        Cell::from("provider"),
        Cell::from("channel"),
        right("waiting"),
        right("due"),
        right("in flight"),
        right("sends/s"),
        right("errors/s"),
        right("limit waits/s"),
    ])
    .style(bold());
    let rows = queues.iter().map(|queue| {
        Row::new([
            Cell::from(queue.provider.as_str()),
            Cell::from(queue.channel.as_str()),
            right(grouped(queue.waiting)),
            right(grouped(queue.due)),
            right(grouped(queue.in_flight)),
            right(rate(queue.sends_per_s)),
            right(rate(queue.errors_per_s)),
            right(rate(queue.rate_limit_waits_per_s)),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(13),
    ];
    let table = Table::new(rows, widths).header(header).block(Block::bordered().title(" Queues "));
    frame.render_widget(table, area);
}

fn lateness_line(lateness: &LatenessSummary) -> Line<'static> {
    if lateness.samples == 0 {
        return Line::from(format!("lateness: no sends in the last {} s", lateness.window_seconds));
    }
    let mut spans = vec![Span::raw("lateness")];
    for (label, value) in [
        ("p50", lateness.p50_ms),
        ("p90", lateness.p90_ms),
        ("p99", lateness.p99_ms),
        ("max", lateness.max_ms),
    ] {
        spans.push(Span::raw(format!("  {label} ")));
        spans.push(Span::styled(millis(value), bold()));
    }
    spans.push(Span::raw(format!(
        "  {} sends in {} s",
        grouped(lateness.samples),
        lateness.window_seconds
    )));
    Line::from(spans)
}

fn render_paused(snapshot: &AdminSnapshot, frame: &mut Frame, area: Rect) {
    let block = Block::bordered().title(format!(" Paused ({}) ", snapshot.paused.len()));
    if snapshot.paused.is_empty() {
        frame.render_widget(Paragraph::new("nothing is paused").block(block), area);
        return;
    }
    let header = Row::new([
        Cell::from("tenant"),
        Cell::from("what"),
        Cell::from("reason"),
        Cell::from("since"),
    ])
    .style(bold());
    let rows = snapshot.paused.iter().map(paused_row);
    let widths =
        [Constraint::Fill(2), Constraint::Length(12), Constraint::Fill(3), Constraint::Length(8)];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

fn paused_row(item: &PausedItem) -> Row<'_> {
    Row::new([
        Cell::from(item.tenant_name.as_str()),
        Cell::from(item.provider.as_deref().unwrap_or("whole tenant")),
        Cell::from(item.reason.as_str()),
        Cell::from(item.since.as_ref().map(time_of_day).unwrap_or_default()),
    ])
}
