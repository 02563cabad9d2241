//! Metrics and logs. Every metric is declared here, with its unit and help text, so that the
//! names in the code, the `/metrics` page and the docs come from one list.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Rows of bulk uploads, by `result`: accepted, duplicate or rejected.
pub const INGEST_ROWS: &str = "followup_ingest_rows_total";
/// Follow-ups settled or retried, by `provider` and `outcome`.
pub const SENDS: &str = "followup_sends_total";
/// Follow-ups waiting, by `channel`: pending or retry, due or not.
pub const QUEUE_DEPTH: &str = "followup_queue_depth";
/// Requests sent to a provider and still waiting for a response, by `provider`.
pub const IN_FLIGHT: &str = "followup_in_flight";
/// Time from a follow-up's planned instant to its acceptance by the provider.
pub const DISPATCH_LATENESS: &str = "followup_dispatch_lateness_seconds";
/// Duration of provider requests, by `provider`.
pub const PROVIDER_REQUEST_DURATION: &str = "followup_provider_request_duration_seconds";
/// Admission checks in which a connection's rate limit or breaker held back some due
/// follow-ups, by `provider`. A follow-up held for long is counted at every check.
pub const RATE_LIMIT_WAITS: &str = "followup_rate_limit_waits_total";
/// Follow-ups sent again after a lost response, by `channel`, where the configuration allows it.
pub const IN_DOUBT_RESENDS: &str = "followup_in_doubt_resends_total";
/// Times a connection's circuit breaker opened, by `provider`.
pub const BREAKER_OPENINGS: &str = "followup_circuit_breaker_openings_total";
/// Follow-ups skipped because the tenant's plan quota was used up, by `channel`.
pub const QUOTA_REJECTIONS: &str = "followup_quota_rejections_total";
/// Follow-ups held because the tenant's plan quota was used up, by `channel`.
pub const QUOTA_HELD: &str = "followup_quota_held_total";
/// Changes of a tenant's billing standing (Stripe subscription and payments), by the new
/// standing `to`: active, canceling, grace, paused_unpaid, ended.
pub const BILLING_TRANSITIONS: &str = "followup_billing_transitions_total";
/// Dispatch rounds skipped because the tenant's billing standing stops sends, by `standing`.
pub const BILLING_PAUSED_ROUNDS: &str = "followup_billing_paused_rounds_total";
/// Held follow-ups returned to pending by a new period or a plan change, by `channel`.
pub const QUOTA_HELD_RELEASED: &str = "followup_quota_held_released_total";
/// Sends taken from the tenants' quotas in the store (in blocks), by `channel`.
pub const QUOTA_TAKEN: &str = "followup_quota_taken_sends_total";
/// Sends committed against the tenants' quotas (sent or in doubt), by `channel`.
pub const QUOTA_COMMITTED: &str = "followup_quota_committed_sends_total";
/// Webhooks rejected before they were acted on, by `source` (stripe, twilio) and `reason`
/// (unsigned, malformed, forged, stale, replayed).
pub const WEBHOOK_REJECTIONS: &str = "followup_webhook_rejections_total";
/// API requests answered 429, by `limit`: `tenant_rate` (a tenant's request rate) or
/// `failed_auth` (a client address that failed to authenticate too often).
pub const API_THROTTLED: &str = "followup_api_throttled_requests_total";
/// Deleted tenants whose records are not all purged yet.
pub const TENANT_DELETIONS_PENDING: &str = "followup_tenant_deletions_pending";
/// Records of deleted tenants purged from the store.
pub const PURGED_RECORDS: &str = "followup_purged_records_total";
/// Sent messages removed from their attempts after the retention period.
pub const SENT_MESSAGES_EXPIRED: &str = "followup_sent_messages_expired_total";
/// Tenant leases this node holds.
pub const LEASES_HELD: &str = "followup_tenant_leases_held";
/// Tenant leases taken after another node held them (it stopped, was killed or released them).
pub const LEASE_TAKEOVERS: &str = "followup_tenant_lease_takeovers_total";
/// Tenant leases this node found taken by another node when renewing them.
pub const LEASES_LOST: &str = "followup_tenant_leases_lost_total";
/// Follow-up writes the store rejected because a newer lease of the tenant exists.
pub const FENCE_REJECTIONS: &str = "followup_fence_rejections_total";

/// Connections paused, by `provider`: by the engine (a refused token) or by an operator.
pub const CONNECTIONS_PAUSED: &str = "followup_connections_paused";
/// Tenants an operator paused as a whole.
pub const TENANTS_PAUSED: &str = "followup_tenants_paused";
/// 1 while `/readyz` would answer 200, else 0; set at each scrape.
pub const READY: &str = "followup_ready";
/// Duration of the operator overview's last pass over the store.
pub const OVERVIEW_PASS_DURATION: &str = "followup_overview_pass_duration_seconds";

/// OAuth access-token refreshes, by `provider` (gmail, outlook) and `outcome`: refreshed,
/// invalid_grant, transient_error or rejected.
pub const TOKEN_REFRESHES: &str = "followup_token_refreshes_total";

/// Bucket bounds of the lateness histogram, in seconds: from 1 ms to a day, because a
/// follow-up can be late by a network round trip or by a daily cap.
const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3_600.0, 7_200.0,
    14_400.0, 43_200.0, 86_400.0,
];

/// Bucket bounds of provider request durations, in seconds, up to the default request
/// timeout of 30 s, so that stalled requests land in a bucket of their own.
const REQUEST_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Outcome labels of [`SENDS`].
pub const SEND_OUTCOMES: [&str; 8] =
    ["sent", "in_doubt", "retry", "failed", "dead", "unauthorized", "not_sent", "pending"];

/// Installs the Prometheus recorder and describes every metric. Returns the handle that
/// renders `/metrics`. Calling it twice in one process returns an error.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DISPATCH_LATENESS.into()), LATENESS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(PROVIDER_REQUEST_DURATION.into()), REQUEST_BUCKETS)?
        .install_recorder()?;
    describe_counter!(INGEST_ROWS, Unit::Count, "Rows of bulk uploads by result.");
    describe_counter!(SENDS, Unit::Count, "Follow-up send attempts by provider and outcome.");
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "Follow-ups pending or awaiting retry.");
    describe_gauge!(IN_FLIGHT, Unit::Count, "Requests sent to a provider, not yet answered.");
    describe_histogram!(
        DISPATCH_LATENESS,
        Unit::Seconds,
        "Time from a follow-up's planned instant to its acceptance by the provider."
    );
    describe_histogram!(
        PROVIDER_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of requests to providers."
    );
    describe_counter!(
        RATE_LIMIT_WAITS,
        Unit::Count,
        "Admission checks in which a rate limit or an open breaker held back due follow-ups."
    );
    describe_counter!(
        IN_DOUBT_RESENDS,
        Unit::Count,
        "Follow-ups sent again after a lost answer; each may have arrived twice."
    );
    describe_counter!(
        BREAKER_OPENINGS,
        Unit::Count,
        "Times a connection's circuit breaker opened after repeated failures."
    );
    describe_counter!(QUOTA_REJECTIONS, Unit::Count, "Follow-ups skipped for plan quota.");
    describe_counter!(QUOTA_HELD, Unit::Count, "Follow-ups held for plan quota.");
    describe_counter!(
        BILLING_TRANSITIONS,
        Unit::Count,
        "Changes of a tenant's billing standing, by the new standing."
    );
    describe_counter!(
        BILLING_PAUSED_ROUNDS,
        Unit::Count,
        "Dispatch rounds skipped because billing stops the tenant's sends."
    );
    describe_counter!(
        QUOTA_HELD_RELEASED,
        Unit::Count,
        "Held follow-ups returned to pending by a new period or a plan change."
    );
    describe_counter!(QUOTA_TAKEN, Unit::Count, "Sends taken from plan quotas in blocks.");
    describe_counter!(
        QUOTA_COMMITTED,
        Unit::Count,
        "Sends committed against plan quotas: sent or in doubt."
    );
    describe_counter!(
        WEBHOOK_REJECTIONS,
        Unit::Count,
        "Webhooks rejected before use, by source and reason."
    );
    describe_counter!(API_THROTTLED, Unit::Count, "API requests answered 429, by limit.");
    describe_gauge!(
        TENANT_DELETIONS_PENDING,
        Unit::Count,
        "Deleted tenants whose records are still being purged."
    );
    describe_counter!(PURGED_RECORDS, Unit::Count, "Records of deleted tenants purged.");
    describe_counter!(
        SENT_MESSAGES_EXPIRED,
        Unit::Count,
        "Sent messages removed after the retention period."
    );
    describe_gauge!(LEASES_HELD, Unit::Count, "Tenant leases this node holds.");
    describe_counter!(LEASE_TAKEOVERS, Unit::Count, "Tenant leases taken over from another node.");
    describe_counter!(LEASES_LOST, Unit::Count, "Tenant leases found taken by another node.");
    describe_counter!(
        FENCE_REJECTIONS,
        Unit::Count,
        "Follow-up writes rejected because a newer lease of the tenant exists."
    );
    describe_counter!(
        TOKEN_REFRESHES,
        Unit::Count,
        "OAuth access-token refreshes by provider and outcome."
    );
    describe_gauge!(CONNECTIONS_PAUSED, Unit::Count, "Connections paused, by provider.");
    describe_gauge!(TENANTS_PAUSED, Unit::Count, "Tenants paused as a whole by an operator.");
    describe_gauge!(READY, Unit::Count, "1 while the engine is ready, 0 otherwise.");
    describe_gauge!(
        OVERVIEW_PASS_DURATION,
        Unit::Seconds,
        "Duration of the operator overview's last pass over the store."
    );
    register_alerted_series();
    Ok(handle)
}

/// Creates, at 0, the series that dashboards and alert rules read, so that a rule over a
/// rate has data before the first event, and a missing series means a missing engine.
fn register_alerted_series() {
    for provider in ["gmail", "outlook", "twilio"] {
        for outcome in SEND_OUTCOMES {
            metrics::counter!(SENDS, "provider" => provider, "outcome" => outcome).increment(0);
        }
        metrics::counter!(RATE_LIMIT_WAITS, "provider" => provider).increment(0);
        metrics::counter!(BREAKER_OPENINGS, "provider" => provider).increment(0);
        metrics::gauge!(IN_FLIGHT, "provider" => provider).set(0.0);
        metrics::gauge!(CONNECTIONS_PAUSED, "provider" => provider).set(0.0);
    }
    for channel in ["email", "sms", "call"] {
        metrics::counter!(QUOTA_REJECTIONS, "channel" => channel).increment(0);
        metrics::counter!(QUOTA_HELD, "channel" => channel).increment(0);
        metrics::gauge!(QUEUE_DEPTH, "channel" => channel).set(0.0);
    }
    metrics::gauge!(TENANTS_PAUSED).set(0.0);
    metrics::gauge!(READY).set(0.0);
}

/// Lets one log line of a repeated error through per interval and counts the others, so that
/// an error repeated every round (a store down, a provider refusing) does not flood the log.
/// Keys are short fixed texts chosen by the caller (a call site and a tenant id, say), never
/// an address or a token. Keeps at most [`LOG_KEYS_KEPT`] keys; beyond that it lets every
/// line through rather than grow.
#[derive(Debug)]
pub struct LogLimiter {
    interval: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

/// Keys a [`LogLimiter`] remembers.
pub const LOG_KEYS_KEPT: usize = 10_000;

impl LogLimiter {
    pub fn new(interval: std::time::Duration) -> Self {
        Self { interval, seen: std::sync::Mutex::default() }
    }

    /// Returns `Some(suppressed)` when a line for `key` may be written now, with the number
    /// of lines held back since the last one written; `None` to hold this one back.
    pub fn allow(&self, key: &str) -> Option<u64> {
        self.allow_at(key, std::time::Instant::now())
    }

    fn allow_at(&self, key: &str, now: std::time::Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get_mut(key) {
            Some((last, suppressed)) if now.duration_since(*last) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                if seen.len() < LOG_KEYS_KEPT {
                    seen.insert(key.to_owned(), (now, 0));
                }
                Some(0)
            }
        }
    }
}

/// The limiter of the engine's repeated error lines: one line per key every 30 s.
pub fn repeated_errors() -> &'static LogLimiter {
    static LIMITER: std::sync::OnceLock<LogLimiter> = std::sync::OnceLock::new();
    LIMITER.get_or_init(|| LogLimiter::new(std::time::Duration::from_secs(30)))
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Sends logs to stderr, filtered by `RUST_LOG`, else by `default_filter` (such as `info`).
pub fn init_logs(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only when a person reads the terminal, never into a redirected file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second initialisation (tests start several engines in one process) keeps the first.
    drop(result);
}

/// A histogram of durations in milliseconds with about 2% relative error, in bounded memory,
/// for the percentiles of a summary.
#[derive(Clone, Debug)]
pub struct LatenessHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_ms: u64,
}

/// Growth factor between bucket bounds.
const BUCKET_GROWTH: f64 = 1.02;

impl Default for LatenessHistogram {
    fn default() -> Self {
        Self { buckets: vec![0; 1_400], count: 0, max_ms: 0 }
    }
}

impl LatenessHistogram {
    pub fn record(&mut self, millis: u64) {
        let index = Self::bucket_of(millis).min(self.buckets.len() - 1);
        self.buckets[index] += 1;
        self.count += 1;
        self.max_ms = self.max_ms.max(millis);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_ms(&self) -> u64 {
        self.max_ms
    }

    /// Returns the value below which `quantile` (0 to 1) of the recorded values lie, rounded up to
    /// its bucket's upper bound and never above the maximum seen.
    pub fn quantile_ms(&self, quantile: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((quantile * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper_bound(index).min(self.max_ms);
            }
        }
        self.max_ms
    }

    fn bucket_of(millis: u64) -> usize {
        if millis == 0 {
            return 0;
        }
        ((millis as f64).ln() / BUCKET_GROWTH.ln()).ceil() as usize + 1
    }

    fn upper_bound(index: usize) -> u64 {
        if index == 0 {
            return 0;
        }
        BUCKET_GROWTH.powi(index as i32 - 1).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::{LatenessHistogram, LogLimiter};

    #[test]
    fn log_limiter_counts_what_it_holds_back() {
        let limiter = LogLimiter::new(std::time::Duration::from_secs(30));
        let start = std::time::Instant::now();
        assert_eq!(limiter.allow_at("store down", start), Some(0));
        for second in 1..=5 {
            let at = start + std::time::Duration::from_secs(second);
            assert_eq!(limiter.allow_at("store down", at), None);
        }
        assert_eq!(limiter.allow_at("other error", start), Some(0), "keys are apart");
        let later = start + std::time::Duration::from_secs(31);
        assert_eq!(limiter.allow_at("store down", later), Some(5), "five held back");
        assert_eq!(limiter.allow_at("store down", later), None);
    }

    #[test]
    fn histogram_quantiles_within_two_percent() {
        let mut histogram = LatenessHistogram::default();
        for millis in 1..=10_000 {
            histogram.record(millis);
        }
        let p50 = histogram.quantile_ms(0.5) as f64;
        let p99 = histogram.quantile_ms(0.99) as f64;
        assert!((p50 - 5_000.0).abs() / 5_000.0 < 0.03, "p50 was {p50}");
        assert!((p99 - 9_900.0).abs() / 9_900.0 < 0.03, "p99 was {p99}");
        assert_eq!(histogram.quantile_ms(1.0), 10_000);
        assert_eq!(histogram.count(), 10_000);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let histogram = LatenessHistogram::default();
        assert_eq!(histogram.quantile_ms(0.5), 0);
        let mut zeros = LatenessHistogram::default();
        zeros.record(0);
        assert_eq!(zeros.quantile_ms(0.99), 0);
    }
}
