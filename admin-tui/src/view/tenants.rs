//! The tenant table. Only the rows on screen are built, so the cost of a frame does not grow
//! with the number of tenants.

use followup_core::api::TenantSummary;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::format::{grouped, range, right};
use super::{alert, bold, selected};
use crate::app::App;
use crate::tenants::{RowSource, Slot, TenantTable};

/// Draws the tenant table into `area`.
pub(super) fn render(app: &App, frame: &mut Frame, area: Rect) {
    let table = app.tenants();
    let Some(snapshot) = app.snapshot() else {
        let block = Block::bordered().title(" Tenants ");
        frame.render_widget(Paragraph::new("waiting for the first snapshot").block(block), area);
        return;
    };

    let visible = table.visible();
    let mut block = Block::bordered().title(title(
        table,
        visible.len(),
        snapshot.tenant_count.max(snapshot.tenants.len() as u64),
    ));
    if let Some(error) = table.error() {
        block = block
            .title_bottom(ratatui::text::Line::styled(format!(" pages failed: {error} "), alert()));
    }
    if visible.is_empty() {
        let message = if table.filter().is_empty() {
            "no tenants".to_owned()
        } else {
            format!("no tenant id or name contains {:?}", table.filter())
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
        right("dead"),
        right("held"),
        right("quota"),
        Cell::from("paused"),
    ])
    .style(bold());
    let rows = visible.iter().enumerate().map(|(index, slot)| {
        let row = match slot {
            Slot::Tenant(tenant) => tenant_row(tenant),
            Slot::Loading => Row::new([Cell::from("…")]),
        };
        if table.scroll() + index == table.selected() { row.style(selected()) } else { row }
    });
    let widths = [
        Constraint::Fill(3),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Fill(2),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

/// Returns the table's title: the rows shown, of how many, and from where.
fn title(table: &TenantTable, shown: usize, tenant_count: u64) -> String {
    let first = table.scroll() as u64;
    let range = range(first, shown as u64);
    let total = grouped(table.total() as u64);
    let mut title = match table.source() {
        RowSource::Pages if table.filter().is_empty() => format!(" Tenants {range} of {total}"),
        RowSource::Pages => format!(" Tenants {range} of {total} matching"),
        // The snapshot lists only the first tenants by backlog.
        RowSource::Snapshot | RowSource::SnapshotOnly => {
            let mut title = format!(" Tenants {range} of {total} in the snapshot");
            if tenant_count > table.total() as u64 || !table.filter().is_empty() {
                title.push_str(&format!(", {} in all", grouped(tenant_count)));
            }
            title
        }
    };
    if table.source() == RowSource::SnapshotOnly {
        title.push_str(", no paging on this engine");
    } else if table.loading() {
        title.push_str(", loading");
    }
    title.push(' ');
    title
}

fn tenant_row(tenant: &TenantSummary) -> Row<'_> {
    // A tenant paused as a whole says so first; its paused connections follow.
    let mut paused = Vec::new();
    if let Some(reason) = &tenant.paused_reason {
        paused.push(format!("tenant: {reason}"));
    }
    paused.extend(tenant.paused_connections.iter().cloned());
    Row::new([
        Cell::from(tenant.name.as_str()),
        Cell::from(tenant.plan.as_str()),
        right(grouped(tenant.backlog)),
        right(grouped(tenant.sent)),
        right(grouped(tenant.failed)),
        right(grouped(tenant.dead)),
        right(grouped(tenant.held)),
        // The largest share of a channel's monthly quota taken; unknown plan, no figure.
        right(tenant.quota_used_percent.map_or_else(|| "-".to_owned(), |p| format!("{p}%"))),
        Cell::from(paused.join("; ")),
    ])
}
