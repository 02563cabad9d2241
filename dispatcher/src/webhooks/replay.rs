//! [`ReplayCache`]: remembers recent signed requests, in bounded memory, so that the identical
//! request presented again is rejected.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use ring::digest;

/// Digests of requests seen within a time window, at most `capacity` of them.
///
/// NOTE: the cache lives in this process only. Another engine node, or this one after a
/// restart, accepts a replay once. The webhook log already holds the replayed event or status
/// under the same key, so it is neither applied nor recorded twice.
#[derive(Debug)]
pub struct ReplayCache {
    window: Duration,
    capacity: usize,
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    received_at: HashMap<[u8; 32], DateTime<Utc>>,
    /// The same digests in the order they arrived, so the oldest are dropped first.
    order: VecDeque<([u8; 32], DateTime<Utc>)>,
}

impl ReplayCache {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self { window, capacity: capacity.max(1), inner: Mutex::default() }
    }

    /// Records the request made of `parts` at `now`. Returns `false` if the same request was
    /// recorded within the window, which makes this one a replay.
    pub fn first_sighting(&self, parts: &[&[u8]], now: DateTime<Utc>) -> bool {
        let key = request_digest(parts);
        let mut seen = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        seen.forget_before(now - self.window);
        if seen.received_at.contains_key(&key) {
            return false;
        }
        while seen.order.len() >= self.capacity {
            seen.drop_oldest();
        }
        seen.received_at.insert(key, now);
        seen.order.push_back((key, now));
        true
    }
}

impl Seen {
    fn forget_before(&mut self, cutoff: DateTime<Utc>) {
        while self.order.front().is_some_and(|(_, at)| *at < cutoff) {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((key, _)) = self.order.pop_front() {
            self.received_at.remove(&key);
        }
    }
}

/// SHA-256 of the parts, each preceded by its length so that no two splits collide.
fn request_digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid instant")
    }

    #[test]
    fn second_sighting_within_window_is_replay() {
        let cache = ReplayCache::new(Duration::seconds(60), 10);
        assert!(cache.first_sighting(&[b"sig", b"body"], start()));
        assert!(!cache.first_sighting(&[b"sig", b"body"], start() + Duration::seconds(59)));
        assert!(cache.first_sighting(&[b"sig", b"body2"], start()));
        assert!(cache.first_sighting(&[b"sigb", b"ody"], start()), "parts are delimited");
    }

    #[test]
    fn entries_expire_and_capacity_bounds_memory() {
        let cache = ReplayCache::new(Duration::seconds(60), 2);
        assert!(cache.first_sighting(&[b"a"], start()));
        assert!(cache.first_sighting(&[b"a"], start() + Duration::seconds(61)));
        assert!(cache.first_sighting(&[b"b"], start() + Duration::seconds(61)));
        assert!(cache.first_sighting(&[b"c"], start() + Duration::seconds(61)));
        assert_eq!(cache.inner.lock().expect("not poisoned").order.len(), 2);
        assert!(cache.first_sighting(&[b"a"], start() + Duration::seconds(62)), "oldest dropped");
    }
}
