//! The operator console reads a real engine's snapshot and draws it.

use followup_core::sensitive::Sensitive;
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_now_sequence};
use followup_tui::client::SnapshotClient;
use followup_tui::{App, PollOutcome};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

#[actix_rt::test]
async fn console_draws_the_engines_tenants() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("Northwind Traders", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = "email\na@example.com\nb@example.com\nc@example.com\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    let base = reqwest::Url::parse(&engine.running.url())?;
    let client = SnapshotClient::new(&base, Sensitive::new(OPERATOR_TOKEN.to_owned()))?;
    let snapshot = client.fetch().await?;
    let area = Rect::new(0, 0, 100, 20);
    let mut app = App::new(client.server(), area);
    app.apply_poll(PollOutcome::Snapshot(std::sync::Arc::new(snapshot)));
    let mut terminal = Terminal::new(TestBackend::new(area.width, area.height))?;
    terminal.draw(|frame| app.render(frame))?;

    let screen: Vec<String> = terminal
        .backend()
        .buffer()
        .content
        .chunks(usize::from(area.width))
        .map(|row| row.iter().map(|cell| cell.symbol()).collect())
        .collect();
    let tenant_row = screen.iter().find(|line| line.contains("Northwind Traders"));
    let tenant_row =
        tenant_row.unwrap_or_else(|| panic!("tenant not drawn:\n{}", screen.join("\n")));
    assert!(tenant_row.contains(" 3 "), "backlog of 3 not shown: {tenant_row}");
    assert!(screen.iter().any(|line| line.contains("email")), "queue table not drawn");
    assert!(!screen.join("\n").contains(OPERATOR_TOKEN), "the token is on screen");
    Ok(())
}
