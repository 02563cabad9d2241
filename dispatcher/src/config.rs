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

use crate::telemetry::LogFormat;

/// Everything the engine reads at start-up.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
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
    /// Billing plans by name.
    pub plans: BTreeMap<String, Plan>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("followup-data"),
            admin_token: None,
            master_key_file: None,
            master_key: None,
            log_format: LogFormat::Pretty,
            providers: ProvidersConfig::default(),
            ingest: IngestConfig::default(),
            dispatch: DispatchConfig::default(),
            plans: default_plans(),
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults. Unknown keys are an error, so a misspelt key is
    /// reported instead of silently ignored.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

impl Config {
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
                        reason: error.to_string(),
                    }
                })?;
                Keyring::parse(&text, &origin)
            }
            (None, None) => Err(CryptoError::NoMasterKey),
        }
    }
}

/// Destination of provider requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// `fake` starts the built-in wire-level fakes on loopback and sends there; `live` sends to
    /// the base URLs below.
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
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProvidersMode {
    #[default]
    Fake,
    Live,
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
    /// Maximum pause between dispatch rounds under the system clock, in milliseconds.
    pub tick_millis: u64,
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
            resend_in_doubt: Vec::new(),
        }
    }
}

/// Monthly allowance of a tenant's plan, per calendar month (UTC).
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub monthly_email: u64,
    pub monthly_sms: u64,
    pub monthly_call: u64,
    /// Treatment of a follow-up once the month's quota is used up.
    #[serde(default)]
    pub over_quota: OverQuota,
}

impl Plan {
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
    let plan = |email, sms, call| Plan {
        monthly_email: email,
        monthly_sms: sms,
        monthly_call: call,
        over_quota: OverQuota::Skip,
    };
    BTreeMap::from([
        ("free".to_owned(), plan(500, 100, 20)),
        ("starter".to_owned(), plan(10_000, 2_000, 500)),
        ("pro".to_owned(), plan(250_000, 50_000, 20_000)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
