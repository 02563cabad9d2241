//! Account deletion, data export and the retention of sent messages, driven over HTTP against
//! an engine with the embedded store on disk and the built-in fakes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Duration as Span;
use followup_core::clock::Clock as _;
use followup_core::domain::Channel;
use followup_core::ids::TenantId;
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_csv};
use serde_json::{Value, json};

/// Returns a sequence of an email at once and a second one an hour later.
fn two_emails_sequence() -> Value {
    json!({
        "name": "two emails",
        "steps": [
            {"channel": "email", "delay": 0, "subject": "First for {{email}}",
             "body": "Hello {{email}}, this is the first."},
            {"channel": "email", "delay": "1h", "subject": "Second for {{email}}",
             "body": "Hello {{email}}, this is the second."}
        ]
    })
}

/// Connects a Gmail mailbox `{name}@example.com` with the token `{name}-access-token`.
async fn connect_gmail(engine: &TestEngine, key: &str, name: &str) -> anyhow::Result<()> {
    let body = json!({"sender": format!("{name}@example.com"),
                      "access_token": format!("{name}-access-token"),
                      "limits": {"per_minute": 6000, "per_day": 1_000_000}});
    engine.connect(key, "gmail", &body).await?;
    Ok(())
}

/// Counts the emails the Gmail fake received for recipients starting with `prefix`.
fn received_by(engine: &TestEngine, prefix: &str) -> anyhow::Result<usize> {
    let received = engine.running.fakes()?.received();
    Ok(received.iter().filter(|message| message.to.starts_with(prefix)).count())
}

/// Runs dispatch rounds, moving the virtual clock to each next instant with work, until no
/// work is due within the next 30 minutes. The second email of `two_emails_sequence` stays
/// pending.
async fn dispatch_due_now(engine: &TestEngine) {
    let clock = engine.virtual_clock();
    let horizon = clock.now() + Span::minutes(30);
    for _ in 0..10_000 {
        let report = engine.running.engine.run_round().await;
        match report.next_wake {
            None => return,
            Some(next) if next > horizon => return,
            Some(next) if next > clock.now() => clock.advance_to(next),
            Some(_) => {}
        }
    }
    panic!("dispatch still busy after 10,000 rounds");
}

async fn tenant_id(engine: &TestEngine, name: &str) -> anyhow::Result<TenantId> {
    let tenants = engine.running.engine.store().tenants().await?;
    let tenant = tenants.iter().find(|tenant| tenant.name == name);
    Ok(tenant.ok_or_else(|| anyhow::anyhow!("tenant {name} not found"))?.id)
}

/// Polls the operator's tenant listing until the deletion of `tenant` is complete, for at
/// most 30 seconds, and returns its entry.
async fn wait_for_purge(engine: &TestEngine, tenant: TenantId) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listing: Value = engine
            .http
            .get(engine.url("/admin/v1/tenants"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let entry = listing.as_array().and_then(|rows| {
            rows.iter().find(|row| row["id"] == json!(tenant) && !row["deletion"].is_null())
        });
        if let Some(entry) = entry
            && !entry["deletion"]["completed_at"].is_null()
        {
            return Ok(entry.clone());
        }
        anyhow::ensure!(Instant::now() < deadline, "purge of {tenant} unfinished after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the tenant's export and returns its lines, checking the content type.
async fn export_lines(engine: &TestEngine, key: &str) -> anyhow::Result<Vec<Value>> {
    let response = engine.http.get(engine.url("/v1/export")).bearer_auth(key).send().await?;
    anyhow::ensure!(response.status() == 200, "export answered {}", response.status());
    let content_type = response.headers().get("content-type").cloned();
    assert_eq!(content_type.as_ref().and_then(|v| v.to_str().ok()), Some("application/x-ndjson"));
    let text = response.text().await?;
    text.lines().map(|line| Ok(serde_json::from_str(line)?)).collect()
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["type"] == kind).collect()
}

#[actix_rt::test]
async fn deletion_stops_sends_and_purges_records() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| config.retention.purge_chunk_records = 100).await?;
    let doomed = engine.create_tenant("doomed", "pro").await?;
    let kept = engine.create_tenant("kept", "pro").await?;
    connect_gmail(&engine, &doomed, "doomed-sender").await?;
    connect_gmail(&engine, &kept, "kept-sender").await?;
    for (key, prefix) in [(&doomed, "doomed"), (&kept, "kept")] {
        let sequence = engine.create_sequence(key, &two_emails_sequence()).await?;
        let (status, report) =
            engine.upload(key, &sequence, "text/csv", email_csv(prefix, 300)).await?;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["accepted"], 300);
    }
    dispatch_due_now(&engine).await;
    assert_eq!(received_by(&engine, "doomed")?, 300, "first emails of the deleted tenant");
    let doomed_id = tenant_id(&engine, "doomed").await?;

    let response = engine.http.delete(engine.url("/v1/tenant")).bearer_auth(&doomed).send().await?;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await?;
    assert!(answer["deletion"].is_string(), "{answer}");
    assert_eq!(answer["tenant"], json!(doomed_id));

    // The key is refused at once, on every route.
    for path in ["/v1/sequences", "/v1/export", "/v1/connections"] {
        let refused = engine.http.get(engine.url(path)).bearer_auth(&doomed).send().await?;
        assert_eq!(refused.status(), 401, "{path} after the deletion");
    }
    let again = engine.http.delete(engine.url("/v1/tenant")).bearer_auth(&doomed).send().await?;
    assert_eq!(again.status(), 401, "a second deletion with the revoked key");

    // The second emails fall due: the other tenant's go out, the deleted tenant's do not.
    engine.virtual_clock().advance(Span::hours(2));
    dispatch_due_now(&engine).await;
    assert_eq!(received_by(&engine, "doomed")?, 300, "nothing sent after the deletion");
    assert_eq!(received_by(&engine, "kept")?, 600, "the other tenant keeps sending");

    let entry = wait_for_purge(&engine, doomed_id).await?;
    // Per contact: the contact, its schedule, two follow-ups, one attempt, the pending second
    // email's due-index entry and the first email's sent-index entry and kept message; then
    // the sequence and the connection.
    assert_eq!(entry["deletion"]["records_purged"], 300 * 8 + 2, "{entry}");
    assert_eq!(entry["plan"], "pro");
    assert!(entry.get("name").is_none(), "the deleted tenant's name is not shown: {entry}");

    let store = engine.running.engine.store();
    assert!(store.tenant(doomed_id).await?.is_none());
    assert!(store.connections(doomed_id).await?.is_empty());
    assert!(store.sequences(doomed_id).await?.is_empty());
    assert!(store.contacts_page(doomed_id, None, 10).await?.is_empty());
    assert!(store.schedules_page(doomed_id, None, 10).await?.is_empty());
    assert!(store.follow_ups_page(doomed_id, None, 10).await?.is_empty());
    assert!(store.attempts_page(doomed_id, None, 10).await?.is_empty());
    let billing = store.billing_record(doomed_id).await?.expect("the billing record stays");
    assert_eq!(billing.plan, "pro");
    let expected: BTreeMap<String, BTreeMap<Channel, u64>> =
        [("2026-12".to_owned(), [(Channel::Email, 300)].into())].into();
    assert_eq!(billing.sends, expected, "sends per month and channel");

    let kept_lines = export_lines(&engine, &kept).await?;
    assert_eq!(of_type(&kept_lines, "contact").len(), 300, "the other tenant keeps its contacts");
    assert_eq!(of_type(&kept_lines, "attempt").len(), 600, "and its attempts");
    Ok(())
}

#[actix_rt::test]
async fn export_contains_every_record_and_no_secret() -> anyhow::Result<()> {
    const CONTACTS: usize = 3_000;
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("exporter", "pro").await?;
    connect_gmail(&engine, &key, "exporter").await?;
    let twilio = json!({"sender": "+15005550006", "account_sid": format!("AC{}", "0".repeat(32)),
                        "auth_token": "twilio-auth-secret"});
    engine.connect(&key, "twilio", &twilio).await?;
    let sequence = engine.create_sequence(&key, &two_emails_sequence()).await?;
    let (_, report) = engine.upload(&key, &sequence, "text/csv", email_csv("x", CONTACTS)).await?;
    assert_eq!(report["accepted"], CONTACTS);
    dispatch_due_now(&engine).await;

    let response = engine.http.get(engine.url("/v1/export")).bearer_auth(&key).send().await?;
    let text = response.text().await?;
    assert!(!text.contains("-access-token"), "no OAuth token appears in the export");
    assert!(!text.contains("twilio-auth-secret"), "no Twilio auth token appears in the export");
    let lines: Vec<Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.last().map(|line| line["type"].clone()), Some(json!("end")));

    let tenant = of_type(&lines, "tenant");
    assert_eq!(tenant.len(), 1);
    assert_eq!(tenant[0]["name"], "exporter");
    assert!(tenant[0].get("api_key_sha256").is_none(), "no API key hash");
    let connections = of_type(&lines, "connection");
    let providers: BTreeSet<&str> =
        connections.iter().filter_map(|c| c["provider"].as_str()).collect();
    assert_eq!(providers, BTreeSet::from(["gmail", "twilio"]));
    assert!(connections.iter().all(|c| c.get("credentials").is_none()), "no credentials");
    assert_eq!(of_type(&lines, "sequence").len(), 1);

    let emails: BTreeSet<&str> =
        of_type(&lines, "contact").iter().filter_map(|c| c["email"].as_str()).collect();
    assert_eq!(emails.len(), CONTACTS, "each contact once");
    for n in 0..CONTACTS {
        assert!(emails.contains(format!("x{n}@example.com").as_str()), "contact x{n} exported");
    }
    let schedules = of_type(&lines, "schedule");
    let schedule_ids: BTreeSet<&str> = schedules.iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(schedule_ids.len(), CONTACTS, "each schedule once");

    let follow_ups = of_type(&lines, "follow_up");
    assert_eq!(follow_ups.len(), 2 * CONTACTS, "two follow-ups per schedule");
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for follow_up in &follow_ups {
        *states.entry(follow_up["state"].as_str().unwrap_or_default()).or_default() += 1;
        assert!(follow_up["due_at"].is_string(), "{follow_up}");
    }
    assert_eq!(states, BTreeMap::from([("pending", CONTACTS), ("sent", CONTACTS)]));
    let sent_at = follow_ups.iter().filter(|f| f["sent_at"].is_string()).count();
    assert_eq!(sent_at, CONTACTS, "sent follow-ups carry their sent time");

    let attempts = of_type(&lines, "attempt");
    assert_eq!(attempts.len(), CONTACTS, "one attempt per sent follow-up");
    for attempt in &attempts {
        assert_eq!(attempt["result"], "sent", "{attempt}");
        let subject = attempt["message"]["subject"].as_str().unwrap_or_default();
        let body = attempt["message"]["body"].as_str().unwrap_or_default();
        let address = subject.strip_prefix("First for ").unwrap_or_default();
        assert!(emails.contains(address), "the subject as rendered: {subject}");
        assert_eq!(body, format!("Hello {address}, this is the first."));
    }
    Ok(())
}

/// Uploads `count` contacts named `{prefix}{n}` and sends their first email now.
async fn send_batch(engine: &TestEngine, key: &str, sequence: &str, prefix: &str, count: usize) {
    let (status, report) =
        engine.upload(key, sequence, "text/csv", email_csv(prefix, count)).await.expect("upload");
    assert_eq!(status, 200, "{report}");
    dispatch_due_now(engine).await;
}

/// Returns each exported attempt's recipient (from its subject) and whether it kept its message.
fn kept_messages(lines: &[Value]) -> BTreeMap<String, bool> {
    // A follow-up id is an object (schedule and step); its JSON text serves as the key.
    let follow_ups: BTreeMap<String, &str> = of_type(lines, "follow_up")
        .iter()
        .filter_map(|f| Some((f["id"].to_string(), f["contact"].as_str()?)))
        .collect();
    let contacts: BTreeMap<&str, &str> = of_type(lines, "contact")
        .iter()
        .filter_map(|c| Some((c["id"].as_str()?, c["email"].as_str()?)))
        .collect();
    of_type(lines, "attempt")
        .iter()
        .filter_map(|attempt| {
            let contact = follow_ups.get(&attempt["follow_up"].to_string())?;
            let email = contacts.get(contact)?;
            Some(((*email).to_owned(), !attempt["message"].is_null()))
        })
        .collect()
}

#[actix_rt::test]
async fn retention_sweep_removes_only_old_messages() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.retention.sent_message_days = 30;
        config.retention.sweep_interval_seconds = 1;
    })
    .await?;
    let key = engine.create_tenant("retains", "pro").await?;
    connect_gmail(&engine, &key, "retainer").await?;
    let sequence = engine.create_sequence(&key, &followup_tests::email_now_sequence()).await?;
    let clock = engine.virtual_clock();

    send_batch(&engine, &key, &sequence, "old", 3).await;
    clock.advance(Span::days(20));
    send_batch(&engine, &key, &sequence, "new", 3).await;
    let kept = kept_messages(&export_lines(&engine, &key).await?);
    assert_eq!(kept.len(), 6);
    assert!(kept.values().all(|&kept| kept), "every message kept before it expires: {kept:?}");

    // 31 days after the first batch, 11 after the second; the sweep runs every second.
    clock.advance(Span::days(11));
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let kept = kept_messages(&export_lines(&engine, &key).await?);
        if kept.iter().all(|(email, kept)| *kept == email.starts_with("new")) {
            break kept;
        }
        anyhow::ensure!(Instant::now() < deadline, "sweep did not run within 10 s: {kept:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let old = kept.iter().filter(|(email, _)| email.starts_with("old"));
    assert!(old.clone().all(|(_, kept)| !kept), "messages past 30 days are removed");
    assert_eq!(old.count(), 3, "their attempts stay");
    let new = kept.iter().filter(|(email, _)| email.starts_with("new"));
    assert!(new.clone().all(|(_, kept)| *kept), "messages within 30 days are kept");
    assert_eq!(new.count(), 3);
    Ok(())
}

#[actix_rt::test]
async fn zero_retention_stores_no_message() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| config.retention.sent_message_days = 0).await?;
    let key = engine.create_tenant("forgets", "pro").await?;
    connect_gmail(&engine, &key, "forgetter").await?;
    let sequence = engine.create_sequence(&key, &followup_tests::email_now_sequence()).await?;
    send_batch(&engine, &key, &sequence, "gone", 2).await;

    let lines = export_lines(&engine, &key).await?;
    let attempts = of_type(&lines, "attempt");
    assert_eq!(attempts.len(), 2, "the attempts are recorded");
    assert!(attempts.iter().all(|a| a["result"] == "sent"), "{attempts:?}");
    assert!(attempts.iter().all(|a| a["message"].is_null()), "without their message");
    Ok(())
}

#[actix_rt::test]
async fn deletion_waits_for_sends_in_flight() -> anyhow::Result<()> {
    // Every fake response takes 200 ms, so a send is in flight most of the time.
    let latency = Duration::from_millis(200);
    let engine = TestEngine::start_real_time_with_latency(|_| {}, latency).await?;
    let doomed = engine.create_tenant("doomed", "pro").await?;
    let kept = engine.create_tenant("kept", "pro").await?;
    for (key, name) in [(&doomed, "doomed"), (&kept, "kept")] {
        // Ten sends a second, so that sends keep going for the whole test.
        let body = json!({"sender": format!("{name}@example.com"),
                          "access_token": format!("{name}-access-token"),
                          "limits": {"per_minute": 600, "per_day": 1_000_000}});
        engine.connect(key, "gmail", &body).await?;
        let sequence = engine.create_sequence(key, &followup_tests::email_now_sequence()).await?;
        let (status, report) =
            engine.upload(key, &sequence, "text/csv", email_csv(name, 200)).await?;
        assert_eq!(status, 200, "{report}");
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    while received_by(&engine, "doomed")? == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no send of the tenant within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first batch's response has just arrived. The next batch leaves within a few
    // milliseconds and waits 200 ms for its response, so the deletion lands in the middle.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let response = engine.http.delete(engine.url("/v1/tenant")).bearer_auth(&doomed).send().await?;
    assert_eq!(response.status(), 202);
    let at_answer = received_by(&engine, "doomed")?;
    let kept_at_answer = received_by(&engine, "kept")?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(at_answer < 200, "the deletion came before every send was made");
    assert_eq!(received_by(&engine, "doomed")?, at_answer, "nothing sent after the answer");
    assert!(received_by(&engine, "kept")? > kept_at_answer, "the other tenant keeps sending");
    Ok(())
}

#[actix_rt::test]
async fn concurrent_deletions_accept_one() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("twice", "pro").await?;
    let delete = || engine.http.delete(engine.url("/v1/tenant")).bearer_auth(&key).send();
    let (first, second) = tokio::join!(delete(), delete());
    let mut statuses = [first?.status().as_u16(), second?.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 401], "one deletion begins, the other finds the key revoked");
    Ok(())
}
