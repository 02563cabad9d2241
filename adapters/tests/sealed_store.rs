//! The sealed store over the embedded store and over the MongoDB store (on FerretDB): it passes
//! the store conformance suite, keeps every sensitive field out of the database files, and
//! fails clearly once a tenant's data key is destroyed or the master key is wrong.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use followup_adapters::mongo::{MongoStore, StoreUri};
use followup_core::crypto::{CryptoError, Keyring, MasterKey, generate_master_key};
use followup_core::domain::{
    Attempt, Channel, Connection, Contact, Credentials, FollowUp, FollowUpState, Provider,
    Schedule, SendWindow, SentMessage, Sequence, Step, Tenant,
};
use followup_core::ids::{ConnectionId, SequenceId, TenantId};
use followup_core::store::sealed::SealedStore;
use followup_core::store::{Enrolment, Store, StoreError, conformance};
use followup_core::suppression::{Suppression, SuppressionKind, SuppressionReason, key_of};

fn keyring(keys: &[&str]) -> Keyring {
    let keys = keys.iter().map(|key| MasterKey::from_base64(key, "test").expect("key")).collect();
    Keyring::new(keys).expect("key ring")
}

fn new_key() -> String {
    generate_master_key().expect("random key").expose().clone()
}

fn sealed(dir: &std::path::Path, master: &str) -> SealedStore {
    let inner = followup_adapters::embedded::open(dir).expect("open the embedded store");
    SealedStore::new(Arc::new(inner), keyring(&[master]))
}

/// A sealed store over a fresh database of the shared FerretDB server.
async fn sealed_mongo(master: &str) -> SealedStore {
    let server = followup_adapters::ferretdb_fixture::shared();
    let database = followup_adapters::ferretdb_fixture::unique_database("sealed");
    let uri = StoreUri::new(server.uri_for(&database));
    let inner = MongoStore::connect(&uri, Duration::from_secs(10)).await.expect("connect");
    SealedStore::new(Arc::new(inner), keyring(&[master]))
}

fn tenant() -> Tenant {
    let id = TenantId::generate();
    Tenant {
        id,
        name: "Sealed Ltd".to_owned(),
        default_region: "US".to_owned(),
        default_timezone: "UTC".to_owned(),
        plan: "pro".to_owned(),
        api_key_sha256: format!("{:064x}", id.0.as_u128()),
        created_at: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("instant"),
        suppression_scope: Default::default(),
        paused: None,
    }
}

/// The plaintexts a tenant's records below contain, none of which may reach the file.
const SECRETS: [&str; 9] = [
    "ya29.access-secret-token",
    "1//refresh-secret-token",
    "twilio-auth-secret",
    "Subject about Zanzibar",
    "Body mentioning Quixotic",
    "ada.lovelace@example.org",
    "+14155550142",
    "Lovelace",
    "cust-ext-98765",
];

/// Writes a tenant with a connection, a sequence and one enrolment carrying every secret.
async fn write_records(store: &SealedStore) -> (Tenant, Enrolment) {
    let tenant = tenant();
    store.put_tenant(tenant.clone()).await.expect("put_tenant");
    let gmail = Connection {
        id: ConnectionId::generate(),
        tenant: tenant.id,
        provider: Provider::Gmail,
        sender: "sales@example.com".to_owned(),
        credentials: Credentials::OAuth {
            access_token: SECRETS[0].to_owned().into(),
            refresh_token: Some(SECRETS[1].to_owned().into()),
            expires_at: None,
            microsoft_tenant: None,
        },
        limits: Default::default(),
        account_kind: None,
        timezone: None,
        paused_reason: None,
    };
    let twilio = Connection {
        provider: Provider::Twilio,
        credentials: Credentials::Twilio {
            account_sid: "AC00000000000000000000000000000001".to_owned(),
            auth_token: SECRETS[2].to_owned().into(),
        },
        ..gmail.clone()
    };
    store.put_connection(gmail).await.expect("put gmail");
    store.put_connection(twilio).await.expect("put twilio");
    let sequence = Sequence {
        id: SequenceId::generate(),
        tenant: tenant.id,
        name: "welcome".to_owned(),
        steps: vec![Step {
            channel: Channel::Email,
            delay_seconds: 0,
            subject: Some(SECRETS[3].to_owned()),
            body: SECRETS[4].to_owned(),
            html_body: Some(format!("<p>{}</p>", SECRETS[4])),
            max_lateness_seconds: None,
        }],
        window: SendWindow::always(),
        unsubscribe_url: None,
        stale_policy: Default::default(),
        created_at: tenant.created_at,
    };
    store.put_sequence(sequence.clone()).await.expect("put_sequence");

    let key = store.tenant_key(tenant.id).await.expect("data key");
    let ids = key.record_ids();
    let contact = Contact {
        id: ids.contact(SECRETS[5]),
        tenant: tenant.id,
        external_id: Some(SECRETS[8].to_owned()),
        first_name: Some("Ada".to_owned()),
        last_name: Some(SECRETS[7].to_owned()),
        full_name: Some(format!("Ada {}", SECRETS[7])),
        email: Some(SECRETS[5].to_owned()),
        phone: Some(SECRETS[6].to_owned()),
        timezone: "Europe/London".to_owned(),
        custom: BTreeMap::from([("company".to_owned(), "Analytical Engines".to_owned())]),
    };
    let schedule = Schedule {
        id: ids.schedule(sequence.id, SECRETS[5]),
        tenant: tenant.id,
        sequence: sequence.id,
        contact: contact.id,
        start_at: tenant.created_at,
        source_line: 2,
        created_at: tenant.created_at,
    };
    let created = tenant.created_at;
    let follow_up = FollowUp::pending(&schedule, 0, Channel::Email, created, created);
    let enrolment = Enrolment { contact, schedule, follow_ups: vec![follow_up.clone()] };
    store.insert_enrolments(tenant.id, vec![enrolment.clone()]).await.expect("insert");

    // The suppression list keys entries by address, which must not reach the file either.
    let suppressed = [(SuppressionKind::Email, SECRETS[5]), (SuppressionKind::Phone, SECRETS[6])]
        .map(|(kind, value)| {
            let reason = SuppressionReason::Unsubscribed;
            Suppression::new(tenant.id, kind, value.to_owned(), reason, tenant.created_at)
        });
    store.put_suppressions(tenant.id, suppressed.to_vec()).await.expect("put_suppressions");

    // A provider error that quotes the address ends up in the reason and the attempt.
    let quoted = format!("recipient {} rejected", SECRETS[5]);
    let failed = FollowUp {
        state: FollowUpState::Failed,
        attempts: 1,
        reason: Some(quoted.clone()),
        ..follow_up.clone()
    };
    let attempt = Attempt {
        follow_up: follow_up.id,
        number: 1,
        provider: Provider::Gmail,
        started_at: tenant.created_at,
        finished_at: tenant.created_at,
        result: FollowUpState::Failed,
        detail: Some(quoted.clone()),
        message: Some(SentMessage { subject: Some(quoted.clone()), body: quoted }),
    };
    store.update_follow_ups(tenant.id, 0, vec![failed], vec![attempt]).await.expect("update");
    (tenant, enrolment)
}

/// Returns the secrets found anywhere in the bytes of the files under `dir`.
fn secrets_on_disk(dir: &std::path::Path) -> Vec<&'static str> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list data dir") {
        let path = entry.expect("entry").path();
        bytes.extend(std::fs::read(&path).expect("read store file"));
    }
    assert!(bytes.len() > 4096, "the store files hold {} bytes", bytes.len());
    SECRETS
        .into_iter()
        .filter(|secret| bytes.windows(secret.len()).any(|window| window == secret.as_bytes()))
        .collect()
}

#[tokio::test]
async fn sealed_store_conformance() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = sealed(dir.path(), &new_key());
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn sealed_mongo_store_conformance() {
    let store = sealed_mongo(&new_key()).await;
    conformance::run_all(&store).await;
}

/// FerretDB keeps each database in SQLite files under its data directory; none of them may
/// contain a sealed field's plaintext.
#[tokio::test]
async fn sealed_fields_never_reach_ferretdb_files() {
    let store = sealed_mongo(&new_key()).await;
    let (tenant, enrolment) = write_records(&store).await;
    let contacts = store.contacts(tenant.id, vec![enrolment.contact.id]).await.expect("read");
    assert_eq!(contacts, vec![enrolment.contact]);
    drop(store);

    let found = secrets_on_disk(&followup_adapters::ferretdb_fixture::shared().data_dir());
    assert!(found.is_empty(), "plaintext in FerretDB's files: {found:?}");
}

#[tokio::test]
async fn sealed_fields_never_reach_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let master = new_key();
    let store = sealed(dir.path(), &master);
    let (tenant, enrolment) = write_records(&store).await;

    // Everything reads back in the clear through the sealed store...
    let contacts = store.contacts(tenant.id, vec![enrolment.contact.id]).await.expect("read");
    assert_eq!(contacts, vec![enrolment.contact.clone()]);
    let connections = store.connections(tenant.id).await.expect("connections");
    let tokens = format!(
        "{:?}",
        connections
            .iter()
            .map(|c| match &c.credentials {
                Credentials::OAuth { access_token, .. } => access_token.expose().clone(),
                Credentials::Twilio { auth_token, .. } => auth_token.expose().clone(),
            })
            .collect::<Vec<_>>()
    );
    assert!(tokens.contains(SECRETS[0]), "{tokens}");
    assert!(tokens.contains(SECRETS[2]), "{tokens}");
    let id = enrolment.follow_ups[0].id;
    let reason = store.follow_up(tenant.id, id).await.expect("read").and_then(|f| f.reason);
    assert!(reason.is_some_and(|reason| reason.contains(SECRETS[5])), "reason opens");

    let keys = vec![key_of(SuppressionKind::Email, SECRETS[5])];
    let found = store.suppressions(tenant.id, keys).await.expect("suppressions");
    assert_eq!(found.len(), 1, "a suppressed address is found by its key");
    assert_eq!(found[0].value, SECRETS[5], "the suppressed address opens");

    // ...and the inner store contains sealed text only.
    let raw = store.inner().contacts(tenant.id, vec![enrolment.contact.id]).await.expect("raw");
    let email = raw[0].email.clone().expect("sealed email");
    assert!(email.starts_with("$fu1$1$"), "{email}");
    drop(store);

    let found = secrets_on_disk(dir.path());
    assert!(found.is_empty(), "plaintext in the store file: {found:?}");
}

#[tokio::test]
async fn destroyed_key_makes_data_unreadable() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let master = new_key();
    let store = sealed(dir.path(), &master);
    let (tenant, enrolment) = write_records(&store).await;
    let (other, _) = write_records(&store).await;

    assert!(store.destroy_tenant_key(tenant.id).await.expect("destroy"), "a key was stored");
    let read = store.contacts(tenant.id, vec![enrolment.contact.id]).await;
    let error = read.expect_err("contacts of a destroyed tenant");
    assert!(
        matches!(error, StoreError::Crypto(CryptoError::NoDataKey(id)) if id == tenant.id),
        "{error}"
    );
    assert!(error.to_string().contains("destroyed"), "{error}");
    assert!(store.connections(other.id).await.expect("other tenant").len() == 2, "unaffected");
    drop(store);

    // A restart does not bring the key back.
    let store = sealed(dir.path(), &master);
    let error = store.connections(tenant.id).await.expect_err("after restart");
    assert!(matches!(error, StoreError::Crypto(CryptoError::NoDataKey(_))), "{error}");
    assert_eq!(store.verify_keys().await.expect("other keys open"), 1);
}

#[tokio::test]
async fn wrong_master_key_is_reported() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let master = new_key();
    let store = sealed(dir.path(), &master);
    let (tenant, _) = write_records(&store).await;
    drop(store);

    let store = sealed(dir.path(), &new_key());
    let error = store.verify_keys().await.expect_err("another master key");
    let message = error.to_string();
    assert!(matches!(error, StoreError::Crypto(CryptoError::UnknownMasterKey { .. })), "{message}");
    let id = MasterKey::from_base64(&master, "m").expect("key").id().to_owned();
    assert!(message.contains(&id), "names the missing key {id}: {message}");
    assert!(message.contains(&tenant.id.to_string()), "{message}");
    assert!(store.connections(tenant.id).await.is_err(), "no read without the key");
}

#[tokio::test]
async fn rotation_rewraps_and_frees_old_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let old = new_key();
    let new = new_key();
    let store = sealed(dir.path(), &old);
    let (tenant, enrolment) = write_records(&store).await;

    let report = store.rotate(keyring(&[&old, &new])).await.expect("rotate");
    let new_id = MasterKey::from_base64(&new, "n").expect("key").id().to_owned();
    assert_eq!(report.rewrapped, 1);
    assert_eq!(report.newest_master_key_id, new_id);
    assert_eq!(report.master_keys_in_use, vec![new_id.clone()]);
    assert_eq!(report.master_keys_loaded.len(), 2);
    let again = store.rotate(keyring(&[&old, &new])).await.expect("rotate again");
    assert_eq!(again.rewrapped, 0, "nothing left to re-wrap");
    drop(store);

    let store = sealed(dir.path(), &new);
    assert_eq!(store.verify_keys().await.expect("new key opens all"), 1);
    let contacts = store.contacts(tenant.id, vec![enrolment.contact.id]).await.expect("read");
    assert_eq!(contacts, vec![enrolment.contact]);
}

#[tokio::test]
async fn repeated_attempt_is_accepted_once_sealed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = sealed(dir.path(), &new_key());
    let (tenant, enrolment) = write_records(&store).await;
    let id = enrolment.follow_ups[0].id;
    let stored = store.attempts(tenant.id, id).await.expect("attempts");
    let follow_up = store.follow_up(tenant.id, id).await.expect("read").expect("follow-up");

    // The same attempt again seals to other bytes, and is still a harmless repeat.
    let repeat = store.update_follow_ups(tenant.id, 0, vec![follow_up.clone()], stored.clone());
    repeat.await.expect("the same attempt again");
    assert_eq!(store.attempts(tenant.id, id).await.expect("attempts"), stored);

    // Another outcome under the same number is still a conflict.
    let mut changed = stored[0].clone();
    changed.result = FollowUpState::Sent;
    let conflict = store.update_follow_ups(tenant.id, 0, vec![follow_up], vec![changed]).await;
    assert!(matches!(conflict, Err(StoreError::Conflict(_))), "{conflict:?}");
}
