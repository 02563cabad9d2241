//! `Engine::run_virtual_clock`, which `POST /admin/v1/clock/run` calls, and the clock endpoints
//! of an engine whose virtual clock its own process moves.

use std::time::Duration;

use chrono::TimeDelta;
use followup_core::clock::Clock as _;
use followup_core::domain::Provider;
use followup_dispatcher::engine::VirtualRunOutcome;
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_csv, virtual_start};
use serde_json::{Value, json};

/// Returns a sequence of an email at once and another two days later.
fn two_emails_sequence() -> Value {
    json!({
        "name": "two emails",
        "steps": [
            {"channel": "email", "delay": 0, "subject": "First", "body": "Hi."},
            {"channel": "email", "delay": "2d", "subject": "Second", "body": "Hi again."}
        ]
    })
}

/// Starts an engine with one tenant enrolled in [`two_emails_sequence`] with `contacts`
/// contacts, whose uploads are stored at [`virtual_start`].
async fn engine_with_contacts(contacts: usize) -> anyhow::Result<TestEngine> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &two_emails_sequence()).await?;
    let (status, report) =
        engine.upload(&key, &sequence, "text/csv", email_csv("contact", contacts)).await?;
    anyhow::ensure!(status == 200, "upload answered {status}: {report}");
    Ok(engine)
}

#[actix_rt::test]
async fn run_stops_at_until_then_settles() -> anyhow::Result<()> {
    let engine = engine_with_contacts(3).await?;
    let clock = engine.virtual_clock();
    let start = clock.now();
    let dispatcher = &engine.running.engine;
    let budget = Duration::from_secs(30);

    let first = dispatcher.run_virtual_clock(clock, start + TimeDelta::days(1), budget).await;
    assert_eq!(first.outcome, VirtualRunOutcome::UntilReached, "{first:?}");
    assert_eq!(first.now, start + TimeDelta::days(1), "the clock moved to until");
    assert_eq!(clock.now(), first.now);
    let second_due = first.next_wake.expect("the second emails are waiting");
    assert!(second_due > first.now, "{first:?}");
    assert_eq!(engine.running.fakes()?.stats().received(Provider::Gmail), 3);

    let second = dispatcher.run_virtual_clock(clock, start + TimeDelta::days(30), budget).await;
    assert_eq!(second.outcome, VirtualRunOutcome::Settled, "{second:?}");
    assert_eq!(second.now, second_due, "the clock stays at the last instant with work");
    assert_eq!(second.next_wake, None);
    assert_eq!(engine.running.fakes()?.stats().received(Provider::Gmail), 6);
    Ok(())
}

#[actix_rt::test]
async fn spent_budget_leaves_work_for_next_run() -> anyhow::Result<()> {
    let engine = engine_with_contacts(2).await?;
    let clock = engine.virtual_clock();
    let until = clock.now() + TimeDelta::days(30);
    let dispatcher = &engine.running.engine;

    // A zero budget ends every run after one round, so the work takes several runs.
    let first = dispatcher.run_virtual_clock(clock, until, Duration::ZERO).await;
    assert_eq!(first.outcome, VirtualRunOutcome::BudgetSpent, "{first:?}");
    assert_eq!(first.rounds, 1);
    assert!(first.next_wake.is_some(), "work left: {first:?}");
    let mut runs = 1;
    let last = loop {
        let run = dispatcher.run_virtual_clock(clock, until, Duration::ZERO).await;
        runs += 1;
        assert_eq!(run.rounds, 1, "{run:?}");
        if run.outcome != VirtualRunOutcome::BudgetSpent || runs == 100 {
            break run;
        }
    };
    assert_eq!(last.outcome, VirtualRunOutcome::Settled, "after {runs} runs: {last:?}");
    assert!(last.now >= virtual_start() + TimeDelta::days(2), "{last:?}");
    assert_eq!(engine.running.fakes()?.stats().received(Provider::Gmail), 4);
    Ok(())
}

#[actix_rt::test]
async fn process_driven_clock_rejects_runs() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;

    let clock: Value = engine
        .http
        .get(engine.url("/admin/v1/clock"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(clock["virtual"], true, "{clock}");
    assert_eq!(clock["operator_driven"], false, "{clock}");

    let response = engine
        .http
        .post(engine.url("/admin/v1/clock/run"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"until": "2030-01-01T00:00:00Z"}))
        .send()
        .await?;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await?;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("moved by the process that started it"), "{message}");
    assert_eq!(engine.virtual_clock().now(), virtual_start(), "the clock did not move");
    Ok(())
}
