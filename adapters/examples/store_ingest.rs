//! Measures ingest through the embedded store: 100,000 enrolments of three follow-ups each,
//! written in batches of 1,000 by four concurrent callers, like concurrent uploads.
//!
//! Run with `cargo run -p followup-adapters --release --example store_ingest`. It prints
//! enrolments and follow-ups per second, commits, and the size of the data file.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use followup_adapters::embedded::{self, EmbeddedStore};
use followup_core::crypto::RecordIdKey;
use followup_core::domain::{Channel, Contact, FollowUp, Schedule};
use followup_core::ids::{SequenceId, TenantId};
use followup_core::store::{Enrolment, Store};

const ENROLMENTS: usize = 100_000;
const BATCH: usize = 1_000;
/// Concurrent callers, each sending its share of the batches one after the other.
const CALLERS: usize = 4;
const STEPS: u16 = 3;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(embedded::open(dir.path())?);
    let tenant = TenantId::generate();
    let sequence = SequenceId::generate();
    let start = Utc.with_ymd_and_hms(2030, 1, 7, 9, 0, 0).single().ok_or("invalid instant")?;

    let batches: Vec<Vec<Enrolment>> = (0..ENROLMENTS / BATCH)
        .map(|batch| {
            (0..BATCH).map(|row| enrolment(tenant, sequence, batch * BATCH + row, start)).collect()
        })
        .collect();

    let began = Instant::now();
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let share: Vec<Vec<Enrolment>> =
            batches.iter().skip(caller).step_by(CALLERS).cloned().collect();
        callers.push(tokio::spawn(ingest(Arc::clone(&store), tenant, share)));
    }
    let mut inserted = 0;
    for caller in callers {
        inserted += caller.await??;
    }
    let elapsed = began.elapsed().as_secs_f64();

    let bytes = std::fs::metadata(store.path())?.len();
    let commits = store.commits();
    drop(store);
    println!("enrolments inserted:  {inserted}");
    println!("elapsed:              {elapsed:.2} s");
    println!("enrolments/s:         {:.0}", inserted as f64 / elapsed);
    println!("follow-ups/s:         {:.0}", (inserted * u64::from(STEPS)) as f64 / elapsed);
    println!("commits:              {commits} for {} batches", ENROLMENTS / BATCH);
    println!("data file:            {:.1} MiB ({bytes} bytes)", bytes as f64 / 1024.0 / 1024.0);
    Ok(())
}

async fn ingest(
    store: Arc<EmbeddedStore>,
    tenant: TenantId,
    batches: Vec<Vec<Enrolment>>,
) -> Result<u64, followup_core::store::StoreError> {
    let mut inserted = 0;
    for batch in batches {
        inserted += store.insert_enrolments(tenant, batch).await?.inserted;
    }
    Ok(inserted)
}

/// Builds an enrolment shaped like a typical upload row: a contact with a name, an email, a phone and
/// one custom field, and one follow-up per step a day apart.
fn enrolment(
    tenant: TenantId,
    sequence: SequenceId,
    row: usize,
    start: DateTime<Utc>,
) -> Enrolment {
    let key = format!("contact-{row}");
    let contact = Contact {
        id: RecordIdKey::from_bytes(tenant.as_bytes()).contact(&key),
        tenant,
        external_id: Some(key.clone()),
        first_name: Some("Ada".to_owned()),
        last_name: Some("Lovelace".to_owned()),
        full_name: Some("Ada Lovelace".to_owned()),
        email: Some(format!("{key}@example.com")),
        phone: Some(format!("+1415555{:04}", row % 10_000)),
        timezone: "America/New_York".to_owned(),
        custom: [("company".to_owned(), "Analytical Engines".to_owned())].into(),
    };
    let schedule = Schedule {
        id: RecordIdKey::from_bytes(tenant.as_bytes()).schedule(sequence, &key),
        tenant,
        sequence,
        contact: contact.id,
        start_at: start,
        source_line: row as u64 + 2,
        created_at: start,
    };
    let channels = [Channel::Email, Channel::Sms, Channel::Call];
    let follow_ups = (0..STEPS)
        .map(|step| {
            let due_at =
                start + Duration::days(i64::from(step) + 1) + Duration::seconds(row as i64);
            let channel = channels[usize::from(step) % channels.len()];
            FollowUp::pending(&schedule, step, channel, due_at, start)
        })
        .collect();
    Enrolment { contact, schedule, follow_ups }
}
