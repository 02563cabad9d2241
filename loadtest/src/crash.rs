//! Crash harness: kills `followup serve` with SIGKILL many times, restarts it, and checks that
//! nothing accepted is lost and nothing is sent twice.
//!
//! The fakes run as a separate `followup fakes` process that is never killed, with a fixed
//! latency so that requests are in flight when a kill lands. Each kill is aimed at one of three
//! [`Phase`]s, drawn from the seed: mid-upload, while the fakes hold a request, or just after
//! the fakes answered (before the engine can store the outcome). After each restart the
//! harness uploads again whatever was not acknowledged (ingest is idempotent) and checks that
//! every acknowledged schedule is in the tenant's export. At the end it lets the engine settle
//! everything and runs the checks of [`checks::final_checks`].
//!
//! "Acknowledged" means the engine answered the upload with every row accepted; it answers
//! only after the last batch is durable, so those rows must survive any later kill. Rows of
//! an upload cut by a kill may or may not be stored, and the re-upload settles that.

mod checks;
pub mod processes;
mod workload;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use followup_core::domain::{Channel, FollowUpState};
use followup_core::sensitive::Sensitive;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use self::checks::{FinalCounts, FinalFacts, InDoubtLedger, TenantRecords};
pub use self::checks::{KillRecord, Phase};
use self::processes::{EngineProcess, EngineProviders, EngineSettings, FakesProcess, free_port};
use self::workload::{CrashTenant, Upload, UploadFormat};
use crate::client::EngineClient;
use crate::guard::check_loopback;

/// Master key of the engines a run starts. The run's store is thrown away afterwards, so a
/// fixed key protects nothing that matters; it is never printed.
const MASTER_KEY: &str = "Y3Jhc2h0ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXMhISE=";
/// Rows the engine writes per durable batch in a crash run, small so that an upload cut by a
/// kill has often stored part of its rows.
const INGEST_BATCH_ROWS: u32 = 25;
/// Pause between chunks of an upload that a kill is aimed at.
const SLOW_UPLOAD_PAUSE: Duration = Duration::from_millis(15);
/// A monthly quota no run reaches.
const UNLIMITED_QUOTA: u64 = 1_000_000_000;
/// How long the harness waits for the moment a dispatch or outcome kill is aimed at.
const AIM_WITHIN: Duration = Duration::from_secs(5);

/// The store the engine runs on.
#[derive(Clone, Debug)]
pub enum StoreTarget {
    /// The embedded store in a directory; a fresh directory of the run's own when `None`.
    Embedded(Option<PathBuf>),
    /// A MongoDB database, passed to `followup serve` in `FOLLOWUP_STORE`. The URI may hold a
    /// password, so it is kept sensitive and shown without its credentials.
    Mongo(Sensitive<String>),
}

impl StoreTarget {
    /// Reads `--store`: a `mongodb://` URI whose host is a loopback IP address, or a
    /// directory.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        if raw.starts_with("mongodb+srv://") {
            bail!(
                "--store: mongodb+srv URIs look hosts up in DNS; give mongodb://127.0.0.1:PORT/DB"
            );
        }
        if !raw.starts_with("mongodb://") {
            return Ok(StoreTarget::Embedded(Some(PathBuf::from(raw))));
        }
        let url = reqwest::Url::parse(raw)
            .map_err(|error| anyhow::anyhow!("--store: invalid MongoDB URI ({error})"))?;
        let host = url.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback =
            bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback());
        ensure!(
            loopback,
            "--store: the MongoDB host {host:?} is not a loopback IP address; the crash harness \
             runs only against a server on this machine (127.0.0.1 or [::1])"
        );
        ensure!(url.path().len() > 1, "--store: the MongoDB URI names no database");
        Ok(StoreTarget::Mongo(Sensitive::new(raw.to_owned())))
    }
}

impl StoreTarget {
    /// Returns the longest the store is expected to take to acknowledge a write on a busy
    /// machine: the embedded store commits in milliseconds; a MongoDB server (FerretDB on
    /// SQLite in tests) has been seen to take over 3 s under a crash run's load.
    fn write_slack(&self) -> Duration {
        match self {
            StoreTarget::Embedded(_) => Duration::from_secs(1),
            StoreTarget::Mongo(_) => Duration::from_secs(10),
        }
    }
}

impl fmt::Display for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Embedded(Some(dir)) => write!(f, "embedded store in {}", dir.display()),
            StoreTarget::Embedded(None) => f.write_str("embedded store in the run's directory"),
            StoreTarget::Mongo(uri) => match reqwest::Url::parse(uri.expose()) {
                Ok(mut url) => {
                    let _ = url.set_username("");
                    let _ = url.set_password(None);
                    write!(f, "MongoDB at {url}")
                }
                Err(_) => f.write_str("MongoDB"),
            },
        }
    }
}

/// Settings of one crash run.
#[derive(Clone, Debug)]
pub struct CrashOptions {
    /// The `followup` binary to run as `serve` and as `fakes`.
    pub followup: PathBuf,
    /// Kills to make.
    pub kills: u32,
    /// Seed of every random choice of the run; printed, so that a run can be replayed.
    pub seed: u64,
    /// Wall time after which no more kills are made; settling comes on top, up to
    /// `settle_within`.
    pub kill_for: Duration,
    /// Wall time the last engine gets to settle every follow-up.
    pub settle_within: Duration,
    pub store: StoreTarget,
    /// Channels of the sequence, one step each. Email goes through Gmail for even tenants
    /// and Outlook for odd ones; SMS and calls through Twilio.
    pub channels: Vec<Channel>,
    /// Tenants, 1 to 8.
    pub tenants: u32,
    pub contacts_per_upload: u32,
    /// Sends per minute each connection may make, in the engine and in the fakes alike.
    pub per_minute: u32,
    /// Sends per rolling day each connection may make, in the engine and the fakes alike.
    pub per_day: u32,
    /// Calls each tenant may make a month. Email and SMS get no practical limit, so that a
    /// quota reached during the run leaves them work to dispatch.
    pub monthly_calls: u64,
    /// How long the fakes take to answer each request.
    pub latency: Duration,
    /// Directory of the run's files (engine and fakes logs, config, embedded store). When
    /// `None`, the run makes one under the system's temporary directory and removes it if
    /// every check passed.
    pub work_dir: Option<PathBuf>,
    /// Whether to print progress lines on stderr.
    pub show_progress: bool,
    /// How each stop is made.
    pub stop_signal: StopSignal,
}

/// How the harness stops the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGKILL: nothing of the engine runs after it.
    #[default]
    Kill,
    /// SIGTERM: the engine must finish or hand back its sends, release its leases and exit
    /// 0 within [`GRACEFUL_STOP_WITHIN`]. No follow-up may end in doubt then, since no
    /// request is cut off, so the final checks count every in-doubt one as a failure. Stops
    /// land during dispatch and outcome writes only: a graceful stop lets an upload under
    /// way finish, so there is no cut upload to check.
    Term,
}

/// How long a graceful stop may take: the provider request timeout (30 s) and a margin.
pub const GRACEFUL_STOP_WITHIN: Duration = Duration::from_secs(45);

impl CrashOptions {
    /// Returns the defaults of a long run, with the `followup` binary at `followup`.
    pub fn new(followup: PathBuf, seed: u64) -> Self {
        Self {
            followup,
            kills: 50,
            seed,
            kill_for: Duration::from_secs(600),
            settle_within: Duration::from_secs(300),
            store: StoreTarget::Embedded(None),
            channels: vec![Channel::Email, Channel::Sms, Channel::Call],
            tenants: 2,
            contacts_per_upload: 150,
            per_minute: 3_000,
            per_day: 1_000_000,
            monthly_calls: UNLIMITED_QUOTA,
            latency: Duration::from_millis(40),
            work_dir: None,
            show_progress: true,
            stop_signal: StopSignal::Kill,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.kills > 0, "kills must be at least 1");
        ensure!((1..=8).contains(&self.tenants), "tenants must be 1 to 8");
        ensure!(!self.channels.is_empty(), "give at least one channel");
        ensure!(
            (1..=100_000).contains(&self.contacts_per_upload),
            "contacts per upload must be 1 to 100,000"
        );
        ensure!(self.per_minute > 0 && self.per_day > 0, "limits must be above zero");
        Ok(())
    }
}

/// Writes the engine's configuration: small ingest batches and the tenants' plan.
fn engine_config(options: &CrashOptions) -> String {
    format!(
        "[ingest]\nbatch_rows = {INGEST_BATCH_ROWS}\n\n[plans.{}]\nmonthly_email = \
         {UNLIMITED_QUOTA}\nmonthly_sms = {UNLIMITED_QUOTA}\nmonthly_call = {}\n",
        workload::PLAN,
        options.monthly_calls
    )
}

/// Aimed and landed kills of one phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseCount {
    pub aimed: u32,
    pub landed: u32,
}

/// The outcome of a crash run: its kills, counts and failures.
#[derive(Debug)]
pub struct CrashReport {
    pub seed: u64,
    pub store: String,
    pub kills: Vec<KillRecord>,
    pub phases: Vec<(Phase, PhaseCount)>,
    pub seconds: f64,
    pub uploads: u32,
    /// Uploads cut by a kill, and of those the ones that had stored some rows before it.
    pub uploads_cut: u32,
    pub uploads_partly_stored: u32,
    pub follow_ups: u64,
    pub by_state: Vec<(String, u64)>,
    pub received_by_fakes: u64,
    pub rate_limit_violations: u64,
    /// Follow-ups the fakes received more than once. Start-up recovery never resends an
    /// in-doubt follow-up, whatever the channel's resend policy, so each is also a failure.
    pub received_twice: u64,
    pub failures: Vec<String>,
    pub work_dir: PathBuf,
}

impl CrashReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn in_doubt(&self) -> u64 {
        self.by_state.iter().filter(|(state, _)| state == "in_doubt").map(|(_, n)| n).sum()
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "crash run, seed {} ({})", self.seed, self.store)?;
        writeln!(f, "  kills: {} in {:.1} s", self.kills.len(), self.seconds)?;
        for (phase, count) in &self.phases {
            writeln!(
                f,
                "    {phase}: {} aimed, {} known to have landed",
                count.aimed, count.landed
            )?;
        }
        writeln!(
            f,
            "  uploads: {} ({} cut by a kill, {} of them with rows stored before it)",
            self.uploads, self.uploads_cut, self.uploads_partly_stored
        )?;
        let states: Vec<String> =
            self.by_state.iter().map(|(state, n)| format!("{state} {n}")).collect();
        writeln!(f, "  follow-ups: {} ({})", self.follow_ups, states.join(", "))?;
        writeln!(
            f,
            "  in doubt: {}; received by the fakes: {}; received twice: {}; rate-limit \
             violations: {}",
            self.in_doubt(),
            self.received_by_fakes,
            self.received_twice,
            self.rate_limit_violations
        )?;
        if self.passed() {
            writeln!(f, "  result: every check passed")
        } else {
            writeln!(
                f,
                "  result: {} failure(s); files in {}",
                self.failures.len(),
                self.work_dir.display()
            )?;
            for failure in self.failures.iter().take(50) {
                writeln!(f, "  FAIL {failure}")?;
            }
            if self.failures.len() > 50 {
                writeln!(f, "  ... and {} more", self.failures.len() - 50)?;
            }
            writeln!(f, "  replay with --seed {}", self.seed)
        }
    }
}

/// One crash run in progress.
struct CrashRun {
    options: CrashOptions,
    settings: EngineSettings,
    fakes: FakesProcess,
    http: reqwest::Client,
    client: Arc<EngineClient>,
    rng: StdRng,
    tenants: Vec<Arc<CrashTenant>>,
    uploads: Vec<Upload>,
    /// Next fresh contact number per tenant.
    next_contact: Vec<u32>,
    kills: Vec<KillRecord>,
    in_doubt: InDoubtLedger,
    uploads_partly_stored: u32,
    failures: Vec<String>,
}

/// Runs the crash harness. Fails when the run cannot be made (a process does not start, the
/// engine does not answer); a broken guarantee ends up in the report's failures instead.
pub async fn run(options: CrashOptions) -> anyhow::Result<CrashReport> {
    options.validate()?;
    let started = Instant::now();
    let mut run = CrashRun::prepare(options).await?;
    let mut engine = EngineProcess::start(
        &run.settings,
        EngineProviders::ExternalFakes(&run.fakes.urls),
        &run.http,
    )
    .await?;
    run.create_tenants().await?;

    while run.kills.len() < run.options.kills as usize
        && started.elapsed() < run.options.kill_for
        && run.failures.is_empty()
    {
        engine = run.kill_once(engine).await?;
        run.print_progress(started);
    }
    let records = run.settle().await?;
    engine.stop();
    run.report(records, started).await
}

impl CrashRun {
    async fn prepare(options: CrashOptions) -> anyhow::Result<Self> {
        let work_dir = match &options.work_dir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir().join(format!(
                "followup-crashtest-{}-{}",
                options.seed,
                std::process::id()
            )),
        };
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("failed to create {}", work_dir.display()))?;
        let data_dir = match &options.store {
            StoreTarget::Embedded(Some(dir)) => dir.clone(),
            _ => work_dir.join("data"),
        };
        let config_file = work_dir.join("engine.toml");
        std::fs::write(&config_file, engine_config(&options))
            .with_context(|| format!("failed to write {}", config_file.display()))?;

        let fakes = FakesProcess::start(
            &options.followup,
            options.per_minute,
            options.per_day,
            options.latency,
            "none",
            &work_dir.join("fakes.log"),
        )?;
        let mut rng = StdRng::seed_from_u64(options.seed);
        let admin_token = Sensitive::new(format!("crashtest-{:032x}", rng.random::<u128>()));
        let settings = EngineSettings {
            followup: options.followup.clone(),
            store: options.store.clone(),
            data_dir,
            config_file,
            log_file: work_dir.join("engine.log"),
            port: free_port()?,
            admin_token: admin_token.clone(),
            master_key: Sensitive::new(MASTER_KEY.to_owned()),
        };
        let target = check_loopback(&settings.base_url()).await?;
        let client = EngineClient::new(&target, admin_token, Duration::from_secs(120))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .context("failed to build the HTTP client")?;
        if options.show_progress {
            eprintln!(
                "crash: seed {}, {} kills, {}, files in {}",
                options.seed,
                options.kills,
                options.store,
                work_dir.display()
            );
        }
        let next_contact = vec![0; options.tenants as usize];
        Ok(Self {
            options,
            settings,
            fakes,
            http,
            client: Arc::new(client),
            rng,
            tenants: Vec::new(),
            uploads: Vec::new(),
            next_contact,
            kills: Vec::new(),
            in_doubt: InDoubtLedger::default(),
            uploads_partly_stored: 0,
            failures: Vec::new(),
        })
    }

    fn work_dir(&self) -> PathBuf {
        self.settings.log_file.parent().map(PathBuf::from).unwrap_or_default()
    }

    async fn create_tenants(&mut self) -> anyhow::Result<()> {
        let tag = format!("{}-{}", self.options.seed, std::process::id());
        for index in 0..self.options.tenants {
            let tenant = workload::create_tenant(
                &self.client,
                &tag,
                index,
                &self.options.channels,
                self.options.per_minute,
                self.options.per_day,
            )
            .await?;
            self.tenants.push(Arc::new(tenant));
        }
        Ok(())
    }

    /// Adds an upload of fresh contacts for a tenant drawn at random and returns its index.
    fn new_upload(&mut self) -> usize {
        let tenant = self.rng.random_range(0..self.tenants.len());
        let number = self.uploads.len() as u32 + 1;
        let format =
            if number.is_multiple_of(2) { UploadFormat::Ndjson } else { UploadFormat::Csv };
        let first = self.next_contact[tenant];
        self.next_contact[tenant] += self.options.contacts_per_upload;
        self.uploads.push(Upload {
            number,
            tenant,
            first,
            count: self.options.contacts_per_upload,
            format,
            acknowledged: false,
            cut_by_kill: false,
        });
        self.uploads.len() - 1
    }

    /// Aims one kill at a phase drawn at random, kills the engine, restarts it and runs the
    /// checks of a restart. Returns the new engine.
    async fn kill_once(&mut self, engine: EngineProcess) -> anyhow::Result<EngineProcess> {
        let phases: &[Phase] = match self.options.stop_signal {
            StopSignal::Kill => &Phase::ALL,
            StopSignal::Term => &[Phase::Dispatch, Phase::Outcome],
        };
        let phase = phases[self.rng.random_range(0..phases.len())];
        let engine_started_at = engine.started_at;
        let (landed, killed_at) = match phase {
            Phase::Ingest => self.kill_during_ingest(engine).await?,
            Phase::Dispatch => self.kill_during_dispatch(engine).await?,
            Phase::Outcome => self.kill_after_answer(engine).await?,
        };
        let number = self.kills.len() as u32 + 1;
        let restarted_at = killed_at;
        let kill = KillRecord { number, phase, landed, engine_started_at, killed_at, restarted_at };
        self.kills.push(kill);

        self.wait_for_orphaned_requests().await?;
        let engine = EngineProcess::start(
            &self.settings,
            EngineProviders::ExternalFakes(&self.fakes.urls),
            &self.http,
        )
        .await?;
        if let Some(kill) = self.kills.last_mut() {
            kill.restarted_at = engine.started_at;
        }
        self.upload_unacknowledged().await?;
        self.check_after_restart().await?;
        Ok(engine)
    }

    /// Waits until the fakes have answered every request of the killed engine. The fakes go
    /// on serving a request whose client died (a Graph batch takes its latency per call), and
    /// such a request still holds one of the four Graph requests a mailbox may have running.
    /// A new engine cannot know of it, so starting one before it ends would show up as a
    /// concurrency violation that the engine had no way to avoid.
    async fn wait_for_orphaned_requests(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.fakes.counters(&self.http).await?.requests_in_flight > 0 {
            ensure!(
                Instant::now() < deadline,
                "the fakes still held requests of the killed engine 30 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Streams a fresh upload slowly and kills the engine part way through its body.
    async fn kill_during_ingest(
        &mut self,
        engine: EngineProcess,
    ) -> anyhow::Result<(bool, chrono::DateTime<chrono::Utc>)> {
        let index = self.new_upload();
        let upload = self.uploads[index].clone();
        let tenant = Arc::clone(&self.tenants[upload.tenant]);
        let client = Arc::clone(&self.client);
        let sending =
            tokio::spawn(
                async move { upload.send_slowly(&client, &tenant, SLOW_UPLOAD_PAUSE).await },
            );
        let chunks = self.options.contacts_per_upload.div_ceil(10).max(2);
        let streaming = SLOW_UPLOAD_PAUSE * chunks;
        let wait = streaming.mul_f64(self.rng.random_range(0.05..0.9));
        tokio::time::sleep(wait).await;
        let landed = !sending.is_finished();
        let killed_at = engine.kill()?;
        let result = tokio::time::timeout(Duration::from_secs(30), sending)
            .await
            .context("a cut upload did not end within 30 s")?
            .context("the upload task panicked")?;
        let upload = &mut self.uploads[index];
        upload.cut_by_kill = landed;
        // An upload the engine answered in full before the kill is acknowledged all the same.
        upload.acknowledged = !landed && result.is_ok();
        Ok((landed, killed_at))
    }

    /// Waits until the fakes hold a request of the engine, then kills it.
    async fn kill_during_dispatch(
        &mut self,
        engine: EngineProcess,
    ) -> anyhow::Result<(bool, chrono::DateTime<chrono::Utc>)> {
        self.ensure_dispatch_work().await?;
        let settle = Duration::from_millis(self.rng.random_range(0..300));
        tokio::time::sleep(settle).await;
        let deadline = Instant::now() + AIM_WITHIN;
        let mut in_flight = 0;
        while Instant::now() < deadline {
            in_flight = self.fakes.counters(&self.http).await?.requests_in_flight;
            if in_flight > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok((in_flight > 0, self.stop_engine(engine)?))
    }

    /// Waits until the fakes answer one more send, then kills the engine at once, before it
    /// has stored what the fake answered. Whether it was in time is known after the restart.
    async fn kill_after_answer(
        &mut self,
        engine: EngineProcess,
    ) -> anyhow::Result<(bool, chrono::DateTime<chrono::Utc>)> {
        self.ensure_dispatch_work().await?;
        let baseline = self.fakes.counters(&self.http).await?.received();
        let deadline = Instant::now() + AIM_WITHIN;
        while Instant::now() < deadline {
            if self.fakes.counters(&self.http).await?.received() > baseline {
                break;
            }
        }
        Ok((false, self.stop_engine(engine)?))
    }

    /// Stops the engine with the run's signal; returns the instant the signal was sent.
    fn stop_engine(&self, engine: EngineProcess) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        match self.options.stop_signal {
            StopSignal::Kill => engine.kill(),
            StopSignal::Term => engine.terminate(GRACEFUL_STOP_WITHIN),
        }
    }

    /// Uploads fresh contacts when little is left to dispatch, so that a dispatch or outcome
    /// kill finds requests to land among.
    async fn ensure_dispatch_work(&mut self) -> anyhow::Result<()> {
        let snapshot = self.client.snapshot().await?;
        let waiting: u64 = snapshot.queues.iter().map(|queue| queue.waiting).sum();
        let enough =
            u64::from(self.options.contacts_per_upload) * self.options.channels.len() as u64 / 2;
        if waiting < enough {
            let index = self.new_upload();
            let upload = &self.uploads[index];
            upload.send(&self.client, &self.tenants[upload.tenant]).await?;
            self.uploads[index].acknowledged = true;
        }
        Ok(())
    }

    /// Uploads again, in full, every upload that was not acknowledged.
    async fn upload_unacknowledged(&mut self) -> anyhow::Result<()> {
        for index in 0..self.uploads.len() {
            let upload = &self.uploads[index];
            if upload.acknowledged {
                continue;
            }
            let created = upload.send(&self.client, &self.tenants[upload.tenant]).await?;
            if created < u64::from(upload.count) {
                self.uploads_partly_stored += 1;
            }
            self.uploads[index].acknowledged = true;
        }
        Ok(())
    }

    /// Checks that every acknowledged schedule survived the last kill, and notes the
    /// follow-ups it left in doubt.
    async fn check_after_restart(&mut self) -> anyhow::Result<()> {
        let kill = self.kills.len() - 1;
        for tenant in 0..self.tenants.len() {
            let records = self.export(tenant).await?;
            let failures =
                checks::acknowledged_present(tenant, &self.uploads, &records, self.kills.last());
            self.failures.extend(failures);
            self.in_doubt.note(&records, kill);
        }
        Ok(())
    }

    async fn export(&self, tenant: usize) -> anyhow::Result<TenantRecords> {
        let text = self.client.export(&self.tenants[tenant].api_key).await?;
        TenantRecords::parse(&text).with_context(|| format!("export of tenant {tenant}"))
    }

    async fn export_with_attempts(&self, tenant: usize) -> anyhow::Result<TenantRecords> {
        let text = self.client.export(&self.tenants[tenant].api_key).await?;
        TenantRecords::parse_with_attempts(&text)
            .with_context(|| format!("export of tenant {tenant}"))
    }

    /// Waits until no follow-up of the run waits any more, printing progress, then returns
    /// every tenant's records with attempts. Leaves the unsettled ones for the checks to
    /// report at the deadline.
    async fn settle(&mut self) -> anyhow::Result<Vec<TenantRecords>> {
        let started = Instant::now();
        let deadline = started + self.options.settle_within;
        let mut last_line = Instant::now();
        loop {
            let mut records = Vec::new();
            for tenant in 0..self.tenants.len() {
                records.push(self.export(tenant).await?);
            }
            let total: u64 = records.iter().map(|r| r.follow_ups.len() as u64).sum();
            let waiting: u64 = records
                .iter()
                .flat_map(|r| &r.follow_ups)
                .filter(|follow_up| !follow_up.state.is_settled())
                .count() as u64;
            if waiting == 0 || Instant::now() >= deadline {
                break;
            }
            if self.options.show_progress && last_line.elapsed() >= Duration::from_secs(2) {
                let done = total - waiting;
                let line = crate::progress::format_line(
                    "settle",
                    "follow-ups",
                    done,
                    total,
                    started.elapsed(),
                );
                eprintln!("{line}");
                last_line = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut records = Vec::new();
        for tenant in 0..self.tenants.len() {
            records.push(self.export_with_attempts(tenant).await?);
        }
        Ok(records)
    }

    fn print_progress(&self, started: Instant) {
        if !self.options.show_progress {
            return;
        }
        let mut line = crate::progress::format_line(
            "crash",
            "kills",
            self.kills.len() as u64,
            u64::from(self.options.kills),
            started.elapsed(),
        );
        for phase in Phase::ALL {
            let count = self.kills.iter().filter(|kill| kill.phase == phase).count();
            line.push_str(&format!(", {phase} {count}"));
        }
        eprintln!("{line}");
    }

    async fn report(
        mut self,
        records: Vec<TenantRecords>,
        started: Instant,
    ) -> anyhow::Result<CrashReport> {
        let receipts = self.fakes.receipts(&self.http).await?;
        let counters = self.fakes.counters(&self.http).await?;
        if counters.rate_limit_violations > 0 {
            self.failures.push(format!(
                "the fakes refused {} requests over an account's limits",
                counters.rate_limit_violations
            ));
        }
        let facts = FinalFacts {
            channels: &self.options.channels,
            uploads: &self.uploads,
            kills: &self.kills,
            in_doubt: &self.in_doubt,
            receipts: &receipts,
            per_day: self.options.per_day,
            monthly_calls: self.options.monthly_calls,
            latency: self.options.latency,
            store_write_slack: self.options.store.write_slack(),
        };
        let mut counts = FinalCounts::default();
        let failures = checks::final_checks(&records, &facts, &mut counts);
        self.failures.extend(failures);
        if self.options.stop_signal == StopSignal::Term {
            let in_doubt = records
                .iter()
                .flat_map(|tenant| &tenant.follow_ups)
                .filter(|follow_up| follow_up.state == FollowUpState::InDoubt);
            for follow_up in in_doubt {
                self.failures.push(format!(
                    "follow-up {} is in doubt after graceful stops only: a stop cut its request",
                    follow_up.id
                ));
            }
        }
        for kill in counts.answered_before_kill.keys() {
            if self.kills[*kill].phase == Phase::Outcome {
                self.kills[*kill].landed = true;
            }
        }
        let phases = Phase::ALL
            .iter()
            .map(|phase| {
                let of_phase = self.kills.iter().filter(|kill| kill.phase == *phase);
                let aimed = of_phase.clone().count() as u32;
                let landed = of_phase.filter(|kill| kill.landed).count() as u32;
                (*phase, PhaseCount { aimed, landed })
            })
            .collect();
        let work_dir = self.work_dir();
        let report = CrashReport {
            seed: self.options.seed,
            store: self.options.store.to_string(),
            phases,
            seconds: started.elapsed().as_secs_f64(),
            uploads: self.uploads.len() as u32,
            uploads_cut: self.uploads.iter().filter(|upload| upload.cut_by_kill).count() as u32,
            uploads_partly_stored: self.uploads_partly_stored,
            follow_ups: counts.follow_ups,
            by_state: counts.by_state.into_iter().collect(),
            received_by_fakes: receipts.len() as u64,
            rate_limit_violations: counters.rate_limit_violations,
            received_twice: counts.received_twice,
            kills: self.kills,
            failures: self.failures,
            work_dir,
        };
        if report.passed() && self.options.work_dir.is_none() {
            let _ = std::fs::remove_dir_all(&report.work_dir);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
