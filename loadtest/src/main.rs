//! `followup-loadtest`: drives an engine on this machine with generated load and prints a
//! report. Exits with 1 when a correctness check fails and 2 when the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use followup_core::sensitive::Sensitive;
use followup_loadtest::{EXIT_STATUS_HELP, LoadOptions, Scenario, run};

/// Generates tenants, contacts and schedules, streams them to a followup engine on a loopback
/// address, waits for every follow-up to settle and reports throughput and correctness.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_STATUS_HELP)]
struct Args {
    /// Base URL of the engine; the host must be 127.0.0.0/8, ::1 or localhost.
    #[arg(long, env = "FOLLOWUP_LOADTEST_URL")]
    url: String,

    /// Operator token of the engine's /admin API.
    #[arg(long, env = "FOLLOWUP_ADMIN_TOKEN", hide_env_values = true, value_parser = sensitive)]
    admin_token: Sensitive<String>,

    /// Scenario YAML file; without it, 2 tenants x 500 contacts with default settings.
    #[arg(long)]
    scenario: Option<PathBuf>,

    /// Number of tenants; overrides the scenario.
    #[arg(long)]
    tenants: Option<u32>,

    /// Generated contacts per tenant, invalid rows included; overrides the scenario.
    #[arg(long)]
    contacts_per_tenant: Option<u64>,

    /// Uploads in flight at once; overrides the scenario.
    #[arg(long)]
    concurrency: Option<usize>,

    /// Maximum wall time of the whole run, in seconds; overrides the scenario.
    #[arg(long)]
    timeout_seconds: Option<u64>,

    /// Print the report as one JSON object on stdout; progress stays on stderr.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Loads the scenario file or the default, then applies the command-line overrides.
    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut scenario = match &self.scenario {
            Some(path) => Scenario::from_file(path)?,
            None => Scenario::default(),
        };
        if let Some(tenants) = self.tenants {
            scenario.tenants = tenants;
        }
        if let Some(contacts) = self.contacts_per_tenant {
            scenario.contacts_per_tenant = contacts;
        }
        if let Some(concurrency) = self.concurrency {
            scenario.concurrency = concurrency;
        }
        if let Some(seconds) = self.timeout_seconds {
            scenario.timeout_seconds = seconds;
        }
        Ok(scenario)
    }
}

fn sensitive(value: &str) -> Result<Sensitive<String>, std::convert::Infallible> {
    Ok(Sensitive::new(value.to_owned()))
}

#[tokio::main]
async fn main() -> ExitCode {
    // reqwest is built without a default TLS provider, so one is installed before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match run_and_print(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the load and prints the report; returns whether every check passed.
async fn run_and_print(args: Args) -> anyhow::Result<bool> {
    let options = LoadOptions {
        url: args.url.clone(),
        admin_token: args.admin_token.clone(),
        scenario: args.scenario()?,
        show_progress: true,
    };
    let report = run(options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.passed)
}
