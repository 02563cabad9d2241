//! The `followup` command: `serve` runs the engine, `demo` runs the main job end to end on a
//! contact file, `fakes` runs the wire-level provider fakes on their own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use followup_adapters::fakes::{Accounts, FakeConfig, FakeProviders, FaultProfile};
use followup_core::api::KeyRotationReport;
use followup_core::clock::{Clock, SystemClock, VirtualClock};
use followup_core::crypto::{MasterKey, generate_master_key};
use followup_core::limits::SendLimits;
use followup_core::sensitive::Sensitive;
use followup_dispatcher::config::{Config, ProvidersMode};
use followup_dispatcher::demo::{self, DemoOptions};
use followup_dispatcher::server::RunningEngine;
use followup_dispatcher::storage::StoreSelection;
use followup_dispatcher::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "followup", version, about = "Sends automated follow-ups for many businesses")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine: HTTP API, dispatch, metrics.
    Serve(Box<ServeArgs>),
    /// Run the main job end to end on a CSV file, under a virtual clock, against the fakes.
    Demo(DemoArgs),
    /// Run the wire-level fakes of Gmail, Graph, Twilio and the OAuth token endpoints on
    /// loopback until stopped; prints their URLs as one JSON line on stdout.
    Fakes(FakesArgs),
    /// Manage the master keys that wrap the tenants' data keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new random master key (base64 of 32 bytes) on stdout, and its id on stderr.
    Generate,
    /// Make a running engine read its master key file again and re-wrap every tenant's data
    /// key under the newest key; prints the report as JSON. Reads the operator token from
    /// FOLLOWUP_ADMIN_TOKEN.
    Rotate {
        /// Base URL of the running engine's HTTP API.
        #[arg(long, env = "FOLLOWUP_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

/// The source of the master keys. A key itself is read only from FOLLOWUP_MASTER_KEY, never
/// from a flag, so that it stays out of `ps` output and shell history.
#[derive(Debug, clap::Args)]
struct MasterKeyArgs {
    /// File of master keys, one base64 key per line, newest last (from `followup keys
    /// generate`). Alternative to FOLLOWUP_MASTER_KEY.
    #[arg(long, env = "FOLLOWUP_MASTER_KEY_FILE", value_name = "FILE")]
    master_key_file: Option<PathBuf>,
}

impl MasterKeyArgs {
    /// Returns the key of FOLLOWUP_MASTER_KEY, if set and not empty.
    fn env_key() -> Option<Sensitive<String>> {
        std::env::var("FOLLOWUP_MASTER_KEY").ok().filter(|key| !key.is_empty()).map(Sensitive::new)
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags and FOLLOWUP_* variables override it.
    #[arg(long, env = "FOLLOWUP_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, env = "FOLLOWUP_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of the embedded store and of the webhook event log.
    #[arg(long, env = "FOLLOWUP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store: `embedded` (in --data-dir), a directory, or mongodb://host:port/database.
    /// The value is hidden from --help because a URI may carry a password.
    #[arg(long, env = "FOLLOWUP_STORE", value_name = "embedded|DIR|URI", hide_env_values = true)]
    store: Option<StoreSelection>,
    /// Seconds start-up waits for a MongoDB store to answer, and any later store operation
    /// for a reachable server.
    #[arg(long, env = "FOLLOWUP_STORE_TIMEOUT_SECONDS", value_name = "SECONDS")]
    store_timeout_seconds: Option<u64>,
    /// Log format.
    #[arg(long, env = "FOLLOWUP_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Identity of this engine among the nodes sharing its store (`[cluster] node_id`);
    /// unset, a random id per process.
    #[arg(long, env = "FOLLOWUP_NODE_ID")]
    node_id: Option<String>,
    /// `fake` starts the built-in fakes; `live` sends to the configured provider URLs; `null`
    /// sends nothing and takes every send as accepted (a measuring tool for the engine alone).
    #[arg(long, env = "FOLLOWUP_PROVIDERS", value_enum)]
    providers: Option<ProvidersMode>,
    #[arg(long, env = "FOLLOWUP_GMAIL_BASE_URL")]
    gmail_base_url: Option<String>,
    #[arg(long, env = "FOLLOWUP_GRAPH_BASE_URL")]
    graph_base_url: Option<String>,
    #[arg(long, env = "FOLLOWUP_TWILIO_BASE_URL")]
    twilio_base_url: Option<String>,
    /// Google's OAuth token endpoint.
    #[arg(long, env = "FOLLOWUP_GOOGLE_TOKEN_URL")]
    google_token_url: Option<String>,
    /// Microsoft's OAuth token endpoint, with `{tenant}` where the tenant goes.
    #[arg(long, env = "FOLLOWUP_MICROSOFT_TOKEN_URL")]
    microsoft_token_url: Option<String>,
    /// Client id of the engine's Google OAuth client; its secret is read from
    /// FOLLOWUP_GOOGLE_CLIENT_SECRET only.
    #[arg(long, env = "FOLLOWUP_GOOGLE_CLIENT_ID")]
    google_client_id: Option<String>,
    /// Application id of the engine's Entra app; its secret is read from
    /// FOLLOWUP_MICROSOFT_CLIENT_SECRET only.
    #[arg(long, env = "FOLLOWUP_MICROSOFT_CLIENT_ID")]
    microsoft_client_id: Option<String>,
    /// Fault profile of the built-in fakes (fake mode only), for load and fault tests.
    #[command(flatten)]
    faults: FaultArgs,
    /// Run under a virtual clock for load tests and measurements: it starts at the current
    /// instant and does not move until `POST /admin/v1/clock/run` moves it, and dispatch runs
    /// only inside that request. Needs --providers fake, whose fakes share the clock.
    #[arg(long)]
    virtual_clock: bool,
    #[command(flatten)]
    keys: MasterKeyArgs,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Contact file to upload (CSV with a header row).
    #[arg(long)]
    csv: PathBuf,
    /// Print only one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Directory of the embedded store; a fresh temporary one when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A MongoDB store (mongodb://host:port/database, which must be empty) instead of the
    /// embedded one.
    #[arg(long, env = "FOLLOWUP_STORE", value_name = "URI", hide_env_values = true)]
    store: Option<StoreSelection>,
    /// Billing plan of the demo tenant.
    #[arg(long, default_value = "pro")]
    plan: String,
    /// Configuration file (TOML) whose [plans] and [billing] replace the built-in plans; its
    /// other settings are not used by the demo.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Share of contacts, 0 to 1, that reply (a stop signal) at a random moment within five
    /// days after their first email.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_fraction)]
    replies: f64,
    /// Seed of the draws of --replies; the same seed picks the same contacts and moments.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    reply_seed: u64,
    #[command(flatten)]
    faults: FaultArgs,
    #[command(flatten)]
    keys: MasterKeyArgs,
}

/// Reads a fraction from 0 to 1.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{value} is outside 0 to 1"));
    }
    Ok(value)
}

#[derive(Debug, clap::Args)]
struct FakesArgs {
    /// Sends per minute each account may make; the provider's published limit when absent.
    #[arg(long)]
    per_minute: Option<u32>,
    /// Sends per rolling 24 hours each account may make; published limit when absent.
    #[arg(long)]
    per_day: Option<u32>,
    /// Milliseconds each fake waits before it answers a request, on top of the fault profile's
    /// latency, so that a test can find requests in flight.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    #[command(flatten)]
    faults: FaultArgs,
}

/// The fault profile the provider fakes apply to valid sends.
#[derive(Debug, clap::Args)]
struct FaultArgs {
    /// Named fault profile of the fakes: retryable errors, 429 bursts, stalls or latency.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "none",
        value_parser = fault_profile_parser()
    )]
    faults: FaultProfile,
    /// Seed of the fault profile's random draws; the same seed repeats the same faults.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    fault_seed: u64,
}

impl FaultArgs {
    fn profile(self) -> FaultProfile {
        self.faults.with_seed(self.fault_seed)
    }
}

/// Accepts the names of [`FaultProfile::NAMES`], so that `--help` lists them and an unknown
/// name is rejected with the list.
fn fault_profile_parser() -> impl TypedValueParser<Value = FaultProfile> {
    PossibleValuesParser::new(FaultProfile::NAMES).try_map(|name| FaultProfile::named(&name))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider, so that one crypto library (ring)
    // serves both TLS and encryption at rest.
    let _ = rustls::crypto::ring::default_provider().install_default();
    actix_rt::System::new().block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Demo(args) => {
                // The demo's own progress lines are its output; logs show only trouble.
                telemetry::init_logs(LogFormat::Pretty, "warn");
                demo::run(DemoOptions {
                    csv: args.csv,
                    json: args.json,
                    data_dir: args.data_dir,
                    store: args.store,
                    plan: args.plan,
                    config: args.config,
                    replies: args.replies,
                    reply_seed: args.reply_seed,
                    faults: args.faults.profile(),
                    master_key: MasterKeyArgs::env_key(),
                    master_key_file: args.keys.master_key_file,
                })
                .await
            }
            Command::Fakes(args) => fakes(args).await,
            Command::Keys(KeysCommand::Generate) => generate_key(),
            Command::Keys(KeysCommand::Rotate { url }) => rotate_keys(&url).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(store) = args.store {
        config.store = store;
    }
    if let Some(seconds) = args.store_timeout_seconds {
        config.store_timeout_seconds = seconds;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    if let Some(node_id) = args.node_id {
        config.cluster.node_id = Some(node_id);
    }
    if let Some(mode) = args.providers {
        config.providers.mode = mode;
    }
    check_virtual_clock(args.virtual_clock, config.providers.mode)?;
    if let Some(url) = args.gmail_base_url {
        config.providers.gmail_base_url = url;
    }
    if let Some(url) = args.graph_base_url {
        config.providers.graph_base_url = url;
    }
    if let Some(url) = args.twilio_base_url {
        config.providers.twilio_base_url = url;
    }
    let oauth = &mut config.oauth;
    let overrides = [
        (args.google_token_url, &mut oauth.google_token_url),
        (args.microsoft_token_url, &mut oauth.microsoft_token_url),
    ];
    for (value, field) in overrides {
        if let Some(value) = value {
            *field = value;
        }
    }
    if let Some(id) = args.google_client_id {
        oauth.google_client_id = Some(id);
    }
    if let Some(id) = args.microsoft_client_id {
        oauth.microsoft_client_id = Some(id);
    }
    // Secrets are read from the environment only, never a flag, so that they stay out of `ps`
    // output.
    let secrets = [
        ("FOLLOWUP_ADMIN_TOKEN", &mut config.admin_token),
        ("FOLLOWUP_GOOGLE_CLIENT_SECRET", &mut config.oauth.google_client_secret),
        ("FOLLOWUP_MICROSOFT_CLIENT_SECRET", &mut config.oauth.microsoft_client_secret),
        ("FOLLOWUP_STRIPE_SECRET_KEY", &mut config.billing.stripe.secret_key),
    ];
    for (variable, field) in secrets {
        if let Ok(value) = std::env::var(variable)
            && !value.is_empty()
        {
            *field = Some(Sensitive::new(value));
        }
    }
    // Comma-separated, so that a secret can be rolled: the old and the new one both verify.
    if let Ok(secrets) = std::env::var("FOLLOWUP_STRIPE_SIGNING_SECRETS")
        && !secrets.is_empty()
    {
        config.webhooks.stripe_signing_secrets =
            secrets.split(',').map(|secret| Sensitive::new(secret.trim().to_owned())).collect();
    }
    if let Ok(path) = std::env::var("FOLLOWUP_STRIPE_SECRET_KEY_FILE")
        && !path.is_empty()
    {
        config.billing.stripe.secret_key_file = Some(path.into());
    }
    if let Some(path) = args.keys.master_key_file {
        config.master_key_file = Some(path);
    }
    config.master_key = MasterKeyArgs::env_key();
    // Checked before anything starts, so that a missing key is the only message.
    config.load_keyring()?;
    config.admin.load_operator_tokens()?;
    telemetry::init_logs(config.log_format, "info,actix_server=warn");
    let metrics = telemetry::install_metrics()?;
    config.validate_store_and_dispatch()?;
    let timeout = Duration::from_secs(config.store_timeout_seconds);
    let store = config.store.open(&config.data_dir, timeout, config.embedded_cache_mib).await?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        store = ?config.store,
        providers = ?config.providers.mode,
        admin_api = config.admin_token.is_some() || !config.admin.operators.is_empty(),
        https = config.tls.cert_file.is_some(),
        stripe_webhooks = !config.webhooks.stripe_signing_secrets.is_empty(),
        stripe_api = config.billing.stripe.secret_key.is_some()
            || config.billing.stripe.secret_key_file.is_some(),
        twilio_webhooks = config.webhooks.public_base_url.is_some(),
        "starting followup"
    );
    let faults = args.faults.profile();
    if config.providers.mode != ProvidersMode::Fake && faults != FaultProfile::none() {
        anyhow::bail!("--faults applies to the built-in fakes; drop it or use --providers fake");
    }
    if args.virtual_clock {
        let clock = Arc::new(VirtualClock::new(Utc::now()));
        let fakes = FakeConfig::new(clock.clone()).with_faults(faults);
        let running =
            RunningEngine::start_with_virtual_clock(config, store, clock, Some(metrics), fakes)
                .await?;
        tracing::warn!(
            "virtual clock: the clock does not move and nothing is dispatched until POST \
             /admin/v1/clock/run moves it"
        );
        shutdown_signal().await;
        tracing::info!("stopping followup");
        running.stop().await;
        return Ok(());
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fakes = FakeConfig::new(clock.clone()).with_faults(faults);
    let running =
        RunningEngine::start_with_fakes(config, store, clock, Some(metrics), fakes).await?;
    let engine = running.engine.clone();
    engine.run_forever(shutdown_signal()).await;
    tracing::info!("stopping followup");
    running.stop().await;
    Ok(())
}

/// Rejects `--virtual-clock` unless the providers are the built-in fakes, which share the
/// engine's clock.
fn check_virtual_clock(virtual_clock: bool, mode: ProvidersMode) -> anyhow::Result<()> {
    if virtual_clock && mode != ProvidersMode::Fake {
        let mode = format!("{mode:?}").to_lowercase();
        anyhow::bail!(
            "--virtual-clock needs --providers fake, but providers mode is {mode}: the virtual \
             clock is for load tests against the built-in fakes, which share it, and live \
             providers keep real time, so days of sends would reach them in seconds"
        );
    }
    Ok(())
}

async fn fakes(args: FakesArgs) -> anyhow::Result<()> {
    telemetry::init_logs(LogFormat::Pretty, "info,actix_server=warn");
    let limits = match (args.per_minute, args.per_day) {
        (None, None) => None,
        (per_minute, per_day) => Some(SendLimits {
            per_minute: per_minute.unwrap_or(u32::MAX),
            per_day: per_day.unwrap_or(u32::MAX),
        }),
    };
    let config = FakeConfig::new(Arc::new(SystemClock))
        .with_accounts(Accounts::Open { limits })
        .with_latency(Duration::from_millis(args.latency_ms))
        .with_faults(args.faults.profile());
    let fakes = FakeProviders::start(config).await?;
    let urls = serde_json::json!({
        "gmail": fakes.gmail_url().as_str(),
        "graph": fakes.graph_url().as_str(),
        "twilio": fakes.twilio_url().as_str(),
        "google_token": fakes.google_token_url(),
        "microsoft_token": fakes.microsoft_token_url(),
    });
    println!("{urls}");
    shutdown_signal().await;
    fakes.shutdown().await;
    Ok(())
}

/// Prints a new master key on stdout, alone, so that `followup keys generate >> keys.txt`
/// appends exactly one key line.
fn generate_key() -> anyhow::Result<()> {
    let key = generate_master_key()?;
    let id = MasterKey::from_base64(key.expose(), "the new key")?.id().to_owned();
    println!("{}", key.expose());
    eprintln!(
        "new master key {id}: append it as the last line of the key file, then run `followup keys rotate`"
    );
    Ok(())
}

/// Asks the running engine at `url` to re-read its key file and re-wrap every data key.
async fn rotate_keys(url: &str) -> anyhow::Result<()> {
    let token = std::env::var("FOLLOWUP_ADMIN_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .context("FOLLOWUP_ADMIN_TOKEN is not set: rotation needs the engine's operator token")?;

    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid engine URL {url:?}"))?;
    let host = parsed.host_str().unwrap_or_default();
    // The operator token must not cross a network in clear text.
    if parsed.scheme() != "https" && !followup_dispatcher::config::is_loopback_host(host) {
        anyhow::bail!(
            "refusing to send the operator token to {url}: use https, or plain http only to a \
             loopback address (127.0.0.1, ::1, localhost)"
        );
    }

    let endpoint = format!("{}/admin/v1/keys/rotate", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the engine at {endpoint}"))?;
    let status = response.status();
    let body = response.text().await.context("cannot read the engine's response")?;
    if !status.is_success() {
        anyhow::bail!("rotation failed: {endpoint} returned {status}: {body}");
    }
    let report: KeyRotationReport = serde_json::from_str(&body)
        .with_context(|| format!("unexpected response from {endpoint}: {body}"))?;

    println!("{}", serde_json::to_string_pretty(&report)?);
    let removable: Vec<&String> = report
        .master_keys_loaded
        .iter()
        .filter(|id| !report.master_keys_in_use.contains(id))
        .collect();
    eprintln!(
        "re-wrapped {} data keys under {}; master keys no longer in use, safe to remove from \
         the key file: {removable:?}",
        report.rewrapped, report.newest_master_key_id
    );
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what service managers send).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use followup_adapters::fakes::FaultProfile;
    use followup_dispatcher::config::ProvidersMode;

    use super::{Cli, Command};

    #[test]
    fn faults_flag_selects_profile() {
        let cli =
            Cli::try_parse_from(["followup", "fakes", "--faults", "flaky", "--fault-seed", "7"])
                .expect("valid flags");
        let Command::Fakes(args) = cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        let profile = args.faults.profile();
        assert_eq!(profile.name(), "flaky");
        assert_eq!(profile.seed, 7);
    }

    #[test]
    fn virtual_clock_needs_fake_providers() {
        assert!(super::check_virtual_clock(true, ProvidersMode::Fake).is_ok());
        assert!(super::check_virtual_clock(false, ProvidersMode::Live).is_ok());
        for mode in [ProvidersMode::Live, ProvidersMode::Null] {
            let error = super::check_virtual_clock(true, mode).expect_err("not the fakes");
            let message = error.to_string();
            assert!(message.contains("--virtual-clock needs --providers fake"), "{message}");
        }
        let cli = Cli::try_parse_from(["followup", "serve", "--virtual-clock"]).expect("flag");
        let Command::Serve(args) = cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        assert!(args.virtual_clock);
    }

    #[test]
    fn faults_flag_defaults_to_none() {
        let cli = Cli::try_parse_from(["followup", "demo", "--csv", "contacts.csv"])
            .expect("valid flags");
        let Command::Demo(args) = cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(args.faults.profile(), FaultProfile::none());
    }

    #[test]
    fn unknown_fault_profile_lists_names() {
        for command in ["fakes", "demo"] {
            let mut argv = vec!["followup", command, "--faults", "flakey"];
            if command == "demo" {
                argv.extend(["--csv", "contacts.csv"]);
            }
            let error = Cli::try_parse_from(argv).expect_err("unknown profile");
            let message = error.to_string();
            assert!(message.contains("flakey"), "{command}: {message}");
            for name in FaultProfile::NAMES {
                assert!(message.contains(name), "{command}: {name} missing from {message}");
            }
        }
    }
}
