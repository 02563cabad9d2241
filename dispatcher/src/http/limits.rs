//! Abuse limits of the API: a request rate per tenant, an upload size per tenant, and a rate
//! of failed authentications per client IP address so that API keys cannot be guessed quickly.
//! A request over a rate gets 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use followup_core::ids::TenantId;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::config::ApiLimitsConfig;
use crate::telemetry::API_THROTTLED;

/// Client addresses tracked before expired entries are swept out, which bounds the memory an
/// attacker with many addresses can take.
const SWEEP_ABOVE: usize = 10_000;

/// The API's abuse limits, shared by every worker.
#[derive(Debug)]
pub struct ApiLimiter {
    tenant_rate: DefaultKeyedRateLimiter<TenantId>,
    /// Tenants with a rate of their own, each with its own limiter.
    tenant_rate_overrides: HashMap<TenantId, DefaultDirectRateLimiter>,
    upload_overrides: HashMap<TenantId, u64>,
    failed_auth: DefaultKeyedRateLimiter<IpAddr>,
    /// Client addresses over the failed-authentication rate, each with the instant until which
    /// its requests are rejected.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl ApiLimiter {
    pub fn new(config: &ApiLimitsConfig) -> anyhow::Result<Self> {
        let tenant_quota = per_second_quota(config.requests_per_second, config.burst)
            .context("api_limits.requests_per_second and burst")?;
        let failed_auth_quota =
            nonzero(config.failed_auth_per_minute, "api_limits.failed_auth_per_minute")
                .map(Quota::per_minute)?
                .allow_burst(nonzero(config.failed_auth_burst, "api_limits.failed_auth_burst")?);
        let mut tenant_rate_overrides = HashMap::new();
        let mut upload_overrides = HashMap::new();
        for (id, limits) in &config.tenants {
            let tenant: TenantId = id.parse().map_err(|_| {
                anyhow::anyhow!("api_limits.tenants: {id:?} is not a tenant id (a UUID)")
            })?;
            if limits.requests_per_second.is_some() || limits.burst.is_some() {
                let rate = limits.requests_per_second.unwrap_or(config.requests_per_second);
                let burst = limits.burst.unwrap_or(config.burst);
                let quota = per_second_quota(rate, burst)
                    .with_context(|| format!("api_limits.tenants.{id}"))?;
                tenant_rate_overrides.insert(tenant, RateLimiter::direct(quota));
            }
            if let Some(bytes) = limits.max_upload_bytes {
                upload_overrides.insert(tenant, bytes);
            }
        }
        Ok(Self {
            tenant_rate: RateLimiter::keyed(tenant_quota),
            tenant_rate_overrides,
            upload_overrides,
            failed_auth: RateLimiter::keyed(failed_auth_quota),
            blocked: Mutex::default(),
            clock: DefaultClock::default(),
        })
    }

    /// Counts one request of `tenant` against its rate.
    pub fn check_tenant(&self, tenant: TenantId) -> Result<(), ApiError> {
        let result = match self.tenant_rate_overrides.get(&tenant) {
            Some(limiter) => limiter.check(),
            None => self.tenant_rate.check_key(&tenant),
        };
        result.map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            throttled("tenant_rate", wait, "too many requests for this tenant")
        })
    }

    /// Rejects a client address that failed to authenticate too often lately, before its
    /// credentials are checked.
    pub fn check_client(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(client) = client else { return Ok(()) };
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match blocked.get(&client) {
            Some(until) if *until > Instant::now() => {
                Err(failed_auth_error(until.saturating_duration_since(Instant::now())))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication of `client`. Returns the 429 that replaces the 401 once
    /// the client is over its rate; `unauthorized` otherwise.
    pub fn record_failed_auth(&self, client: Option<IpAddr>, unauthorized: ApiError) -> ApiError {
        let Some(client) = client else { return unauthorized };
        let Err(not_until) = self.failed_auth.check_key(&client) else { return unauthorized };
        let wait = not_until.wait_time_from(self.clock.now());
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() >= SWEEP_ABOVE {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            self.failed_auth.retain_recent();
        }
        blocked.insert(client, Instant::now() + wait);
        tracing::warn!(%client, "client over the failed authentication rate");
        failed_auth_error(wait)
    }

    /// Returns the largest upload `tenant` may send: its own limit, else `default`.
    pub fn max_upload_bytes(&self, tenant: TenantId, default: u64) -> u64 {
        self.upload_overrides.get(&tenant).copied().unwrap_or(default)
    }
}

fn failed_auth_error(wait: Duration) -> ApiError {
    throttled("failed_auth", wait, "too many failed authentications from this address")
}

fn throttled(limit: &'static str, wait: Duration, what: &str) -> ApiError {
    metrics::counter!(API_THROTTLED, "limit" => limit).increment(1);
    // Rounded up, so a client that waits the advertised time is admitted.
    let retry_after_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let retry_after_seconds = retry_after_seconds.max(1);
    ApiError::TooManyRequests {
        message: format!("{what}: retry after {retry_after_seconds} s"),
        retry_after_seconds,
    }
}

fn per_second_quota(per_second: u32, burst: u32) -> anyhow::Result<Quota> {
    let rate = nonzero(per_second, "requests_per_second")?;
    Ok(Quota::per_second(rate).allow_burst(nonzero(burst, "burst")?))
}

fn nonzero(value: u32, name: &str) -> anyhow::Result<NonZeroU32> {
    NonZeroU32::new(value).with_context(|| format!("{name} must be at least 1"))
}

#[cfg(test)]
mod tests {
    use crate::config::TenantLimits;

    use super::*;

    fn config_with(tenant: &str, limits: TenantLimits) -> ApiLimitsConfig {
        let mut config = ApiLimitsConfig { requests_per_second: 1, burst: 1, ..Default::default() };
        config.tenants.insert(tenant.to_owned(), limits);
        config
    }

    #[test]
    fn tenant_override_replaces_rate_and_upload_size() -> anyhow::Result<()> {
        let generous = TenantId::generate();
        let plain = TenantId::generate();
        let limits =
            TenantLimits { burst: Some(5), max_upload_bytes: Some(1_000), ..Default::default() };
        let limiter = ApiLimiter::new(&config_with(&generous.to_string(), limits))?;

        for request in 1..=5 {
            assert!(limiter.check_tenant(generous).is_ok(), "request {request} within its burst");
        }
        assert!(limiter.check_tenant(generous).is_err(), "over its own burst");
        assert!(limiter.check_tenant(plain).is_ok());
        assert!(limiter.check_tenant(plain).is_err(), "the default burst is 1");
        assert_eq!(limiter.max_upload_bytes(generous, 50), 1_000);
        assert_eq!(limiter.max_upload_bytes(plain, 50), 50);
        Ok(())
    }

    #[test]
    fn invalid_limits_are_rejected_with_their_key() {
        let error = ApiLimiter::new(&config_with("acme", TenantLimits::default()))
            .expect_err("not a tenant id");
        assert!(format!("{error:#}").contains("\"acme\""), "{error:#}");

        let zero = ApiLimitsConfig { failed_auth_per_minute: 0, ..Default::default() };
        let error = ApiLimiter::new(&zero).expect_err("zero rate");
        assert!(format!("{error:#}").contains("failed_auth_per_minute"), "{error:#}");
    }
}
