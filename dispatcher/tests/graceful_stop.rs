//! SIGTERM to `followup serve` in the middle of dispatch, again and again: each stop lets the
//! requests under way finish, stores their outcomes, releases the leases and exits 0 within
//! the bound, and after the restarts every follow-up is settled once, none in doubt and none
//! received twice by the fakes (a separate `followup fakes` process that outlives the
//! engines). The crash harness drives it, with SIGTERM in place of SIGKILL.

use std::path::PathBuf;
use std::time::Duration;

use followup_loadtest::crash::{CrashOptions, Phase, StopSignal, run};

/// Graceful stops per run.
const STOPS: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_dispatch_loses_and_repeats_nothing() {
    let mut options = CrashOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_followup")), 20_261_205);
    options.kills = STOPS;
    options.stop_signal = StopSignal::Term;
    options.kill_for = Duration::from_secs(120);
    options.settle_within = Duration::from_secs(90);
    options.show_progress = true;
    let report = tokio::time::timeout(Duration::from_secs(400), run(options))
        .await
        .expect("the run ended within 400 s")
        .expect("the run could be made");
    eprint!("{report}");
    assert!(report.passed(), "{} failure(s), see above", report.failures.len());
    assert_eq!(report.kills.len(), STOPS as usize, "stops made within the bound");
    assert_eq!(report.received_twice, 0);
    let in_doubt: u64 =
        report.by_state.iter().filter(|(state, _)| state == "in_doubt").map(|(_, n)| n).sum();
    assert_eq!(in_doubt, 0, "a graceful stop cut a request");
    let dispatch = report.phases.iter().find(|(phase, _)| *phase == Phase::Dispatch);
    let landed = dispatch.map_or(0, |(_, count)| count.landed);
    assert!(landed > 0, "no SIGTERM came while a request was in flight: {report}");
    assert!(report.received_by_fakes > 0, "nothing was sent");
}
