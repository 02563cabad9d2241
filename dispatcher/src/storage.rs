//! Which store the engine runs on: the embedded store in the data directory (the default), or
//! a MongoDB database named by a `mongodb://` URI, chosen with `--store` or `store` in the
//! configuration file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use followup_adapters::embedded;
use followup_adapters::mongo::{MongoStore, StoreUri, is_mongodb_uri};
use followup_core::store::Store;
use serde::Deserialize;

/// The store the engine runs on. `Debug` shows a MongoDB URI without its credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum StoreSelection {
    /// The embedded store in the configured data directory.
    #[default]
    Embedded,
    /// The embedded store in this directory.
    Directory(PathBuf),
    /// The MongoDB database of this URI (`followup` when the URI names none).
    MongoDb(StoreUri),
}

impl From<String> for StoreSelection {
    fn from(value: String) -> Self {
        if value.is_empty() || value == "embedded" {
            StoreSelection::Embedded
        } else if is_mongodb_uri(&value) {
            StoreSelection::MongoDb(StoreUri::new(value))
        } else {
            StoreSelection::Directory(PathBuf::from(value))
        }
    }
}

impl std::str::FromStr for StoreSelection {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(StoreSelection::from(value.to_owned()))
    }
}

impl StoreSelection {
    /// The directory of the embedded store, when the selection is the embedded store.
    pub fn embedded_dir<'a>(&'a self, data_dir: &'a Path) -> Option<&'a Path> {
        match self {
            StoreSelection::Embedded => Some(data_dir),
            StoreSelection::Directory(dir) => Some(dir),
            StoreSelection::MongoDb(_) => None,
        }
    }

    /// Opens the selected store, an embedded one with a page cache of `cache_mib` MiB. A
    /// MongoDB server must respond to a ping within `timeout`; the error then names its host and
    /// port (never the URI's password) and what to check.
    pub async fn open(
        &self,
        data_dir: &Path,
        timeout: Duration,
        cache_mib: u64,
    ) -> anyhow::Result<Arc<dyn Store>> {
        match self {
            StoreSelection::MongoDb(uri) => {
                let store = MongoStore::connect(uri, timeout).await?;
                tracing::info!(store = %uri, database = store.database(), "using the MongoDB store");
                Ok(Arc::new(store))
            }
            StoreSelection::Embedded | StoreSelection::Directory(_) => {
                let dir = self.embedded_dir(data_dir).unwrap_or(data_dir);
                let cache_bytes =
                    usize::try_from(cache_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
                let store = embedded::open_with_cache(dir, cache_bytes).map_err(|error| {
                    anyhow::anyhow!("cannot open the embedded store in {}: {error}", dir.display())
                })?;
                Ok(Arc::new(store))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreSelection;

    #[test]
    fn selection_follows_the_value() {
        assert_eq!(StoreSelection::from(String::from("embedded")), StoreSelection::Embedded);
        let dir = StoreSelection::from(String::from("/var/lib/followup"));
        assert_eq!(dir, StoreSelection::Directory("/var/lib/followup".into()));
        let mongo = StoreSelection::from(String::from("mongodb://u:secretpw@db:27017/f"));
        assert!(matches!(mongo, StoreSelection::MongoDb(_)), "{mongo:?}");
        assert!(!format!("{mongo:?}").contains("secretpw"), "{mongo:?}");
    }
}
