//! Compares redb, SQLite and fjall under the embedded store's access pattern, in one run.
//!
//! The workload copies the shape of `adapters/src/embedded*` without using its code: keys start
//! with a 16-byte tenant id, records are serde_json, and every commit is durable. For each
//! engine, in a fresh directory:
//!
//! 1. Ingest: enrolments are written in batches of 1,000, one durable transaction per batch.
//!    An enrolment is one contact record (~250 bytes), one schedule record (~150 bytes), three
//!    follow-up records (~420 bytes) and three due-index entries. A due key is the tenant
//!    (16 bytes), channel (1 byte), due instant (8 bytes, big-endian microseconds) and
//!    follow-up id (schedule 16 bytes, step 2 bytes).
//! 2. Dispatch: each round reads the first 100 due entries of one tenant and channel and their
//!    follow-up records in one snapshot, then commits one durable transaction that rewrites
//!    the 100 follow-ups and moves their due entries one day later (see `dispatch_round`).
//! 3. Size: the directory's allocated bytes, as `du` counts them, while the engine is open and
//!    again after it is closed.
//!
//! Durability: redb commits with `Durability::Immediate`, SQLite runs in WAL mode with
//! `synchronous=FULL` and one transaction per commit, and fjall commits a write batch with
//! `PersistMode::SyncAll`, which fsyncs its journal before the commit returns.
//!
//! Run: `cargo run -p followup-benches --release --features store-comparison --example
//! store_choice -- [--enrolments N] [--rounds N] [--dir PATH]`.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const DEFAULT_ENROLMENTS: usize = 50_000;
const DEFAULT_ROUNDS: usize = 2_000;
const ENROLMENTS_PER_BATCH: usize = 1_000;
const DUE_ENTRIES_PER_ROUND: usize = 100;
const TENANTS: usize = 8;
const CHANNELS: u8 = 2;
const STEPS: u16 = 3;

const CONTACT_BYTES: usize = 250;
const SCHEDULE_BYTES: usize = 150;
const FOLLOW_UP_BYTES: usize = 420;

/// 2025-01-06T00:00:00Z in microseconds since the Unix epoch, the lower bound of due instants.
const FIRST_DUE_MICROS: u64 = 1_736_121_600_000_000;
const DAY_MICROS: u64 = 86_400_000_000;

/// Same seed for every run, so every engine and every run writes the same bytes.
const SEED: u64 = 0x5EED_F011_0000_0001;

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    let Some(options) = options else {
        print!("{}", Options::HELP);
        return Ok(());
    };

    let workload = Workload::generate(options.enrolments);
    print_header(&options, &workload);

    let mut results = Vec::new();
    for kind in EngineKind::ALL {
        let dir = tempfile::Builder::new()
            .prefix(&format!("store-choice-{}-", kind.slug()))
            .tempdir_in(&options.parent_dir)
            .map_err(|error| {
                format!("failed to create a directory in {}: {error}", options.parent_dir.display())
            })?;
        eprintln!("running {} in {}", kind.label(), dir.path().display());
        let result = measure(kind, dir.path(), &workload, options.rounds)
            .map_err(|error| format!("{} failed: {error}", kind.label()))?;
        results.push(result);
    }

    print_table(&results);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Options {
    enrolments: usize,
    rounds: usize,
    parent_dir: PathBuf,
}

impl Options {
    const HELP: &'static str = "\
Compares redb, SQLite and fjall under the embedded store's access pattern.

Options:
  --enrolments N  enrolments to ingest, in batches of 1,000 (default 50000)
  --rounds N      dispatch rounds of 100 due entries each (default 2000)
  --dir PATH      parent directory of the per-engine database directories
                  (default: the system temporary directory)
  --help          print this help
";

    /// Parses the arguments. Returns `None` when `--help` is given.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>> {
        let mut options = Self {
            enrolments: DEFAULT_ENROLMENTS,
            rounds: DEFAULT_ROUNDS,
            parent_dir: std::env::temp_dir(),
        };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next().ok_or_else(|| format!("missing value for {name}; see --help"))
            };
            match arg.as_str() {
                "--enrolments" => options.enrolments = parse_count("--enrolments", &value(&arg)?)?,
                "--rounds" => options.rounds = parse_count("--rounds", &value(&arg)?)?,
                "--dir" => options.parent_dir = PathBuf::from(value(&arg)?),
                "--help" | "-h" => return Ok(None),
                other => return Err(format!("unknown argument {other:?}; see --help").into()),
            }
        }
        Ok(Some(options))
    }
}

fn parse_count(name: &str, text: &str) -> Result<usize> {
    let invalid = || format!("invalid value {text:?} for {name}: expected a positive integer");
    let count: usize = text.replace('_', "").parse().map_err(|_| invalid())?;
    if count == 0 {
        return Err(invalid().into());
    }
    Ok(count)
}

// ---------------------------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Contacts,
    Schedules,
    FollowUps,
    Due,
}

impl Table {
    const ALL: [Self; 4] = [Self::Contacts, Self::Schedules, Self::FollowUps, Self::Due];

    fn name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Schedules => "schedules",
            Self::FollowUps => "follow_ups",
            Self::Due => "due",
        }
    }
}

#[derive(Debug)]
enum Op {
    Put { table: Table, key: Vec<u8>, value: Vec<u8> },
    Delete { table: Table, key: Vec<u8> },
}

/// Every ingest batch, generated before any engine runs so that generation is not timed.
#[derive(Debug)]
struct Workload {
    enrolments: usize,
    batches: Vec<Vec<Op>>,
    tenants: Vec<[u8; 16]>,
    /// Mean serialized size of each record kind, to check the generator against the targets.
    mean_record_bytes: [(Table, usize); 3],
}

impl Workload {
    fn generate(enrolments: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(SEED);
        let tenants: Vec<[u8; 16]> = (0..TENANTS).map(|_| uuid_v5_like(&mut rng)).collect();
        let mut totals = [0usize; 3];
        let mut batches = Vec::with_capacity(enrolments.div_ceil(ENROLMENTS_PER_BATCH));
        let mut batch = Vec::new();

        for number in 0..enrolments {
            let tenant = tenants[number % TENANTS];
            let contact = uuid_v5_like(&mut rng);
            let schedule = uuid_v5_like(&mut rng);
            let first_due = FIRST_DUE_MICROS + rng.random_range(0..14 * DAY_MICROS);

            let contact_record = contact_record(&mut rng, number, &tenant, &contact);
            totals[0] += contact_record.len();
            batch.push(Op::Put {
                table: Table::Contacts,
                key: [tenant, contact].concat(),
                value: contact_record,
            });

            let schedule_record = schedule_record(&mut rng, &contact, &schedule, first_due);
            totals[1] += schedule_record.len();
            batch.push(Op::Put {
                table: Table::Schedules,
                key: [tenant, schedule].concat(),
                value: schedule_record,
            });

            for step in 0..STEPS {
                // Two emails, then a text message, three days apart.
                let channel = u8::from(step == STEPS - 1);
                let due = first_due + u64::from(step) * 3 * DAY_MICROS;
                let record = follow_up_record(&mut rng, &tenant, &schedule, step, channel, due);
                totals[2] += record.len();
                batch.push(Op::Put {
                    table: Table::FollowUps,
                    key: follow_up_key(&tenant, &schedule, step),
                    value: record,
                });
                batch.push(Op::Put {
                    table: Table::Due,
                    key: due_key(&tenant, channel, due, &schedule, step),
                    value: Vec::new(),
                });
            }

            if batch.len() == ENROLMENTS_PER_BATCH * ops_per_enrolment() {
                batches.push(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            batches.push(batch);
        }

        let divisor = enrolments.max(1);
        Self {
            enrolments,
            batches,
            tenants,
            mean_record_bytes: [
                (Table::Contacts, totals[0] / divisor),
                (Table::Schedules, totals[1] / divisor),
                (Table::FollowUps, totals[2] / (divisor * usize::from(STEPS))),
            ],
        }
    }
}

fn ops_per_enrolment() -> usize {
    2 + 2 * usize::from(STEPS)
}

/// Returns 16 random bytes with the version and variant bits of a UUID v5. The real store's
/// ids are v5 (SHA-1 based), so their bytes are as spread out as random ones.
fn uuid_v5_like(rng: &mut StdRng) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

fn uuid_text(bytes: &[u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Key of a follow-up: tenant, schedule, step (34 bytes).
fn follow_up_key(tenant: &[u8; 16], schedule: &[u8; 16], step: u16) -> Vec<u8> {
    [tenant.as_slice(), schedule, &step.to_be_bytes()].concat()
}

/// Key of a due entry: tenant, channel, due instant, schedule, step (43 bytes).
fn due_key(tenant: &[u8; 16], channel: u8, due: u64, schedule: &[u8; 16], step: u16) -> Vec<u8> {
    [tenant.as_slice(), &[channel], &due.to_be_bytes(), schedule, &step.to_be_bytes()].concat()
}

/// Key of the follow-up that a due entry points at.
fn follow_up_key_of_due(due_key: &[u8]) -> Vec<u8> {
    [&due_key[..16], &due_key[25..]].concat()
}

/// Returns the first key of one tenant's due entries for one channel and the first key past them.
fn due_range(tenant: &[u8; 16], channel: u8) -> (Vec<u8>, Vec<u8>) {
    ([tenant.as_slice(), &[channel]].concat(), [tenant.as_slice(), &[channel + 1]].concat())
}

fn contact_record(rng: &mut StdRng, number: usize, tenant: &[u8; 16], id: &[u8; 16]) -> Vec<u8> {
    let record = json!({
        "id": uuid_text(id),
        "tenant": uuid_text(tenant),
        "email": format!("contact.{number}@example.com"),
        "first_name": "Ada",
        "last_name": format!("Lovelace {number}"),
        "phone": format!("+1202555{:04}", number % 10_000),
        "timezone": "America/New_York",
        "company": "",
    });
    padded_json(rng, record, "company", CONTACT_BYTES)
}

fn schedule_record(rng: &mut StdRng, contact: &[u8; 16], id: &[u8; 16], start: u64) -> Vec<u8> {
    let record = json!({
        "id": uuid_text(id),
        "contact": uuid_text(contact),
        "started_at": start,
        "state": "",
    });
    padded_json(rng, record, "state", SCHEDULE_BYTES)
}

fn follow_up_record(
    rng: &mut StdRng,
    tenant: &[u8; 16],
    schedule: &[u8; 16],
    step: u16,
    channel: u8,
    due: u64,
) -> Vec<u8> {
    let record = json!({
        "tenant": uuid_text(tenant),
        "schedule": uuid_text(schedule),
        "step": step,
        "channel": if channel == 0 { "email" } else { "sms" },
        "status": "pending",
        "due_at": due,
        "attempts": 0,
        "provider_message_id": null,
        "last_error": null,
        "subject": "",
    });
    padded_json(rng, record, "subject", FOLLOW_UP_BYTES)
}

/// Serializes `record` after filling the string field `pad` with words until the JSON is
/// `target` bytes long. Words compress more like real text than one repeated byte would. That
/// matters to fjall, which LZ4-compresses data blocks from its third level down (3.1 default).
fn padded_json(rng: &mut StdRng, mut record: Value, pad: &str, target: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "follow", "up", "on", "our", "call", "about", "the", "renewal", "quote", "for", "next",
        "quarter", "engines", "limited", "thanks", "regards",
    ];
    let unpadded = record.to_string().len();
    let pad_len = target.saturating_sub(unpadded);
    let mut text = String::with_capacity(pad_len + 8);
    while text.len() < pad_len {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    text.truncate(pad_len);
    record[pad] = Value::String(text);
    record.to_string().into_bytes()
}

/// Rewrites a follow-up record as the dispatcher would after a deferred attempt.
fn dispatched_record(record: &[u8], round: usize) -> Result<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(record)?;
    let attempts = value["attempts"].as_u64().unwrap_or(0);
    value["attempts"] = json!(attempts + 1);
    value["status"] = json!("retry");
    value["last_error"] = json!(format!("deferred in round {round}"));
    Ok(serde_json::to_vec(&value)?)
}

// ---------------------------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------------------------

/// The operations the workload needs from a key-value engine with ordered byte keys.
trait Engine {
    /// Applies `ops` in one transaction and returns once the commit is durable.
    fn commit(&mut self, ops: &[Op]) -> Result<()>;

    /// Reads up to `limit` due keys in `start..end` and the follow-up record of each, in one
    /// snapshot. Returns (due key, follow-up key, follow-up record) triples in key order.
    fn read_due(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<DueFollowUp>>;

    fn count(&mut self, table: Table) -> Result<u64>;
}

type DueFollowUp = (Vec<u8>, Vec<u8>, Vec<u8>);

#[derive(Clone, Copy, Debug)]
enum EngineKind {
    Redb,
    Sqlite,
    Fjall,
}

impl EngineKind {
    const ALL: [Self; 3] = [Self::Redb, Self::Sqlite, Self::Fjall];

    fn label(self) -> &'static str {
        match self {
            Self::Redb => "redb",
            Self::Sqlite => "SQLite (rusqlite)",
            Self::Fjall => "fjall",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Self::Redb => "redb",
            Self::Sqlite => "sqlite",
            Self::Fjall => "fjall",
        }
    }

    /// Returns what building the engine needs besides rustc.
    fn build_note(self) -> &'static str {
        match self {
            Self::Redb | Self::Fjall => "pure Rust",
            Self::Sqlite => "C compiler (bundled SQLite built by cc)",
        }
    }

    fn open(self, dir: &Path) -> Result<Box<dyn Engine>> {
        Ok(match self {
            Self::Redb => Box::new(RedbEngine::open(dir)?),
            Self::Sqlite => Box::new(SqliteEngine::open(dir)?),
            Self::Fjall => Box::new(FjallEngine::open(dir)?),
        })
    }
}

struct RedbEngine {
    db: redb::Database,
}

impl RedbEngine {
    fn definition(table: Table) -> redb::TableDefinition<'static, &'static [u8], &'static [u8]> {
        redb::TableDefinition::new(table.name())
    }

    fn open(dir: &Path) -> Result<Self> {
        let db = redb::Database::create(dir.join("store.redb"))?;
        let txn = db.begin_write()?;
        for table in Table::ALL {
            txn.open_table(Self::definition(table))?;
        }
        txn.commit()?;
        Ok(Self { db })
    }
}

impl Engine for RedbEngine {
    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut tables = Vec::with_capacity(Table::ALL.len());
            for table in Table::ALL {
                tables.push(txn.open_table(Self::definition(table))?);
            }
            let index = |table: Table| Table::ALL.iter().position(|t| *t == table).unwrap_or(0);
            for op in ops {
                match op {
                    Op::Put { table, key, value } => {
                        tables[index(*table)].insert(key.as_slice(), value.as_slice())?;
                    }
                    Op::Delete { table, key } => {
                        tables[index(*table)].remove(key.as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn read_due(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<DueFollowUp>> {
        use redb::{ReadableDatabase as _, ReadableTable as _};

        let txn = self.db.begin_read()?;
        let due = txn.open_table(Self::definition(Table::Due))?;
        let follow_ups = txn.open_table(Self::definition(Table::FollowUps))?;
        let mut found = Vec::with_capacity(limit);
        for entry in due.range(start..end)?.take(limit) {
            let due_key = entry?.0.value().to_vec();
            let key = follow_up_key_of_due(&due_key);
            let record = follow_ups
                .get(key.as_slice())?
                .ok_or("a due entry points at a missing follow-up")?
                .value()
                .to_vec();
            found.push((due_key, key, record));
        }
        Ok(found)
    }

    fn count(&mut self, table: Table) -> Result<u64> {
        use redb::{ReadableDatabase as _, ReadableTableMetadata as _};

        let txn = self.db.begin_read()?;
        Ok(txn.open_table(Self::definition(table))?.len()?)
    }
}

struct SqliteEngine {
    conn: rusqlite::Connection,
}

impl SqliteEngine {
    fn open(dir: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open(dir.join("store.sqlite"))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite kept journal_mode={mode} instead of WAL").into());
        }
        // FULL syncs the WAL on every commit. With NORMAL, the usual WAL setting, the last commits
        // can roll back after a power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        for table in Table::ALL {
            // WITHOUT ROWID stores each row in the primary-key B-tree, like a key-value table.
            conn.execute_batch(&format!(
                "CREATE TABLE {} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID",
                table.name()
            ))?;
        }
        Ok(Self { conn })
    }
}

impl Engine for SqliteEngine {
    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        let txn = self.conn.transaction()?;
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    let sql = format!(
                        "INSERT INTO {} (k, v) VALUES (?1, ?2) \
                         ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                        table.name()
                    );
                    txn.prepare_cached(&sql)?.execute((key, value))?;
                }
                Op::Delete { table, key } => {
                    let sql = format!("DELETE FROM {} WHERE k = ?1", table.name());
                    txn.prepare_cached(&sql)?.execute((key,))?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn read_due(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<DueFollowUp>> {
        let txn = self.conn.transaction()?;
        let mut found = Vec::with_capacity(limit);
        {
            let mut range = txn
                .prepare_cached("SELECT k FROM due WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3")?;
            let mut get = txn.prepare_cached("SELECT v FROM follow_ups WHERE k = ?1")?;
            let limit = i64::try_from(limit)?;
            let mut rows = range.query((start, end, limit))?;
            while let Some(row) = rows.next()? {
                let due_key: Vec<u8> = row.get(0)?;
                let key = follow_up_key_of_due(&due_key);
                let record: Vec<u8> = get.query_row((&key,), |row| row.get(0))?;
                found.push((due_key, key, record));
            }
        }
        txn.commit()?;
        Ok(found)
    }

    fn count(&mut self, table: Table) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", table.name());
        let count: i64 = self.conn.query_row(&sql, (), |row| row.get(0))?;
        Ok(u64::try_from(count)?)
    }
}

struct FjallEngine {
    db: fjall::Database,
    keyspaces: Vec<fjall::Keyspace>,
}

impl FjallEngine {
    fn open(dir: &Path) -> Result<Self> {
        let db = fjall::Database::builder(dir.join("store.fjall")).open()?;
        let mut keyspaces = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            keyspaces.push(db.keyspace(table.name(), fjall::KeyspaceCreateOptions::default)?);
        }
        Ok(Self { db, keyspaces })
    }

    fn keyspace(&self, table: Table) -> &fjall::Keyspace {
        let index = Table::ALL.iter().position(|t| *t == table).unwrap_or(0);
        &self.keyspaces[index]
    }
}

impl Engine for FjallEngine {
    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        // A write batch is atomic across keyspaces. With a durability mode set, commit fsyncs
        // the journal before it returns (fjall 3.1 `WriteBatch::commit`).
        let mut batch = self.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    batch.insert(self.keyspace(*table), key.as_slice(), value.as_slice());
                }
                Op::Delete { table, key } => batch.remove(self.keyspace(*table), key.as_slice()),
            }
        }
        batch.commit()?;
        Ok(())
    }

    fn read_due(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<DueFollowUp>> {
        use fjall::Readable as _;

        let snapshot = self.db.snapshot();
        let due = self.keyspace(Table::Due);
        let follow_ups = self.keyspace(Table::FollowUps);
        let mut found = Vec::with_capacity(limit);
        for entry in snapshot.range(due, start..end).take(limit) {
            let due_key = entry.key()?.to_vec();
            let key = follow_up_key_of_due(&due_key);
            let record = snapshot
                .get(follow_ups, &key)?
                .ok_or("a due entry points at a missing follow-up")?
                .to_vec();
            found.push((due_key, key, record));
        }
        Ok(found)
    }

    fn count(&mut self, table: Table) -> Result<u64> {
        use fjall::Readable as _;

        let count = self.db.snapshot().len(self.keyspace(table))?;
        Ok(u64::try_from(count)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Measurement {
    kind: EngineKind,
    ingest: Duration,
    enrolments: usize,
    dispatch: Duration,
    rounds: usize,
    bytes_open: u64,
    bytes_closed: u64,
}

fn measure(
    kind: EngineKind,
    dir: &Path,
    workload: &Workload,
    rounds: usize,
) -> Result<Measurement> {
    let mut engine = kind.open(dir)?;

    let started = Instant::now();
    for batch in &workload.batches {
        engine.commit(batch)?;
    }
    let ingest = started.elapsed();

    let started = Instant::now();
    for round in 0..rounds {
        dispatch_round(engine.as_mut(), workload, round)?;
    }
    let dispatch = started.elapsed();

    check_counts(engine.as_mut(), workload.enrolments)?;
    let bytes_open = allocated_bytes(dir)?;
    drop(engine);
    let bytes_closed = allocated_bytes(dir)?;

    Ok(Measurement {
        kind,
        ingest,
        enrolments: workload.enrolments,
        dispatch,
        rounds,
        bytes_open,
        bytes_closed,
    })
}

/// Dispatches the first 100 due follow-ups of one tenant and channel, taking each pair in turn.
///
/// NOTE: each follow-up is deferred by one day (its due entry is removed and re-added later in
/// the range) rather than only removed. With the defaults, removal alone would drain the index,
/// because 2,000 rounds of 100 need 200,000 entries and 50,000 enrolments hold 150,000.
/// Re-adding costs one small insert per follow-up.
fn dispatch_round(engine: &mut dyn Engine, workload: &Workload, round: usize) -> Result<()> {
    let tenant = &workload.tenants[round % workload.tenants.len()];
    let channel = u8::try_from((round / workload.tenants.len()) % usize::from(CHANNELS))?;
    let (start, end) = due_range(tenant, channel);

    let due = engine.read_due(&start, &end, DUE_ENTRIES_PER_ROUND)?;
    let mut ops = Vec::with_capacity(3 * due.len());
    for (due_key, key, record) in due {
        let mut later = due_key.clone();
        let instant = u64::from_be_bytes(due_key[17..25].try_into()?);
        later[17..25].copy_from_slice(&(instant + DAY_MICROS).to_be_bytes());
        ops.push(Op::Put {
            table: Table::FollowUps,
            key,
            value: dispatched_record(&record, round)?,
        });
        ops.push(Op::Delete { table: Table::Due, key: due_key });
        ops.push(Op::Put { table: Table::Due, key: later, value: Vec::new() });
    }
    if ops.is_empty() {
        return Err(format!("round {round} found no due entries").into());
    }
    engine.commit(&ops)
}

/// Checks that every record written is there once, so a fast engine is not a lossy one.
fn check_counts(engine: &mut dyn Engine, enrolments: usize) -> Result<()> {
    let steps = usize::from(STEPS);
    let expected = [
        (Table::Contacts, enrolments),
        (Table::Schedules, enrolments),
        (Table::FollowUps, enrolments * steps),
        (Table::Due, enrolments * steps),
    ];
    for (table, count) in expected {
        let found = engine.count(table)?;
        if found != u64::try_from(count)? {
            return Err(format!("table {} has {found} rows, expected {count}", table.name()).into());
        }
    }
    Ok(())
}

/// Sums the allocated blocks of every file under `dir`, as `du --block-size=1 -s` does.
fn allocated_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;

    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path)?;
        total += metadata.blocks() * 512;
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn print_header(options: &Options, workload: &Workload) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("store_choice: redb vs SQLite vs fjall, durable commits, one run");
    println!(
        "workload: {} enrolments in {} batches of {ENROLMENTS_PER_BATCH}, {} dispatch rounds \
         of {DUE_ENTRIES_PER_ROUND}, {TENANTS} tenants x {CHANNELS} channels",
        workload.enrolments,
        workload.batches.len(),
        options.rounds,
    );
    let sizes: Vec<String> = workload
        .mean_record_bytes
        .iter()
        .map(|(table, bytes)| format!("{} {bytes} B", table.name()))
        .collect();
    println!("mean record size: {}", sizes.join(", "));
    println!(
        "machine: {cores} cores, load average {} at start, directory {}",
        load.join(" "),
        options.parent_dir.display()
    );
    println!("SQLite {}", rusqlite::version());
    println!();
}

fn print_table(results: &[Measurement]) {
    println!(
        "{:<18} {:>16} {:>16} {:>15} {:>15}  build",
        "engine", "ingest enrol/s", "dispatch rnd/s", "disk open (B)", "disk closed (B)"
    );
    for result in results {
        println!(
            "{:<18} {:>16.0} {:>16.1} {:>15} {:>15}  {}",
            result.kind.label(),
            per_second(result.enrolments, result.ingest),
            per_second(result.rounds, result.dispatch),
            result.bytes_open,
            result.bytes_closed,
            result.kind.build_note(),
        );
    }
    println!();
    for result in results {
        println!(
            "{}: ingest {:.2} s, dispatch {:.2} s",
            result.kind.label(),
            result.ingest.as_secs_f64(),
            result.dispatch.as_secs_f64()
        );
    }
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}
