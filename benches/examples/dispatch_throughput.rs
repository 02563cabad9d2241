//! Follow-ups per second through the whole engine to the in-process provider
//! (`providers.mode = null`): from "due" to "settled as sent" in the store. Every follow-up is
//! stored and due before the engine's dispatch loop starts; the loop then runs the real tenant
//! actors and provider actors (limiters, batching, billing admission) and writes every outcome
//! to the embedded store in a temporary directory. Only the provider's answer is in-process.
//!
//! Run: `cargo run -p followup-benches --release --example dispatch_throughput -- [--tenants N]
//! [--per-tenant N] [--batch-sizes N,N,..]`. Each batch size (`dispatch.batch_size`, the
//! follow-ups a tenant actor takes per round) runs with sent messages kept (the default) and
//! without; every run gets a fresh engine and store, one after the other in one process, so
//! that they compare side by side.

use std::time::Duration;

use followup_benches::dispatch::{DispatchRun, prepare};

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let (tenants, per_tenant, batch_sizes) = arguments()?;
    println!(
        "| dispatch.batch_size | sent messages kept | follow-ups | set-up | all accepted | \
         all settled as sent | follow-ups/s | CPU per follow-up |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    // Each batch size runs with the default retention of sent messages, then without it, to
    // show what keeping them costs.
    let runs = batch_sizes.into_iter().flat_map(|dispatch_batch_size| {
        [true, false].map(|keep_sent_messages| DispatchRun {
            tenants,
            follow_ups_per_tenant: per_tenant,
            dispatch_batch_size,
            keep_sent_messages,
        })
    });
    for run in runs {
        let prepared = prepare(run).await?;
        let figures = prepared.dispatch_all(Duration::from_secs(600)).await?;
        println!(
            "| {} | {} | {} | {:.1} s | {:.2} s | {:.2} s | {:.0} | {} |",
            run.dispatch_batch_size,
            if run.keep_sent_messages { "yes" } else { "no" },
            figures.follow_ups,
            prepared.setup.as_secs_f64(),
            figures.accepted_after.as_secs_f64(),
            figures.settled_after.as_secs_f64(),
            figures.per_second(),
            figures
                .cpu_micros_per_follow_up()
                .map_or_else(|| "unknown".to_owned(), |micros| format!("{micros:.0} µs"))
        );
        prepared.running.stop().await;
    }
    Ok(())
}

fn arguments() -> anyhow::Result<(usize, usize, Vec<usize>)> {
    let mut tenants = 10;
    let mut per_tenant = 10_000;
    let mut batch_sizes = vec![100];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tenants" => tenants = value.parse()?,
            "--per-tenant" => per_tenant = value.parse()?,
            "--batch-sizes" => {
                batch_sizes = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            other => anyhow::bail!(
                "unknown flag {other}; expected --tenants, --per-tenant or --batch-sizes"
            ),
        }
    }
    anyhow::ensure!(tenants > 0 && per_tenant > 0, "--tenants and --per-tenant must be at least 1");
    anyhow::ensure!(
        batch_sizes.iter().all(|size| *size > 0),
        "--batch-sizes must be at least 1 each"
    );
    Ok((tenants, per_tenant, batch_sizes))
}
