//! The MongoDB store against a real FerretDB server: connection errors, concurrent ingest of
//! the same rows, and a database restart under a connected store. The conformance suite runs
//! in the crate's unit tests and, sealed, in `sealed_store.rs`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use followup_adapters::ferretdb_fixture::{self, FerretDb};
use followup_adapters::mongo::{MongoStore, StoreUri};
use followup_core::crypto::RecordIdKey;
use followup_core::domain::{Channel, Contact, FollowUp, FollowUpState, Schedule, Tenant};
use followup_core::ids::{SequenceId, TenantId};
use followup_core::store::{Enrolment, InsertReport, Store, StoreError};

const TIMEOUT: Duration = Duration::from_secs(10);

fn tenant(id: TenantId) -> Tenant {
    Tenant {
        id,
        name: "Mongo Ltd".to_owned(),
        default_region: "GB".to_owned(),
        default_timezone: "Europe/London".to_owned(),
        plan: "starter".to_owned(),
        api_key_sha256: format!("{:064x}", id.0.as_u128()),
        created_at: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid instant"),
        suppression_scope: Default::default(),
        paused: None,
    }
}

/// Builds an enrolment of contact `key` with two pending SMS follow-ups.
fn enrolment(tenant: TenantId, sequence: SequenceId, key: &str) -> Enrolment {
    let start = Utc.with_ymd_and_hms(2030, 1, 7, 9, 0, 0).single().expect("valid instant");
    let ids = RecordIdKey::from_bytes(tenant.as_bytes());
    let contact = Contact {
        id: ids.contact(key),
        tenant,
        external_id: Some(key.to_owned()),
        first_name: None,
        last_name: None,
        full_name: None,
        email: None,
        phone: Some("+14155550100".to_owned()),
        timezone: "UTC".to_owned(),
        custom: [("plan.tier".to_owned(), "gold".to_owned())].into(),
    };
    let schedule = Schedule {
        id: ids.schedule(sequence, key),
        tenant,
        sequence,
        contact: contact.id,
        start_at: start,
        source_line: 2,
        created_at: start,
    };
    let follow_ups = (0..2u16)
        .map(|step| FollowUp::pending(&schedule, step, Channel::Sms, start, start))
        .collect();
    Enrolment { contact, schedule, follow_ups }
}

async fn connect(uri: &str) -> Result<MongoStore, StoreError> {
    MongoStore::connect(&StoreUri::new(uri), TIMEOUT).await
}

#[tokio::test]
async fn unreachable_server_is_named_without_password() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let uri = format!("mongodb://app:hunter2secret@127.0.0.1:{port}/followup");
    let started = std::time::Instant::now();
    let error = MongoStore::connect(&StoreUri::new(uri), Duration::from_secs(1)).await;
    let message = error.expect_err("nothing listens there").to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "names host and port: {message}");
    assert!(message.contains("check that the server runs"), "says what to check: {message}");
    assert!(!message.contains("hunter2secret"), "password leaked: {message}");
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after the timeout");
}

#[tokio::test]
async fn malformed_uri_is_named_without_password() {
    let uri = "mongodb://app:hunter2secret@127.0.0.1:notaport/followup";
    let message = connect(uri).await.expect_err("a port that is not a number").to_string();
    assert!(message.contains("not a valid MongoDB connection string"), "{message}");
    assert!(message.contains("127.0.0.1:notaport"), "names the address: {message}");
    assert!(!message.contains("hunter2secret"), "password leaked: {message}");
}

#[tokio::test]
async fn database_comes_from_the_uri_path() {
    let server = ferretdb_fixture::shared();
    let named = connect(&server.uri_for("billing_eu")).await.expect("connect");
    assert_eq!(named.database(), "billing_eu");
    let unnamed = connect(&server.uri()).await.expect("connect");
    assert_eq!(unnamed.database(), "followup");
}

/// Concurrent uploads of the same rows store each schedule once: the unique `_id` decides,
/// which needs only the atomicity of one insert, which FerretDB's SQLite backend gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_rows_count_once() {
    const UPLOADS: u64 = 4;
    const ROWS: u64 = 50;
    let server = ferretdb_fixture::shared();
    let database = ferretdb_fixture::unique_database("concurrent");
    let store = Arc::new(connect(&server.uri_for(&database)).await.expect("connect"));
    let tenant_id = TenantId::generate();
    store.put_tenant(tenant(tenant_id)).await.expect("put_tenant");
    let sequence = SequenceId::generate();
    let batch: Vec<Enrolment> =
        (0..ROWS).map(|row| enrolment(tenant_id, sequence, &format!("row-{row}"))).collect();

    let uploads = (0..UPLOADS).map(|_| {
        let (store, batch) = (Arc::clone(&store), batch.clone());
        tokio::spawn(async move { store.insert_enrolments(tenant_id, batch).await })
    });
    let mut total = InsertReport::default();
    for upload in uploads.collect::<Vec<_>>() {
        let report = upload.await.expect("upload task").expect("insert_enrolments");
        total.inserted += report.inserted;
        total.duplicates += report.duplicates;
    }

    assert_eq!(total.inserted, ROWS, "each schedule inserted by exactly one upload");
    assert_eq!(total.duplicates, ROWS * (UPLOADS - 1), "the others counted it a duplicate");
    let counts = store.count_follow_ups(Some(tenant_id)).await.expect("count_follow_ups");
    assert_eq!(counts.get(&(Channel::Sms, FollowUpState::Pending)), Some(&(ROWS * 2)));
    let contact = batch[0].contact.clone();
    let stored = store.contacts(tenant_id, vec![contact.id]).await.expect("contacts");
    assert_eq!(stored, vec![contact], "a custom field named with a dot round-trips");
}

/// A connected store fails while the server is down, with an error naming the collection,
/// and works again once the server is back on the same port and data.
#[tokio::test]
async fn store_goes_on_after_a_server_restart() {
    let mut server = FerretDb::start().expect("start FerretDB");
    let store = connect(&server.uri_for("restart")).await.expect("connect");
    let tenant_id = TenantId::generate();
    store.put_tenant(tenant(tenant_id)).await.expect("put_tenant");
    let sequence = SequenceId::generate();
    let first = enrolment(tenant_id, sequence, "before");
    store.insert_enrolments(tenant_id, vec![first.clone()]).await.expect("insert");

    server.stop();
    let down = store.insert_enrolments(tenant_id, vec![enrolment(tenant_id, sequence, "x")]).await;
    let error = down.expect_err("the server is down");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(error.to_string().contains("tenant_deletions"), "names the collection: {error}");

    server.restart().expect("restart FerretDB");
    let second = enrolment(tenant_id, sequence, "after");
    let report = store.insert_enrolments(tenant_id, vec![first.clone(), second]).await;
    assert_eq!(report.expect("insert after restart"), InsertReport { inserted: 1, duplicates: 1 });
    let schedule = store.schedule(tenant_id, first.schedule.id).await.expect("schedule");
    assert_eq!(schedule, Some(first.schedule), "written before the restart, kept");
}
