use std::time::Duration;

use followup_core::store::conformance;

use super::{MongoStore, StoreUri};
use crate::ferretdb_fixture;

/// Connects to a fresh database of the shared FerretDB server.
async fn fresh_store(prefix: &str) -> MongoStore {
    let uri = ferretdb_fixture::shared().uri_for(&ferretdb_fixture::unique_database(prefix));
    let connected = MongoStore::connect(&StoreUri::new(uri), Duration::from_secs(10)).await;
    connected.expect("connect to FerretDB")
}

#[tokio::test]
async fn mongo_store_conformance() {
    let store = fresh_store("conformance").await;
    conformance::run_all(&store).await;
}
