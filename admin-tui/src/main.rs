//! `followup-tui`: the operator console in a terminal.

use anyhow::Context as _;
use clap::Parser;
use followup_core::sensitive::Sensitive;
use followup_tui::{AdminClient, App, event_loop, spawn_feed};
use ratatui::layout::Rect;
use reqwest::Url;

/// Live view of a followup engine: totals, throughput, queues, tenants, failures and dead
/// letters, with keys to pause, resume and retry.
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
    let client = AdminClient::new(&cli.url, cli.token)?;
    let server = client.server();

    // One worker is enough for the stream and a few requests; the screen runs on the main
    // thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let feed = {
        let _context = runtime.enter();
        spawn_feed(client.clone())
    };

    // try_init also installs a panic hook that restores the terminal before the message.
    let mut terminal = ratatui::try_init().context("failed to set up the terminal")?;
    let app = App::new(server, Rect::default());
    let result = event_loop::run(app, &mut terminal, feed, &client, runtime.handle());
    ratatui::restore();

    // Do not wait for requests in flight, which can take up to their timeout.
    runtime.shutdown_background();
    result.context("terminal input or output failed")
}
