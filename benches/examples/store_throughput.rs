//! Ingest and dispatch throughput of the two `Store` implementations, with one workload, in one
//! run: the embedded store in a temporary directory, and the MongoDB store on a FerretDB
//! server (SQLite backend) that the example starts with `tests/ferretdb/start`.
//!
//! 1. Ingest: enrolments of one contact, one schedule and three email follow-ups, spread over
//!    four tenants, written with `insert_enrolments` in batches of 1,000, as ingest does.
//! 2. Dispatch: rounds of `due_follow_ups` (100 of one tenant) followed by one
//!    `update_follow_ups` that settles them as sent with one attempt each, as a dispatch round
//!    writes its outcomes, under a lease on the tenant taken beforehand.
//!
//! The calls go through the `Store` trait, one after the other, with no engine around them,
//! so the figures are the store's own cost per row, not the engine's end-to-end throughput.
//!
//! Run: `cargo run -p followup-benches --release --example store_throughput -- [--enrolments
//! N] [--rounds N]`.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use followup_adapters::ferretdb_fixture::FerretDb;
use followup_adapters::mongo::{MongoStore, StoreUri};
use followup_core::crypto::RecordIdKey;
use followup_core::domain::{
    Attempt, Channel, Contact, FollowUp, FollowUpState, Provider, Schedule, Tenant,
};
use followup_core::ids::{SequenceId, TenantId};
use followup_core::store::{Enrolment, Store};

const TENANTS: usize = 4;
const BATCH: usize = 1_000;
const ROUND: usize = 100;
const STEPS: u16 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (enrolments, rounds) = arguments()?;
    let dir = tempfile::tempdir()?;
    let embedded = followup_adapters::embedded::open(&dir.path().join("embedded"))?;
    let embedded_figures = measure("embedded", &embedded, enrolments, rounds).await?;
    drop(embedded);

    let server = FerretDb::start().map_err(anyhow::Error::msg)?;
    let uri = StoreUri::new(server.uri_for("throughput"));
    let mongo = MongoStore::connect(&uri, Duration::from_secs(10)).await?;
    let mongo_figures =
        measure("mongodb (FerretDB 1.24, SQLite)", &mongo, enrolments, rounds).await?;

    println!("| store | ingest rows/s | dispatched follow-ups/s |");
    println!("| --- | ---: | ---: |");
    for (name, (ingest, dispatch)) in
        [("embedded", embedded_figures), ("mongodb on FerretDB/SQLite", mongo_figures)]
    {
        println!("| {name} | {ingest:.0} | {dispatch:.0} |");
    }
    Ok(())
}

fn arguments() -> anyhow::Result<(usize, usize)> {
    let mut enrolments = 20_000;
    let mut rounds = 200;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--enrolments" => enrolments = value.parse()?,
            "--rounds" => rounds = value.parse()?,
            other => anyhow::bail!("unknown flag {other}; expected --enrolments or --rounds"),
        }
    }
    Ok((enrolments, rounds))
}

/// Ingests `enrolments` and runs `rounds` dispatch rounds; returns rows per second and
/// follow-ups per second.
async fn measure(
    name: &str,
    store: &dyn Store,
    enrolments: usize,
    rounds: usize,
) -> anyhow::Result<(f64, f64)> {
    let tenants: Vec<TenantId> = (0..TENANTS).map(|_| TenantId::generate()).collect();
    for tenant in &tenants {
        store.put_tenant(tenant_record(*tenant)).await?;
    }
    let sequence = SequenceId::generate();

    let started = Instant::now();
    let mut progress = Progress::new(name, "ingest rows", enrolments);
    for batch_start in (0..enrolments).step_by(BATCH) {
        let tenant = tenants[(batch_start / BATCH) % TENANTS];
        let batch = (batch_start..(batch_start + BATCH).min(enrolments))
            .map(|row| enrolment(tenant, sequence, row))
            .collect::<Vec<_>>();
        let rows = batch.len();
        let report = store.insert_enrolments(tenant, batch).await?;
        anyhow::ensure!(report.inserted == rows as u64, "{name}: {report:?} of {rows} rows");
        progress.advance(rows);
    }
    let ingest = enrolments as f64 / started.elapsed().as_secs_f64();

    // Each tenant is dispatched under a lease, as in the engine, so that the writes pay for
    // their fence check.
    let mut epochs = Vec::with_capacity(TENANTS);
    for tenant in &tenants {
        let lease = store
            .take_lease(*tenant, "throughput".to_owned(), Utc::now(), chrono::Duration::hours(1))
            .await?
            .ok_or_else(|| anyhow::anyhow!("{name}: the lease of a new tenant was not free"))?;
        epochs.push(lease.epoch);
    }

    let started = Instant::now();
    let until = Utc.with_ymd_and_hms(2040, 1, 1, 0, 0, 0).single().expect("valid instant");
    let mut dispatched = 0;
    let mut progress = Progress::new(name, "dispatched follow-ups", rounds * ROUND);
    for round in 0..rounds {
        let (tenant, epoch) = (tenants[round % TENANTS], epochs[round % TENANTS]);
        let due = store.due_follow_ups(tenant, Channel::Email, until, ROUND).await?;
        let sent_at = Utc::now();
        let attempts = due.iter().map(|follow_up| attempt(follow_up, sent_at)).collect();
        let count = due.len();
        let settled = due.into_iter().map(|follow_up| FollowUp {
            state: FollowUpState::Sent,
            attempts: 1,
            sent_at: Some(sent_at),
            updated_at: sent_at,
            provider_message_id: Some(format!("msg-{round}")),
            ..follow_up
        });
        store.update_follow_ups(tenant, epoch, settled.collect(), attempts).await?;
        dispatched += count;
        progress.advance(count);
    }
    let dispatch = dispatched as f64 / started.elapsed().as_secs_f64();
    Ok((ingest, dispatch))
}

/// Prints a line with the count, rate and time left about every two seconds.
struct Progress<'a> {
    store: &'a str,
    what: &'static str,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl<'a> Progress<'a> {
    fn new(store: &'a str, what: &'static str, total: usize) -> Self {
        let now = Instant::now();
        Progress { store, what, total, done: 0, started: now, last: now }
    }

    fn advance(&mut self, count: usize) {
        self.done += count;
        if self.last.elapsed() < Duration::from_secs(2) && self.done < self.total {
            return;
        }
        self.last = Instant::now();
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64();
        let left = (self.total.saturating_sub(self.done)) as f64 / rate.max(1.0);
        eprintln!(
            "[{}] {} {}/{} at {rate:.0}/s, about {left:.0} s left",
            self.store, self.what, self.done, self.total
        );
    }
}

fn tenant_record(id: TenantId) -> Tenant {
    Tenant {
        id,
        name: "bench".to_owned(),
        default_region: "US".to_owned(),
        default_timezone: "UTC".to_owned(),
        plan: "pro".to_owned(),
        api_key_sha256: format!("{:064x}", id.0.as_u128()),
        created_at: Utc::now(),
        suppression_scope: Default::default(),
        paused: None,
    }
}

fn enrolment(tenant: TenantId, sequence: SequenceId, row: usize) -> Enrolment {
    let ids = RecordIdKey::from_bytes(tenant.as_bytes());
    let key = format!("row-{row}");
    let start = Utc.with_ymd_and_hms(2030, 1, 7, 9, 0, 0).single().expect("valid instant")
        + chrono::Duration::seconds(row as i64);
    let contact = Contact {
        id: ids.contact(&key),
        tenant,
        external_id: Some(key.clone()),
        first_name: Some("Grace".to_owned()),
        last_name: Some("Hopper".to_owned()),
        full_name: None,
        email: Some(format!("{key}@example.com")),
        phone: None,
        timezone: "America/New_York".to_owned(),
        custom: [("company".to_owned(), "Navy".to_owned())].into(),
    };
    let schedule = Schedule {
        id: ids.schedule(sequence, &key),
        tenant,
        sequence,
        contact: contact.id,
        start_at: start,
        source_line: row as u64 + 2,
        created_at: start,
    };
    let follow_ups = (0..STEPS)
        .map(|step| {
            let due_at = start + chrono::Duration::days(i64::from(step));
            FollowUp::pending(&schedule, step, Channel::Email, due_at, start)
        })
        .collect();
    Enrolment { contact, schedule, follow_ups }
}

fn attempt(follow_up: &FollowUp, at: chrono::DateTime<Utc>) -> Attempt {
    Attempt {
        follow_up: follow_up.id,
        number: 1,
        provider: Provider::Gmail,
        started_at: at,
        finished_at: at,
        result: FollowUpState::Sent,
        detail: None,
        message: None,
    }
}
