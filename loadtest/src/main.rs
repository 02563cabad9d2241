//! `followup-loadtest`: drives an engine on this machine with generated load and prints a
//! report. Exits with 1 when a correctness check fails and 2 when the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use followup_core::sensitive::Sensitive;
use followup_loadtest::{
    BackgroundSpec, EXIT_STATUS_HELP, LoadOptions, Scenario, Target, TimeMode, run, svg,
};

/// Generates tenants, contacts and schedules, streams them to a followup engine on a loopback
/// address, waits for every follow-up to settle and reports throughput, lateness, memory and
/// correctness.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_STATUS_HELP)]
struct Args {
    /// Start `followup fakes` and `followup serve` from this `followup` binary, on loopback
    /// with a fresh store, instead of loading a running engine. With a scenario on `time:
    /// virtual`, start only `followup serve --virtual-clock` with its built-in fakes.
    #[arg(long, value_name = "FOLLOWUP", conflicts_with_all = ["url", "fakes_url"])]
    engine: Option<PathBuf>,

    /// Base URL of a running engine; the host must be 127.0.0.0/8, ::1 or localhost. A
    /// scenario on `time: virtual` needs an engine started with `--virtual-clock`.
    #[arg(long, env = "FOLLOWUP_LOADTEST_URL", required_unless_present = "engine")]
    url: Option<String>,

    /// Operator token of the running engine's /admin API.
    #[arg(long, env = "FOLLOWUP_ADMIN_TOKEN", hide_env_values = true, value_parser = sensitive)]
    admin_token: Option<Sensitive<String>>,

    /// Base URL of the `followup fakes` the running engine sends to, so that sends are
    /// matched with what the fakes received. Without it, an engine on a virtual clock is asked
    /// for its built-in fakes' URL (`GET /admin/v1/fakes`).
    #[arg(long)]
    fakes_url: Option<String>,

    /// Write a chart of sends/s, lateness and memory over time to this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,

    /// Keep the store and logs of the engine started with --engine.
    #[arg(long, requires = "engine")]
    keep_files: bool,

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

    /// Background follow-ups kept pending through the run; sets or overrides the scenario's
    /// `background.pending`, so that one scenario file serves every point of a scaling curve.
    #[arg(long, value_name = "N")]
    background_pending: Option<u64>,

    /// Tenants the background follow-ups are spread over; overrides `background.tenants`.
    #[arg(long, value_name = "N", requires = "background_pending")]
    background_tenants: Option<u32>,

    /// Page cache of the engine's embedded store in MiB, with `--engine`; overrides the
    /// scenario's `embedded_cache_mib`.
    #[arg(long, value_name = "MIB", requires = "engine")]
    embedded_cache_mib: Option<u64>,

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
        if let Some(cache_mib) = self.embedded_cache_mib {
            scenario.embedded_cache_mib = Some(cache_mib);
        }
        if let Some(pending) = self.background_pending {
            let background = scenario.background.get_or_insert_with(|| BackgroundSpec::new(0));
            background.pending = pending;
            if let Some(tenants) = self.background_tenants {
                background.tenants = tenants;
            }
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
    let target = match (&args.engine, &args.url) {
        (Some(followup), _) => Target::Start { followup: followup.clone() },
        (None, Some(url)) => Target::Running {
            url: url.clone(),
            admin_token: args
                .admin_token
                .clone()
                .context("--admin-token or FOLLOWUP_ADMIN_TOKEN is needed with --url")?,
            fakes_url: args.fakes_url.clone(),
        },
        (None, None) => anyhow::bail!("pass --engine FOLLOWUP or --url URL"),
    };
    let scenario = args.scenario()?;
    if args.svg.is_some() && scenario.time == TimeMode::Virtual {
        anyhow::bail!(
            "--svg draws sends per second of the run, which a scenario with time: virtual does \
             not record because its seconds are virtual; drop --svg or run on real time"
        );
    }
    let options =
        LoadOptions { target, scenario, show_progress: true, keep_files: args.keep_files };
    let report = run(options).await?;
    if let Some(path) = &args.svg {
        let timeline = report.delivery.as_ref().map(|d| d.timeline.as_slice()).unwrap_or_default();
        std::fs::write(path, svg::render(&report.scenario, timeline))
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.passed)
}
