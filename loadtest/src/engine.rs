//! An engine the harness starts itself: `followup fakes` and `followup serve` on loopback,
//! with the store and logs in a fresh directory, so that a run measures the engine's own
//! memory and CPU and checks every send against the fakes' receipts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use chrono::{DateTime, Utc};
use followup_core::sensitive::Sensitive;
use rand::Rng;

use crate::crash::StoreTarget;
use crate::crash::processes::{
    EngineProcess, EngineProviders, EngineSettings, FakesProcess, free_port, inspection_client,
};
use crate::scenario::{Scenario, TimeMode};

/// The engine's resident memory in bytes by instant, shared with the sampling task.
type MemorySamples = Arc<Mutex<Vec<(DateTime<Utc>, u64)>>>;

/// Period of the engine's memory samples.
const SAMPLE_PERIOD: Duration = Duration::from_millis(500);

/// The fakes and the engine of a run, stopped when dropped; their directory goes after them.
pub(crate) struct OwnEngine {
    /// `followup fakes`, under real time only: under virtual time the engine's built-in fakes
    /// share its virtual clock.
    fakes: Option<FakesProcess>,
    engine: EngineProcess,
    pub url: String,
    pub admin_token: Sensitive<String>,
    samples: MemorySamples,
    sampler: tokio::task::JoinHandle<()>,
    /// Declared last, so that it is removed after both processes have stopped.
    work_dir: WorkDir,
}

/// The run's directory, removed when dropped (a failed run included) unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Memory and CPU of the engine process over the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ProcessFigures {
    /// The kernel's high-water mark of the process's resident memory.
    pub peak_rss_bytes: u64,
    /// User and system CPU time the process used, from its start.
    pub cpu_seconds: f64,
    /// The part of `cpu_seconds` from the start of the measured load's uploads to the end of
    /// the run: without start-up and without the background backlog's upload, so that the
    /// CPU per send of runs with different backlogs compare.
    pub load_cpu_seconds: f64,
}

impl OwnEngine {
    /// Starts the fakes with the scenario's latency, faults and limits, then the engine
    /// against them, and waits until the engine is ready. Under virtual time, starts only the
    /// engine, with `--virtual-clock` and its built-in fakes.
    pub(crate) async fn start(followup: &Path, scenario: &Scenario) -> anyhow::Result<Self> {
        let mut work_dir = WorkDir {
            path: std::env::temp_dir().join(format!(
                "followup-loadtest-{}-{:x}",
                std::process::id(),
                rand::rng().random::<u64>()
            )),
            keep: false,
        };
        std::fs::create_dir_all(&work_dir.path)
            .with_context(|| format!("failed to create {}", work_dir.path.display()))?;
        let dir = &work_dir.path;
        let config_file = dir.join("engine.toml");
        std::fs::write(&config_file, engine_config(scenario))
            .with_context(|| format!("failed to write {}", config_file.display()))?;

        let fakes = match scenario.time {
            TimeMode::Real => Some(start_fakes(followup, scenario, &dir.join("fakes.log"))?),
            TimeMode::Virtual => None,
        };

        let admin_token = Sensitive::new(format!("loadtest-{:032x}", rand::rng().random::<u128>()));
        let settings = EngineSettings {
            followup: followup.to_owned(),
            store: StoreTarget::Embedded(None),
            data_dir: dir.join("data"),
            config_file,
            log_file: dir.join("engine.log"),
            port: free_port()?,
            admin_token: admin_token.clone(),
            master_key: generate_master_key(followup)?,
        };
        // NOTE: under virtual time a stalled request of the fault profile costs the engine's
        // request timeout (30 s) in wall time, which the virtual clock does not see.
        let providers = match &fakes {
            Some(fakes) => EngineProviders::ExternalFakes(&fakes.urls),
            None => EngineProviders::VirtualClockFakes { faults: &scenario.fakes.faults },
        };
        let engine = match EngineProcess::start(&settings, providers, &inspection_client()?).await {
            Ok(engine) => engine,
            Err(error) => {
                // The error points at the engine's log, which must outlive the run.
                work_dir.keep = true;
                return Err(error);
            }
        };
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampler = tokio::spawn(sample_memory(engine.pid(), Arc::clone(&samples)));
        Ok(Self {
            fakes,
            engine,
            url: settings.base_url(),
            admin_token,
            samples,
            sampler,
            work_dir,
        })
    }

    /// Returns the base URL of the `followup fakes` process, which serves the receipts of all
    /// its fakes. Returns `None` under virtual time, because the fakes then run in the engine.
    pub(crate) fn fakes_url(&self) -> Option<String> {
        self.fakes.as_ref().map(|fakes| fakes.urls.twilio.clone())
    }

    /// Returns the engine's memory samples so far, by instant.
    pub(crate) fn memory_samples(&self) -> Vec<(DateTime<Utc>, u64)> {
        self.samples.lock().map(|samples| samples.clone()).unwrap_or_default()
    }

    /// Returns the directory of the run's store, configuration and logs.
    pub(crate) fn work_dir(&self) -> &Path {
        &self.work_dir.path
    }

    /// Reads the engine's CPU time so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(self.engine.pid())
    }

    /// Reads the engine's peak memory and CPU time, then stops both processes and removes
    /// the run's directory unless `keep_files` is set. `load_started_cpu` is the engine's CPU
    /// time when the measured load began.
    pub(crate) fn finish(
        mut self,
        keep_files: bool,
        load_started_cpu: f64,
    ) -> anyhow::Result<ProcessFigures> {
        self.sampler.abort();
        self.work_dir.keep = keep_files;
        process_figures(self.engine.pid(), load_started_cpu)
    }
}

/// Starts `followup fakes` with the scenario's latency, faults and limits.
fn start_fakes(
    followup: &Path,
    scenario: &Scenario,
    log_file: &Path,
) -> anyhow::Result<FakesProcess> {
    let limits = [scenario.connections.gmail, scenario.connections.twilio];
    // The fakes take one pair of limits for every account: the larger of the two kinds,
    // so that neither kind of connection is refused below its own limit.
    let per_minute = limits.iter().filter_map(|l| l.per_minute).max().unwrap_or(u32::MAX);
    let per_day = limits.iter().filter_map(|l| l.per_day).max().unwrap_or(u32::MAX);
    FakesProcess::start(
        followup,
        per_minute,
        per_day,
        Duration::from_millis(scenario.fakes.latency_ms),
        &scenario.fakes.faults,
        log_file,
    )
}

/// Returns the engine's configuration: the scenario's plan with quotas that never bind, so
/// that a run measures dispatch rather than billing, the scenario's Gmail project limits and
/// store cache. Under virtual time the operator API counts on every request, so that the
/// settle phase after the clock phase ends with its first poll instead of waiting for the next
/// background count.
fn engine_config(scenario: &Scenario) -> String {
    let unlimited = u32::MAX;
    let mut config = String::new();
    if let Some(cache_mib) = scenario.embedded_cache_mib {
        config += &format!("embedded_cache_mib = {cache_mib}\n");
    }
    config += "[providers]\n";
    let project = scenario.gmail_project;
    if let Some(per_minute) = project.per_minute {
        config += &format!("gmail_project_per_minute = {per_minute}\n");
    }
    if let Some(per_day) = project.per_day {
        config += &format!("gmail_project_per_day = {per_day}\n");
    }
    config += &format!(
        "[plans.{}]\nmonthly_email = {unlimited}\nmonthly_sms = {unlimited}\nmonthly_call = \
         {unlimited}\n",
        scenario.plan
    );
    if scenario.time == TimeMode::Virtual {
        config.push_str("[admin]\nsnapshot_refresh_millis = 0\n");
    }
    config
}

/// Generates a master key with `followup keys generate`, the way an operator makes one.
fn generate_master_key(followup: &Path) -> anyhow::Result<Sensitive<String>> {
    let output = Command::new(followup)
        .args(["keys", "generate"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {} keys generate", followup.display()))?;
    ensure!(output.status.success(), "{} keys generate failed", followup.display());
    let key = String::from_utf8(output.stdout).context("the generated key is not text")?;
    Ok(Sensitive::new(key.trim().to_owned()))
}

/// Samples the resident memory of process `pid` until aborted.
async fn sample_memory(pid: u32, samples: MemorySamples) {
    let mut ticker = tokio::time::interval(SAMPLE_PERIOD);
    loop {
        ticker.tick().await;
        let Some(rss) = status_field_bytes(pid, "VmRSS:") else { return };
        if let Ok(mut samples) = samples.lock() {
            samples.push((Utc::now(), rss));
        }
    }
}

/// Reads the peak resident memory and the CPU time of a running process from `/proc`, the
/// latter also since the process had used `load_started_cpu` seconds.
fn process_figures(pid: u32, load_started_cpu: f64) -> anyhow::Result<ProcessFigures> {
    let peak_rss_bytes = status_field_bytes(pid, "VmHWM:")
        .with_context(|| format!("cannot read VmHWM of process {pid} from /proc"))?;
    let cpu_seconds = process_cpu_seconds(pid)?;
    let load_cpu_seconds = (cpu_seconds - load_started_cpu).max(0.0);
    Ok(ProcessFigures { peak_rss_bytes, cpu_seconds, load_cpu_seconds })
}

/// Reads the user and system CPU time of a running process from `/proc/PID/stat`.
fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    cpu_seconds_of_stat(&stat)
}

/// Reads a `kB` field of `/proc/PID/status`, in bytes.
fn status_field_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kilobytes: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kilobytes * 1_024)
}

/// Ticks per second of the clock Linux reports `utime` and `stime` in (USER_HZ): 100 on
/// x86-64 and arm64, the machines this harness is run on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds from the text of `/proc/PID/stat`. The command name, in
/// parentheses, may hold spaces, so fields are counted after its closing parenthesis.
pub(crate) fn cpu_seconds_of_stat(stat: &str) -> anyhow::Result<f64> {
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("no ) in stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line. Counted from 0 after the name,
    // whose field is 2, they are 11 and 12.
    let ticks = |index: usize| -> anyhow::Result<f64> {
        let field = fields.get(index).context("stat has too few fields")?;
        Ok(field.parse::<u64>().context("stat field is not a number")? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Limits;

    #[test]
    fn engine_config_project_limits_and_cache() {
        let mut scenario = Scenario::default();
        assert!(!engine_config(&scenario).contains("gmail_project"));
        scenario.gmail_project = Limits { per_minute: Some(600_000), per_day: Some(9_000_000) };
        let config = engine_config(&scenario);
        assert!(config.starts_with("[providers]\n"), "{config}");
        scenario.embedded_cache_mib = Some(64);
        assert!(engine_config(&scenario).starts_with("embedded_cache_mib = 64\n[providers]\n"));
        assert!(config.contains("gmail_project_per_minute = 600000\n"), "{config}");
        assert!(config.contains("gmail_project_per_day = 9000000\n"), "{config}");
        assert!(config.contains("[plans.pro]\n"), "{config}");
    }
}
