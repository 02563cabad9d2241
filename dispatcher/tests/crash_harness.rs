//! The short form of the crash harness (`followup-crashtest`): `followup serve` on the
//! embedded store, killed with SIGKILL 50 times during ingest, dispatch and outcome writes,
//! loses no acknowledged schedule, settles every follow-up once, sends none twice and keeps
//! the plan's call quota.
//!
//! One run uses a fixed seed, so that a failure repeats; a second uses a random seed, printed
//! on stderr, to look further each time the tests run.

use std::path::PathBuf;
use std::time::Duration;

use followup_loadtest::crash::{CrashOptions, CrashReport, Phase, run};

/// Kills per run. A run of 50 kills took about 40 s on a 2-core machine (debug build).
const KILLS: u32 = 50;

fn options(seed: u64) -> CrashOptions {
    let mut options = CrashOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_followup")), seed);
    options.kills = KILLS;
    // Reached part way through a run, so that the quota is checked across kills while email
    // and SMS still have work for the kills to land among.
    options.monthly_calls = 500;
    options.kill_for = Duration::from_secs(90);
    options.settle_within = Duration::from_secs(90);
    options.show_progress = true;
    options
}

/// Runs the harness, bounded in time on top of the harness's own bounds, and checks its
/// report.
async fn crash_run(seed: u64) -> CrashReport {
    eprintln!("crash harness seed {seed}");
    let report = tokio::time::timeout(Duration::from_secs(300), run(options(seed)))
        .await
        .expect("the crash run ended within 300 s")
        .expect("the crash run could be made");
    eprint!("{report}");
    assert!(report.passed(), "seed {seed}: {} failure(s), see above", report.failures.len());
    assert_eq!(report.kills.len(), KILLS as usize, "seed {seed}: kills made within the bound");
    report
}

fn landed(report: &CrashReport, phase: Phase) -> u32 {
    report.phases.iter().find(|(of, _)| *of == phase).map_or(0, |(_, count)| count.landed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sigkills_break_no_guarantee() {
    let report = crash_run(20_261_204).await;
    assert!(landed(&report, Phase::Ingest) > 0, "no kill landed mid-upload");
    assert!(landed(&report, Phase::Dispatch) > 0, "no kill landed with a request in flight");
    assert!(report.uploads_partly_stored > 0, "no cut upload had stored part of its rows");

    crash_run(rand_seed()).await;
}

/// Returns a seed from the clock, different at each run of the tests.
fn rand_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(1, |elapsed| elapsed.as_nanos() as u64)
}
