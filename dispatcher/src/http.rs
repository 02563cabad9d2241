//! The HTTP surface (actix-web): the tenant API under `/v1`, the operator API under
//! `/admin/v1`, the provider webhooks under `/webhooks`, `/metrics`, `/healthz` and `/readyz`.
//! Every route is listed in [`routes`].

pub mod account_api;
pub mod admin_api;
pub mod admin_stream;
pub mod auth;
pub mod billing_api;
pub mod clock_api;
pub mod error;
pub mod forecast_api;
pub mod json;
pub mod limits;
pub mod operator_actions;
pub mod routes;
pub mod stops_api;
pub mod tenant_api;
pub mod unsubscribe_page;
pub mod usage_api;
pub mod webhooks;

use std::sync::Arc;

use followup_adapters::fakes::FakeProviders;
use followup_core::domain::{Channel, Connection, Credentials, Provider};
use followup_core::limits::ConnectionLimits;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::Engine;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Renders `/metrics`; `None` when another engine in the process owns the recorder.
    pub metrics: Option<PrometheusHandle>,
    /// The built-in fakes, in fake mode. Every connection is registered with them, as the
    /// tenant's real account would exist at the real provider.
    pub fakes: Option<Arc<FakeProviders>>,
    pub limits: Arc<limits::ApiLimiter>,
    pub webhooks: Arc<webhooks::WebhookState>,
    /// The open snapshot streams: their limit and the signal that ends them.
    pub streams: Arc<admin_stream::StreamGate>,
    /// The virtual clock that `POST /admin/v1/clock/run` moves, under `--virtual-clock` only.
    pub virtual_clock: Option<Arc<clock_api::VirtualClockControl>>,
}

/// Registers a connection with the built-in fakes, with its effective limits.
pub fn register_with_fakes(fakes: &FakeProviders, connection: &Connection) {
    let limits = |channel| ConnectionLimits::of(connection, channel).send;
    match (&connection.credentials, connection.provider) {
        (Credentials::OAuth { access_token, refresh_token, expires_at, .. }, provider) => {
            let token = access_token.expose();
            if provider == Provider::Outlook {
                fakes.register_outlook(token, &connection.sender, limits(Channel::Email));
            } else {
                fakes.register_gmail(token, &connection.sender, limits(Channel::Email));
            }
            // The fake refuses the token from its expiry on, as the provider would.
            fakes.set_access_token_expiry(provider, token, *expires_at);
            if let Some(refresh_token) = refresh_token {
                fakes.register_refresh_token(provider, refresh_token.expose(), &connection.sender);
            }
        }
        (Credentials::Twilio { account_sid, auth_token }, Provider::Twilio) => {
            fakes.register_twilio(
                account_sid,
                auth_token.expose(),
                &connection.sender,
                limits(Channel::Sms),
                limits(Channel::Call),
            );
        }
        // The API never stores OAuth credentials on Twilio or the reverse.
        _ => {}
    }
}
