//! The FerretDB test server as the tests of every crate start it: `tests/ferretdb/start` on a
//! free loopback port with its data in a temporary directory, killed when the guard drops.
//!
//! Test binaries share one server through [`shared`], each test using a database of its own
//! (see [`FerretDb::uri_for`]), so that a run starts the server once per binary. A shared server
//! is never dropped, because statics are not: it stops by itself when the test binary exits,
//! as the server exits when its parent process is gone.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a start may take. The first start of a fresh clone builds the server with
/// `go build`, which takes minutes on a small machine; `.ci/run` builds it beforehand.
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// Environment variable that, set to the URL of a PostgreSQL database on 127.0.0.1, runs
/// FerretDB on its PostgreSQL backend instead of SQLite, for the guarantees that need updates
/// of one document to be atomic (docs/ARCHITECTURE.md, "Several nodes").
pub const POSTGRESQL_URL_VAR: &str = "FOLLOWUP_TEST_FERRETDB_POSTGRESQL_URL";

/// A running FerretDB server on 127.0.0.1, with the directory of its data.
#[derive(Debug)]
pub struct FerretDb {
    child: Option<Child>,
    port: u16,
    data: tempfile::TempDir,
}

impl FerretDb {
    /// Starts a server on a free port with an empty data directory and waits until it accepts
    /// connections.
    pub fn start() -> Result<FerretDb, String> {
        let data = tempfile::tempdir().map_err(|error| format!("creating a data dir: {error}"))?;
        let port = free_port()?;
        let mut server = FerretDb { child: None, port, data };
        server.restart()?;
        Ok(server)
    }

    /// The URI of the server without a database name.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// The URI of database `database` on the server.
    pub fn uri_for(&self, database: &str) -> String {
        format!("{}{database}", self.uri())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log (its standard error), kept beside its data so test output stays
    /// readable; a start that fails names it.
    pub fn log_path(&self) -> PathBuf {
        self.data.path().join("ferretdb.log")
    }

    /// The directory of the server's SQLite files, one per database.
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("sqlite")
    }

    /// Kills the server and waits for it to exit; its data stays for [`FerretDb::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory (stopping it first if it
    /// runs) and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|error| format!("opening {}: {error}", self.log_path().display()))?;
        let mut command = Command::new(start_script());
        command.args(["--port", &self.port.to_string()]).arg("--data").arg(self.data_dir());
        if let Some(url) = postgresql_url()? {
            command.args(["--handler", "postgresql", "--postgresql-url", &url]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("running {}: {error}", start_script().display()))?;
        self.child = Some(child);
        self.wait_until_accepting()
    }

    fn wait_until_accepting(&mut self) -> Result<(), String> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(format!("FerretDB on port {} exited with {status}: {log}", self.port));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop();
        Err(format!("FerretDB on port {} not accepting after {START_TIMEOUT:?}", self.port))
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns the PostgreSQL URL of [`POSTGRESQL_URL_VAR`], if set. A URL whose host is not
/// 127.0.0.1 is an error, so that tests never reach beyond the machine.
fn postgresql_url() -> Result<Option<String>, String> {
    let Ok(url) = std::env::var(POSTGRESQL_URL_VAR) else {
        return Ok(None);
    };
    if url.is_empty() {
        return Ok(None);
    }
    let host = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
    let host = host.split_once("://").map_or(host, |(_, rest)| rest);
    if !host.starts_with("127.0.0.1:") && !host.starts_with("127.0.0.1/") {
        return Err(format!("{POSTGRESQL_URL_VAR} must name host 127.0.0.1"));
    }
    Ok(Some(url))
}

/// The server shared by the tests of one test binary, started by the first caller.
///
/// # Panics
///
/// When the server cannot start, naming why.
pub fn shared() -> &'static FerretDb {
    static SHARED: OnceLock<FerretDb> = OnceLock::new();
    SHARED.get_or_init(|| FerretDb::start().unwrap_or_else(|error| panic!("{error}")))
}

/// A database name no other test uses: `prefix` and a random suffix.
pub fn unique_database(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn start_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/ferretdb/start")
}

/// A port on 127.0.0.1 that was free a moment ago, for a fixture server to listen on.
pub(crate) fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| format!("bind: {error}"))?;
    let address = listener.local_addr().map_err(|error| format!("local address: {error}"))?;
    Ok(address.port())
}
