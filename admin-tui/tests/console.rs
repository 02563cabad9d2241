//! Whole-screen, key and ordering tests of the console, drawn onto ratatui's `TestBackend`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use followup_core::api::{AdminSnapshot, QueueSummary, TenantSummary};
use followup_tui::{App, Connection, InputMode, PollOutcome, SortKey};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

const WIDTH: u16 = 80;
const HEIGHT: u16 = 16;

fn tenant(
    number: u128,
    name: &str,
    plan: &str,
    backlog: u64,
    sent: u64,
    failed: u64,
) -> TenantSummary {
    TenantSummary {
        id: format!("00000000-0000-0000-0000-{number:012x}").parse().expect("valid uuid"),
        name: name.to_owned(),
        plan: plan.to_owned(),
        backlog,
        sent,
        failed,
        paused_connections: Vec::new(),
        held: 0,
        quota_used_percent: None,
        paused_reason: None,
        dead: 0,
    }
}

fn queue(channel: &str, waiting: u64, sent: u64, failed: u64) -> QueueSummary {
    QueueSummary { channel: channel.to_owned(), waiting, sent, failed, ..QueueSummary::default() }
}

/// Returns a snapshot with every state counted, three channels and four tenants in the engine's
/// order, largest backlog first.
fn fixed_snapshot() -> AdminSnapshot {
    let totals: BTreeMap<String, u64> = [
        ("pending", 30),
        ("retry", 12),
        ("claimed", 1),
        ("sent", 1500),
        ("failed", 4),
        ("dead", 1),
        ("skipped", 3),
        ("in_doubt", 2),
    ]
    .into_iter()
    .map(|(state, count)| (state.to_owned(), count))
    .collect();

    let mut acme = tenant(1, "Acme Corp", "pro", 25, 900, 3);
    acme.paused_connections = vec!["gmail: token revoked".to_owned()];
    acme.held = 4;
    acme.quota_used_percent = Some(100);
    let mut initech = tenant(3, "Initech", "pro", 5, 150, 1);
    initech.paused_connections =
        vec!["twilio: number unverified".to_owned(), "outlook: consent expired".to_owned()];
    initech.quota_used_percent = Some(8);

    AdminSnapshot {
        now: "2025-03-04T05:06:07.123456+00:00".to_owned(),
        totals,
        queues: vec![
            queue("email", 30, 1200, 3),
            queue("sms", 10, 250, 2),
            queue("call", 2, 50, 0),
        ],
        tenants: vec![
            acme,
            tenant(2, "Globex", "free", 12, 1_100_000, 1),
            initech,
            tenant(4, "Umbrella", "business", 0, 50, 0),
        ],
        ..AdminSnapshot::default()
    }
}

fn app_with(snapshot: AdminSnapshot) -> App {
    let mut app = App::new("http://127.0.0.1:8080", Rect::new(0, 0, WIDTH, HEIGHT));
    app.apply_poll(PollOutcome::Snapshot(Arc::new(snapshot)));
    app
}

/// Draws `app` onto a `WIDTH` x `HEIGHT` test terminal and returns its rows as text.
fn screen(app: &App) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("test terminal");
    terminal.draw(|frame| app.render(frame)).expect("draw");
    let buffer = terminal.backend().buffer();
    (0..HEIGHT).map(|y| (0..WIDTH).map(|x| buffer[(x, y)].symbol()).collect::<String>()).collect()
}

fn press(app: &mut App, code: KeyCode) {
    app.handle_event(&Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn type_text(app: &mut App, text: &str) {
    for character in text.chars() {
        press(app, KeyCode::Char(character));
    }
}

/// Names of the tenants in the table's order.
fn tenant_names(app: &App) -> Vec<String> {
    let snapshot = app.snapshot().expect("snapshot applied");
    let order = app.tenant_order().rows();
    order.iter().map(|&index| snapshot.tenants[index].name.clone()).collect()
}

fn assert_screen(actual: &[String], expected: &[&str]) {
    assert_eq!(actual.len(), expected.len(), "number of lines");
    for (row, (actual, expected)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(actual, expected, "line {row} differs");
    }
}

/// Rows 2 to 14 of the main screen with the fixed snapshot: queues and tenants.
const TABLES: [&str; 13] = [
    "┌ Queues ──────────────────────────────────────────────────────────────────────┐",
    "│channel        waiting        sent      failed                                │",
    "│email               30       1,200           3                                │",
    "│sms                 10         250           2                                │",
    "│call                 2          50           0                                │",
    "└──────────────────────────────────────────────────────────────────────────────┘",
    "┌ Tenants 1-4 of 4 ────────────────────────────────────────────────────────────┐",
    "│name             plan      backlog       sent  failed  held  quota paused conn│",
    "│Acme Corp        pro            25        900       3     4   100% gmail: toke│",
    "│Globex           free           12  1,100,000       1     0      -            │",
    "│Initech          pro             5        150       1     0     8% twilio: num│",
    "│Umbrella         business        0         50       0     0      -            │",
    "└──────────────────────────────────────────────────────────────────────────────┘",
];

const TOTALS: &str =
    "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC";
const FOOTER: &str =
    "sort: backlog                                   s sort  / filter  ? help  q quit";

#[test]
fn main_screen_renders() {
    let app = app_with(fixed_snapshot());
    let mut expected = vec![
        TOTALS,
        "connected to http://127.0.0.1:8080                                              ",
    ];
    expected.extend(TABLES);
    expected.push(FOOTER);

    assert_screen(&screen(&app), &expected);
}

#[test]
fn help_screen_renders() {
    let mut app = app_with(fixed_snapshot());
    press(&mut app, KeyCode::Char('?'));

    assert_screen(
        &screen(&app),
        &[
            TOTALS,
            "connected to http://127.0.0.1:8080                                              ",
            "┌ Queues ────────┌ Keys ──────────────────────────────────────┐────────────────┐",
            "│channel        w│↑ ↓  k j   scroll one row                   │                │",
            "│email           │PgUp PgDn  scroll one page                  │                │",
            "│sms             │Home End   first or last row                │                │",
            "│call            │s          sort by backlog, name or sent    │                │",
            "└────────────────│/          filter tenants by name           │────────────────┘",
            "┌ Tenants 1-4 of │Enter      stop typing, keep the filter     │────────────────┐",
            "│name            │Esc        clear the filter                 │uota paused conn│",
            "│Acme Corp       │?          show or hide this help           │100% gmail: toke│",
            "│Globex          │q          quit                             │   -            │",
            "│Initech         │Ctrl-C     quit, also while typing          │  8% twilio: num│",
            "│Umbrella        └ ? or Esc to close ─────────────────────────┘   -            │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            FOOTER,
        ],
    );
}

#[test]
fn disconnected_screen_keeps_snapshot() {
    let mut app = app_with(fixed_snapshot());
    app.apply_poll(PollOutcome::Failed("connect failed: connection refused".to_owned()));
    let mut expected = vec![
        TOTALS,
        "disconnected: connect failed: connection refused, retrying                      ",
    ];
    expected.extend(TABLES);
    expected.push(FOOTER);

    assert_screen(&screen(&app), &expected);
}

#[test]
fn first_screen_waits_for_snapshot() {
    let app = App::new("http://127.0.0.1:8080", Rect::new(0, 0, WIDTH, HEIGHT));
    let lines = screen(&app);

    assert_eq!(lines[0].trim_end(), "no snapshot yet");
    assert_eq!(lines[1].trim_end(), "connecting to http://127.0.0.1:8080");
    assert_eq!(
        lines[5],
        "┌ Tenants ─────────────────────────────────────────────────────────────────────┐"
    );
    assert_eq!(
        lines[6],
        "│waiting for the first snapshot                                                │"
    );
}

#[test]
fn wide_header_shows_date() {
    let app = app_with(fixed_snapshot());
    let mut terminal = Terminal::new(TestBackend::new(100, HEIGHT)).expect("test terminal");
    terminal.draw(|frame| app.render(frame)).expect("draw");
    let buffer = terminal.backend().buffer();
    let header: String = (0..100).map(|x| buffer[(x, 0)].symbol()).collect();

    assert_eq!(
        header,
        "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2         engine clock 2025-03-04 05:06:07 UTC"
    );
}

#[test]
fn reconnection_shows_then_clears() {
    let mut app = app_with(fixed_snapshot());
    app.apply_poll(PollOutcome::Failed("request timed out after 3 s".to_owned()));
    assert_eq!(
        app.connection(),
        &Connection::Disconnected { reason: "request timed out after 3 s".to_owned() }
    );
    assert_eq!(app.snapshot(), Some(&fixed_snapshot()), "last snapshot kept");

    app.apply_poll(PollOutcome::Snapshot(Arc::new(fixed_snapshot())));
    assert!(matches!(app.connection(), Connection::Reconnected { .. }));
    assert_eq!(screen(&app)[1].trim_end(), "reconnected to http://127.0.0.1:8080");

    for _ in 0..4 {
        app.apply_poll(PollOutcome::Snapshot(Arc::new(fixed_snapshot())));
    }
    assert!(matches!(app.connection(), Connection::Reconnected { polls_left: 1 }));
    app.apply_poll(PollOutcome::Snapshot(Arc::new(fixed_snapshot())));
    assert_eq!(app.connection(), &Connection::Connected);
}

#[test]
fn tenants_filter_and_sort() {
    let mut snapshot = fixed_snapshot();
    snapshot.tenants.push(tenant(5, "Zürich Café", "free", 1, 2, 0));
    let mut app = app_with(snapshot);
    assert_eq!(tenant_names(&app), ["Acme Corp", "Globex", "Initech", "Zürich Café", "Umbrella"]);

    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.tenant_order().sort(), SortKey::Name);
    assert_eq!(tenant_names(&app), ["Acme Corp", "Globex", "Initech", "Umbrella", "Zürich Café"]);

    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.tenant_order().sort(), SortKey::Sent);
    assert_eq!(tenant_names(&app), ["Globex", "Acme Corp", "Initech", "Umbrella", "Zürich Café"]);

    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.tenant_order().sort(), SortKey::Backlog);

    // Matching ignores case, for ASCII and other names alike, and keeps the sort order.
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "O");
    assert_eq!(tenant_names(&app), ["Acme Corp", "Globex"]);
    press(&mut app, KeyCode::Backspace);
    type_text(&mut app, "CAFÉ");
    assert_eq!(tenant_names(&app), ["Zürich Café"]);
    type_text(&mut app, "x");
    assert!(tenant_names(&app).is_empty());

    // A new snapshot is filtered and sorted like the last one.
    press(&mut app, KeyCode::Backspace);
    app.apply_poll(PollOutcome::Snapshot(Arc::new(fixed_snapshot())));
    assert!(tenant_names(&app).is_empty(), "Café is gone from the new snapshot");
    press(&mut app, KeyCode::Esc);
    assert_eq!(tenant_names(&app), ["Acme Corp", "Globex", "Initech", "Umbrella"]);
}

#[test]
fn filtered_screen_shows_counts() {
    let mut app = app_with(fixed_snapshot());
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "o");
    let lines = screen(&app);

    assert_eq!(
        lines[8],
        "┌ Tenants 1-2 of 2 matching, 4 in all ─────────────────────────────────────────┐"
    );
    assert_eq!(
        lines[10],
        "│Acme Corp        pro            25        900       3     4   100% gmail: toke│"
    );
    assert_eq!(
        lines[11],
        "│Globex           free           12  1,100,000       1     0      -            │"
    );
    assert_eq!(
        lines[12],
        "│                                                                              │"
    );
    assert_eq!(
        lines[15],
        "sort: backlog  filter: o                                   Enter keep  Esc clear"
    );

    type_text(&mut app, "zz");
    assert_eq!(
        screen(&app)[9],
        "│no tenant name contains \"ozz\"                                                 │"
    );
}

#[test]
fn keys_map_to_actions() {
    let mut app = app_with(fixed_snapshot());
    assert_eq!(app.input_mode(), InputMode::Normal);

    press(&mut app, KeyCode::Char('?'));
    assert!(app.help_visible(), "? opens help");
    press(&mut app, KeyCode::Esc);
    assert!(!app.help_visible(), "Esc closes help");

    // Key releases, which some terminals report, do nothing.
    let release =
        KeyEvent::new_with_kind(KeyCode::Char('s'), KeyModifiers::NONE, KeyEventKind::Release);
    app.handle_event(&Event::Key(release));
    assert_eq!(app.tenant_order().sort(), SortKey::Backlog);

    press(&mut app, KeyCode::Char('/'));
    assert_eq!(app.input_mode(), InputMode::Filter);
    type_text(&mut app, "qs?");
    assert_eq!(app.tenant_order().filter(), "qs?", "commands are text while typing");
    assert!(!app.should_quit());
    assert!(!app.help_visible());
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.input_mode(), InputMode::Normal);
    assert_eq!(app.tenant_order().filter(), "qs?", "Enter keeps the filter");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.tenant_order().filter(), "", "Esc clears the filter");

    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "ab");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.input_mode(), InputMode::Normal, "Esc leaves typing");
    assert_eq!(app.tenant_order().filter(), "");

    press(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit(), "q quits");

    let mut app = app_with(fixed_snapshot());
    press(&mut app, KeyCode::Char('/'));
    app.handle_event(&Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    assert!(app.should_quit(), "Ctrl-C quits while typing");
}

/// Returns a snapshot of `count` tenants named `tenant 000000` and up, largest backlog first.
fn many_tenants(count: u64) -> AdminSnapshot {
    let tenants = (0..count)
        .map(|n| tenant(u128::from(n) + 1, &format!("tenant {n:06}"), "free", count - n, n, 0))
        .collect();
    AdminSnapshot { tenants, ..fixed_snapshot() }
}

#[test]
fn keys_scroll_tenant_table() {
    let mut app = app_with(many_tenants(100));
    // 16 rows leave 4 for tenants; the last page starts at row 96.
    let steps = [
        (KeyCode::Up, 0),
        (KeyCode::Down, 1),
        (KeyCode::Char('j'), 2),
        (KeyCode::Char('k'), 1),
        (KeyCode::PageDown, 5),
        (KeyCode::End, 96),
        (KeyCode::Down, 96),
        (KeyCode::PageDown, 96),
        (KeyCode::PageUp, 92),
        (KeyCode::Home, 0),
    ];
    for (code, scroll) in steps {
        press(&mut app, code);
        assert_eq!(app.scroll(), scroll, "after {code:?}");
    }

    // A taller terminal shows more rows per page, so the last page starts earlier.
    press(&mut app, KeyCode::End);
    app.handle_event(&Event::Resize(WIDTH, HEIGHT + 10));
    assert_eq!(app.scroll(), 86);

    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.scroll(), 0, "sorting returns to the top");
}

#[test]
fn hundred_thousand_tenants_render() {
    let mut app = app_with(many_tenants(100_000));
    press(&mut app, KeyCode::End);
    let lines = screen(&app);

    assert_eq!(
        lines[8],
        "┌ Tenants 99,997-100,000 of 100,000 ───────────────────────────────────────────┐"
    );
    assert_eq!(
        lines[13],
        "│tenant 099999    free            1     99,999       0     0      -            │"
    );

    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "12345");
    assert_eq!(tenant_names(&app), ["tenant 012345"]);
}
