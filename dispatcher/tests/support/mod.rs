//! Helpers of the tests that run the `followup` binary as a child process.

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

/// Kills the child when dropped, so that a failed assertion leaves no process behind.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Waits until the engine at `base` is ready (`/readyz` returns 200), for at most 30 seconds.
pub(crate) async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("engine at {base} not ready within 30 s");
}
