//! Cost of the operator overview at scale: the refresher's pass (one tally of every
//! follow-up, the connection statuses, the tenants and the usage counters), a snapshot built
//! from its result, and pages of `tenant-summaries`, on an embedded store seeded with many
//! tenants.
//!
//! Each tenant gets a Gmail connection (one in 100 paused) and one contact enrolled in a
//! three-step sequence (an email, an SMS and a call), so 100,000 tenants hold 300,000
//! follow-ups. The calls are the ones the API makes, without HTTP around them.
//!
//! Run: `cargo run -p followup-benches --release --example operator_overview -- [--tenants N]
//! [--passes N]`.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use followup_core::crypto::RecordIdKey;
use followup_core::domain::{
    Channel, Connection, Contact, Credentials, FollowUp, LimitOverrides, Provider, Schedule, Tenant,
};
use followup_core::ids::{ConnectionId, SequenceId, TenantId};
use followup_core::store::{Enrolment, Store};
use followup_dispatcher::config::Config;
use followup_dispatcher::operator_view::{self, LiveStats, TenantSort};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (tenants, passes) = arguments()?;
    let dir = tempfile::tempdir()?;
    let store = followup_adapters::embedded::open(&dir.path().join("embedded"))?;
    let seeded = Instant::now();
    seed(&store, tenants).await?;
    eprintln!("seeded {tenants} tenants in {:.1} s", seeded.elapsed().as_secs_f64());

    let plans = Config::default().plans;
    let now = Utc.with_ymd_and_hms(2030, 1, 8, 0, 0, 0).single().expect("valid instant");
    let mut pass_times = Vec::with_capacity(passes);
    let mut overview = None;
    for _ in 0..passes {
        let started = Instant::now();
        overview = Some(operator_view::count_overview(&store, &plans, now).await?);
        pass_times.push(started.elapsed());
    }
    let overview = overview.ok_or_else(|| anyhow::anyhow!("--passes must be at least 1"))?;
    anyhow::ensure!(overview.tenants.len() == tenants, "the overview lost tenants");
    let follow_ups: u64 = overview.totals.values().sum();
    anyhow::ensure!(follow_ups == 3 * tenants as u64, "the overview counted {follow_ups}");

    let live = LiveStats::default();
    let snapshot_time = time(100, || {
        let snapshot = operator_view::snapshot(&overview, &live, "bench");
        serde_json::to_vec(&snapshot).map(|body| body.len())
    })?;
    let first_page = time(100, || {
        let page = operator_view::tenant_page(&overview, TenantSort::Backlog, "", 0, 50);
        serde_json::to_vec(&page).map(|body| body.len())
    })?;
    let name_page = time(20, || {
        let page = operator_view::tenant_page(&overview, TenantSort::Name, "", 50_000, 50);
        serde_json::to_vec(&page).map(|body| body.len())
    })?;
    let filtered_page = time(20, || {
        let page = operator_view::tenant_page(&overview, TenantSort::Backlog, "tenant-0999", 0, 50);
        serde_json::to_vec(&page).map(|body| body.len())
    })?;

    // What a snapshot cost before the one-pass tally: a count of every follow-up, then a
    // count and a connections read per tenant, on every request.
    let started = Instant::now();
    let all = store.count_follow_ups(None).await?;
    anyhow::ensure!(all.values().sum::<u64>() == follow_ups, "the old count differs");
    for tenant in store.tenants().await? {
        std::hint::black_box(store.count_follow_ups(Some(tenant.id)).await?);
        std::hint::black_box(store.connections(tenant.id).await?);
    }
    let per_tenant_reads = started.elapsed();

    pass_times.sort();
    let median = pass_times[pass_times.len() / 2];
    println!("tenants: {tenants}, follow-ups: {follow_ups}, passes: {passes}");
    println!("| what | time |");
    println!("| --- | ---: |");
    println!("| refresher pass, median | {} |", millis(median));
    println!("| refresher pass, slowest | {} |", millis(pass_times[pass_times.len() - 1]));
    println!("| before: reads per tenant behind one snapshot | {} |", millis(per_tenant_reads));
    println!("| snapshot from the pass, JSON encoded | {} |", millis(snapshot_time));
    println!("| first page by backlog, 50 tenants | {} |", millis(first_page));
    println!("| page at offset 50,000 by name | {} |", millis(name_page));
    println!("| page filtered by name | {} |", millis(filtered_page));
    Ok(())
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1_000.0)
}

/// Mean time of `runs` calls of `work`.
fn time<T, E: Into<anyhow::Error>>(
    runs: u32,
    mut work: impl FnMut() -> Result<T, E>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(work().map_err(Into::into)?);
    }
    Ok(started.elapsed() / runs)
}

fn arguments() -> anyhow::Result<(usize, usize)> {
    let mut tenants = 100_000;
    let mut passes = 5;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tenants" => tenants = value.parse()?,
            "--passes" => passes = value.parse()?,
            other => anyhow::bail!("unknown flag {other}; expected --tenants or --passes"),
        }
    }
    Ok((tenants, passes))
}

/// Seeds the tenants 512 at a time, so that the store's writer groups their commits.
async fn seed(store: &dyn Store, tenants: usize) -> anyhow::Result<()> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let sequence = SequenceId::generate();
    futures_util::stream::iter(0..tenants)
        .map(|index| async move {
            let id = TenantId::generate();
            store.put_tenant(tenant_record(id, index)).await?;
            store.put_connection(connection(id, index)).await?;
            store.insert_enrolments(id, vec![enrolment(id, sequence, index)]).await?;
            if index % 10_000 == 9_999 {
                eprintln!("seeded about {} tenants", index + 1);
            }
            anyhow::Ok(())
        })
        .buffer_unordered(512)
        .try_collect::<()>()
        .await
}

fn tenant_record(id: TenantId, index: usize) -> Tenant {
    Tenant {
        id,
        name: format!("tenant-{index:06}"),
        default_region: "US".to_owned(),
        default_timezone: "UTC".to_owned(),
        plan: "pro".to_owned(),
        api_key_sha256: format!("{:064x}", id.0.as_u128()),
        created_at: Utc::now(),
        suppression_scope: Default::default(),
        paused: None,
    }
}

fn connection(tenant: TenantId, index: usize) -> Connection {
    Connection {
        id: ConnectionId::generate(),
        tenant,
        provider: Provider::Gmail,
        sender: format!("sender-{index}@example.com"),
        credentials: Credentials::OAuth {
            access_token: "bench-token".to_owned().into(),
            refresh_token: None,
            expires_at: None,
            microsoft_tenant: None,
        },
        limits: LimitOverrides::default(),
        account_kind: None,
        timezone: None,
        paused_reason: index.is_multiple_of(100).then(|| "invalid_grant".to_owned()),
    }
}

fn enrolment(tenant: TenantId, sequence: SequenceId, index: usize) -> Enrolment {
    let ids = RecordIdKey::from_bytes(tenant.as_bytes());
    let key = format!("contact-{index}");
    // Half the tenants are due at the instant counted, half a week later.
    let start = Utc.with_ymd_and_hms(2030, 1, 7, 9, 0, 0).single().expect("valid instant")
        + chrono::Duration::days(7 * (index % 2) as i64);
    let contact = Contact {
        id: ids.contact(&key),
        tenant,
        external_id: Some(key.clone()),
        first_name: Some("Grace".to_owned()),
        last_name: None,
        full_name: None,
        email: Some(format!("{key}@example.com")),
        phone: Some("+15005550006".to_owned()),
        timezone: "UTC".to_owned(),
        custom: Default::default(),
    };
    let schedule = Schedule {
        id: ids.schedule(sequence, &key),
        tenant,
        sequence,
        contact: contact.id,
        start_at: start,
        source_line: index as u64 + 2,
        created_at: start,
    };
    let follow_ups = [Channel::Email, Channel::Sms, Channel::Call]
        .into_iter()
        .enumerate()
        .map(|(step, channel)| {
            let due = start + chrono::Duration::days(step as i64);
            FollowUp::pending(&schedule, step as u16, channel, due, start)
        })
        .collect();
    Enrolment { contact, schedule, follow_ups }
}
