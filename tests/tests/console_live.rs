//! The operator console against a real engine: its feed, its requests and its screen, with a
//! `TestBackend` in place of the terminal.
//!
//! The engine may lack the event stream and the tenant pages (an engine older than them
//! answers 404): the console then polls the snapshot and sorts and filters the snapshot's
//! tenants itself, and this test passes either way.

use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use followup_core::sensitive::Sensitive;
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_now_sequence};
use followup_tui::requests::execute;
use followup_tui::{AdminClient, App, Backoff, LinkState, View, spawn_feed_with};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

const AREA: Rect = Rect { x: 0, y: 0, width: 100, height: 24 };

fn screen(app: &App) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(AREA.width, AREA.height)).expect("terminal");
    terminal.draw(|frame| app.render(frame)).expect("draw");
    terminal
        .backend()
        .buffer()
        .content
        .chunks(usize::from(AREA.width))
        .map(|row| row.iter().map(|cell| cell.symbol()).collect())
        .collect()
}

fn press(app: &mut App, code: KeyCode) {
    app.handle_event(&Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

/// Runs the console's loop without a terminal until `done` holds for its screen, for at most
/// 10 s: feed updates in, requests out to the engine, answers back in.
async fn run_until(
    app: &mut App,
    feed: &mut tokio::sync::mpsc::Receiver<followup_tui::FeedUpdate>,
    client: &AdminClient,
    done: impl Fn(&App, &[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Ok(update) = feed.try_recv() {
            app.apply_feed(update);
        }
        app.tick(Instant::now());
        for request in app.take_requests() {
            app.apply_response(execute(client, request).await);
        }
        let lines = screen(app);
        if done(app, &lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "console not ready in 10 s:\n{}", lines.join("\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn console_shows_engine_tenants() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    for (name, contacts) in [("Northwind Traders", 3), ("Contoso", 1)] {
        let key = engine.create_tenant(name, "pro").await?;
        let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
        let csv: String = std::iter::once("email\n".to_owned())
            .chain((0..contacts).map(|n| format!("c{n}@example.com\n")))
            .collect();
        engine.upload(&key, &sequence, "text/csv", csv).await?;
    }

    let base = reqwest::Url::parse(&engine.running.url())?;
    assert!(base.host_str() == Some("127.0.0.1"), "the engine listens on loopback: {base}");
    let client = AdminClient::new(&base, Sensitive::new(OPERATOR_TOKEN.to_owned()))?;
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    let mut feed = spawn_feed_with(client.clone(), backoff, Duration::from_millis(100));
    let mut app = App::new(client.server(), AREA);
    press(&mut app, KeyCode::Char('2'));
    assert_eq!(app.view(), View::Tenants);

    let shows_both = |_: &App, lines: &[String]| {
        lines.iter().any(|line| line.contains("Northwind Traders"))
            && lines.iter().any(|line| line.contains("Contoso"))
    };
    let lines = run_until(&mut app, &mut feed, &client, shows_both).await;
    assert!(
        matches!(app.link(), LinkState::Streaming | LinkState::Polling),
        "link: {:?}",
        app.link()
    );
    let row = |name: &str| {
        let line = lines.iter().find(|line| line.contains(name)).expect("row drawn");
        line.split_whitespace().map(str::to_owned).collect::<Vec<_>>()
    };
    // name, plan, backlog, sent, failed, dead, held, quota: the uploads wait on a virtual
    // clock that does not move, so each contact is one follow-up in the backlog.
    assert_eq!(row("Northwind Traders")[2..5], ["pro", "3", "0"], "{lines:#?}");
    assert_eq!(row("Contoso")[1..4], ["pro", "1", "0"], "{lines:#?}");
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|line| ["Northwind Traders", "Contoso"].into_iter().find(|n| line.contains(n)))
        .collect();
    assert_eq!(names, ["Northwind Traders", "Contoso"], "largest backlog first");

    // Typing a filter narrows the table, on the engine or in the console.
    press(&mut app, KeyCode::Char('/'));
    for character in "contoso".chars() {
        press(&mut app, KeyCode::Char(character));
    }
    let only_contoso = |app: &App, lines: &[String]| {
        !app.tenants().loading()
            && lines.iter().any(|line| line.contains("Contoso"))
            && !lines.iter().any(|line| line.contains("Northwind"))
    };
    let lines = run_until(&mut app, &mut feed, &client, only_contoso).await;

    let everything = lines.join("\n");
    assert!(!everything.contains(OPERATOR_TOKEN), "the token is on screen");
    Ok(())
}

#[actix_rt::test]
async fn console_reconnects_after_engine_restart() -> anyhow::Result<()> {
    let first = TestEngine::start(|_| {}).await?;
    first.create_tenant("Northwind Traders", "pro").await?;
    let base = reqwest::Url::parse(&first.running.url())?;
    let address: std::net::SocketAddr =
        format!("{}:{}", base.host_str().unwrap_or_default(), base.port().unwrap_or_default())
            .parse()?;
    assert!(address.ip().is_loopback(), "the engine listens on loopback: {address}");

    let client = AdminClient::new(&base, Sensitive::new(OPERATOR_TOKEN.to_owned()))?;
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    let mut feed = spawn_feed_with(client.clone(), backoff, Duration::from_millis(100));
    let mut app = App::new(client.server(), AREA);
    press(&mut app, KeyCode::Char('2'));
    let shows = |name: &'static str| {
        move |app: &App, lines: &[String]| {
            !matches!(app.link(), LinkState::Retrying { .. })
                && lines.iter().any(|line| line.contains(name))
        }
    };
    run_until(&mut app, &mut feed, &client, shows("Northwind Traders")).await;

    // The engine stops: the console keeps the last figures and says it is reconnecting.
    let TestEngine { running, data_dir, .. } = first;
    running.stop().await;
    drop(data_dir);
    let reconnecting = |app: &App, lines: &[String]| {
        matches!(app.link(), LinkState::Retrying { .. })
            && lines[1].starts_with(&format!("reconnecting to {} in ", app.server()))
            && lines[22].starts_with("last attempt failed: ")
    };
    let lines = run_until(&mut app, &mut feed, &client, reconnecting).await;
    assert!(
        lines.iter().any(|line| line.contains("Northwind Traders")),
        "the last figures stay on screen:\n{}",
        lines.join("\n")
    );

    // A new engine on the same address, with a tenant of its own, is picked up.
    let second = TestEngine::start(|config| config.listen = address).await?;
    second.create_tenant("Contoso", "pro").await?;
    let lines = run_until(&mut app, &mut feed, &client, shows("Contoso")).await;
    assert!(lines[1].contains(&client.server()), "link line: {}", lines[1]);
    assert!(!lines.join("\n").contains(OPERATOR_TOKEN), "the token is on screen");
    Ok(())
}
