//! Request and response types of the operator API, shared by the server and the console so
//! that the two cannot drift apart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// `POST /admin/v1/tenants`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub name: String,
    /// ISO 3166-1 alpha-2 region for phone numbers without a country code; default `US`.
    #[serde(default)]
    pub default_region: Option<String>,
    /// IANA timezone of contacts without one; default `UTC`.
    #[serde(default)]
    pub default_timezone: Option<String>,
    /// Billing plan; default `free`.
    #[serde(default)]
    pub plan: Option<String>,
}

/// Answer to `POST /admin/v1/tenants`. The API key is shown here once and never again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateTenantResponse {
    pub id: TenantId,
    pub api_key: String,
}

/// Report of `POST /admin/v1/keys/rotate`: the outcome of a rotation of master keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotationReport {
    /// Data keys re-wrapped under the newest master key by this rotation.
    pub rewrapped: u64,
    /// Id of the newest master key, which now wraps every data key.
    pub newest_master_key_id: String,
    /// Ids of the master keys read from the key file, oldest first.
    pub master_keys_loaded: Vec<String>,
    /// Ids of the master keys that still wrap a data key. A loaded key not listed here may be
    /// removed from the key file.
    pub master_keys_in_use: Vec<String>,
}

/// `GET /admin/v1/snapshot`: the state of the engine at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminSnapshot {
    /// The engine clock's instant, RFC 3339.
    pub now: String,
    /// Follow-ups per state, all tenants together.
    pub totals: BTreeMap<String, u64>,
    /// Follow-ups waiting per channel.
    pub queues: Vec<QueueSummary>,
    /// Tenants, largest backlog first.
    pub tenants: Vec<TenantSummary>,
}

/// `GET /admin/v1/cluster`: the engine nodes sharing the store and which node owns which
/// tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Id of the node that answered.
    pub node: String,
    /// That node's system clock when it answered, against which `live` was judged.
    pub now: DateTime<Utc>,
    /// Every node's latest heartbeat, by node id.
    pub nodes: Vec<ClusterNode>,
    /// The newest lease of every tenant that has one, by tenant id.
    pub leases: Vec<ClusterLease>,
}

/// One node's latest heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub node: String,
    pub seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Whether the heartbeat had not expired yet.
    pub live: bool,
}

/// The newest lease of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterLease {
    pub tenant: TenantId,
    /// Node that holds or last held the lease.
    pub owner: String,
    /// Epoch of the lease, which fences off writes by earlier owners.
    pub epoch: u64,
    pub expires_at: DateTime<Utc>,
    /// Whether the lease had not expired (nor been released) yet.
    pub live: bool,
}

/// Waiting work of one channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueSummary {
    pub channel: String,
    /// Pending or retry follow-ups, due or not.
    pub waiting: u64,
    pub sent: u64,
    pub failed: u64,
}

/// One tenant in the snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantSummary {
    pub id: TenantId,
    pub name: String,
    pub plan: String,
    /// Pending or retry follow-ups.
    pub backlog: u64,
    pub sent: u64,
    pub failed: u64,
    /// Connections paused, with the reason.
    pub paused_connections: Vec<String>,
    /// Follow-ups held because the plan's quota was used up.
    #[serde(default)]
    pub held: u64,
    /// The largest share of a channel's monthly quota taken this period, in percent; `None`
    /// when the tenant's plan is not configured.
    #[serde(default)]
    pub quota_used_percent: Option<u8>,
}
