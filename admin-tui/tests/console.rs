//! Whole-screen and key tests of the console, drawn onto ratatui's `TestBackend`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use followup_core::api::{
    ActionOutcome, AdminSnapshot, ChannelUsage, ConnectionSummary, DeadLetter, DeadLetterPage,
    FailureRecord, LatenessSummary, PausedItem, QueueSummary, TenantDetail, TenantPage,
    TenantSummary,
};
use followup_core::ids::TenantId;
use followup_tui::{
    Action, App, DeadLetterQuery, FeedUpdate, FetchError, InputMode, LinkState, Request, Response,
    RowSource, SortKey, TenantQuery, View,
};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use reqwest::StatusCode;

const WIDTH: u16 = 80;
const HEIGHT: u16 = 24;

fn tenant_id(number: u128) -> TenantId {
    format!("00000000-0000-0000-0000-{number:012x}").parse().expect("valid uuid")
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("valid instant")
}

fn tenant(
    number: u128,
    name: &str,
    plan: &str,
    backlog: u64,
    sent: u64,
    failed: u64,
) -> TenantSummary {
    TenantSummary {
        id: tenant_id(number),
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

fn queue(provider: &str, channel: &str, waiting: u64, sends_per_s: f64) -> QueueSummary {
    QueueSummary {
        channel: channel.to_owned(),
        provider: provider.to_owned(),
        waiting,
        due: waiting / 2,
        in_flight: 3,
        sends_per_s,
        errors_per_s: sends_per_s / 10.0,
        rate_limit_waits_per_s: 0.5,
        sent: 100,
        failed: 2,
    }
}

fn failure(second: u32, tenant: u128, kind: &str, reason: &str) -> FailureRecord {
    FailureRecord {
        at: at(&format!("2025-03-04T05:06:{second:02}Z")),
        tenant: tenant_id(tenant),
        follow_up: format!("f-{second}"),
        provider: "twilio".to_owned(),
        channel: "sms".to_owned(),
        kind: kind.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A snapshot with every state counted, three queues and four tenants in the engine's order,
/// largest backlog first.
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
    acme.dead = 1;
    acme.quota_used_percent = Some(100);
    let mut initech = tenant(3, "Initech", "pro", 5, 150, 1);
    initech.paused_reason = Some("operator".to_owned());
    initech.quota_used_percent = Some(8);

    AdminSnapshot {
        now: "2025-03-04T05:06:07.123456+00:00".to_owned(),
        node: "node-a".to_owned(),
        totals,
        queues: vec![
            queue("gmail", "email", 30, 12.0),
            queue("twilio", "sms", 10, 4.5),
            queue("twilio", "call", 2, 0.0),
        ],
        tenants: vec![
            acme,
            tenant(2, "Globex", "free", 12, 1_100_000, 1),
            initech,
            tenant(4, "Umbrella", "business", 0, 50, 0),
        ],
        tenant_count: 4,
        lateness: LatenessSummary {
            window_seconds: 60,
            samples: 1234,
            p50_ms: 120,
            p90_ms: 450,
            p99_ms: 1_250,
            max_ms: 75_000,
        },
        recent_failures: vec![
            failure(5, 1, "retry", "20429 too many requests"),
            failure(3, 3, "failed", "21211 invalid 'To' number"),
        ],
        dead_letters: 1,
        paused: vec![
            PausedItem {
                tenant: tenant_id(1),
                tenant_name: "Acme Corp".to_owned(),
                provider: Some("gmail".to_owned()),
                reason: "invalid_grant".to_owned(),
                since: Some(at("2025-03-04T04:00:00Z")),
            },
            PausedItem {
                tenant: tenant_id(3),
                tenant_name: "Initech".to_owned(),
                provider: None,
                reason: "operator".to_owned(),
                since: None,
            },
        ],
    }
}

/// Returns a console at `start` that received the fixed snapshot over the event stream.
fn app_with(snapshot: AdminSnapshot, start: Instant) -> App {
    let mut app = App::starting_at("http://127.0.0.1:8080", Rect::new(0, 0, WIDTH, HEIGHT), start);
    app.apply_feed(FeedUpdate::Link(LinkState::Streaming));
    app.apply_feed(FeedUpdate::Snapshot(Arc::new(snapshot)));
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

fn assert_screen(actual: &[String], expected: &[&str]) {
    assert_eq!(actual.len(), expected.len(), "number of lines");
    for (row, (actual, expected)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(actual, expected, "line {row} differs");
    }
}

#[test]
fn overview_screen_renders() {
    let start = Instant::now();
    let mut app = App::starting_at("http://127.0.0.1:8080", Rect::new(0, 0, WIDTH, HEIGHT), start);
    app.apply_feed(FeedUpdate::Link(LinkState::Streaming));
    for (second, rate) in [(1, 2.0), (2, 8.0), (3, 4.0)] {
        let mut snapshot = fixed_snapshot();
        snapshot.queues[0].sends_per_s = rate;
        snapshot.queues[0].errors_per_s = rate / 4.0;
        app.tick(start + Duration::from_secs(second));
        app.apply_feed(FeedUpdate::Snapshot(Arc::new(snapshot)));
    }
    app.tick(start + Duration::from_secs(5));
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "live from http://127.0.0.1:8080 (event stream), updated 2 s ago                 ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)                     ? help  q quit",
            "sends/s       8.5 ▄█▅                                                           ",
            "errors/s      1.4 ▃█▄                                                           ",
            "┌ Queues ──────────────────────────────────────────────────────────────────────┐",
            "│provider channel   waiting       due in flight  sends/s errors/s limit waits/s│",
            "│gmail    email          30        15         3      4.0      1.0           0.5│",
            "│twilio   sms            10         5         3      4.5      0.5           0.5│",
            "│twilio   call            2         1         3      0.0      0.0           0.5│",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "lateness  p50 120 ms  p90 450 ms  p99 1.2 s  max 1.2 min  1,234 sends in 60 s   ",
            "┌ Paused (2) ──────────────────────────────────────────────────────────────────┐",
            "│tenant                 what         reason                            since   │",
            "│Acme Corp              gmail        invalid_grant                     04:00:00│",
            "│Initech                whole tenant operator                                  │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "                                                                                ",
            "                                             Tab views  R retry all dead letters",
        ],
    );
}

/// An engine older than the rate fields gets sparklines from the growth of its counts.
#[test]
fn throughput_from_counts_without_rates() {
    let start = Instant::now();
    let mut app = App::starting_at("http://127.0.0.1:8080", Rect::new(0, 0, WIDTH, HEIGHT), start);
    for (now, sent, failed) in [("05:00:00", 100, 4), ("05:00:02", 110, 4), ("05:00:03", 113, 6)] {
        let mut snapshot = fixed_snapshot();
        snapshot.now = format!("2025-03-04T{now}Z");
        snapshot.queues = vec![QueueSummary {
            channel: "email".to_owned(),
            sent,
            failed,
            ..QueueSummary::default()
        }];
        app.apply_feed(FeedUpdate::Snapshot(Arc::new(snapshot)));
    }

    let throughput = app.throughput();
    assert_eq!(throughput.sends_per_s, [5.0, 3.0], "10 in 2 s, then 3 in 1 s");
    assert_eq!(throughput.errors_per_s, [0.0, 2.0]);
    assert_eq!(screen(&app)[3], format!("{:<80}", "sends/s       3.0 █▄"));
}

/// The tenant table before any page arrived: the snapshot's tenants.
#[test]
fn tenants_screen_renders() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Down);
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "live from http://127.0.0.1:8080 (event stream), updated 0 s ago                 ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)                     ? help  q quit",
            "┌ Tenants 1-4 of 4 in the snapshot ────────────────────────────────────────────┐",
            "│name           plan      backlog      sent failed  dead  held quota paused    │",
            "│Acme Corp      pro            25       900      3     1     4  100% gmail: tok│",
            "│Globex         free           12 1,100,000      1     0     0     -           │",
            "│Initech        pro             5       150      1     0     0    8% tenant: op│",
            "│Umbrella       business        0        50      0     0     0     -           │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "                                                                                ",
            "sort: backlog           s sort  / filter  Enter open  p pause  r resume  R retry",
        ],
    );
}

fn page(total: u64, offset: u64, tenants: Vec<TenantSummary>) -> TenantPage {
    TenantPage { total, offset, tenants }
}

/// Answers the page request the console issued last with rows named `tenant NNNNNN` from its
/// offset, out of `total`.
fn answer_pages(app: &mut App, total: u64) -> Vec<TenantQuery> {
    let mut queries = Vec::new();
    for request in app.take_requests() {
        let Request::TenantPage(query) = request else { continue };
        let end = (query.offset + query.limit).min(total);
        let tenants = (query.offset..end)
            .map(|n| {
                tenant(u128::from(n) + 100, &format!("tenant {n:06}"), "free", total - n, n, 0)
            })
            .collect();
        app.apply_response(Response::TenantPage(
            query.clone(),
            Ok(page(total, query.offset, tenants)),
        ));
        queries.push(query);
    }
    queries
}

#[test]
fn tenants_screen_pages_from_engine() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('2'));
    app.tick(start);
    let queries = answer_pages(&mut app, 100_000);
    assert_eq!(
        queries,
        [TenantQuery { sort: SortKey::Backlog, filter: String::new(), offset: 0, limit: 48 }]
    );
    assert_eq!(app.tenants().source(), RowSource::Pages);
    press(&mut app, KeyCode::End);
    app.tick(start + Duration::from_millis(10));
    let queries = answer_pages(&mut app, 100_000);
    assert_eq!(
        queries,
        [TenantQuery { sort: SortKey::Backlog, filter: String::new(), offset: 99_968, limit: 48 }]
    );
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "live from http://127.0.0.1:8080 (event stream), updated 0 s ago                 ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)                     ? help  q quit",
            "┌ Tenants 99,985-100,000 of 100,000 ───────────────────────────────────────────┐",
            "│name           plan      backlog      sent failed  dead  held quota paused    │",
            "│tenant 099984  free           16    99,984      0     0     0     -           │",
            "│tenant 099985  free           15    99,985      0     0     0     -           │",
            "│tenant 099986  free           14    99,986      0     0     0     -           │",
            "│tenant 099987  free           13    99,987      0     0     0     -           │",
            "│tenant 099988  free           12    99,988      0     0     0     -           │",
            "│tenant 099989  free           11    99,989      0     0     0     -           │",
            "│tenant 099990  free           10    99,990      0     0     0     -           │",
            "│tenant 099991  free            9    99,991      0     0     0     -           │",
            "│tenant 099992  free            8    99,992      0     0     0     -           │",
            "│tenant 099993  free            7    99,993      0     0     0     -           │",
            "│tenant 099994  free            6    99,994      0     0     0     -           │",
            "│tenant 099995  free            5    99,995      0     0     0     -           │",
            "│tenant 099996  free            4    99,996      0     0     0     -           │",
            "│tenant 099997  free            3    99,997      0     0     0     -           │",
            "│tenant 099998  free            2    99,998      0     0     0     -           │",
            "│tenant 099999  free            1    99,999      0     0     0     -           │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "                                                                                ",
            "sort: backlog           s sort  / filter  Enter open  p pause  r resume  R retry",
        ],
    );
}

fn dead_letter(number: u32, tenant: u128, reason: &str) -> DeadLetter {
    DeadLetter {
        follow_up: format!("f-{number}"),
        tenant: tenant_id(tenant),
        channel: "email".to_owned(),
        attempts: 8,
        failed_at: Some(at(&format!("2025-03-04T03:{number:02}:00Z"))),
        reason: reason.to_owned(),
    }
}

#[test]
fn failures_screen_renders() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('3'));
    let requests = app.take_requests();
    let query = DeadLetterQuery { tenant: None, offset: 0, limit: 8 };
    assert_eq!(requests, [Request::DeadLetters(query.clone())]);
    let dead = DeadLetterPage {
        total: 9,
        offset: 0,
        dead_letters: vec![
            dead_letter(1, 1, "429 rateLimitExceeded after 8 attempts"),
            dead_letter(2, 77, "503 backend error"),
        ],
    };
    app.apply_response(Response::DeadLetters(query, Ok(dead)));
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "live from http://127.0.0.1:8080 (event stream), updated 0 s ago                 ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)                     ? help  q quit",
            "┌ Recent failures ─────────────────────────────────────────────────────────────┐",
            "│at       tenant             provider channel kind   reason                    │",
            "│05:06:05 Acme Corp          twilio   sms     retry  20429 too many requests   │",
            "│05:06:03 Initech            twilio   sms     failed 21211 invalid 'To' number │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ Dead letters 1-2 of 9 ───────────────────────────────────────────────────────┐",
            "│failed at      tenant              channel tries reason                       │",
            "│03-04 03:01:00 Acme Corp           email       8 429 rateLimitExceeded after 8│",
            "│03-04 03:02:00 00000000-0000-0000- email       8 503 backend error            │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "                                                                                ",
            "                                        PgUp PgDn page  R retry all dead letters",
        ],
    );
}

fn fixed_detail() -> TenantDetail {
    let mut summary = fixed_snapshot().tenants[0].clone();
    summary.paused_reason = None;
    TenantDetail {
        summary,
        connections: vec![
            ConnectionSummary {
                provider: "gmail".to_owned(),
                per_minute: 150,
                per_day: 2000,
                paused_reason: Some("invalid_grant".to_owned()),
            },
            ConnectionSummary {
                provider: "twilio".to_owned(),
                per_minute: 60,
                per_day: 86_400,
                paused_reason: None,
            },
        ],
        states: BTreeMap::from([
            ("pending".to_owned(), 20),
            ("retry".to_owned(), 5),
            ("sent".to_owned(), 900),
        ]),
        usage: vec![
            ChannelUsage { channel: "email".to_owned(), used: 900, limit: Some(1000) },
            ChannelUsage { channel: "sms".to_owned(), used: 3, limit: None },
        ],
        recent_failures: vec![failure(5, 1, "retry", "20429 too many requests")],
    }
}

/// Opens the detail view of the first tenant and answers its request.
fn open_detail(app: &mut App) {
    press(app, KeyCode::Char('2'));
    press(app, KeyCode::Enter);
    let requests = app.take_requests();
    assert!(requests.contains(&Request::TenantDetail(tenant_id(1))), "{requests:?}");
    app.apply_response(Response::TenantDetail(tenant_id(1), Ok(fixed_detail())));
}

#[test]
fn detail_screen_renders() {
    let mut app = app_with(fixed_snapshot(), Instant::now());
    open_detail(&mut app);
    press(&mut app, KeyCode::Down);
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "live from http://127.0.0.1:8080 (event stream), updated 0 s ago                 ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)   4 Acme Corp       ? help  q quit",
            "Acme Corp  plan pro  id 00000000-0000-0000-0000-000000000001                    ",
            "backlog 25  sent 900  failed 3  dead 1  held 4  quota 100%                      ",
            "states: pending 20  retry 5  sent 900                                           ",
            "usage this period: email 900 of 1,000  sms 3 (no limit)                         ",
            "┌ Connections ─────────────────────────────────────────────────────────────────┐",
            "│provider   per minute   per day state                                         │",
            "│gmail             150     2,000 paused: invalid_grant                         │",
            "│twilio             60    86,400 sending                                       │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ Recent failures of this tenant ──────────────────────────────────────────────┐",
            "│at       provider channel kind   reason                                       │",
            "│05:06:05 twilio   sms     retry  20429 too many requests                      │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "                                                                                ",
            "                             ↑↓ connection  p pause  r resume  R retry  Esc back",
        ],
    );
}

#[test]
fn help_screen_renders() {
    let mut app = app_with(fixed_snapshot(), Instant::now());
    press(&mut app, KeyCode::Char('?'));
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "live from http://127.0.0.1:8080 (event stream), updated 0 s ago                 ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)                     ? help  q quit",
            "sends/s      16.5 █                                                             ",
            "errors/s    ┌ Keys ────────────────────────────────────────────────┐            ",
            "┌ Queues ───│Tab S-Tab  next or previous view                      │───────────┐",
            "│provider ch│1 2 3 4    overview, tenants, failures, detail        │mit waits/s│",
            "│gmail    em│↑ ↓  k j   select a tenant or a connection            │        0.5│",
            "│twilio   sm│PgUp PgDn  page tenants or dead letters               │        0.5│",
            "│twilio   ca│Home End   first or last row or page                  │        0.5│",
            "└───────────│s          sort tenants: backlog, name, failed, quota │───────────┘",
            "lateness  p5│/          filter tenants by name or id               │s in 60 s   ",
            "┌ Paused (2)│Enter      open the tenant; stop typing the filter    │───────────┐",
            "│tenant     │Esc        back; clear the filter                     │   since   │",
            "│Acme Corp  │p          pause the tenant, or the connection        │   04:00:00│",
            "│Initech    │r          resume the tenant, or the connection       │           │",
            "│           │R          retry dead letters: the tenant's or all    │           │",
            "│           │y n        confirm or cancel an action                │           │",
            "│           │?          show or hide this help                     │           │",
            "│           │q Ctrl-C   quit                                       │           │",
            "│           └ ? or Esc to close ───────────────────────────────────┘           │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "                                                                                ",
            "                                             Tab views  R retry all dead letters",
        ],
    );
}

#[test]
fn confirmation_screen_renders() {
    let mut app = app_with(fixed_snapshot(), Instant::now());
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('p'));
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "live from http://127.0.0.1:8080 (event stream), updated 0 s ago                 ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)                     ? help  q quit",
            "┌ Tenants 1-4 of 4 in the snapshot ────────────────────────────────────────────┐",
            "│name           plan      backlog      sent failed  dead  held quota paused    │",
            "│Acme Corp      pro            25       900      3     1     4  100% gmail: tok│",
            "│Globex         free           12 1,100,000      1     0     0     -           │",
            "│Initech        pro             5       150      1     0     0    8% tenant: op│",
            "│Umbrella       business        0        50      0     0     0     -           │",
            "│         ┌ Confirm ─────────────────────────────────────────────────┐         │",
            "│         │Pause tenant Acme Corp: none of its follow-ups is sent    │         │",
            "│         │until it is resumed.                                      │         │",
            "│         │                                                          │         │",
            "│         │                                                          │         │",
            "│         │y do it    n or Esc cancel                                │         │",
            "│         └──────────────────────────────────────────────────────────┘         │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "                                                                                ",
            "sort: backlog           s sort  / filter  Enter open  p pause  r resume  R retry",
        ],
    );
}

#[test]
fn reconnecting_screen_renders() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    app.tick(start + Duration::from_secs(30));
    let retry_at = start + Duration::from_millis(33_500);
    let reason = "connect failed: connection refused".to_owned();
    app.apply_feed(FeedUpdate::Link(LinkState::Retrying { reason, attempt: 4, retry_at }));
    assert_screen(
        &screen(&app),
        &[
            "waiting 42  sent 1,500  failed 5  skipped 3  in doubt 2       clock 05:06:07 UTC",
            "reconnecting to http://127.0.0.1:8080 in 4 s (attempt 4), updated 30 s ago      ",
            " 1 Overview   2 Tenants   3 Failures (1 dead)                     ? help  q quit",
            "sends/s      16.5 █                                                             ",
            "errors/s      1.6 █                                                             ",
            "┌ Queues ──────────────────────────────────────────────────────────────────────┐",
            "│provider channel   waiting       due in flight  sends/s errors/s limit waits/s│",
            "│gmail    email          30        15         3     12.0      1.2           0.5│",
            "│twilio   sms            10         5         3      4.5      0.5           0.5│",
            "│twilio   call            2         1         3      0.0      0.0           0.5│",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "lateness  p50 120 ms  p90 450 ms  p99 1.2 s  max 1.2 min  1,234 sends in 60 s   ",
            "┌ Paused (2) ──────────────────────────────────────────────────────────────────┐",
            "│tenant                 what         reason                            since   │",
            "│Acme Corp              gmail        invalid_grant                     04:00:00│",
            "│Initech                whole tenant operator                                  │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "last attempt failed: connect failed: connection refused                         ",
            "                                             Tab views  R retry all dead letters",
        ],
    );
}

#[test]
fn first_screen_waits() {
    let app =
        App::starting_at("http://127.0.0.1:8080", Rect::new(0, 0, WIDTH, HEIGHT), Instant::now());
    assert_screen(
        &screen(&app),
        &[
            "no snapshot yet                                                                 ",
            "connecting to http://127.0.0.1:8080                                             ",
            " 1 Overview   2 Tenants   3 Failures (0 dead)                     ? help  q quit",
            "waiting for the first snapshot                                                  ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                             Tab views  R retry all dead letters",
        ],
    );
}

/// Returns the tenant names on screen, in order.
fn names_on_screen(app: &App) -> Vec<String> {
    app.tenants()
        .visible()
        .iter()
        .map(|slot| match slot {
            followup_tui::tenants::Slot::Tenant(tenant) => tenant.name.clone(),
            followup_tui::tenants::Slot::Loading => "…".to_owned(),
        })
        .collect()
}

fn page_requests(app: &mut App) -> Vec<TenantQuery> {
    app.take_requests()
        .into_iter()
        .filter_map(|request| match request {
            Request::TenantPage(query) => Some(query),
            _ => None,
        })
        .collect()
}

#[test]
fn filter_requests_after_debounce() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    app.tick(start);
    answer_pages(&mut app, 4);

    press(&mut app, KeyCode::Char('/'));
    assert_eq!(app.view(), View::Tenants, "/ opens the tenant table");
    assert_eq!(app.input_mode(), InputMode::Filter);
    type_text(&mut app, "q?a");
    assert!(!app.should_quit(), "q is text while typing");
    assert!(!app.help_visible(), "? is text while typing");
    app.tick(start + Duration::from_millis(100));
    assert!(page_requests(&mut app).is_empty(), "no request while typing");
    press(&mut app, KeyCode::Backspace);
    app.tick(start + Duration::from_millis(200));
    type_text(&mut app, "c");
    app.tick(start + Duration::from_millis(450));
    assert!(page_requests(&mut app).is_empty(), "250 ms after the last key");
    assert!(screen(&app)[3].contains(", loading "), "{}", screen(&app)[3]);

    app.tick(start + Duration::from_millis(500));
    let expected =
        TenantQuery { sort: SortKey::Backlog, filter: "q?c".to_owned(), offset: 0, limit: 48 };
    assert_eq!(page_requests(&mut app), std::slice::from_ref(&expected));
    app.tick(start + Duration::from_millis(600));
    assert!(page_requests(&mut app).is_empty(), "one request for one filter");

    let matching = vec![tenant(9, "Q?C Ltd", "pro", 1, 1, 0)];
    app.apply_response(Response::TenantPage(expected, Ok(page(1, 0, matching))));
    assert_eq!(names_on_screen(&app), ["Q?C Ltd"]);
    assert_eq!(
        screen(&app)[3],
        "┌ Tenants 1-1 of 1 matching ───────────────────────────────────────────────────┐"
    );
    assert_eq!(
        screen(&app)[23],
        "sort: backlog  filter: q?c                                 Enter keep  Esc clear"
    );

    press(&mut app, KeyCode::Enter);
    assert_eq!(app.input_mode(), InputMode::Normal, "Enter keeps the filter");
    assert_eq!(app.tenants().filter(), "q?c");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.tenants().filter(), "", "Esc clears the filter");
}

#[test]
fn sort_key_requests_pages() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('2'));
    app.tick(start);
    answer_pages(&mut app, 4);

    for (step, sort) in
        [SortKey::Name, SortKey::Failed, SortKey::Quota, SortKey::Backlog].into_iter().enumerate()
    {
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.tenants().sort(), sort);
        app.tick(start + Duration::from_millis(step as u64));
        let queries = answer_pages(&mut app, 4);
        assert_eq!(queries.len(), 1, "one request for {sort}");
        assert_eq!(queries[0].sort, sort);
        assert_eq!(
            screen(&app)[23].split_whitespace().take(2).collect::<Vec<_>>(),
            ["sort:", &sort.to_string()]
        );
    }
}

#[test]
fn scrolling_requests_pages_as_needed() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('2'));
    app.tick(start);
    answer_pages(&mut app, 100_000);
    assert_eq!(app.tenants().selected_tenant().map(|t| t.name.as_str()), Some("tenant 000000"));

    // 16 rows on screen; the window holds rows 0 to 47, so the first page down needs nothing.
    press(&mut app, KeyCode::PageDown);
    app.tick(start);
    assert!(page_requests(&mut app).is_empty(), "rows 16-31 are held");
    press(&mut app, KeyCode::PageDown);
    press(&mut app, KeyCode::PageDown);
    app.tick(start);
    let queries = answer_pages(&mut app, 100_000);
    assert_eq!(queries.iter().map(|q| (q.offset, q.limit)).collect::<Vec<_>>(), [(17, 48)]);
    assert_eq!(app.tenants().selected(), 48);
    assert_eq!(names_on_screen(&app).first().map(String::as_str), Some("tenant 000033"));

    // A page that has not arrived shows placeholders, and the figures refresh every 2 s.
    press(&mut app, KeyCode::End);
    assert!(names_on_screen(&app).iter().all(|name| name == "…"));
    app.tick(start);
    assert_eq!(answer_pages(&mut app, 100_000).len(), 1);
    assert_eq!(names_on_screen(&app).last().map(String::as_str), Some("tenant 099999"));
    app.tick(start + Duration::from_millis(1_900));
    assert!(page_requests(&mut app).is_empty());
    app.tick(start + Duration::from_millis(2_000));
    assert_eq!(page_requests(&mut app).len(), 1, "refresh");
}

#[test]
fn stale_page_is_ignored() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "ac");
    app.tick(start + Duration::from_secs(1));
    let old = page_requests(&mut app).pop().expect("a page request");
    type_text(&mut app, "x");
    app.apply_response(Response::TenantPage(
        old,
        Ok(page(1, 0, vec![tenant(1, "Acme Corp", "pro", 1, 1, 0)])),
    ));
    assert_eq!(app.tenants().source(), RowSource::Snapshot, "answer for an old filter");
    assert!(names_on_screen(&app).is_empty(), "no snapshot tenant contains acx");
}

#[test]
fn engine_without_pages_filters_snapshot() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('2'));
    app.tick(start);
    let query = page_requests(&mut app).pop().expect("a page request");
    let missing = FetchError::Status(StatusCode::NOT_FOUND);
    app.apply_response(Response::TenantPage(query, Err(missing)));
    assert_eq!(app.tenants().source(), RowSource::SnapshotOnly);

    press(&mut app, KeyCode::Char('s'));
    assert_eq!(names_on_screen(&app), ["Acme Corp", "Globex", "Initech", "Umbrella"]);
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(names_on_screen(&app), ["Acme Corp", "Globex", "Initech", "Umbrella"], "by failed");
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(names_on_screen(&app), ["Acme Corp", "Initech", "Globex", "Umbrella"], "by quota");
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "GLO");
    press(&mut app, KeyCode::Char('R'));
    assert_eq!(app.pending_confirmation(), None, "R is filter text while typing");
    press(&mut app, KeyCode::Backspace);
    assert_eq!(names_on_screen(&app), ["Globex"]);
    type_text(&mut app, "x");
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('R'));
    assert_eq!(app.pending_confirmation(), None, "no tenant selected, so no retry of all");
    assert!(app.status().is_some_and(|status| status.error));
    app.tick(start + Duration::from_secs(5));
    assert!(page_requests(&mut app).is_empty(), "no page requests to this engine");
    assert_eq!(
        screen(&app)[4],
        "│no tenant id or name contains \"GLOx\"                                          │"
    );
    assert_eq!(
        screen(&app)[3],
        "┌ Tenants 0 of 0 in the snapshot, 4 in all, no paging on this engine ──────────┐"
    );
}

#[test]
fn confirmation_flow_issues_action() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Down);
    app.take_requests();

    press(&mut app, KeyCode::Char('p'));
    let pause = Action::PauseTenant { tenant: tenant_id(2), name: "Globex".to_owned() };
    assert_eq!(app.pending_confirmation(), Some(&pause));
    press(&mut app, KeyCode::Char('q'));
    assert!(!app.should_quit(), "the dialog takes every key");
    assert_eq!(app.pending_confirmation(), Some(&pause), "other keys leave it open");
    press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.pending_confirmation(), None);
    assert!(app.take_requests().is_empty(), "n sends nothing");
    assert_eq!(screen(&app)[22].trim_end(), "cancelled: pause tenant Globex");

    press(&mut app, KeyCode::Char('r'));
    press(&mut app, KeyCode::Char('y'));
    let resume = Action::ResumeTenant { tenant: tenant_id(2), name: "Globex".to_owned() };
    assert_eq!(app.take_requests(), [Request::Action(resume.clone())]);
    assert_eq!(screen(&app)[22].trim_end(), "sent: resume tenant Globex");

    let outcome = ActionOutcome { audit_id: "a-17".to_owned(), affected: 12 };
    app.apply_response(Response::Action(resume.clone(), Ok(outcome)));
    assert_eq!(
        screen(&app)[22].trim_end(),
        "resumed tenant Globex: 12 affected (audit record a-17)"
    );

    let message = "tenant is not paused".to_owned();
    let error = FetchError::Rejected { status: StatusCode::CONFLICT, message };
    app.apply_response(Response::Action(resume, Err(error)));
    let status = app.status().expect("status line");
    assert!(status.error);
    assert_eq!(
        screen(&app)[22].trim_end(),
        "failed to resume tenant Globex: engine returned HTTP 409 Conflict: tenant is not paused"
            .chars()
            .take(80)
            .collect::<String>()
    );
}

#[test]
fn actions_follow_the_view() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('p'));
    assert_eq!(app.pending_confirmation(), None, "the overview has no tenant to pause");
    assert!(app.status().is_some_and(|status| status.error));

    open_detail(&mut app);
    let acme = (tenant_id(1), "Acme Corp".to_owned());
    let connection = |provider: &str| (tenant_id(1), "Acme Corp".to_owned(), provider.to_owned());
    press(&mut app, KeyCode::Char('r'));
    press(&mut app, KeyCode::Char('y'));
    let (tenant, name, provider) = connection("gmail");
    let resume_gmail = Action::ResumeConnection { tenant, name, provider };
    assert_eq!(app.take_requests(), [Request::Action(resume_gmail.clone())]);
    // After the answer, the detail is fetched again to show the effect.
    let outcome = ActionOutcome { audit_id: "a-1".to_owned(), affected: 1 };
    app.apply_response(Response::Action(resume_gmail, Ok(outcome)));
    assert_eq!(app.take_requests(), [Request::TenantDetail(tenant_id(1))]);
    app.apply_response(Response::TenantDetail(tenant_id(1), Ok(fixed_detail())));

    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.detail().map(|detail| detail.selected_connection), Some(1), "stops at the last");
    press(&mut app, KeyCode::Char('p'));
    let (tenant, name, provider) = connection("twilio");
    assert_eq!(
        app.pending_confirmation(),
        Some(&Action::PauseConnection { tenant, name, provider })
    );
    press(&mut app, KeyCode::Esc);
    assert!(app.take_requests().is_empty(), "Esc cancels");

    press(&mut app, KeyCode::Char('R'));
    let retry_acme = Action::RetryDeadLetters { tenant: Some(acme), seen: Some(1) };
    assert_eq!(app.pending_confirmation(), Some(&retry_acme));
    assert!(
        screen(&app).iter().any(|line| line.contains("Retry every dead letter of Acme Corp (1 on"))
    );
    press(&mut app, KeyCode::Char('n'));

    press(&mut app, KeyCode::Char('3'));
    press(&mut app, KeyCode::Char('R'));
    press(&mut app, KeyCode::Char('y'));
    let requests = app.take_requests();
    assert!(
        requests
            .contains(&Request::Action(Action::RetryDeadLetters { tenant: None, seen: Some(1) })),
        "{requests:?}"
    );
}

#[test]
fn views_switch_by_tab_and_number() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(app.view());
        press(&mut app, KeyCode::Tab);
    }
    assert_eq!(seen, [View::Overview, View::Tenants, View::Failures, View::Overview]);
    press(&mut app, KeyCode::Char('4'));
    assert_eq!(app.view(), View::Tenants, "4 does nothing without a detail open");

    open_detail(&mut app);
    assert_eq!(app.view(), View::Detail);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.view(), View::Overview);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.view(), View::Detail);
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.view(), View::Tenants, "Esc leaves the detail");
    press(&mut app, KeyCode::Char('4'));
    assert_eq!(app.view(), View::Detail);

    // Key releases, which some terminals report, do nothing.
    let release = KeyEvent::new_with_kind(KeyCode::Tab, KeyModifiers::NONE, KeyEventKind::Release);
    app.handle_event(&Event::Key(release));
    assert_eq!(app.view(), View::Detail);

    press(&mut app, KeyCode::Char('?'));
    assert!(app.help_visible());
    press(&mut app, KeyCode::Esc);
    assert!(!app.help_visible());
    press(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit());

    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('/'));
    app.handle_event(&Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    assert!(app.should_quit(), "Ctrl-C quits while typing");
}

#[test]
fn dead_letters_page_by_keys() {
    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    press(&mut app, KeyCode::Char('3'));
    let mut offsets = Vec::new();
    let answer = |app: &mut App, offsets: &mut Vec<u64>| {
        for request in app.take_requests() {
            let Request::DeadLetters(query) = request else { continue };
            offsets.push(query.offset);
            let letters = (query.offset..(query.offset + query.limit).min(20))
                .map(|n| dead_letter(u32::try_from(n).expect("small"), 1, "dead"))
                .collect();
            let page = DeadLetterPage { total: 20, offset: query.offset, dead_letters: letters };
            app.apply_response(Response::DeadLetters(query, Ok(page)));
        }
    };
    answer(&mut app, &mut offsets);
    for code in [
        KeyCode::PageDown,
        KeyCode::PageDown,
        KeyCode::PageDown,
        KeyCode::Home,
        KeyCode::End,
        KeyCode::PageUp,
    ] {
        press(&mut app, code);
        answer(&mut app, &mut offsets);
    }
    assert_eq!(offsets, [0, 8, 16, 0, 16, 8], "the third PgDn stays on the last page");
    assert_eq!(
        screen(&app)[11],
        "┌ Dead letters 9-16 of 20 ─────────────────────────────────────────────────────┐"
    );
}

/// Draws `app` and returns the styles of its cells, by row.
fn styles(app: &App) -> Vec<Vec<ratatui::style::Style>> {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("test terminal");
    terminal.draw(|frame| app.render(frame)).expect("draw");
    let buffer = terminal.backend().buffer();
    (0..HEIGHT).map(|y| (0..WIDTH).map(|x| buffer[(x, y)].style()).collect()).collect()
}

#[test]
fn selection_is_reversed() {
    use ratatui::style::Modifier;

    let mut app = app_with(fixed_snapshot(), Instant::now());
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Down);
    let reversed = |styles: &Vec<Vec<ratatui::style::Style>>, row: usize| {
        styles[row][1..79].iter().all(|style| style.add_modifier.contains(Modifier::REVERSED))
    };
    let drawn = styles(&app);
    assert!(reversed(&drawn, 6), "the Globex row is selected");
    assert!(!reversed(&drawn, 5), "the Acme row is not");

    press(&mut app, KeyCode::Up);
    open_detail(&mut app);
    press(&mut app, KeyCode::Down);
    let drawn = styles(&app);
    assert!(reversed(&drawn, 10), "the twilio connection is selected");
    assert!(!reversed(&drawn, 9));
}

/// Every cell keeps the terminal's own background, and text its own foreground except the red
/// of failures, so the screen reads on dark and light themes alike.
#[test]
fn colours_are_terminal_defaults() {
    use ratatui::style::Color;

    let start = Instant::now();
    let mut app = app_with(fixed_snapshot(), start);
    let reason = "connect failed: connection refused".to_owned();
    let retry_at = start + Duration::from_secs(3);
    app.apply_feed(FeedUpdate::Link(LinkState::Retrying { reason, attempt: 2, retry_at }));
    for view in ['1', '2', '3'] {
        press(&mut app, KeyCode::Char(view));
        let drawn = styles(&app);
        for (row, cells) in drawn.iter().enumerate() {
            for style in cells {
                assert!(matches!(style.bg, None | Some(Color::Reset)), "background on row {row}");
                let red_allowed = row == 1 || row == 22;
                let foreground = style.fg.unwrap_or(Color::Reset);
                assert!(
                    foreground == Color::Reset || (red_allowed && foreground == Color::Red),
                    "foreground {foreground:?} on row {row} of view {view}"
                );
            }
        }
        assert_eq!(drawn[1][0].fg, Some(Color::Red), "the link line is an alert");
        assert_eq!(drawn[22][0].fg, Some(Color::Red), "the reason is an alert");
    }
}

/// Small and odd terminal sizes draw every view without a panic, with the tabs in place.
#[test]
fn tiny_terminals_draw() {
    let mut app = app_with(fixed_snapshot(), Instant::now());
    open_detail(&mut app);
    for (width, height) in [(1, 1), (10, 3), (40, 8), (80, 6), (200, 60)] {
        app.handle_event(&Event::Resize(width, height));
        for key in ['1', '2', '3', '4', '?'] {
            press(&mut app, KeyCode::Char(key));
            let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
            terminal.draw(|frame| app.render(frame)).expect("draw");
            if height >= 3 && key != '?' {
                let buffer = terminal.backend().buffer();
                let tabs: String = (0..width.min(11)).map(|x| buffer[(x, 2)].symbol()).collect();
                assert_eq!(tabs, " 1 Overview"[..tabs.len()], "{width}x{height}, view {key}");
            }
        }
        press(&mut app, KeyCode::Char('?'));
        press(&mut app, KeyCode::Char('p'));
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal.draw(|frame| app.render(frame)).expect("draw the dialog");
        press(&mut app, KeyCode::Esc);
    }
}
