use std::time::Duration;

use followup_core::store::{Store as _, conformance};

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

/// FerretDB's SQLite backend does not apply updates atomically, but its inserts against a
/// unique key are: of nodes racing for the same epoch, exactly one gets the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takers_one_wins() {
    const TAKERS: usize = 8;
    let store = std::sync::Arc::new(fresh_store("lease_race").await);
    let tenant = followup_core::ids::TenantId::generate();
    let now = chrono::Utc::now();
    let ttl = chrono::Duration::seconds(60);

    let takers = (0..TAKERS).map(|taker| {
        let store = store.clone();
        let node = format!("node-{taker}");
        tokio::spawn(async move { store.take_lease(tenant, node, now, ttl).await })
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
