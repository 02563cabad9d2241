//! [`WebhookLog`]: every verified webhook, kept durably so that none is lost before the engine
//! acts on it, and so that a second delivery of one event is recognised.
//!
//! It is a redb file of its own in the data directory, beside the store, with one table keyed
//! by `<source>/<id>` (a Stripe event id, or a Twilio resource SID with its status) whose
//! values are the JSON records.
//!
//! NOTE: the log is a file of this node, which engine nodes sharing a MongoDB store do not
//! share, so each node would accept a Stripe event once. It belongs in the Store once that has
//! a place for provider events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use followup_core::ids::TenantId;
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// Makes the log readable by its owner only, because it records the provider events the engine
/// received.
#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// File name of the log in the data directory.
pub const FILE_NAME: &str = "webhook-events.redb";

const EVENTS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("webhook_events");

/// Keys of the records in `EVENTS` not yet applied, with empty values, so that a start-up
/// finds them without reading the whole log.
const UNAPPLIED: TableDefinition<'static, &str, ()> = TableDefinition::new("unapplied_events");

/// The durable log of verified webhooks.
#[derive(Clone, Debug)]
pub struct WebhookLog {
    db: Arc<redb::Database>,
    path: PathBuf,
}

impl WebhookLog {
    /// Opens or creates the log in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = data_dir.join(FILE_NAME);
        let db = redb::Database::create(&path)
            .with_context(|| format!("cannot open webhook log {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(EVENTS)?;
        txn.open_table(UNAPPLIED)?;
        txn.commit().with_context(|| format!("cannot create tables in {}", path.display()))?;
        restrict_to_owner(&path)?;
        Ok(Self { db: Arc::new(db), path })
    }

    /// Removes every record that names `tenant`, for the purge of a deleted tenant. Returns
    /// how many were removed. It reads the whole log, which has a few records per message and
    /// event.
    pub async fn remove_tenant(&self, tenant: TenantId) -> anyhow::Result<u64> {
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        let tenant = tenant.to_string();
        let remove = move || -> Result<u64, redb::Error> {
            let txn = db.begin_write()?;
            let removed = {
                let mut table = txn.open_table(EVENTS)?;
                let mut removed = 0;
                table.retain(|_, record| {
                    let names_tenant = serde_json::from_slice::<serde_json::Value>(record)
                        .is_ok_and(|record| record["tenant"].as_str() == Some(tenant.as_str()));
                    removed += u64::from(names_tenant);
                    !names_tenant
                })?;
                removed
            };
            txn.commit()?;
            Ok(removed)
        };
        tokio::task::spawn_blocking(remove)
            .await
            .context("webhook log writer stopped")?
            .with_context(|| format!("cannot purge webhook log {}", path.display()))
    }

    /// Writes `record` under `key` unless the key is already there, durably. Returns whether
    /// it was written, so `false` means a second delivery.
    pub async fn insert_new(&self, key: String, record: Vec<u8>) -> anyhow::Result<bool> {
        self.insert(key, record, false).await
    }

    /// Writes `record` under `key` unless the key is already there, and marks it unapplied, in
    /// one durable transaction. Returns whether it was written.
    pub async fn insert_unapplied(&self, key: String, record: Vec<u8>) -> anyhow::Result<bool> {
        self.insert(key, record, true).await
    }

    async fn insert(&self, key: String, record: Vec<u8>, unapplied: bool) -> anyhow::Result<bool> {
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        let write = move || -> Result<bool, redb::Error> {
            let txn = db.begin_write()?;
            let inserted = {
                let mut table = txn.open_table(EVENTS)?;
                if table.get(key.as_str())?.is_some() {
                    false
                } else {
                    table.insert(key.as_str(), record.as_slice())?;
                    if unapplied {
                        txn.open_table(UNAPPLIED)?.insert(key.as_str(), ())?;
                    }
                    true
                }
            };
            txn.commit()?;
            Ok(inserted)
        };
        tokio::task::spawn_blocking(write)
            .await
            .context("webhook log writer stopped")?
            .with_context(|| format!("cannot write webhook log {}", path.display()))
    }

    /// Marks the record under `key` applied, durably.
    pub async fn mark_applied(&self, key: String) -> anyhow::Result<()> {
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        let write = move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(UNAPPLIED)?.remove(key.as_str())?;
            txn.commit()?;
            Ok(())
        };
        tokio::task::spawn_blocking(write)
            .await
            .context("webhook log writer stopped")?
            .with_context(|| format!("cannot write webhook log {}", path.display()))
    }

    /// Returns the keys and records not yet applied whose key starts with `prefix`, in key
    /// order.
    pub async fn unapplied(&self, prefix: &'static str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let db = Arc::clone(&self.db);
        let read = move || -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
            let txn = db.begin_read()?;
            let unapplied = txn.open_table(UNAPPLIED)?;
            let events = txn.open_table(EVENTS)?;
            let mut found = Vec::new();
            for entry in unapplied.range(prefix..)? {
                let (key, _) = entry?;
                let key = key.value().to_owned();
                if !key.starts_with(prefix) {
                    break;
                }
                if let Some(record) = events.get(key.as_str())? {
                    found.push((key, record.value().to_vec()));
                }
            }
            Ok(found)
        };
        Ok(tokio::task::spawn_blocking(read).await.context("webhook log reader stopped")??)
    }

    /// Returns the record under `key`, if any.
    pub async fn get(&self, key: String) -> anyhow::Result<Option<Vec<u8>>> {
        let db = Arc::clone(&self.db);
        let read = move || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            Ok(table.get(key.as_str())?.map(|value| value.value().to_vec()))
        };
        Ok(tokio::task::spawn_blocking(read).await.context("webhook log reader stopped")??)
    }

    /// Number of records, for tests and the operator.
    pub async fn len(&self) -> anyhow::Result<u64> {
        let db = Arc::clone(&self.db);
        let count = move || -> Result<u64, redb::Error> {
            use redb::ReadableTableMetadata as _;
            let txn = db.begin_read()?;
            Ok(txn.open_table(EVENTS)?.len()?)
        };
        Ok(tokio::task::spawn_blocking(count).await.context("webhook log reader stopped")??)
    }
}
