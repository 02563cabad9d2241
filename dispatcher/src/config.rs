//! Configuration: built-in defaults, then an optional TOML file, then `FOLLOWUP_*` environment
//! variables and command-line flags (both read by clap), each overriding the one before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use followup_core::crypto::{CryptoError, Keyring, MasterKey};
use followup_core::domain::Channel;
use followup_core::ingest::IngestLimits;
use followup_core::sensitive::Sensitive;
use serde::Deserialize;

use crate::storage::StoreSelection;
use crate::telemetry::LogFormat;

/// Everything the engine reads at start-up.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded store and of the webhook event log.
    pub data_dir: PathBuf,
    /// The store: `embedded` (the default, in `data_dir`), a directory for the embedded
    /// store, or a `mongodb://` URI.
    pub store: StoreSelection,
    /// How long start-up waits for a MongoDB server to answer, and any later operation for a
    /// reachable server, in seconds.
    pub store_timeout_seconds: u64,
    /// Memory the embedded store may use to cache its file's pages, in MiB. Most of the
    /// engine's resident memory under a large store; see BENCHMARKS.md for what a smaller
    /// cache costs.
    pub embedded_cache_mib: u64,
    /// Bearer token of the operator endpoints under `/admin`; they return 401 while it is unset.
    pub admin_token: Option<Sensitive<String>>,
    /// File of master keys, one base64 key per line, newest last. `followup keys rotate` makes
    /// the engine read it again.
    pub master_key_file: Option<PathBuf>,
    /// A single master key (base64), from `FOLLOWUP_MASTER_KEY`; never read from the config
    /// file, so that the key does not sit beside the rest of the configuration.
    #[serde(skip)]
    pub master_key: Option<Sensitive<String>>,
    pub log_format: LogFormat,
    pub providers: ProvidersConfig,
    pub ingest: IngestConfig,
    pub dispatch: DispatchConfig,
    pub retention: RetentionConfig,
    pub oauth: OAuthConfig,
    /// Billing plans by name.
    pub plans: BTreeMap<String, Plan>,
    pub billing: BillingConfig,
    /// HTTPS for the API listener; plain HTTP while unset.
    pub tls: TlsConfig,
    pub webhooks: WebhooksConfig,
    /// Request rates and upload sizes allowed per tenant, and failed logins per client address.
    pub api_limits: ApiLimitsConfig,
    /// How this engine shares the tenants with other engines on the same store.
    pub cluster: ClusterConfig,
    /// The operator API's overview and live stream.
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("followup-data"),
            store: StoreSelection::Embedded,
            store_timeout_seconds: 5,
            embedded_cache_mib: followup_adapters::embedded::DEFAULT_CACHE_MIB,
            admin_token: None,
            master_key_file: None,
            master_key: None,
            log_format: LogFormat::Pretty,
            providers: ProvidersConfig::default(),
            ingest: IngestConfig::default(),
            dispatch: DispatchConfig::default(),
            retention: RetentionConfig::default(),
            oauth: OAuthConfig::default(),
            plans: default_plans(),
            billing: BillingConfig::default(),
            tls: TlsConfig::default(),
            webhooks: WebhooksConfig::default(),
            api_limits: ApiLimitsConfig::default(),
            cluster: ClusterConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults. Unknown keys are an error, so a misspelt key is
    /// reported instead of silently ignored.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|error| {
            // toml's own Display quotes the offending line, which may hold a secret, so the
            // message names the place and the reason only.
            let place = error.span().map_or_else(String::new, |span| {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                format!(" at line {line}")
            });
            let reason = crate::http::json::without_rejected_value(error.message());
            anyhow::anyhow!("invalid config file {}{place}: {reason}", path.display())
        })
    }
}

/// Largest `embedded_cache_mib`: 1 TiB, far above the machines the engine runs on.
pub const MAX_EMBEDDED_CACHE_MIB: u64 = 1 << 20;

/// Smallest `dispatch.idle_poll_millis`: below it the drivers of idle tenants spin.
pub const MIN_IDLE_POLL_MILLIS: u64 = 10;

impl Config {
    /// Checks the store's page cache and the dispatch pauses, naming the setting to fix.
    pub fn validate_store_and_dispatch(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_EMBEDDED_CACHE_MIB).contains(&self.embedded_cache_mib),
            "invalid embedded_cache_mib {}: expected 1 to {MAX_EMBEDDED_CACHE_MIB} (MiB)",
            self.embedded_cache_mib
        );
        if let Some(idle_poll) = self.dispatch.idle_poll_millis {
            anyhow::ensure!(
                idle_poll >= MIN_IDLE_POLL_MILLIS,
                "invalid [dispatch] idle_poll_millis {idle_poll}: expected at least \
                 {MIN_IDLE_POLL_MILLIS}, or no value for the store's default"
            );
        }
        Ok(())
    }

    /// Checks every plan, naming the one to fix.
    pub fn validate_plans(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.plans.is_empty(),
            "no plans configured: add at least one [plans.NAME]"
        );
        for (name, plan) in &self.plans {
            plan.validate(name)?;
        }
        Ok(())
    }

    /// Reads the master keys: the key of `FOLLOWUP_MASTER_KEY` or the keys of the key file,
    /// never both, because the engine could not tell which one is newest.
    pub fn load_keyring(&self) -> Result<Keyring, CryptoError> {
        match (&self.master_key, &self.master_key_file) {
            (Some(_), Some(path)) => Err(CryptoError::InvalidMasterKey {
                origin: path.display().to_string(),
                reason: "FOLLOWUP_MASTER_KEY is set too: use either the variable or a key file"
                    .into(),
            }),
            (Some(key), None) => {
                Keyring::new(vec![MasterKey::from_base64(key.expose(), "FOLLOWUP_MASTER_KEY")?])
            }
            (None, Some(path)) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|error| {
                    CryptoError::InvalidMasterKey {
                        origin: origin.clone(),
                        reason: format!("the key file cannot be read: {error}"),
                    }
                })?;
                warn_if_others_can_access(path);
                Keyring::parse(&text, &origin)
            }
            (None, None) => Err(CryptoError::NoMasterKey),
        }
    }
}

/// Logs a warning when users other than the owner may read or write the master key file,
/// because either lets them read every tenant's data or swap the key. The engine still starts:
/// the file is the operator's, and some deployments mount secrets with wider modes.
#[cfg(unix)]
fn warn_if_others_can_access(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "the master key file is accessible to other users; restrict it with chmod 600"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_others_can_access(_path: &std::path::Path) {}

/// Destination of provider requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// `fake` starts the built-in wire-level fakes on loopback and sends there; `live` sends to
    /// the base URLs below; `null` sends nothing and takes every send as accepted, to measure
    /// the engine without providers.
    pub mode: ProvidersMode,
    pub gmail_base_url: String,
    pub graph_base_url: String,
    pub twilio_base_url: String,
    /// Timeout of one provider request, in seconds.
    pub request_timeout_seconds: u64,
    /// Requests in flight at once per provider; a batch request counts as one.
    pub concurrency: usize,
    /// Sends per Gmail batch request; 1 turns batching off. Google allows 100 and advises
    /// at most 50.
    pub gmail_batch_size: usize,
    /// Whether one Gmail batch request may carry the sends of several connections (tenants).
    /// Fewer requests, but when one call of a shared batch stalls, the whole batch times out
    /// and the sends of every tenant in it end in doubt. Connections that failed lately
    /// send alone even then.
    pub gmail_shared_batches: bool,
    /// Sends per Graph `$batch` request, at most 20; 1 turns batching off.
    pub graph_batch_size: usize,
    /// How long a send waits for others to share its batch request, in milliseconds. A full
    /// batch leaves at once, so this only delays sends that arrive alone.
    pub batch_linger_millis: u64,
    /// Consecutive failed sends (retryable errors, timeouts) of one connection that open its
    /// circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long an opened breaker stops a connection's sends, in seconds; it doubles each time
    /// the trial send after it fails, up to `breaker_max_open_seconds`.
    pub breaker_open_seconds: u64,
    pub breaker_max_open_seconds: u64,
    /// Sends per minute of the engine's Google Cloud project across all mailboxes: 1,200,000
    /// quota units a minute at 100 units per send.
    pub gmail_project_per_minute: u32,
    /// Sends per rolling day of the project: 80,000,000 units a day at 100 units per send.
    /// Google bills beyond it; raise it if the project accepts the charges.
    pub gmail_project_per_day: u32,
    /// Requests per minute of the engine's Entra application across all mailboxes: Graph
    /// allows 130,000 per 10 seconds.
    pub graph_app_per_minute: u32,
    /// Hosts to which a base URL may use plain `http://`: each must be a loopback address or
    /// `localhost`, for the built-in fakes and tests. Every other base URL must be `https://`.
    pub plain_http_hosts: Vec<String>,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self {
            mode: ProvidersMode::Fake,
            gmail_base_url: "https://gmail.googleapis.com".into(),
            graph_base_url: "https://graph.microsoft.com".into(),
            twilio_base_url: "https://api.twilio.com".into(),
            request_timeout_seconds: 30,
            concurrency: 16,
            gmail_batch_size: 50,
            gmail_shared_batches: false,
            graph_batch_size: 20,
            batch_linger_millis: 2,
            breaker_failure_threshold: 5,
            breaker_open_seconds: 30,
            breaker_max_open_seconds: 600,
            gmail_project_per_minute: 12_000,
            gmail_project_per_day: 800_000,
            graph_app_per_minute: 780_000,
            plain_http_hosts: vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProvidersMode {
    #[default]
    Fake,
    Live,
    /// Accepts every send in-process and sends nothing: a measuring tool for the engine alone
    /// (actors, limits, billing, store), never a way to send.
    Null,
}

/// Limits of bulk uploads.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest upload accepted, in bytes.
    pub max_bytes: u64,
    /// Most data rows in one upload.
    pub max_rows: u64,
    /// Maximum size of a single record, in bytes.
    pub max_record_bytes: usize,
    /// Rows written to the store per durable batch.
    pub batch_rows: usize,
    /// Maximum number of row errors listed in one upload's report. Rejected rows beyond it
    /// are counted but not listed, so that a file of bad rows cannot make the response (and
    /// memory) unbounded.
    pub max_errors_listed: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let limits = IngestLimits::default();
        Self {
            max_bytes: limits.max_bytes,
            max_rows: limits.max_rows,
            max_record_bytes: limits.max_record_bytes,
            batch_rows: 2_000,
            max_errors_listed: 100_000,
        }
    }
}

impl IngestConfig {
    pub fn limits(&self) -> IngestLimits {
        IngestLimits {
            max_bytes: self.max_bytes,
            max_rows: self.max_rows,
            max_record_bytes: self.max_record_bytes,
        }
    }
}

/// Settings of dispatch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Follow-ups one tenant actor takes per channel in one round.
    pub batch_size: usize,
    /// Attempts per follow-up before it is dead.
    pub retry_budget: u32,
    /// Maximum wait between retries, in seconds.
    pub max_backoff_seconds: u64,
    /// Pause before a failed dispatch round is tried again, in milliseconds. On MongoDB it is
    /// also the default of `idle_poll_millis`.
    pub tick_millis: u64,
    /// Maximum time a tenant with nothing due sleeps before it reads the store again, in
    /// milliseconds. Uploads, connection changes, resumes and billing changes on this node wake
    /// it at once, so the poll only finds work that no wake announced: uploads taken by another
    /// node on a shared MongoDB store. The default is `tick_millis` on MongoDB and 30,000 on the
    /// embedded store, which no other process writes, so that idle tenants cost little.
    pub idle_poll_millis: Option<u64>,
    /// Channels whose follow-ups are sent again after a response was lost (a timeout or a reset
    /// after the request left), accepting that the recipient may get two. Follow-ups of
    /// other channels settle `in_doubt`. None by default: Gmail, Graph and Twilio take no
    /// idempotency key, so a resend cannot be deduplicated.
    pub resend_in_doubt: Vec<Channel>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            retry_budget: 6,
            max_backoff_seconds: 64,
            tick_millis: 500,
            idle_poll_millis: None,
            resend_in_doubt: Vec::new(),
        }
    }
}

/// Settings of the tenant leases by which several engines on one store split the tenants.
///
/// Expiry instants come from each node's clock: the nodes' clocks must differ by less than
/// `clock_skew_margin_millis`, which an owner subtracts from its lease before it stops sending.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Identity of this engine among the nodes. Unset, each process draws a random id, so
    /// that two processes can never mistake each other's leases for their own. A stable id
    /// lets a restarted engine take back its own tenants at once instead of waiting for its
    /// old leases to expire; it must then never be shared by two live processes.
    pub node_id: Option<String>,
    /// How long a lease lasts after it is taken or renewed, in milliseconds. A stopped or
    /// killed node's tenants are taken over within about this plus one renew interval.
    pub lease_ttl_millis: u64,
    /// Pause between two passes that renew, take and release leases, in milliseconds.
    pub renew_interval_millis: u64,
    /// Maximum difference assumed between two nodes' clocks, in milliseconds.
    pub clock_skew_margin_millis: u64,
}

/// The operator API's overview (`[admin]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Pause between two counts of every follow-up for the snapshot, the stream and the
    /// tenant pages, in milliseconds. Each count reads the whole follow-up table once. 0
    /// counts on every request instead, which only suits a small store (the tests use it).
    pub snapshot_refresh_millis: u64,
    /// Pause between two `snapshot` events of `GET /admin/v1/stream`, in milliseconds.
    pub stream_period_millis: u64,
    /// Streams open at once; one more is answered 503.
    pub max_streams: usize,
    /// Named operator credentials, beside `admin_token` (whose name is `operator`). The audit
    /// log records which one authenticated each action.
    pub operators: Vec<OperatorConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            snapshot_refresh_millis: 2_000,
            stream_period_millis: 1_000,
            max_streams: 16,
            operators: Vec::new(),
        }
    }
}

/// Name of the credential `admin_token` (`FOLLOWUP_ADMIN_TOKEN`) in the audit log.
pub const DEFAULT_OPERATOR: &str = "operator";

/// One named operator (`[[admin.operators]]`). Its token comes from an environment variable
/// or a file, never from the configuration file itself.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    pub name: String,
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File whose first line is the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The token, read from `token_env` or `token_file` by [`AdminConfig::load_operator_tokens`].
    #[serde(skip)]
    pub token: Option<Sensitive<String>>,
}

impl AdminConfig {
    /// Reads every named operator's token from its variable or file. Each error names the
    /// operator and where its token was looked for.
    pub fn load_operator_tokens(&mut self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::from([DEFAULT_OPERATOR.to_owned()]);
        for operator in &mut self.operators {
            let name = operator.name.trim();
            anyhow::ensure!(
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "invalid admin.operators name {:?}: use letters, digits, '-', '_' or '.'",
                operator.name
            );
            anyhow::ensure!(
                names.insert(name.to_owned()),
                "admin.operators name {name:?} is used twice (\"{DEFAULT_OPERATOR}\" is the name of FOLLOWUP_ADMIN_TOKEN)"
            );
            let token = match (&operator.token_env, &operator.token_file) {
                (Some(variable), None) => std::env::var(variable).with_context(|| {
                    format!("operator {name:?}: environment variable {variable} is not set")
                })?,
                (None, Some(path)) => std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("operator {name:?}: cannot read token_file {}", path.display())
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                _ => {
                    anyhow::bail!("operator {name:?}: set exactly one of token_env and token_file")
                }
            };
            anyhow::ensure!(
                token.len() >= 16,
                "operator {name:?}: the token is shorter than 16 characters"
            );
            operator.token = Some(Sensitive::new(token));
        }
        Ok(())
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            lease_ttl_millis: 6_000,
            renew_interval_millis: 2_000,
            clock_skew_margin_millis: 1_000,
        }
    }
}

impl ClusterConfig {
    /// Checks that a renewal fits in a lease's useful life, naming the setting to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        let useful = self.lease_ttl_millis.saturating_sub(self.clock_skew_margin_millis);
        anyhow::ensure!(
            self.renew_interval_millis > 0 && self.renew_interval_millis * 2 <= useful,
            "invalid [cluster] settings: renew_interval_millis ({}) must be positive and at most \
             half of lease_ttl_millis ({}) minus clock_skew_margin_millis ({}), so that a lease \
             is renewed at least twice before its owner stops sending",
            self.renew_interval_millis,
            self.lease_ttl_millis,
            self.clock_skew_margin_millis
        );
        if let Some(node_id) = &self.node_id {
            let valid = !node_id.is_empty()
                && node_id.len() <= 64
                && node_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            anyhow::ensure!(
                valid,
                "invalid [cluster] node_id {node_id:?}: use 1 to 64 ASCII letters, digits, '-', \
                 '_' or '.'"
            );
        }
        Ok(())
    }
}

/// How long data is kept, and how a deleted tenant's records are purged.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days the subject and text of each sent message are kept with its attempt; 0 keeps
    /// none.
    pub sent_message_days: u32,
    /// Seconds between two sweeps that remove expired messages; one also runs at start-up.
    pub sweep_interval_seconds: u64,
    /// Records removed per write while a deleted tenant is purged.
    pub purge_chunk_records: usize,
    /// Pause between two purge writes, in milliseconds, which leaves the store's writer to
    /// other tenants' work in between.
    pub purge_pause_millis: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sent_message_days: 30,
            sweep_interval_seconds: 3_600,
            purge_chunk_records: 1_000,
            purge_pause_millis: 20,
        }
    }
}

/// The engine's OAuth clients, which refresh the access tokens of Gmail and Outlook
/// connections, and when they do. In fake mode the token endpoints are the built-in fake's,
/// and a client left unset gets the fake's own.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Google's token endpoint.
    pub google_token_url: String,
    /// Client id of the engine's Google Cloud OAuth client; Gmail tokens are not refreshed
    /// while it is unset.
    pub google_client_id: Option<String>,
    pub google_client_secret: Option<Sensitive<String>>,
    /// Microsoft's token endpoint; `{tenant}` is replaced by the connection's Microsoft tenant.
    pub microsoft_token_url: String,
    /// Application (client) id of the engine's Entra app; Outlook tokens are not refreshed
    /// while it is unset.
    pub microsoft_client_id: Option<String>,
    pub microsoft_client_secret: Option<Sensitive<String>>,
    /// How long before its expiry an access token is refreshed, in seconds.
    pub refresh_margin_seconds: u64,
    /// Maximum wait between failed refreshes of one connection, in seconds. The first wait is
    /// 5 seconds and doubles per failure.
    pub max_backoff_seconds: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            google_token_url: "https://oauth2.googleapis.com/token".into(),
            google_client_id: None,
            google_client_secret: None,
            microsoft_token_url: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
                .into(),
            microsoft_client_id: None,
            microsoft_client_secret: None,
            refresh_margin_seconds: 300,
            max_backoff_seconds: 300,
        }
    }
}

/// A billing plan: the monthly allowance per channel, per calendar month (UTC), and what a
/// tenant may connect.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub monthly_email: u64,
    pub monthly_sms: u64,
    pub monthly_call: u64,
    /// Treatment of a follow-up once the month's quota is used up.
    #[serde(default)]
    pub over_quota: OverQuota,
    /// Provider connections a tenant may have (one per provider, so 3 allows all).
    #[serde(default = "all_connections")]
    pub connections: u32,
    /// The Stripe price (`price_...`) a subscription to this plan carries; unset for a plan
    /// that is not sold through Stripe.
    #[serde(default)]
    pub stripe_price_id: Option<String>,
    /// The `event_name` of the Stripe Billing Meter that bills this plan per send. When set,
    /// the engine reports each tenant's committed sends as meter events.
    #[serde(default)]
    pub stripe_meter_event_name: Option<String>,
}

fn all_connections() -> u32 {
    3
}

impl Plan {
    /// A plan without limits, the base of test plans.
    pub fn unlimited() -> Plan {
        Plan {
            monthly_email: u64::MAX,
            monthly_sms: u64::MAX,
            monthly_call: u64::MAX,
            over_quota: OverQuota::Skip,
            connections: all_connections(),
            stripe_price_id: None,
            stripe_meter_event_name: None,
        }
    }

    /// Checks the plan named `name`, naming the setting to fix.
    pub fn validate(&self, name: &str) -> anyhow::Result<()> {
        let valid_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        anyhow::ensure!(
            valid_name,
            "invalid plan name {name:?}: use ASCII letters, digits, '-' and '_'"
        );
        if let Some(price) = &self.stripe_price_id {
            let valid = price.starts_with("price_")
                && price.len() > "price_".len()
                && price.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            anyhow::ensure!(
                valid,
                "invalid [plans.{name}] stripe_price_id {price:?}: a Stripe price id looks like \
                 price_1Abc..."
            );
        }
        if let Some(event_name) = &self.stripe_meter_event_name {
            // Stripe limits a meter's event name to 100 characters.
            let valid = !event_name.is_empty()
                && event_name.len() <= 100
                && event_name.bytes().all(|b| b.is_ascii_graphic());
            anyhow::ensure!(
                valid,
                "invalid [plans.{name}] stripe_meter_event_name {event_name:?}: use the meter's \
                 event_name, 1 to 100 printable ASCII characters"
            );
        }
        Ok(())
    }

    pub fn monthly(&self, channel: Channel) -> u64 {
        match channel {
            Channel::Email => self.monthly_email,
            Channel::Sms => self.monthly_sms,
            Channel::Call => self.monthly_call,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverQuota {
    /// The follow-up is skipped with the reason recorded.
    #[default]
    Skip,
    /// The follow-up waits for the next month.
    Hold,
}

fn default_plans() -> BTreeMap<String, Plan> {
    let plan = |email, sms, call, connections| Plan {
        monthly_email: email,
        monthly_sms: sms,
        monthly_call: call,
        over_quota: OverQuota::Skip,
        connections,
        stripe_price_id: None,
        stripe_meter_event_name: None,
    };
    BTreeMap::from([
        ("free".to_owned(), plan(500, 100, 20, 1)),
        ("starter".to_owned(), plan(10_000, 2_000, 500, 2)),
        ("pro".to_owned(), plan(250_000, 50_000, 20_000, 3)),
    ])
}

/// Settings of billing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Sends a node takes from a tenant's quota in the store at a time, per channel. Larger
    /// blocks cost fewer store round trips; a node that stops leaves its block taken for the
    /// rest of the month.
    pub quota_block: u64,
    /// Days a tenant keeps sending after Stripe reports a failed invoice payment, counted from
    /// the first failure's event; unpaid after that, the tenant is paused.
    pub grace_days: u32,
    /// Stripe's API, which creates customers and reads subscriptions.
    pub stripe: StripeApiConfig,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self { quota_block: 100, grace_days: 3, stripe: StripeApiConfig::default() }
    }
}

/// Settings of the Stripe API client (`[billing.stripe]`). The engine calls Stripe only when a
/// secret key is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeApiConfig {
    /// Root of Stripe's API. Plain HTTP is allowed only to `providers.plain_http_hosts`.
    pub api_base: String,
    /// File whose first line is the secret key (`sk_...` or a restricted `rk_...`).
    pub secret_key_file: Option<PathBuf>,
    /// The secret key itself, from `FOLLOWUP_STRIPE_SECRET_KEY`; never read from the config
    /// file, so that it does not sit beside the rest of the configuration.
    #[serde(skip)]
    pub secret_key: Option<Sensitive<String>>,
    /// How long one Stripe request may take, in seconds.
    pub request_timeout_seconds: u64,
    /// Whether start-up reads every linked customer's subscriptions to catch up on webhooks
    /// missed while the engine was down.
    pub sync_at_startup: bool,
    /// Subscription listings a start-up sync sends per second, below Stripe's default of 25
    /// requests a second per endpoint (sandbox: 25 a second in all).
    pub sync_requests_per_second: u32,
    /// Seconds between two reports of metered usage (plans with `stripe_meter_event_name`).
    pub meter_flush_seconds: u64,
    /// Meter event requests sent per second at most.
    pub meter_requests_per_second: u32,
}

impl Default for StripeApiConfig {
    fn default() -> Self {
        Self {
            api_base: followup_adapters::stripe_api::DEFAULT_API_BASE.to_owned(),
            secret_key_file: None,
            secret_key: None,
            request_timeout_seconds: 20,
            sync_at_startup: true,
            sync_requests_per_second: 10,
            meter_flush_seconds: 60,
            meter_requests_per_second: 20,
        }
    }
}

impl StripeApiConfig {
    /// Reads the secret key: `FOLLOWUP_STRIPE_SECRET_KEY` or the key file, never both.
    /// Returns `None` when neither is set, which leaves the Stripe API unused.
    pub fn load_secret_key(&self) -> anyhow::Result<Option<Sensitive<String>>> {
        let key = match (&self.secret_key, &self.secret_key_file) {
            (Some(_), Some(path)) => anyhow::bail!(
                "both FOLLOWUP_STRIPE_SECRET_KEY and billing.stripe.secret_key_file ({}) are                  set: keep one",
                path.display()
            ),
            (Some(key), None) => key.expose().trim().to_owned(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read billing.stripe.secret_key_file {}", path.display())
                })?;
                text.lines().next().unwrap_or_default().trim().to_owned()
            }
            (None, None) => return Ok(None),
        };
        let origin = self.secret_key_file.as_ref().map_or_else(
            || "FOLLOWUP_STRIPE_SECRET_KEY".to_owned(),
            |path| format!("billing.stripe.secret_key_file {}", path.display()),
        );
        let valid = ["sk_", "rk_"].iter().any(|prefix| key.starts_with(prefix))
            && key.len() > 3
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        // The message names the source and the expected form, never the value.
        anyhow::ensure!(
            valid,
            "invalid Stripe secret key in {origin}: expected sk_... or rk_... (letters, digits \
             and '_')"
        );
        Ok(Some(Sensitive::new(key)))
    }
}

impl ProvidersConfig {
    /// Checks that a provider base URL is HTTPS, or plain HTTP to a host listed in
    /// `plain_http_hosts`. Only the configuration is read: nothing is connected to.
    pub fn check_base_url(&self, provider: &str, url: &str) -> anyhow::Result<()> {
        for host in &self.plain_http_hosts {
            if !is_loopback_host(host) {
                anyhow::bail!(
                    "providers.plain_http_hosts lists {host:?}, which is not a loopback address: \
                     plain HTTP is allowed only to this machine, so remove it"
                );
            }
        }
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("invalid {provider} base URL {url:?}"))?;
        match parsed.scheme() {
            "https" => Ok(()),
            "http" => {
                let host = parsed.host_str().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if self.plain_http_hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)) {
                    Ok(())
                } else {
                    anyhow::bail!(
                        "{provider} base URL {url:?} uses plain http to {host:?}: use https, or \
                         for a loopback test server list the host in providers.plain_http_hosts"
                    )
                }
            }
            other => {
                anyhow::bail!("{provider} base URL {url:?} has scheme {other:?}: it must be https")
            }
        }
    }
}

/// Returns whether `host` names this machine: `localhost` or a loopback IP address.
/// Returns whether `host` (a name or an address, IPv6 with or without brackets) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// HTTPS for the API listener. Both files are PEM; the listener serves HTTPS when both are
/// set and refuses to start when only one is.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// Verification of the webhooks Stripe and Twilio send.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The URL at which providers reach this engine, scheme to path prefix without a trailing
    /// slash (such as `https://followup.example.com`). Twilio signs the URL it called, so
    /// Twilio webhooks are rejected while this is unset, and sends ask for status callbacks
    /// only when it is set.
    pub public_base_url: Option<String>,
    /// Signing secrets (`whsec_...`) of the Stripe endpoint. Several are allowed while a
    /// secret is being rolled; a request signed with any of them is accepted.
    pub stripe_signing_secrets: Vec<Sensitive<String>>,
    /// Largest difference between a Stripe signature's timestamp and the engine's clock, in
    /// either direction, in seconds. Stripe's libraries default to 300.
    pub stripe_tolerance_seconds: u64,
    /// How long an identical Twilio request (same signature and body) is remembered and
    /// rejected as a replay, in seconds.
    pub twilio_replay_window_seconds: u64,
    /// Requests remembered for replay detection, per provider. The oldest is forgotten first
    /// when it is full.
    pub replay_cache_entries: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            public_base_url: None,
            stripe_signing_secrets: Vec::new(),
            stripe_tolerance_seconds: 300,
            twilio_replay_window_seconds: 3_600,
            replay_cache_entries: 100_000,
        }
    }
}

/// Limits that protect the API from one tenant's load and from guessed credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimitsConfig {
    /// Sustained API requests per second of one tenant.
    pub requests_per_second: u32,
    /// Requests a tenant may send at once above the sustained rate.
    pub burst: u32,
    /// Failed authentications (401) one client IP address may make per minute, sustained.
    pub failed_auth_per_minute: u32,
    /// Failed authentications one client IP address may make at once before the limit applies.
    pub failed_auth_burst: u32,
    /// Overrides for single tenants, keyed by tenant id.
    pub tenants: BTreeMap<String, TenantLimits>,
}

impl Default for ApiLimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 50,
            burst: 100,
            failed_auth_per_minute: 10,
            failed_auth_burst: 10,
            tenants: BTreeMap::new(),
        }
    }
}

/// Limits of one tenant that differ from the defaults; an unset field keeps the default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    pub requests_per_second: Option<u32>,
    pub burst: Option<u32>,
    /// Largest upload, in bytes, instead of `ingest.max_bytes`.
    pub max_upload_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_operators_read_their_tokens_from_files() {
        let dir = tempfile::tempdir().expect("temporary dir");
        let file = dir.path().join("alice.token");
        std::fs::write(&file, "alice-token-from-a-file-0123\nignored line\n").expect("write");
        let text = format!(
            "[[admin.operators]]\nname = \"alice\"\ntoken_file = {:?}\n",
            file.display().to_string()
        );
        let mut parsed: Config = toml::from_str(&text).expect("valid config");
        parsed.admin.load_operator_tokens().expect("tokens load");
        let token = parsed.admin.operators[0].token.as_ref().map(|t| t.expose().clone());
        assert_eq!(token.as_deref(), Some("alice-token-from-a-file-0123"));
        assert!(!format!("{parsed:?}").contains("alice-token-from-a-file"), "token in Debug");

        let cases = [
            (
                "[[admin.operators]]\nname = \"bob\"\ntoken_env = \"FOLLOWUP_TEST_UNSET_OPERATOR\"\n",
                "FOLLOWUP_TEST_UNSET_OPERATOR",
            ),
            ("[[admin.operators]]\nname = \"operator\"\ntoken_env = \"X\"\n", "used twice"),
            ("[[admin.operators]]\nname = \"carol\"\n", "exactly one of token_env and token_file"),
            (
                "[[admin.operators]]\nname = \"no spaces\"\ntoken_env = \"X\"\n",
                "invalid admin.operators name",
            ),
        ];
        for (text, expected) in cases {
            let mut parsed: Config = toml::from_str(text).expect("valid TOML");
            let error = parsed.admin.load_operator_tokens().expect_err(text);
            assert!(format!("{error:#}").contains(expected), "{text}: {error:#}");
        }
    }

    #[test]
    fn config_file_overrides_defaults_and_rejects_unknown_keys() {
        let parsed: Config = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[dispatch]\nbatch_size = 7\n[plans.tiny]\n\
             monthly_email = 1\nmonthly_sms = 2\nmonthly_call = 3\nover_quota = \"hold\"\n",
        )
        .expect("valid config");
        assert_eq!(parsed.listen.port(), 9000);
        assert_eq!(parsed.dispatch.batch_size, 7);
        assert_eq!(parsed.dispatch.retry_budget, 6);
        assert_eq!(parsed.plans["tiny"].over_quota, OverQuota::Hold);
        assert!(!parsed.plans.contains_key("free"));
        assert!(toml::from_str::<Config>("listn = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn store_cache_and_idle_poll_are_checked() {
        assert!(Config::default().validate_store_and_dispatch().is_ok());
        let parsed: Config = toml::from_str("embedded_cache_mib = 0\n").expect("valid TOML");
        let error = parsed.validate_store_and_dispatch().expect_err("no cache");
        assert!(error.to_string().contains("embedded_cache_mib 0"), "{error}");
        let parsed: Config =
            toml::from_str("[dispatch]\nidle_poll_millis = 0\n").expect("valid TOML");
        let error = parsed.validate_store_and_dispatch().expect_err("a spinning poll");
        assert!(error.to_string().contains("idle_poll_millis 0"), "{error}");
        let parsed: Config =
            toml::from_str("[dispatch]\nidle_poll_millis = 3600000\n").expect("valid TOML");
        assert!(parsed.validate_store_and_dispatch().is_ok());
    }

    #[test]
    fn plans_are_checked_by_name() {
        let parsed: Config = toml::from_str(
            "[plans.gold]\nmonthly_email = 1\nmonthly_sms = 1\nmonthly_call = 1\n\
             stripe_price_id = \"prod_123\"\n",
        )
        .expect("valid TOML");
        assert_eq!(parsed.plans["gold"].connections, 3, "all connections by default");
        let error = parsed.validate_plans().expect_err("a product id is not a price id");
        let message = format!("{error:#}");
        assert!(message.contains("[plans.gold] stripe_price_id"), "{message}");
        assert!(message.contains("prod_123"), "{message}");

        let valid = Config::default();
        assert!(valid.validate_plans().is_ok(), "the built-in plans are valid");
        let none = Config { plans: BTreeMap::new(), ..Config::default() };
        let error = none.validate_plans().expect_err("no plans");
        assert!(format!("{error:#}").contains("[plans.NAME]"), "{error:#}");
    }

    #[test]
    fn config_errors_name_the_line_without_quoting_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("followup.toml");
        let secret = "whsec_quoted_secret_value";
        let text = format!(
            "listen = \"127.0.0.1:1\"\n[webhooks]\nstripe_signing_secrets = \"{secret}\"\n"
        );
        std::fs::write(&path, text).expect("write config");
        let error = Config::from_file(&path).expect_err("a string where a list belongs");
        let message = format!("{error:#}");
        assert!(message.contains("line 3"), "{message}");
        assert!(!message.contains(secret), "{message}");
    }

    #[test]
    fn plain_http_allowed_only_to_listed_loopback_hosts() {
        let providers = ProvidersConfig::default();
        assert!(providers.check_base_url("twilio", "https://api.twilio.com").is_ok());
        assert!(providers.check_base_url("twilio", "http://127.0.0.1:9000").is_ok());
        assert!(providers.check_base_url("twilio", "http://[::1]:9000").is_ok());
        assert!(providers.check_base_url("twilio", "http://localhost:9000").is_ok());
        let remote = providers.check_base_url("twilio", "http://api.twilio.com");
        let message = format!("{:#}", remote.expect_err("plain http to a remote host"));
        assert!(message.contains("api.twilio.com"), "{message}");
        assert!(message.contains("providers.plain_http_hosts"), "{message}");
        assert!(providers.check_base_url("twilio", "ftp://127.0.0.1").is_err());
    }

    #[test]
    fn plain_http_hosts_must_be_loopback() {
        let providers = ProvidersConfig {
            plain_http_hosts: vec!["10.0.0.5".into()],
            ..ProvidersConfig::default()
        };
        let error = providers.check_base_url("gmail", "http://10.0.0.5").expect_err("not loopback");
        assert!(format!("{error:#}").contains("10.0.0.5"), "{error:#}");
    }

    #[test]
    fn master_key_comes_from_a_file_never_the_config() {
        let parsed: Config =
            toml::from_str("master_key_file = \"/etc/followup/keys\"\n").expect("valid config");
        assert_eq!(parsed.master_key_file, Some(PathBuf::from("/etc/followup/keys")));
        assert!(parsed.master_key.is_none());
        let key_in_file = toml::from_str::<Config>("master_key = \"AAAA\"\n");
        assert!(key_in_file.is_err(), "a key in the config file is rejected");
    }

    #[test]
    fn keyring_needs_exactly_one_source() {
        let none = Config::default().load_keyring().expect_err("no key");
        assert!(none.to_string().contains("FOLLOWUP_MASTER_KEY"), "{none}");
        assert!(none.to_string().contains("--master-key-file"), "{none}");

        let key = followup_core::crypto::generate_master_key().expect("random key");
        let both = Config {
            master_key: Some(key.clone()),
            master_key_file: Some(PathBuf::from("keys.txt")),
            ..Config::default()
        };
        let error = both.load_keyring().expect_err("two sources");
        assert!(error.to_string().contains("either the variable or a key file"), "{error}");

        let missing = Config {
            master_key_file: Some(PathBuf::from("/nonexistent/keys.txt")),
            ..Config::default()
        };
        let error = missing.load_keyring().expect_err("missing file");
        assert!(error.to_string().contains("/nonexistent/keys.txt"), "{error}");

        let env_only = Config { master_key: Some(key), ..Config::default() };
        assert_eq!(env_only.load_keyring().expect("one key").ids().len(), 1);
    }

    #[test]
    fn stripe_secret_key_sources() {
        let unset = StripeApiConfig::default();
        assert!(unset.load_secret_key().expect("no key is fine").is_none());
        assert_eq!(unset.api_base, "https://api.stripe.com");

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("stripe-key");
        std::fs::write(&path, "sk_test_fromfile123\n").expect("key file");
        let from_file = StripeApiConfig { secret_key_file: Some(path.clone()), ..unset.clone() };
        let key = from_file.load_secret_key().expect("valid file").expect("a key");
        assert_eq!(key.expose(), "sk_test_fromfile123");

        let both = StripeApiConfig {
            secret_key: Some(Sensitive::new("sk_test_env".to_owned())),
            ..from_file.clone()
        };
        let error = both.load_secret_key().expect_err("two sources");
        assert!(error.to_string().contains("keep one"), "{error}");

        let invalid = StripeApiConfig {
            secret_key: Some(Sensitive::new("pk_test_publishable\"x".to_owned())),
            ..unset
        };
        let error = invalid.load_secret_key().expect_err("not a secret key").to_string();
        assert!(error.contains("FOLLOWUP_STRIPE_SECRET_KEY"), "{error}");
        assert!(!error.contains("pk_test_publishable"), "the value stays out: {error}");
    }

    #[test]
    fn stripe_config_from_toml() {
        let text = "[billing.stripe]\napi_base = \"http://127.0.0.1:12111\"\n\
                    sync_at_startup = false\n";
        let parsed: Config = toml::from_str(text).expect("valid config");
        assert_eq!(parsed.billing.stripe.api_base, "http://127.0.0.1:12111");
        assert!(!parsed.billing.stripe.sync_at_startup);
        let key_in_file = toml::from_str::<Config>("[billing.stripe]\nsecret_key = \"sk_1\"\n");
        assert!(key_in_file.is_err(), "a secret key in the config file is rejected");
    }

    #[test]
    fn meter_event_name_is_checked() {
        let metered =
            Plan { stripe_meter_event_name: Some("followup_sends".into()), ..Plan::unlimited() };
        assert!(metered.validate("metered").is_ok());
        for bad in ["", "has space", &"x".repeat(101)] {
            let plan = Plan { stripe_meter_event_name: Some(bad.to_owned()), ..Plan::unlimited() };
            let error = plan.validate("metered").expect_err(bad).to_string();
            assert!(error.contains("[plans.metered] stripe_meter_event_name"), "{error}");
        }
    }
}
