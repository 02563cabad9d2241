use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use followup_core::crypto::RecordIdKey;
use followup_core::domain::{Channel, Contact, FollowUp, FollowUpState, Schedule, Tenant};
use followup_core::ids::{FollowUpId, ScheduleId, SequenceId, TenantId};
use followup_core::store::{Enrolment, InsertReport, Store, StoreError, conformance};

use super::{EmbeddedStore, open};

fn open_temp() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = open(dir.path()).expect("open the embedded store");
    (dir, store)
}

fn tenant(id: TenantId) -> Tenant {
    Tenant {
        id,
        name: "durable".to_owned(),
        default_region: "GB".to_owned(),
        default_timezone: "Europe/London".to_owned(),
        plan: "starter".to_owned(),
        api_key_sha256: format!("{:064x}", id.0.as_u128()),
        created_at: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid instant"),
        suppression_scope: Default::default(),
        paused: None,
    }
}

/// Builds an enrolment of contact `key` in `sequence` with three pending email follow-ups.
fn enrolment(tenant: TenantId, sequence: SequenceId, key: &str) -> Enrolment {
    let start = Utc.with_ymd_and_hms(2030, 1, 7, 9, 0, 0).single().expect("valid instant");
    let contact = Contact {
        id: RecordIdKey::from_bytes(tenant.as_bytes()).contact(key),
        tenant,
        external_id: Some(key.to_owned()),
        first_name: Some("Grace".to_owned()),
        last_name: None,
        full_name: None,
        email: Some(format!("{key}@example.com")),
        phone: None,
        timezone: "Europe/London".to_owned(),
        custom: Default::default(),
    };
    let schedule = Schedule {
        id: RecordIdKey::from_bytes(tenant.as_bytes()).schedule(sequence, key),
        tenant,
        sequence,
        contact: contact.id,
        start_at: start,
        source_line: 2,
        created_at: start,
    };
    let follow_ups = (0..3u16)
        .map(|step| {
            let due_at = start + Duration::days(i64::from(step));
            FollowUp::pending(&schedule, step, Channel::Email, due_at, start)
        })
        .collect();
    Enrolment { contact, schedule, follow_ups }
}

#[tokio::test]
async fn embedded_store_conformance() {
    let (_dir, store) = open_temp();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let tenant_id = TenantId::generate();
    let sequence = SequenceId::generate();
    let written = enrolment(tenant_id, sequence, "kept");

    let store = open(dir.path()).expect("open the embedded store");
    store.put_tenant(tenant(tenant_id)).await.expect("put_tenant");
    let report = store.insert_enrolments(tenant_id, vec![written.clone()]).await;
    assert_eq!(report.expect("insert").inserted, 1);
    let claimed = FollowUp { state: FollowUpState::Claimed, ..written.follow_ups[0].clone() };
    store.update_follow_ups(tenant_id, 0, vec![claimed], Vec::new()).await.expect("claim");
    drop(store);

    let store = open(dir.path()).expect("reopen the embedded store");
    let stored = store.tenant(tenant_id).await.expect("tenant");
    assert_eq!(stored, Some(tenant(tenant_id)), "tenant after reopen");
    let schedule = store.schedule(tenant_id, written.schedule.id).await.expect("schedule");
    assert_eq!(schedule, Some(written.schedule.clone()), "schedule after reopen");
    let follow_ups = store.follow_ups_of_schedule(tenant_id, written.schedule.id).await;
    assert_eq!(follow_ups.expect("follow-ups").len(), 3, "follow-ups after reopen");

    // The in-flight index is durable too: recovery after the reopen finds the claim.
    let recovered = store.recover_interrupted(tenant_id, 0).await.expect("recover_interrupted");
    assert_eq!(recovered.released_claims, 1, "claim found after reopen");
    let until = written.follow_ups[2].due_at;
    let due = store.due_follow_ups(tenant_id, Channel::Email, until, 10).await;
    assert_eq!(due.expect("due_follow_ups"), written.follow_ups, "due set after recovery");
}

#[tokio::test]
async fn reopen_ends_leases_of_previous_process() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let tenant_id = TenantId::generate();
    let ttl = chrono::Duration::seconds(60);
    let now = chrono::Utc::now();

    let store = open(dir.path()).expect("open the embedded store");
    let lease = store.take_lease(tenant_id, "old-process".into(), now, ttl).await.expect("take");
    let lease = lease.expect("a first lease");
    drop(store);

    let store = open(dir.path()).expect("reopen the embedded store");
    let listed = store.leases().await.expect("leases");
    let ended = listed.iter().find(|listed| listed.tenant == tenant_id).expect("lease kept");
    assert!(!ended.is_live(now), "the old process's lease ended at reopen");
    let taken = store.take_lease(tenant_id, "new-process".into(), now, ttl).await.expect("take");
    let taken = taken.expect("the new process takes the tenant at once");
    assert_eq!(taken.epoch, lease.epoch + 1, "epochs continue across a reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takers_one_wins() {
    const TAKERS: usize = 8;
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = std::sync::Arc::new(open(dir.path()).expect("open the embedded store"));
    let tenant_id = TenantId::generate();
    let now = chrono::Utc::now();
    let ttl = chrono::Duration::seconds(60);

    let takers = (0..TAKERS).map(|taker| {
        let store = store.clone();
        tokio::spawn(
            async move { store.take_lease(tenant_id, format!("node-{taker}"), now, ttl).await },
        )
    });
    let mut winners = Vec::new();
    for taker in takers {
        if let Some(lease) = taker.await.expect("taker task").expect("take_lease") {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one taker wins: {winners:?}");
    assert_eq!(winners[0].epoch, 1, "the winner holds the first epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_groups_concurrent_commits() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 500;
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let tenant_id = TenantId::generate();
    let sequence = SequenceId::generate();
    let commits_before = store.commits();

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let batch: Vec<Enrolment> = (0..PER_TASK)
            .map(|row| enrolment(tenant_id, sequence, &format!("task{task}-row{row}")))
            .collect();
        tasks.push(tokio::spawn(async move { store.insert_enrolments(tenant_id, batch).await }));
    }
    for task in tasks {
        let report = task.await.expect("insert task").expect("insert_enrolments");
        let expected = InsertReport { inserted: PER_TASK as u64, duplicates: 0 };
        assert_eq!(report, expected, "every row of a batch is new");
    }

    let commits = store.commits() - commits_before;
    assert!(commits < TASKS as u64, "{TASKS} batches took {commits} commits, expected fewer");
    let counts = store.count_follow_ups(Some(tenant_id)).await.expect("count_follow_ups");
    let pending = counts.get(&(Channel::Email, FollowUpState::Pending)).copied();
    assert_eq!(pending, Some((TASKS * PER_TASK * 3) as u64), "every follow-up landed");
}

#[tokio::test]
async fn embedded_store_rejects_one_op_only() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let tenant_id = TenantId::generate();
    let sequence = SequenceId::generate();
    let good = enrolment(tenant_id, sequence, "good");
    let unknown = FollowUp {
        id: FollowUpId { schedule: ScheduleId::generate(), step: 0 },
        ..good.follow_ups[0].clone()
    };

    // Issued together so that both are likely to share one commit.
    let (inserted, updated) = tokio::join!(
        store.insert_enrolments(tenant_id, vec![good.clone()]),
        store.update_follow_ups(tenant_id, 0, vec![unknown], Vec::new()),
    );
    assert_eq!(inserted.expect("insert").inserted, 1, "the valid batch landed");
    assert!(updated.is_err(), "the update of an unknown follow-up failed");
    let schedule = store.schedule(tenant_id, good.schedule.id).await.expect("schedule");
    assert_eq!(schedule, Some(good.schedule), "schedule committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_retries_group_without_failed_op() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let tenant_id = TenantId::generate();
    let sequence = SequenceId::generate();
    let damaged = enrolment(tenant_id, sequence, "damaged");
    store.insert_enrolments(tenant_id, vec![damaged.clone()]).await.expect("insert");

    // Garbage in place of a stored follow-up passes the existence check of an update but
    // fails its write phase, which is the path that aborts and retries the group.
    let target = damaged.follow_ups[0].clone();
    let key = super::keys::follow_up(tenant_id, target.id);
    let txn = store.db.begin_write().expect("begin_write");
    {
        let mut table = txn.open_table(super::tables::FOLLOW_UPS.definition()).expect("open");
        table.insert(key.as_slice(), b"not json".as_slice()).expect("insert garbage");
    }
    txn.commit().expect("commit garbage");

    // Hold the write lock so that the writer blocks on a first request while the next two
    // queue up behind it and then share one group.
    let lock = store.db.begin_write().expect("begin_write");
    let first = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.put_tenant(tenant(tenant_id)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let good = enrolment(tenant_id, sequence, "good");
    let insert = tokio::spawn({
        let (store, good) = (Arc::clone(&store), good.clone());
        async move { store.insert_enrolments(tenant_id, vec![good]).await }
    });
    let update = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.update_follow_ups(tenant_id, 0, vec![target], Vec::new()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let commits_before = store.commits();
    lock.abort().expect("release the write lock");

    first.await.expect("put task").expect("put_tenant");
    let inserted = insert.await.expect("insert task").expect("insert_enrolments");
    assert_eq!(inserted.inserted, 1, "the valid batch landed");
    let updated = update.await.expect("update task");
    assert!(
        matches!(updated, Err(StoreError::Corrupt { .. })),
        "the update of a corrupt record failed alone: {updated:?}"
    );
    let commits = store.commits() - commits_before;
    // Two when the sleeps above split the requests as intended, one if a slow machine let all
    // three reach the writer together; the failed update never costs a commit of its own.
    assert!((1..=2).contains(&commits), "{commits} commits for three requests");
    let schedule = store.schedule(tenant_id, good.schedule.id).await.expect("schedule");
    assert_eq!(schedule, Some(good.schedule), "schedule committed after the retry");
}

/// A purged tenant's contact addresses are gone from the file's bytes once the store has been
/// reopened: redb does not zero freed pages, and opening compacts the file after a purge.
#[tokio::test]
async fn purged_contacts_leave_no_bytes_in_file() {
    let (dir, store) = open_temp();
    let id = TenantId::generate();
    store.put_tenant(tenant(id)).await.expect("put tenant");
    let sequence = SequenceId::generate();
    let enrolments: Vec<Enrolment> =
        (0..200).map(|n| enrolment(id, sequence, &format!("purgeme-{n:04}"))).collect();
    store.insert_enrolments(id, enrolments).await.expect("insert");
    let now = Utc::now();
    let deletion = followup_core::domain::TenantDeletion {
        id: followup_core::ids::DeletionId::generate(),
        tenant: id,
        plan: "starter".to_owned(),
        requested_at: now,
        records_purged: 0,
        completed_at: None,
    };
    store.begin_tenant_deletion(deletion).await.expect("begin deletion");
    while !store.purge_tenant_chunk(id, 50, now).await.expect("purge").done {}
    let path = store.path().to_path_buf();
    drop(store);
    let before_reopen = std::fs::read(&path).expect("read the store file");
    let stale = before_reopen.windows(8).filter(|window| window == b"purgeme-").count();
    assert!(stale > 0, "freed pages keep the bytes until the file is compacted");
    drop(open(dir.path()).expect("reopen, which compacts after a purge"));

    let bytes = std::fs::read(&path).expect("read the store file");
    let found = bytes.windows(8).filter(|window| window == b"purgeme-").count();
    assert_eq!(found, 0, "contact addresses still in the file at {}", dir.path().display());
}
