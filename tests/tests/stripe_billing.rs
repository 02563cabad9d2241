//! Stripe billing through the HTTP API. The operator links a tenant to its Stripe customer,
//! and the adapters' Stripe fake delivers signed subscription and invoice events to
//! `/webhooks/stripe`. The tenant's plan, standing and sends follow the events, whatever the
//! order and repetition of the deliveries.

use std::sync::{Arc, OnceLock};

use chrono::Duration;
use followup_adapters::fakes::stripe::api::{InjectedFailure, StripeApiServer};
use followup_adapters::fakes::stripe::{FAKE_API_KEY, FakeStripeEvent, StripeFake};
use followup_core::clock::Clock as _;
use followup_core::domain::{Channel, FollowUpState};
use followup_dispatcher::config::Plan;
use followup_dispatcher::telemetry::install_metrics;
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_csv, email_now_sequence};
use serde_json::{Value, json};

const SIGNING_SECRET: &str = "whsec_stripe_billing_test";
const STARTER_PRICE: &str = "price_starter_monthly";
const PRO_PRICE: &str = "price_pro_monthly";
const METER_EVENT: &str = "followup_sends";

/// The process's one metrics recorder, shared by the engines of this file.
fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| install_metrics().expect("the only recorder of this process")).clone()
}

/// Returns the `/metrics` samples named `name`, as their labels and values.
async fn samples(engine: &TestEngine, name: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let text = engine.http.get(engine.url("/metrics")).send().await?.text().await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    let mut found = Vec::new();
    for sample in scrape.samples.into_iter().filter(|sample| sample.metric == name) {
        if let prometheus_parse::Value::Counter(value) = sample.value {
            found.push((sample.labels.to_string(), value));
        }
    }
    Ok(found)
}

/// Starts an engine with Stripe webhooks on, two plans sold at Stripe prices, and a Stripe fake
/// on the engine's virtual clock that delivers to it.
async fn start_with_stripe() -> anyhow::Result<(TestEngine, StripeFake)> {
    let engine = TestEngine::start_with_metrics(
        |config| {
            config.webhooks.stripe_signing_secrets = vec![SIGNING_SECRET.to_owned().into()];
            let starter = Plan { stripe_price_id: Some(STARTER_PRICE.into()), ..Plan::unlimited() };
            let pro = Plan { stripe_price_id: Some(PRO_PRICE.into()), ..Plan::unlimited() };
            config.plans.insert("starter_stripe".into(), starter);
            config.plans.insert("pro_stripe".into(), pro);
        },
        Some(metrics_handle()),
    )
    .await?;
    let clock: Arc<dyn followup_core::clock::Clock> = engine.virtual_clock().clone();
    let fake = StripeFake::new(&engine.url("/webhooks/stripe"), SIGNING_SECRET, clock)?;
    Ok((engine, fake))
}

/// Delivers `event` and returns the engine's response body, checking that it is a 200.
async fn deliver(fake: &StripeFake, event: &FakeStripeEvent) -> anyhow::Result<Value> {
    let delivery = fake.deliver(event).await?;
    assert_eq!(delivery.status, 200, "{} answered {}", event.kind, delivery.body);
    Ok(delivery.body)
}

/// Creates a tenant linked to a new customer of the fake; returns its API key, id and customer.
async fn linked_tenant(
    engine: &TestEngine,
    fake: &StripeFake,
    plan: &str,
) -> anyhow::Result<(String, String, String)> {
    let key = engine.create_tenant("stripe", plan).await?;
    let tenant = tenant_id(engine, &key).await?;
    let customer = fake.create_customer();
    let (status, body) = link(engine, &tenant, &customer).await?;
    assert_eq!(status, 200, "{body}");
    Ok((key, tenant, customer))
}

async fn plan_of(engine: &TestEngine, key: &str) -> anyhow::Result<String> {
    let usage = engine.get_json(key, "/v1/usage").await?;
    Ok(usage["plan"].as_str().unwrap_or_default().to_owned())
}

async fn email_count(engine: &TestEngine, state: FollowUpState) -> u64 {
    let counts = engine.running.engine.store().count_follow_ups(None).await.expect("counts");
    counts.get(&(Channel::Email, state)).copied().unwrap_or(0)
}

fn advance(engine: &TestEngine, duration: Duration) {
    engine.virtual_clock().advance(duration);
}

async fn tenant_id(engine: &TestEngine, key: &str) -> anyhow::Result<String> {
    let usage = engine.get_json(key, "/v1/usage").await?;
    Ok(usage["tenant"].as_str().expect("tenant id in the usage").to_owned())
}

async fn link(engine: &TestEngine, tenant: &str, customer: &str) -> anyhow::Result<(u16, Value)> {
    let response = engine
        .http
        .put(engine.url(&format!("/admin/v1/tenants/{tenant}/stripe-customer")))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"customer_id": customer}))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[actix_rt::test]
async fn customer_links_to_one_tenant() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let first_key = engine.create_tenant("first", "free").await?;
    let second_key = engine.create_tenant("second", "free").await?;
    let first = tenant_id(&engine, &first_key).await?;
    let second = tenant_id(&engine, &second_key).await?;

    let before = engine.get_json(&first_key, "/v1/billing").await?;
    assert_eq!(before["status"], "unmanaged", "{before}");
    assert_eq!(before["sends_allowed"], true, "{before}");

    let (status, linked) = link(&engine, &first, "cus_Link1").await?;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["customer_id"], "cus_Link1", "{linked}");
    assert_eq!(linked["status"], "active", "{linked}");
    let own = engine.get_json(&first_key, "/v1/billing").await?;
    assert_eq!(own["customer_id"], "cus_Link1", "{own}");

    let (status, taken) = link(&engine, &second, "cus_Link1").await?;
    assert_eq!(status, 422, "a customer pays for one tenant: {taken}");
    assert!(taken["error"]["message"].as_str().unwrap_or_default().contains(&first), "{taken}");
    let (status, invalid) = link(&engine, &second, "customer-1").await?;
    assert_eq!(status, 400, "{invalid}");
    assert!(invalid["error"]["message"].as_str().unwrap_or_default().contains("customer_id"));
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, missing) = link(&engine, unknown, "cus_Link2").await?;
    assert_eq!(status, 404, "{missing}");

    let admin = engine
        .http
        .get(engine.url(&format!("/admin/v1/tenants/{first}/billing")))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_eq!(admin.status(), 200);
    let admin: Value = admin.json().await?;
    assert_eq!(admin["customer_id"], "cus_Link1", "{admin}");
    Ok(())
}

#[actix_rt::test]
async fn duplicates_and_reordering_converge() -> anyhow::Result<()> {
    let (engine, fake) = start_with_stripe().await?;
    let (key, _tenant, customer) = linked_tenant(&engine, &fake, "free").await?;

    let created = fake.create_subscription(&customer, STARTER_PRICE)?;
    let subscription = StripeFake::object_id(&created).expect("subscription id");
    let first = deliver(&fake, &created).await?;
    assert_eq!(first["outcome"], "applied", "{first}");
    assert_eq!(plan_of(&engine, &key).await?, "starter_stripe", "the price selects the plan");
    // Stripe's retry of the same event is signed anew, so it passes the replay cache.
    advance(&engine, Duration::seconds(5));
    let again = deliver(&fake, &created).await?;
    assert_eq!(again["duplicate"], true, "{again}");

    advance(&engine, Duration::seconds(10));
    let upgraded = fake.change_price(&subscription, PRO_PRICE)?;
    advance(&engine, Duration::seconds(10));
    let cancelling = fake.cancel_at_period_end(&subscription)?;
    // The newer event arrives first; the older update after it changes nothing.
    let newer = deliver(&fake, &cancelling).await?;
    assert_eq!(newer["outcome"], "applied", "{newer}");
    let older = deliver(&fake, &upgraded).await?;
    assert_eq!(older["outcome"], "outdated", "{older}");
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["cancel_at_period_end"], true, "{billing}");
    assert_eq!(billing["status"], "canceling", "{billing}");
    assert_eq!(billing["price_id"], PRO_PRICE, "{billing}");
    assert_eq!(plan_of(&engine, &key).await?, "pro_stripe", "the newest price's plan");
    Ok(())
}

#[actix_rt::test]
async fn stale_signature_is_rejected() -> anyhow::Result<()> {
    let (engine, fake) = start_with_stripe().await?;
    let (key, _tenant, customer) = linked_tenant(&engine, &fake, "free").await?;
    let created = fake.create_subscription(&customer, STARTER_PRICE)?;
    let stale = engine.virtual_clock().now().timestamp() - 301;
    let delivery = fake.deliver_signed_at(&created, stale).await?;
    assert_eq!(delivery.status, 403, "{}", delivery.body);
    assert_eq!(
        delivery.body["error"]["message"],
        "signature timestamp outside the tolerance window"
    );
    assert_eq!(plan_of(&engine, &key).await?, "free", "a rejected event changes nothing");
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["subscription_id"], Value::Null, "{billing}");
    Ok(())
}

#[actix_rt::test]
async fn unpaid_invoice_pauses_until_paid() -> anyhow::Result<()> {
    let (engine, fake) = start_with_stripe().await?;
    let (key, _tenant, customer) = linked_tenant(&engine, &fake, "starter_stripe").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let created = fake.create_subscription(&customer, STARTER_PRICE)?;
    let subscription = StripeFake::object_id(&created).expect("subscription id");
    deliver(&fake, &created).await?;

    advance(&engine, Duration::seconds(30));
    let failed = fake.fail_invoice(&customer, &subscription)?;
    let invoice = StripeFake::object_id(&failed).expect("invoice id");
    deliver(&fake, &failed).await?;
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["status"], "grace", "{billing}");
    let grace_ends_at = billing["grace_ends_at"].as_str().expect("grace end").to_owned();

    // During the grace period the tenant still sends.
    engine.upload(&key, &sequence, "text/csv", email_csv("grace", 2)).await?;
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 2, "sent during grace");

    // The failure delivered again changes nothing, the grace end included.
    advance(&engine, Duration::hours(1));
    let delivery = fake.deliver(&failed).await?;
    assert_eq!(delivery.body["duplicate"], true, "{}", delivery.body);
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["grace_ends_at"], grace_ends_at.as_str(), "{billing}");

    // After the grace period (3 days by default) nothing is sent and nothing is settled.
    advance(&engine, Duration::days(4));
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["status"], "paused_unpaid", "{billing}");
    assert_eq!(billing["sends_allowed"], false, "{billing}");
    engine.upload(&key, &sequence, "text/csv", email_csv("paused", 3)).await?;
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 2, "no sends while paused");
    assert_eq!(email_count(&engine, FollowUpState::Pending).await, 3, "they stay pending");

    // Paying resumes the tenant, and the pending follow-ups go out.
    let transitions = samples(&engine, "followup_billing_transitions_total").await?;
    let labelled =
        |label: &str| transitions.iter().any(|(labels, n)| labels.contains(label) && *n >= 1.0);
    assert!(labelled("to=\"grace\""), "{transitions:?}");
    assert!(labelled("to=\"paused_unpaid\""), "{transitions:?}");
    assert!(transitions.iter().all(|(labels, _)| !labels.contains("tenant")), "{transitions:?}");
    let paused = samples(&engine, "followup_billing_paused_rounds_total").await?;
    assert!(paused.iter().any(|(_, n)| *n >= 1.0), "{paused:?}");

    let paid = fake.pay_invoice(&invoice)?;
    let applied = deliver(&fake, &paid).await?;
    assert_eq!(applied["outcome"], "applied", "{applied}");
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["status"], "active", "{billing}");
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 5, "sent after payment");
    Ok(())
}

#[actix_rt::test]
async fn cancellation_stops_at_period_end() -> anyhow::Result<()> {
    let (engine, fake) = start_with_stripe().await?;
    let (key, _tenant, customer) = linked_tenant(&engine, &fake, "starter_stripe").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let created = fake.create_subscription(&customer, STARTER_PRICE)?;
    let subscription = StripeFake::object_id(&created).expect("subscription id");
    deliver(&fake, &created).await?;
    advance(&engine, Duration::seconds(30));
    deliver(&fake, &fake.cancel_at_period_end(&subscription)?).await?;
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["status"], "canceling", "{billing}");
    assert_eq!(billing["sends_stop_at"], billing["current_period_end"], "{billing}");

    engine.upload(&key, &sequence, "text/csv", email_csv("before-end", 2)).await?;
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 2, "sent before the end");

    advance(&engine, Duration::days(31));
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["status"], "ended", "{billing}");
    engine.upload(&key, &sequence, "text/csv", email_csv("after-end", 2)).await?;
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 2, "nothing after the end");
    assert_eq!(email_count(&engine, FollowUpState::Pending).await, 2, "they stay pending");

    // The deletion Stripe sends at the end changes nothing further.
    let deleted = deliver(&fake, &fake.delete_subscription(&subscription)?).await?;
    assert_eq!(deleted["outcome"], "applied", "{deleted}");
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["status"], "ended", "{billing}");
    Ok(())
}

#[actix_rt::test]
async fn events_before_link_apply_on_link() -> anyhow::Result<()> {
    let (engine, fake) = start_with_stripe().await?;
    let key = engine.create_tenant("late-link", "free").await?;
    let tenant = tenant_id(&engine, &key).await?;
    let customer = fake.create_customer();
    let created = fake.create_subscription(&customer, PRO_PRICE)?;
    let early = deliver(&fake, &created).await?;
    assert_eq!(early["outcome"], "unknown_customer", "{early}");
    assert_eq!(plan_of(&engine, &key).await?, "free");

    let (status, linked) = link(&engine, &tenant, &customer).await?;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["price_id"], PRO_PRICE, "{linked}");
    assert_eq!(plan_of(&engine, &key).await?, "pro_stripe", "applied when linked");
    Ok(())
}

/// Starts the Stripe fake's REST API on a virtual clock set like the engine's, then an engine
/// whose Stripe client calls it and whose webhooks the fake signs.
async fn start_with_stripe_api() -> anyhow::Result<(TestEngine, Arc<StripeFake>, StripeApiServer)> {
    let clock: Arc<dyn followup_core::clock::Clock> =
        Arc::new(followup_core::clock::VirtualClock::new(followup_tests::virtual_start()));
    let placeholder = "http://127.0.0.1:9/webhooks/stripe";
    let fake = Arc::new(StripeFake::new(placeholder, SIGNING_SECRET, clock)?);
    let server = fake.serve_api()?;
    let api_base = server.url.to_string();
    let engine = TestEngine::start_with_metrics(
        |config| {
            config.webhooks.stripe_signing_secrets = vec![SIGNING_SECRET.to_owned().into()];
            let pro = Plan { stripe_price_id: Some(PRO_PRICE.into()), ..Plan::unlimited() };
            config.plans.insert("pro_stripe".into(), pro);
            let metered =
                Plan { stripe_meter_event_name: Some(METER_EVENT.into()), ..Plan::unlimited() };
            config.plans.insert("metered".into(), metered);
            config.billing.stripe.meter_flush_seconds = 1;
            config.billing.stripe.api_base = api_base;
            config.billing.stripe.secret_key = Some(FAKE_API_KEY.to_owned().into());
        },
        Some(metrics_handle()),
    )
    .await?;
    fake.set_webhook_endpoint(&engine.url("/webhooks/stripe"))?;
    Ok((engine, fake, server))
}

async fn create_tenant_raw(engine: &TestEngine, name: &str) -> anyhow::Result<Value> {
    create_tenant_on_plan(engine, name, "free").await
}

async fn create_tenant_on_plan(
    engine: &TestEngine,
    name: &str,
    plan: &str,
) -> anyhow::Result<Value> {
    let response = engine
        .http
        .post(engine.url("/admin/v1/tenants"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": name, "plan": plan}))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 201);
    Ok(response.json().await?)
}

async fn sync(engine: &TestEngine, tenant: &str) -> anyhow::Result<(u16, Value)> {
    let response = engine
        .http
        .post(engine.url(&format!("/admin/v1/tenants/{tenant}/billing/sync")))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[actix_rt::test]
async fn new_tenant_gets_a_stripe_customer() -> anyhow::Result<()> {
    let (engine, fake, server) = start_with_stripe_api().await?;
    let created = create_tenant_raw(&engine, "acme").await?;
    let tenant = created["id"].as_str().expect("tenant id").to_owned();
    let customer = created["stripe_customer_id"].as_str().expect("customer id").to_owned();
    let customers = fake.customers();
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(customers[0]["id"], customer.as_str());
    assert_eq!(customers[0]["metadata"]["followup_tenant"], tenant.as_str());
    let key = created["api_key"].as_str().expect("api key");
    let billing = engine.get_json(key, "/v1/billing").await?;
    assert_eq!(billing["customer_id"], customer.as_str(), "{billing}");

    // Linking without a customer id keeps the tenant's customer instead of making another.
    let response = engine
        .http
        .put(engine.url(&format!("/admin/v1/tenants/{tenant}/stripe-customer")))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let linked: Value = response.json().await?;
    assert_eq!(linked["customer_id"], customer.as_str(), "{linked}");
    assert_eq!(fake.customers().len(), 1);

    // Stripe down at creation: the tenant exists without a customer, and a link creates it.
    fake.inject_failures([InjectedFailure::Reject(503)]);
    let created = create_tenant_raw(&engine, "beta").await?;
    assert!(created.get("stripe_customer_id").is_none(), "{created}");
    let second = created["id"].as_str().expect("tenant id").to_owned();
    let response = engine
        .http
        .put(engine.url(&format!("/admin/v1/tenants/{second}/stripe-customer")))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let linked: Value = response.json().await?;
    let second_customer = linked["customer_id"].as_str().expect("customer id");
    assert_ne!(second_customer, customer);
    let customers = fake.customers();
    assert_eq!(customers.len(), 2, "{customers:?}");
    assert_eq!(customers[1]["metadata"]["followup_tenant"], second.as_str());
    server.stop().await;
    Ok(())
}

#[actix_rt::test]
async fn sync_applies_missed_subscription_changes() -> anyhow::Result<()> {
    let (engine, fake, server) = start_with_stripe_api().await?;
    let created = create_tenant_raw(&engine, "acme").await?;
    let tenant = created["id"].as_str().expect("tenant id").to_owned();
    let key = created["api_key"].as_str().expect("api key").to_owned();
    let customer = created["stripe_customer_id"].as_str().expect("customer id").to_owned();

    // The subscription's webhook is not delivered: only the sync tells the engine.
    let subscribed = fake.create_subscription(&customer, PRO_PRICE)?;
    let subscription = StripeFake::object_id(&subscribed).expect("subscription id");
    advance(&engine, Duration::seconds(5));
    let (status, synced) = sync(&engine, &tenant).await?;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced["sync"]["subscriptions_listed"], 1, "{synced}");
    assert_eq!(synced["sync"]["subscription_id"], subscription.as_str(), "{synced}");
    assert_eq!(synced["sync"]["changed"], true, "{synced}");
    assert_eq!(synced["billing"]["price_id"], PRO_PRICE, "{synced}");
    assert_eq!(plan_of(&engine, &key).await?, "pro_stripe");

    let (_, again) = sync(&engine, &tenant).await?;
    assert_eq!(again["sync"]["changed"], false, "nothing new: {again}");
    // The webhook arriving late is older than the read and changes nothing.
    let late = fake.deliver_signed_at(&subscribed, engine.virtual_clock().now().timestamp());
    let late = late.await?;
    assert_eq!(late.status, 200, "{}", late.body);
    assert_eq!(late.body["outcome"], "outdated", "{}", late.body);

    // A cancellation whose webhook is lost too.
    advance(&engine, Duration::seconds(5));
    fake.cancel_at_period_end(&subscription)?;
    advance(&engine, Duration::seconds(5));
    let (_, cancelled) = sync(&engine, &tenant).await?;
    assert_eq!(cancelled["sync"]["changed"], true, "{cancelled}");
    assert_eq!(cancelled["billing"]["status"], "canceling", "{cancelled}");
    assert_eq!(cancelled["billing"]["cancel_at_period_end"], true, "{cancelled}");

    // Stripe failing is a 502 naming Stripe, and changes nothing.
    fake.inject_failures([InjectedFailure::Reject(500)]);
    let (status, failed) = sync(&engine, &tenant).await?;
    assert_eq!(status, 502, "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Stripe returned 500"), "{failed}");
    let billing = engine.get_json(&key, "/v1/billing").await?;
    assert_eq!(billing["status"], "canceling", "{billing}");
    server.stop().await;
    Ok(())
}

#[actix_rt::test]
async fn sync_needs_stripe_configured() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("plain", "free").await?;
    let tenant = tenant_id(&engine, &key).await?;
    let (status, body) = sync(&engine, &tenant).await?;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("FOLLOWUP_STRIPE_SECRET_KEY"), "{body}");
    Ok(())
}

#[actix_rt::test]
async fn metered_plan_reports_sends_to_stripe() -> anyhow::Result<()> {
    let (engine, fake, server) = start_with_stripe_api().await?;
    let created = create_tenant_on_plan(&engine, "metered", "metered").await?;
    let tenant = created["id"].as_str().expect("tenant id").to_owned();
    let key = created["api_key"].as_str().expect("api key").to_owned();
    let customer = created["stripe_customer_id"].as_str().expect("customer id").to_owned();
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("metered", 3)).await?;
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 3);

    // The billing actor flushes every second of real time.
    let mut reported = 0;
    for _ in 0..100 {
        let events = fake.meter_events();
        reported = events.iter().map(|event| event.value.parse::<u64>().unwrap_or(0)).sum();
        if reported >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(reported, 3, "every send reported once: {:?}", fake.meter_events());
    for event in fake.meter_events() {
        assert_eq!(event.customer_id, customer);
        assert_eq!(event.event_name, METER_EVENT);
        assert!(event.identifier.starts_with(&format!("fu-{tenant}-2026-12-email-")), "{event:?}");
    }
    server.stop().await;
    Ok(())
}
