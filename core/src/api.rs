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
    /// The Stripe customer created for the tenant, when the engine has a Stripe secret key and
    /// Stripe answered; otherwise `PUT /admin/v1/tenants/{id}/stripe-customer` links one later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_customer_id: Option<String>,
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

/// `GET /admin/v1/snapshot`, and each `snapshot` event of the `GET /admin/v1/stream`
/// server-sent event stream: the state of the engine at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminSnapshot {
    /// The engine clock's instant, RFC 3339.
    pub now: String,
    /// Id of the node that answered.
    #[serde(default)]
    pub node: String,
    /// Follow-ups per state, all tenants together.
    pub totals: BTreeMap<String, u64>,
    /// Work per provider queue.
    pub queues: Vec<QueueSummary>,
    /// The first tenants by backlog, largest first; `GET /admin/v1/tenant-summaries` pages
    /// through all of them.
    pub tenants: Vec<TenantSummary>,
    /// Number of tenants in all, of which `tenants` is the first page.
    #[serde(default)]
    pub tenant_count: u64,
    /// How late follow-ups were handed to a provider, over the recent window.
    #[serde(default)]
    pub lateness: LatenessSummary,
    /// The most recent failed attempts, newest first.
    #[serde(default)]
    pub recent_failures: Vec<FailureRecord>,
    /// Follow-ups in the `dead` state, all tenants together.
    #[serde(default)]
    pub dead_letters: u64,
    /// Connections that do not send, and tenants paused as a whole.
    #[serde(default)]
    pub paused: Vec<PausedItem>,
}

/// Dispatch lateness (from a follow-up's due instant to its hand-over to a provider) over the
/// recent window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatenessSummary {
    /// Length of the window the figures cover.
    pub window_seconds: u64,
    /// Follow-ups handed over in the window.
    pub samples: u64,
    pub p50_ms: u64,
    pub p90_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// One failed send attempt, as the operator sees it: never an address, a token or a message
/// body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub at: DateTime<Utc>,
    pub tenant: TenantId,
    pub follow_up: String,
    pub provider: String,
    pub channel: String,
    /// Outcome kind, such as `retry`, `failed` or `dead`.
    pub kind: String,
    /// The provider's error code and a short reason.
    pub reason: String,
}

/// Something paused: a tenant as a whole (`provider` is `None`) or one of its connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PausedItem {
    pub tenant: TenantId,
    pub tenant_name: String,
    pub provider: Option<String>,
    /// Why: `operator`, `invalid_grant`, `paused_unpaid`, a provider error, and so on.
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
}

/// `GET /admin/v1/tenant-summaries?sort=KEY&filter=TEXT&offset=N&limit=N`: one page of
/// tenants, sorted and filtered on the server so that 100,000 tenants page quickly. `sort` is
/// `backlog` (the default), `name`, `failed` or `quota`; `filter` matches the id or the name,
/// ignoring case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantPage {
    /// Tenants matching the filter.
    pub total: u64,
    pub offset: u64,
    pub tenants: Vec<TenantSummary>,
}

/// `GET /admin/v1/tenants/{id}/detail`: one tenant for the console's detail view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantDetail {
    pub summary: TenantSummary,
    pub connections: Vec<ConnectionSummary>,
    /// Follow-ups per state.
    pub states: BTreeMap<String, u64>,
    /// This period's use per channel.
    pub usage: Vec<ChannelUsage>,
    /// The tenant's most recent failed attempts, newest first.
    pub recent_failures: Vec<FailureRecord>,
}

/// `GET /admin/v1/tenants/{id}/follow-up-counts`: one tenant's follow-ups per state, counted
/// in the store when requested. The snapshot, the summaries and the detail view take their
/// counts from the operator view's periodic pass over every follow-up. This reads only the
/// tenant's own, so a caller can poll a few tenants of a large store without starting that pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantFollowUpCounts {
    pub tenant: TenantId,
    /// The engine clock's instant when the count was read, RFC 3339.
    pub counted_at: String,
    /// Follow-ups per state, all channels together; a state with none is left out.
    pub states: BTreeMap<String, u64>,
}

/// One connection of a tenant, without its credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionSummary {
    pub provider: String,
    pub per_minute: u32,
    pub per_day: u32,
    /// Why it does not send, if it does not.
    pub paused_reason: Option<String>,
}

/// Quota use of one channel in the current period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelUsage {
    pub channel: String,
    pub used: u64,
    /// `None` when the plan sets no limit for the channel.
    pub limit: Option<u64>,
}

/// `GET /admin/v1/dead-letters?tenant=ID&offset=N&limit=N`: dead follow-ups, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    pub total: u64,
    pub offset: u64,
    pub dead_letters: Vec<DeadLetter>,
}

/// One follow-up that gave up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub follow_up: String,
    pub tenant: TenantId,
    pub channel: String,
    pub attempts: u32,
    pub failed_at: Option<DateTime<Utc>>,
    pub reason: String,
}

/// Body of the operator's actions: pausing and resuming a tenant
/// (`POST /admin/v1/tenants/{id}/pause`, `.../resume`) or a connection
/// (`POST /admin/v1/tenants/{id}/connections/{provider}/pause`, `.../resume`), retrying dead
/// letters (`POST /admin/v1/dead-letters/retry`) and cancelling a schedule
/// (`DELETE /admin/v1/tenants/{id}/schedules/{schedule}`). Every action is written to the
/// audit log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorAction {
    /// Free text kept in the audit log, such as a ticket number.
    #[serde(default)]
    pub note: Option<String>,
    /// For `dead-letters/retry`: only this tenant's dead letters.
    #[serde(default)]
    pub tenant: Option<TenantId>,
    /// For `dead-letters/retry`: only these follow-ups.
    #[serde(default)]
    pub follow_ups: Option<Vec<String>>,
}

/// The answer to an operator action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// Id of the audit record written for the action.
    pub audit_id: String,
    /// Follow-ups or schedules the action changed.
    pub affected: u64,
}

/// `GET /admin/v1/audit?offset=N&limit=N`: the audit log, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub total: u64,
    pub offset: u64,
    pub records: Vec<AuditRecord>,
}

/// One operator action: who, when, what, on what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub at: DateTime<Utc>,
    /// Name of the operator credential that authenticated the request.
    pub operator: String,
    /// Such as `tenant.pause`, `connection.resume`, `dead_letters.retry`, `schedule.cancel`.
    pub action: String,
    /// What it acted on, such as a tenant id or `TENANT/gmail`.
    pub target: String,
    pub note: Option<String>,
    pub affected: u64,
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

/// Work of one provider queue (Twilio's SMS and calls are two queues).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueSummary {
    pub channel: String,
    /// `gmail`, `outlook` or `twilio`; empty from an engine older than the field.
    #[serde(default)]
    pub provider: String,
    /// Pending or retry follow-ups, due or not.
    pub waiting: u64,
    /// Pending or retry follow-ups already due.
    #[serde(default)]
    pub due: u64,
    /// Requests handed to the provider and not answered yet.
    #[serde(default)]
    pub in_flight: u64,
    /// Sends and failed attempts per second over the last few seconds.
    #[serde(default)]
    pub sends_per_s: f64,
    #[serde(default)]
    pub errors_per_s: f64,
    /// Sends held back by a rate limit per second over the last few seconds.
    #[serde(default)]
    pub rate_limit_waits_per_s: f64,
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
    /// Why the whole tenant does not send (`operator`, `paused_unpaid`), if it does not.
    #[serde(default)]
    pub paused_reason: Option<String>,
    /// Follow-ups in the `dead` state.
    #[serde(default)]
    pub dead: u64,
}
