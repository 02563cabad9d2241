//! stripe-mock, Stripe's official API mock, as tests start it: `tests/stripe-mock/start` on a
//! free loopback port, killed when the guard drops. stripe-mock checks each request's path
//! and parameters against Stripe's OpenAPI description and answers with fixture objects; it
//! keeps no state.
//!
//! Start-up checks from `/proc` that every socket the server listens on is on a loopback
//! address, and stops it otherwise, because stripe-mock binds every interface unless told
//! not to.

use crate::ferretdb_fixture::free_port;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take. The first start of a fresh clone builds stripe-mock with
/// `go build`; `.ci/run` builds it beforehand.
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// A running stripe-mock on 127.0.0.1.
#[derive(Debug)]
pub struct StripeMock {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl StripeMock {
    /// Starts stripe-mock on a free port and waits until it accepts connections and every
    /// socket it listens on is checked to be on loopback.
    pub fn start() -> Result<StripeMock, String> {
        let port = free_port()?;
        let log = tempfile::NamedTempFile::new()
            .map_err(|error| format!("creating the stripe-mock log file failed: {error}"))?;
        let stderr = log
            .reopen()
            .map_err(|error| format!("creating the stripe-mock log file failed: {error}"))?;
        let child = Command::new(start_script())
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|error| format!("running {}: {error}", start_script().display()))?;
        let mut mock = StripeMock { child, port, log };
        mock.wait_until_accepting()?;
        mock.check_loopback_only()?;
        Ok(mock)
    }

    /// Returns the API root, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn wait_until_accepting(&mut self) -> Result<(), String> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log_text();
                return Err(format!(
                    "stripe-mock on port {} exited with {status}: {log}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("stripe-mock on port {} not accepting after {START_TIMEOUT:?}", self.port))
    }

    /// Fails, naming the address, when the server listens anywhere but on loopback.
    fn check_loopback_only(&mut self) -> Result<(), String> {
        let listening = listening_addresses(self.child.id())?;
        if listening.is_empty() {
            return Err(format!(
                "found no listening socket of stripe-mock pid {}",
                self.child.id()
            ));
        }
        match listening.iter().find(|address| !address.ip().is_loopback()) {
            Some(address) => Err(format!(
                "stripe-mock listens on {address}, not only on loopback; stopped it: {}",
                self.log_text()
            )),
            None => Ok(()),
        }
    }
}

impl Drop for StripeMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the addresses the TCP sockets of process `pid` listen on, from `/proc`. The start
/// script replaces itself with stripe-mock, so the child's pid is the server's.
pub fn listening_addresses(pid: u32) -> Result<Vec<SocketAddr>, String> {
    let mut inodes = Vec::new();
    let fd_dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&fd_dir).map_err(|error| format!("{fd_dir}: {error}"))?;
    for entry in entries.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.push(inode.to_owned());
        }
    }
    let mut addresses = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Columns: sl, local_address, rem_address, st (0A is LISTEN), ..., inode (10th).
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state == "0A" && inodes.iter().any(|own| own == inode) {
                addresses.push(parse_proc_address(local)?);
            }
        }
    }
    Ok(addresses)
}

/// Parses `/proc/net/tcp{,6}`'s `ADDRESS:PORT`: the address in hex as 32-bit words in the
/// machine's byte order, the port in hex.
fn parse_proc_address(text: &str) -> Result<SocketAddr, String> {
    let invalid = || format!("invalid /proc/net address {text:?}");
    let (address, port) = text.split_once(':').ok_or_else(invalid)?;
    let port = u16::from_str_radix(port, 16).map_err(|_| invalid())?;
    let mut bytes = Vec::with_capacity(16);
    for chunk in address.as_bytes().chunks(8) {
        let word = std::str::from_utf8(chunk).map_err(|_| invalid())?;
        let word = u32::from_str_radix(word, 16).map_err(|_| invalid())?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let octets: [u8; 16] = bytes.try_into().map_err(|_| invalid())?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(invalid()),
    };
    Ok(SocketAddr::new(ip, port))
}

fn start_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/stripe-mock/start")
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn proc_addresses_parse() {
        // As x86-64 (little-endian) writes them.
        if cfg!(target_endian = "little") {
            let v4 = parse_proc_address("0100007F:1F90").expect("IPv4");
            assert_eq!(v4, "127.0.0.1:8080".parse().expect("address"));
            let any = parse_proc_address("00000000:2F50").expect("IPv4");
            assert!(any.ip().is_unspecified());
            let v6 = parse_proc_address("00000000000000000000000001000000:1F90").expect("IPv6");
            assert_eq!(v6, "[::1]:8080".parse().expect("address"));
        }
        assert!(parse_proc_address("zz:1").is_err());
    }

    #[test]
    fn own_listener_found_in_proc() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let bound = listener.local_addr().expect("address");
        let found = listening_addresses(std::process::id()).expect("/proc readable");
        assert!(found.contains(&bound), "{bound} not in {found:?}");
    }
}
