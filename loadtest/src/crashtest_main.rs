//! `followup-crashtest`: kills `followup serve` with SIGKILL at chosen moments, restarts it
//! and checks that nothing accepted was lost and nothing was sent twice. Exits with 1 when a
//! check failed and 2 when the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use followup_core::domain::Channel;
use followup_loadtest::EXIT_STATUS_HELP;
use followup_loadtest::crash::{CrashOptions, StopSignal, StoreTarget, run};

/// Runs `followup serve` against a separate `followup fakes` process, kills it with SIGKILL
/// during ingest, dispatch and outcome writes, restarts it after each kill, and checks the
/// store and what the fakes received.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_STATUS_HELP)]
struct Args {
    /// The `followup` binary; by default the one beside this program.
    #[arg(long)]
    followup: Option<PathBuf>,

    /// Kills to make.
    #[arg(long, default_value_t = 50)]
    kills: u32,

    /// Seed of the run's random choices; a random one (printed) when absent.
    #[arg(long)]
    seed: Option<u64>,

    /// Seconds after which no more kills are made; settling comes on top.
    #[arg(long, default_value_t = 600)]
    kill_for_seconds: u64,

    /// Seconds the last engine gets to settle every follow-up.
    #[arg(long, default_value_t = 300)]
    settle_within_seconds: u64,

    /// A directory for the embedded store, or mongodb://127.0.0.1:PORT/DB for the MongoDB
    /// store; a fresh embedded store of the run's own when absent.
    #[arg(long)]
    store: Option<String>,

    /// Channels of the sequence, one step each: email, sms, call.
    #[arg(long, value_delimiter = ',', default_value = "email,sms,call")]
    channels: Vec<String>,

    /// Tenants (1 to 8); email goes through Gmail for even ones and Outlook for odd ones.
    #[arg(long, default_value_t = 2)]
    tenants: u32,

    /// Contacts per upload.
    #[arg(long, default_value_t = 150)]
    contacts_per_upload: u32,

    /// Sends per minute per connection, in the engine and the fakes alike.
    #[arg(long, default_value_t = 3_000)]
    per_minute: u32,

    /// Sends per rolling day per connection, in the engine and the fakes alike.
    #[arg(long, default_value_t = 1_000_000)]
    per_day: u32,

    /// Calls each tenant may make a month (its plan's quota); unlimited when absent.
    #[arg(long)]
    monthly_calls: Option<u64>,

    /// Milliseconds the fakes take to answer each request.
    #[arg(long, default_value_t = 40)]
    latency_ms: u64,

    /// Directory of the run's files; kept. By default a temporary one, removed if the run
    /// passes.
    #[arg(long)]
    work_dir: Option<PathBuf>,

    /// Stop the engine with SIGTERM instead of SIGKILL, during dispatch and outcome writes
    /// only; each stop must exit 0 within 45 s and leave no follow-up in doubt.
    #[arg(long)]
    graceful: bool,
}

impl Args {
    fn options(self) -> anyhow::Result<CrashOptions> {
        let followup = match self.followup {
            Some(path) => path,
            None => std::env::current_exe()
                .context("cannot find this program's path; pass --followup")?
                .with_file_name("followup"),
        };
        let seed = self.seed.unwrap_or_else(rand::random);
        let mut options = CrashOptions::new(followup, seed);
        options.kills = self.kills;
        options.kill_for = Duration::from_secs(self.kill_for_seconds);
        options.settle_within = Duration::from_secs(self.settle_within_seconds);
        if let Some(store) = &self.store {
            options.store = StoreTarget::parse(store)?;
        }
        options.channels =
            self.channels.iter().map(|name| parse_channel(name)).collect::<Result<_, _>>()?;
        options.tenants = self.tenants;
        options.contacts_per_upload = self.contacts_per_upload;
        options.per_minute = self.per_minute;
        options.per_day = self.per_day;
        if let Some(calls) = self.monthly_calls {
            options.monthly_calls = calls;
        }
        options.latency = Duration::from_millis(self.latency_ms);
        options.work_dir = self.work_dir;
        if self.graceful {
            options.stop_signal = StopSignal::Term;
        }
        Ok(options)
    }
}

fn parse_channel(name: &str) -> anyhow::Result<Channel> {
    match name.trim() {
        "email" => Ok(Channel::Email),
        "sms" => Ok(Channel::Sms),
        "call" => Ok(Channel::Call),
        other => bail!("--channels: unknown channel {other:?}; use email, sms or call"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Args::parse().options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let seed = options.seed;
    match run(options).await {
        Ok(report) => {
            print!("{report}");
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(error) => {
            eprintln!("error: the crash run with seed {seed} could not be made: {error:#}");
            ExitCode::from(2)
        }
    }
}
