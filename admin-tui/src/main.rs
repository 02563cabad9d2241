//! `followup-tui`: the operator console in a terminal.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use followup_core::sensitive::Sensitive;
use followup_tui::{App, SnapshotClient, spawn_poller};
use ratatui::layout::Rect;
use reqwest::Url;

/// Period between two snapshot requests.
const POLL_PERIOD: Duration = Duration::from_secs(1);

/// Live view of a followup engine: totals, queues per channel and tenants by backlog.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Base URL of the engine's HTTP API, such as http://127.0.0.1:8080.
    #[arg(long, env = "FOLLOWUP_URL")]
    url: Url,
    /// Operator token sent as a bearer token. Prefer the environment variable, because
    /// command-line arguments are visible to other users in the process list.
    #[arg(long, env = "FOLLOWUP_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_token)]
    token: Sensitive<String>,
}

fn parse_token(value: &str) -> Result<Sensitive<String>, String> {
    if value.trim().is_empty() {
        return Err("the operator token is empty".to_owned());
    }
    Ok(Sensitive::new(value.to_owned()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = SnapshotClient::new(&cli.url, cli.token)?;
    let server = client.server();

    // One worker is enough for one request per second; the screen runs on the main thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let updates = {
        let _context = runtime.enter();
        spawn_poller(client, POLL_PERIOD)
    };

    // try_init also installs a panic hook that restores the terminal before the message.
    let mut terminal = ratatui::try_init().context("failed to set up the terminal")?;
    let app = App::new(server, Rect::default());
    let result = app.run(&mut terminal, updates);
    ratatui::restore();

    // Do not wait for a request in flight, which can take up to its timeout.
    runtime.shutdown_background();
    result.context("terminal input or output failed")
}
