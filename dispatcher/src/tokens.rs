//! Access tokens of Gmail and Outlook connections, kept fresh.
//!
//! A tenant round gets the credentials to send with from [`TokenKeeper::credentials_for_send`].
//! An access token within the refresh margin of its expiry, or one the provider refused with
//! 401, is refreshed first. Refreshes are single-flight per connection: the first caller
//! starts one on its own task, and every caller that arrives while it runs waits for the same
//! result. The new tokens (a rotated refresh token included) are written to the store before
//! any caller gets them, so the engine never sends with a token it could lose in a crash.
//!
//! `invalid_grant` pauses the connection with a reason the tenant reads in the API. Other
//! failures (5xx, timeouts, a rejected client) are retried after a growing backoff and
//! never pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use followup_adapters::oauth::{OAuthRefresher, RefreshError, RefreshedTokens};
use followup_core::clock::Clock;
use followup_core::domain::{Connection, Credentials};
use followup_core::ids::ConnectionId;
use followup_core::sensitive::Sensitive;
use followup_core::store::{Store, StoreError};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use rand::Rng as _;

use crate::telemetry;

/// When and how tokens are refreshed.
#[derive(Clone, Copy, Debug)]
pub struct RefreshPolicy {
    /// How long before its expiry an access token is refreshed.
    pub margin: chrono::Duration,
    /// Wait after the first failed refresh; it doubles with each further failure.
    pub first_backoff: chrono::Duration,
    /// Maximum wait between failed refreshes.
    pub max_backoff: chrono::Duration,
}

/// The credentials a send may use now, or why it must wait.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenStatus {
    /// Send with these credentials.
    Ready(Credentials),
    /// The token could not be refreshed; try again at this instant.
    WaitUntil(DateTime<Utc>),
    /// The grant is revoked and the connection paused until the tenant connects it again.
    Paused,
}

/// Result of one refresh, shared by every caller waiting on it.
type RefreshResult = Result<Credentials, RefreshFailure>;

#[derive(Clone, Debug, PartialEq)]
enum RefreshFailure {
    /// The connection is paused (by this refresh or before it) or gone.
    Paused,
    /// The refresh failed for now; the next one may start at this instant.
    RetryAt(DateTime<Utc>),
}

/// The keeper's record of one connection, kept between rounds.
#[derive(Default)]
struct TokenState {
    /// The refresh in progress, which later callers join.
    in_flight: Option<Shared<BoxFuture<'static, RefreshResult>>>,
    /// An access token the provider refused; it is refreshed even if not yet expired.
    refused_access_token: Option<Sensitive<String>>,
    /// The access token the last refresh issued, and when: a refusal of it right away means
    /// that a new token will not help either (a missing scope, a disabled mailbox).
    issued_access_token: Option<(Sensitive<String>, DateTime<Utc>)>,
    /// Consecutive failed refreshes, and the refresh token they used: a new grant from the
    /// tenant starts without a backoff.
    failures: u32,
    failed_refresh_token: Option<Sensitive<String>>,
    retry_at: Option<DateTime<Utc>>,
}

/// Keeps the access tokens of every tenant's OAuth connections fresh.
pub struct TokenKeeper {
    refresher: OAuthRefresher,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: RefreshPolicy,
    states: Mutex<HashMap<ConnectionId, TokenState>>,
}

impl std::fmt::Debug for TokenKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeeper").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl TokenKeeper {
    pub fn new(
        refresher: OAuthRefresher,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: RefreshPolicy,
    ) -> Self {
        Self { refresher, store, clock, policy, states: Mutex::default() }
    }

    /// Returns the credentials to send through `connection` with, refreshing its access token
    /// first when it is about to expire or was refused. When a refresh fails for now but the
    /// old token has not expired yet, the old token is used.
    pub async fn credentials_for_send(self: &Arc<Self>, connection: &Connection) -> TokenStatus {
        let current = connection.credentials.clone();
        let Credentials::OAuth { access_token, refresh_token: Some(_), expires_at, .. } = &current
        else {
            return TokenStatus::Ready(current);
        };
        if !self.refresher.can_refresh(connection.provider) {
            return TokenStatus::Ready(current);
        }
        let now = self.clock.now();
        let refused = self.with_state(connection.id, |state| {
            state.refused_access_token.as_ref() == Some(access_token)
        });
        let expiring = expires_at.is_some_and(|at| now + self.policy.margin >= at);
        if !refused && !expiring {
            return TokenStatus::Ready(current);
        }
        match self.refresh(connection).await {
            Ok(credentials) => TokenStatus::Ready(credentials),
            Err(RefreshFailure::Paused) => TokenStatus::Paused,
            Err(RefreshFailure::RetryAt(_))
                if !refused && expires_at.is_some_and(|at| now < at) =>
            {
                TokenStatus::Ready(current)
            }
            Err(RefreshFailure::RetryAt(at)) => TokenStatus::WaitUntil(at),
        }
    }

    /// Handles a 401 from the provider for `connection`'s credentials: refreshes them when a
    /// refresh token and an OAuth client exist and returns true, so that the refused sends
    /// wait for the new token. Returns false when nothing can be refreshed, or when the
    /// refused token came from a refresh within the margin, so another would not help; the
    /// caller then pauses the connection.
    pub async fn refresh_refused(self: &Arc<Self>, connection: &Connection) -> bool {
        let Credentials::OAuth { access_token, refresh_token: Some(_), .. } =
            &connection.credentials
        else {
            return false;
        };
        if !self.refresher.can_refresh(connection.provider) {
            return false;
        }
        let fresh_since = self.clock.now() - self.policy.margin;
        let refused_fresh = self.with_state(connection.id, |state| {
            state.refused_access_token = Some(access_token.clone());
            state
                .issued_access_token
                .as_ref()
                .is_some_and(|(issued, at)| issued == access_token && *at >= fresh_since)
        });
        if refused_fresh {
            tracing::warn!(
                tenant = %connection.tenant, provider = %connection.provider,
                "a freshly refreshed access token was refused; not refreshing again"
            );
            return false;
        }
        // The outcome is in the store (new tokens or a pause) and in the backoff state, which
        // the next round reads.
        let _ = self.refresh(connection).await;
        true
    }

    /// Joins the connection's refresh in progress, or starts one on a task of its own, so that
    /// it completes (and its rotated refresh token is stored) even if every caller goes away.
    async fn refresh(self: &Arc<Self>, connection: &Connection) -> RefreshResult {
        let now = self.clock.now();
        let refresh_token = oauth_refresh_token(&connection.credentials);
        let shared = {
            let mut states = self.states.lock().unwrap_or_else(|poison| poison.into_inner());
            let state = states.entry(connection.id).or_default();
            if let Some(in_flight) = &state.in_flight {
                in_flight.clone()
            } else {
                let same_grant = state.failed_refresh_token == refresh_token;
                if let Some(at) = state.retry_at.filter(|&at| same_grant && at > now) {
                    return Err(RefreshFailure::RetryAt(at));
                }
                let keeper = Arc::clone(self);
                let clock = Arc::clone(&self.clock);
                let connection = connection.clone();
                let task = tokio::spawn(async move { keeper.run_refresh(connection).await });
                let joined = async move {
                    task.await.unwrap_or_else(|error| {
                        tracing::error!(%error, "token refresh task failed");
                        Err(RefreshFailure::RetryAt(clock.now()))
                    })
                };
                let shared = joined.boxed().shared();
                state.in_flight = Some(shared.clone());
                shared
            }
        };
        shared.await
    }

    /// Runs one refresh and records its outcome. Ends by clearing the in-flight marker, so
    /// that the next expiry starts a new refresh.
    async fn run_refresh(self: Arc<Self>, connection: Connection) -> RefreshResult {
        let result = self.refresh_and_store(&connection).await;
        let now = self.clock.now();
        let mut states = self.states.lock().unwrap_or_else(|poison| poison.into_inner());
        let state = states.entry(connection.id).or_default();
        state.in_flight = None;
        if let Ok(Credentials::OAuth { access_token, .. }) = &result {
            state.issued_access_token = Some((access_token.clone(), now));
        }
        match &result {
            Ok(_) | Err(RefreshFailure::Paused) => {
                state.failures = 0;
                state.retry_at = None;
                state.failed_refresh_token = None;
            }
            Err(RefreshFailure::RetryAt(at)) => {
                state.failed_refresh_token = oauth_refresh_token(&connection.credentials);
                state.retry_at = Some((*at).max(now));
            }
        }
        result
    }

    /// Reads the connection again, refreshes its token unless someone already did, and
    /// stores the new tokens before returning them.
    async fn refresh_and_store(&self, seen: &Connection) -> RefreshResult {
        let Some(current) = self.read(seen).await? else {
            return Err(RefreshFailure::Paused);
        };
        if current.paused_reason.is_some() {
            return Err(RefreshFailure::Paused);
        }
        // The tenant connected again, or a refresh finished, since the caller read the record.
        if current.credentials != seen.credentials && !self.needs_refresh(&current) {
            return Ok(current.credentials);
        }
        let Credentials::OAuth { refresh_token: Some(refresh_token), microsoft_tenant, .. } =
            &current.credentials
        else {
            return Ok(current.credentials);
        };

        let provider = current.provider;
        let request = (refresh_token.clone(), microsoft_tenant.clone());
        let result = self.refresher.refresh(provider, request.0, request.1).await;
        let outcome = match &result {
            Ok(_) => "refreshed",
            Err(RefreshError::GrantRevoked(_)) => "invalid_grant",
            Err(RefreshError::Transient(_)) => "transient_error",
            Err(RefreshError::Rejected(_)) => "rejected",
        };
        metrics::counter!(
            telemetry::TOKEN_REFRESHES,
            "provider" => provider.as_str(),
            "outcome" => outcome
        )
        .increment(1);

        match result {
            Ok(tokens) => self.store_tokens(&current, tokens).await,
            Err(RefreshError::GrantRevoked(reason)) => {
                self.pause(&current, &reason).await?;
                Err(RefreshFailure::Paused)
            }
            Err(RefreshError::Transient(reason) | RefreshError::Rejected(reason)) => {
                let retry_at = self.next_attempt(current.id);
                tracing::warn!(
                    tenant = %current.tenant, %provider, %reason, %retry_at,
                    "token refresh failed; sends wait and the refresh is tried again"
                );
                Err(RefreshFailure::RetryAt(retry_at))
            }
        }
    }

    /// Writes the refreshed tokens into the connection. A rotated refresh token replaces the
    /// old one; a response without one keeps it.
    async fn store_tokens(&self, refreshed: &Connection, tokens: RefreshedTokens) -> RefreshResult {
        let Credentials::OAuth { refresh_token, microsoft_tenant, .. } = &refreshed.credentials
        else {
            return Ok(refreshed.credentials.clone());
        };
        let now = self.clock.now();
        let expires_at = tokens
            .expires_in
            .and_then(|lifetime| chrono::Duration::from_std(lifetime).ok())
            .map(|lifetime| now + lifetime);
        let credentials = Credentials::OAuth {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.or_else(|| refresh_token.clone()),
            expires_at,
            microsoft_tenant: microsoft_tenant.clone(),
        };

        // NOTE: the store has no compare-and-set, so a reconnection landing between this read
        // and the write is overwritten; the window is one store round trip.
        let Some(mut latest) = self.read(refreshed).await? else {
            return Err(RefreshFailure::Paused);
        };
        if latest.credentials != refreshed.credentials {
            // The tenant connected again during the request: their tokens win.
            return Ok(latest.credentials);
        }
        latest.credentials = credentials.clone();
        if let Err(error) = self.store.put_connection(latest).await {
            tracing::error!(
                tenant = %refreshed.tenant, provider = %refreshed.provider, %error,
                "refreshed tokens could not be stored; the refresh is tried again"
            );
            return Err(RefreshFailure::RetryAt(self.next_attempt(refreshed.id)));
        }
        tracing::info!(
            tenant = %refreshed.tenant, provider = %refreshed.provider, ?expires_at,
            "access token refreshed"
        );
        Ok(credentials)
    }

    /// Pauses the connection with `reason`, unless the tenant replaced its credentials since.
    async fn pause(&self, refused: &Connection, reason: &str) -> Result<(), RefreshFailure> {
        let Some(mut latest) = self.read(refused).await? else {
            return Ok(());
        };
        if latest.credentials != refused.credentials {
            return Ok(());
        }
        latest.paused_reason = Some(format!(
            "{} refused the refresh token ({reason}); connect the mailbox again with new tokens",
            refused.provider
        ));
        tracing::warn!(
            tenant = %refused.tenant, provider = %refused.provider, reason,
            "connection paused: refresh token revoked or expired"
        );
        self.store.put_connection(latest).await.map_err(|error| self.store_failure(refused, &error))
    }

    /// Reads the stored record of `connection`; `None` when it is gone.
    async fn read(&self, connection: &Connection) -> Result<Option<Connection>, RefreshFailure> {
        let connections = self
            .store
            .connections(connection.tenant)
            .await
            .map_err(|error| self.store_failure(connection, &error))?;
        Ok(connections.into_iter().find(|c| c.id == connection.id))
    }

    fn store_failure(&self, connection: &Connection, error: &StoreError) -> RefreshFailure {
        tracing::error!(
            tenant = %connection.tenant, provider = %connection.provider, %error,
            "store failed during a token refresh"
        );
        RefreshFailure::RetryAt(self.next_attempt(connection.id))
    }

    /// Returns whether `connection`'s access token is due for a refresh now.
    fn needs_refresh(&self, connection: &Connection) -> bool {
        let Credentials::OAuth { access_token, expires_at, .. } = &connection.credentials else {
            return false;
        };
        let refused = self.with_state(connection.id, |state| {
            state.refused_access_token.as_ref() == Some(access_token)
        });
        refused || expires_at.is_some_and(|at| self.clock.now() + self.policy.margin >= at)
    }

    /// Counts a failure and returns when the next refresh may start: the first backoff,
    /// doubled per further failure, capped, plus up to a second of jitter.
    fn next_attempt(&self, id: ConnectionId) -> DateTime<Utc> {
        let failures = self.with_state(id, |state| {
            state.failures += 1;
            state.failures
        });
        let factor = 1i32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(i32::MAX);
        let wait = (self.policy.first_backoff * factor).min(self.policy.max_backoff);
        let jitter = chrono::Duration::milliseconds(rand::rng().random_range(0..1_000));
        self.clock.now() + wait + jitter
    }

    fn with_state<T>(&self, id: ConnectionId, action: impl FnOnce(&mut TokenState) -> T) -> T {
        let mut states = self.states.lock().unwrap_or_else(|poison| poison.into_inner());
        action(states.entry(id).or_default())
    }
}

fn oauth_refresh_token(credentials: &Credentials) -> Option<Sensitive<String>> {
    match credentials {
        Credentials::OAuth { refresh_token, .. } => refresh_token.clone(),
        Credentials::Twilio { .. } => None,
    }
}
