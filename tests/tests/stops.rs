//! Stop signals and the suppression list end to end: the API, the tenant actor's last check
//! before a request leaves, and what the fakes received.

use std::sync::Arc;
use std::time::Duration;

use followup_adapters::fakes::FakeConfig;
use followup_core::clock::{Clock, SystemClock};
use followup_core::domain::Provider;
use followup_tests::TestEngine;
use serde_json::{Value, json};

/// Three steps: an email at once, an email a day later, an SMS two days later.
fn three_step_sequence() -> Value {
    json!({
        "name": "three steps",
        "steps": [
            {"channel": "email", "delay": 0, "subject": "Hello", "body": "First."},
            {"channel": "email", "delay": "1d", "subject": "Again", "body": "Second."},
            {"channel": "sms", "delay": "1d", "body": "Third."}
        ]
    })
}

async fn post(engine: &TestEngine, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = engine
        .http
        .post(engine.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON response"))
}

async fn follow_ups_of(engine: &TestEngine, key: &str, sequence: &str, contact: &str) -> Value {
    let path = format!("/v1/schedules?sequence={sequence}&contact={contact}");
    engine.get_json(key, &path).await.expect("schedule")["follow_ups"].clone()
}

fn states(follow_ups: &Value) -> Vec<String> {
    let list = follow_ups.as_array().cloned().unwrap_or_default();
    list.iter().map(|f| f["state"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Returns how many sends the fakes accepted for `to`.
fn received_by(engine: &TestEngine, to: &str) -> usize {
    let fakes = engine.running.fakes().expect("fakes");
    fakes.received().iter().filter(|message| message.to == to).count()
}

#[actix_rt::test]
async fn stop_cancels_later_steps_only() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &three_step_sequence()).await?;
    let csv = "email,phone\nana@example.com,+14155550101\nbob@example.com,+14155550102\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    // The first emails go out, then Ana replies.
    engine.running.engine.run_round().await;
    assert_eq!(received_by(&engine, "ana@example.com"), 1, "Ana's first email left");
    let stop = json!({"email": "ANA@example.com", "reason": "replied"});
    let (status, answer) = post(&engine, &key, "/v1/contacts/stop", &stop).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cancelled"], 2, "{answer}");
    engine.settle(10).await?;

    let ana = follow_ups_of(&engine, &key, &sequence, "ana@example.com").await;
    assert_eq!(states(&ana), ["sent", "cancelled", "cancelled"], "{ana}");
    assert_eq!(ana[1]["reason"], "contact stopped: replied");
    let bob = follow_ups_of(&engine, &key, &sequence, "bob@example.com").await;
    assert_eq!(states(&bob), ["sent", "sent", "sent"], "{bob}");
    assert_eq!(received_by(&engine, "ana@example.com"), 1, "nothing more reached Ana");
    assert_eq!(received_by(&engine, "+14155550101"), 0, "no SMS reached Ana");
    Ok(())
}

#[actix_rt::test]
async fn stop_stored_while_due_wins_at_send_time() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &three_step_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", "email\ncarla@example.com\n").await?;
    let follow_ups = follow_ups_of(&engine, &key, &sequence, "carla@example.com").await;
    let contact: followup_core::ids::ContactId =
        follow_ups[0]["contact"].as_str().unwrap_or_default().parse()?;
    let tenant: followup_core::ids::TenantId =
        follow_ups[0]["tenant"].as_str().unwrap_or_default().parse()?;

    // The stop's entry is stored while the first email is due, and its cancellation has not
    // reached the tenant actor: the state a round sees when the stop lands mid-round.
    let now = engine.virtual_clock().now();
    let entry = followup_core::suppression::Suppression::of_contact(
        tenant,
        contact,
        followup_core::suppression::SuppressionReason::MeetingBooked,
        now,
    );
    engine.running.engine.store().put_suppressions(tenant, vec![entry]).await?;
    engine.settle(10).await?;

    let follow_ups = follow_ups_of(&engine, &key, &sequence, "carla@example.com").await;
    assert_eq!(states(&follow_ups)[..2], ["cancelled", "cancelled"], "{follow_ups}");
    assert_eq!(follow_ups[0]["reason"], "contact stopped: meeting_booked");
    assert_eq!(follow_ups[0]["attempts"], 0, "no attempt was made");
    assert_eq!(received_by(&engine, "carla@example.com"), 0, "nothing was sent");
    Ok(())
}

#[actix_rt::test]
async fn stop_during_a_round_wins() -> anyhow::Result<()> {
    // The fakes answer after 800 ms, so the round that refreshes the Gmail token is still
    // under way when the stop arrives.
    let fakes_clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fakes = FakeConfig::new(fakes_clock).with_latency(Duration::from_millis(800));
    let engine = TestEngine::start_with_fakes(|_| {}, fakes).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let gmail = json!({"sender": "sales@example.com", "access_token": "race-access",
                       "refresh_token": "race-refresh", "expires_in": 60,
                       "limits": {"per_minute": 6000, "per_day": 100000}});
    engine.connect(&key, "gmail", &gmail).await?;
    let sequence = engine.create_sequence(&key, &three_step_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", "email\ndan@example.com\n").await?;

    let dispatch = engine.running.engine.clone();
    let round = actix_rt::spawn(async move { dispatch.run_round().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stop = json!({"email": "dan@example.com", "reason": "replied"});
    let (status, answer) = post(&engine, &key, "/v1/contacts/stop", &stop).await;
    round.await?;

    assert_eq!(status, 200, "{answer}");
    let fakes = engine.running.fakes()?;
    assert!(!fakes.token_requests().is_empty(), "the round refreshed the token meanwhile");
    // The round, not the stop's cancellation, settled the email: the cancellation waited for
    // the round and found nothing left to cancel of that step.
    // Dan has no phone, so his SMS step was skipped at upload.
    assert_eq!(answer["cancelled"], 1, "only the later email: {answer}");
    let follow_ups = follow_ups_of(&engine, &key, &sequence, "dan@example.com").await;
    assert_eq!(states(&follow_ups), ["cancelled", "cancelled", "skipped"], "{follow_ups}");
    assert_eq!(follow_ups[0]["reason"], "contact stopped: replied");
    assert_eq!(received_by(&engine, "dan@example.com"), 0, "the stop won over the send");
    Ok(())
}

#[actix_rt::test]
async fn stops_by_id_external_id_and_in_bulk() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &three_step_sequence()).await?;
    let csv = "external_id,email,phone\n\
               c-1,one@example.com,+14155550111\n\
               c-2,two@example.com,+14155550112\n\
               c-3,three@example.com,+14155550113\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;
    let one = follow_ups_of(&engine, &key, &sequence, "c-1").await;
    let contact_one = one[0]["contact"].as_str().unwrap_or_default().to_owned();

    let path = format!("/v1/contacts/{contact_one}/stop");
    let (status, answer) = post(&engine, &key, &path, &json!({"reason": "bounced"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cancelled"], 3, "{answer}");

    let bulk = json!({"stops": [
        {"external_id": "c-2", "reason": "meeting_booked"},
        {"phone": "(415) 555-0113", "reason": "manual"},
        {"email": "nobody@example.com", "reason": "replied"},
        {"email": "not an address", "reason": "replied"},
        {"external_id": "c-2", "email": "two@example.com", "reason": "replied"},
        {"external_id": "c-2", "reason": "unsubscribed"}
    ]});
    let (status, answer) = post(&engine, &key, "/v1/contacts/stop", &bulk).await;
    assert_eq!(status, 200, "{answer}");
    let results = &answer["results"];
    assert_eq!(results[0]["cancelled"], 3, "{answer}");
    assert_eq!(results[1]["cancelled"], 3, "{answer}");
    assert_eq!(results[2]["error"], "no contact matches", "{answer}");
    let invalid = results[3]["error"].as_str().unwrap_or_default();
    assert!(invalid.contains("\"not an address\""), "{answer}");
    let ambiguous = results[4]["error"].as_str().unwrap_or_default();
    assert!(ambiguous.contains("exactly one"), "{answer}");
    let wrong_reason = results[5]["error"].as_str().unwrap_or_default();
    assert!(wrong_reason.contains("not a stop reason"), "{answer}");
    assert_eq!(answer["cancelled"], 6, "{answer}");

    let unknown = "/v1/contacts/0191f2a0-1111-7000-8000-000000000000/stop";
    let (status, _) = post(&engine, &key, unknown, &json!({"reason": "manual"})).await;
    assert_eq!(status, 404, "an unknown contact id");
    engine.settle(10).await?;
    let fakes = engine.running.fakes()?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 0, "every contact was stopped");
    Ok(())
}

#[actix_rt::test]
async fn suppressed_address_stops_its_channel() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let import = json!({"entries": [
        {"kind": "email", "value": "Eve@Example.com"},
        {"kind": "domain", "value": "blocked.example"},
        {"kind": "phone", "value": "+14155550199"},
        {"kind": "phone", "value": "12"},
        {"kind": "contact", "value": "x"}
    ], "reason": "unsubscribed"});
    let (status, answer) = post(&engine, &key, "/v1/suppressions", &import).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stored"], 3, "{answer}");
    assert_eq!(answer["errors"].as_array().map(Vec::len), Some(2), "{answer}");

    let sequence = engine.create_sequence(&key, &three_step_sequence()).await?;
    let csv = "email,phone\n\
               eve@example.com,+14155550121\n\
               frank@blocked.example,+14155550199\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;
    engine.settle(10).await?;

    // Under the default scope an email suppression stops email only, and a number stops SMS.
    let eve = follow_ups_of(&engine, &key, &sequence, "eve@example.com").await;
    assert_eq!(states(&eve), ["skipped", "skipped", "sent"], "{eve}");
    assert_eq!(eve[0]["reason"], "email suppressed: unsubscribed");
    let frank = follow_ups_of(&engine, &key, &sequence, "frank@blocked.example").await;
    assert_eq!(states(&frank), ["skipped", "skipped", "skipped"], "{frank}");
    assert_eq!(frank[0]["reason"], "domain suppressed: unsubscribed");
    assert_eq!(frank[2]["reason"], "phone suppressed: unsubscribed");

    // The export lists the entries, and removing one lets its address be reached again.
    let listed = engine.get_json(&key, "/v1/suppressions?limit=2").await?;
    assert_eq!(listed["suppressions"].as_array().map(Vec::len), Some(2), "{listed}");
    let after = listed["next_after"].as_str().unwrap_or_default().to_owned();
    let rest = engine.get_json(&key, &format!("/v1/suppressions?after={after}")).await?;
    assert_eq!(rest["suppressions"].as_array().map(Vec::len), Some(1), "{rest}");
    let remove = json!({"entries": [{"kind": "email", "value": "eve@example.com"}]});
    let (status, answer) = post(&engine, &key, "/v1/suppressions/remove", &remove).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["removed"], 1, "{answer}");
    Ok(())
}

#[actix_rt::test]
async fn contact_scope_stops_every_channel() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let response = engine
        .http
        .put(engine.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"suppression_scope": "contact"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let settings = engine.get_json(&key, "/v1/settings").await?;
    assert_eq!(settings["suppression_scope"], "contact");
    let import = json!({"entries": [{"kind": "email", "value": "gil@example.com"}]});
    let (status, answer) = post(&engine, &key, "/v1/suppressions", &import).await;
    assert_eq!(status, 200, "{answer}");

    let sequence = engine.create_sequence(&key, &three_step_sequence()).await?;
    engine
        .upload(&key, &sequence, "text/csv", "email,phone\ngil@example.com,+14155550131\n")
        .await?;
    engine.settle(10).await?;
    let gil = follow_ups_of(&engine, &key, &sequence, "gil@example.com").await;
    assert_eq!(states(&gil), ["skipped", "skipped", "skipped"], "{gil}");
    assert_eq!(received_by(&engine, "+14155550131"), 0, "the SMS was stopped too");
    Ok(())
}

/// The path of the engine's unsubscribe link in a `List-Unsubscribe` value such as
/// `<https://host/unsubscribe/T/C/TOKEN>`.
fn unsubscribe_path(header: &str) -> String {
    let url = header.trim_start_matches('<').trim_end_matches('>');
    let start = url.find("/unsubscribe/").unwrap_or_else(|| panic!("no engine link: {header}"));
    url[start..].to_owned()
}

#[actix_rt::test]
async fn unsubscribe_link_scanner_and_one_click() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.webhooks.public_base_url = Some("https://followup.example.test".to_owned());
    })
    .await?;
    let key = engine.create_tenant("Acme <Sales>", "pro").await?;
    let outlook = json!({"sender": "sales@example.com", "access_token": "test-outlook-token",
                         "limits": {"per_minute": 6000, "per_day": 100000}});
    engine.connect(&key, "outlook", &outlook).await?;
    let sequence = json!({"name": "two emails", "steps": [
        {"channel": "email", "delay": 0, "subject": "Hello", "body": "First."},
        {"channel": "email", "delay": "1d", "subject": "Again", "body": "Second."}
    ]});
    let sequence = engine.create_sequence(&key, &sequence).await?;
    let csv = "email\nhana@example.com\nivan@example.com\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;
    engine.running.engine.run_round().await;

    let fakes = engine.running.fakes()?;
    let header_of = |to: &str| {
        let message = fakes.received().into_iter().find(|m| m.to == to).expect("first email");
        message.list_unsubscribe.unwrap_or_else(|| panic!("no List-Unsubscribe to {to}"))
    };
    let hana_path = unsubscribe_path(&header_of("hana@example.com"));
    let ivan_path = unsubscribe_path(&header_of("ivan@example.com"));
    assert_ne!(hana_path, ivan_path, "each contact has a link of its own");

    // A link scanner's GET shows the page and unsubscribes nobody.
    let page = engine.http.get(engine.url(&hana_path)).send().await?;
    assert_eq!(page.status(), 200);
    let html = page.text().await?;
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(html.contains("Acme &lt;Sales&gt;"), "the tenant's name, escaped: {html}");
    let listed = engine.get_json(&key, "/v1/suppressions").await?;
    assert_eq!(listed["suppressions"], json!([]), "a GET unsubscribes nobody");

    // A token moved to another contact, a changed token, and a POST without the one-click
    // body are all refused.
    let parts: Vec<&str> = hana_path.split('/').collect();
    let ivan_contact = ivan_path.split('/').nth(3).unwrap_or_default();
    let forged = format!("/unsubscribe/{}/{ivan_contact}/{}", parts[2], parts[4]);
    let one_click = "List-Unsubscribe=One-Click";
    let post = |path: String, body: &'static str| {
        engine
            .http
            .post(engine.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(post(forged.clone(), one_click).await?.status(), 404, "token of another contact");
    let other_tenant = "0191f2a0-2222-7000-8000-000000000000";
    let moved = format!("/unsubscribe/{other_tenant}/{}/{}", parts[3], parts[4]);
    assert_eq!(post(moved, one_click).await?.status(), 404, "token under another tenant");
    let changed = format!("{}x", hana_path);
    assert_eq!(post(changed, one_click).await?.status(), 404, "changed token");
    assert_eq!(engine.http.get(engine.url(&forged)).send().await?.status(), 404);
    assert_eq!(post(hana_path.clone(), "").await?.status(), 400, "no one-click body");
    let listed = engine.get_json(&key, "/v1/suppressions").await?;
    assert_eq!(listed["suppressions"], json!([]), "nothing refused unsubscribed anyone");

    // The one-click POST unsubscribes Hana's address, and only hers.
    let response = post(hana_path, one_click).await?;
    assert_eq!(response.status(), 200);
    let listed = engine.get_json(&key, "/v1/suppressions").await?;
    assert_eq!(listed["suppressions"][0]["value"], "hana@example.com", "{listed}");
    assert_eq!(listed["suppressions"][0]["reason"], "unsubscribed", "{listed}");
    engine.settle(5).await?;
    assert_eq!(received_by(&engine, "hana@example.com"), 1, "no email after unsubscribing");
    assert_eq!(received_by(&engine, "ivan@example.com"), 2, "Ivan still gets both");
    Ok(())
}
