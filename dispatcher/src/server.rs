//! Starting and stopping a whole engine: store, clock, actors, HTTP (or HTTPS) server and, in
//! fake mode, the built-in provider fakes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use followup_adapters::fakes::{
    FAKE_OAUTH_CLIENT_ID, FAKE_OAUTH_CLIENT_SECRET, FakeConfig, FakeProviders,
};
use followup_core::clock::{Clock, VirtualClock};
use followup_core::domain::Provider;
use followup_core::sensitive::Sensitive;
use followup_core::store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, OAuthConfig, ProvidersMode};
use crate::engine::{Engine, ProviderUrls};
use crate::http::admin_stream::StreamGate;
use crate::http::clock_api::VirtualClockControl;
use crate::http::error::ApiError;
use crate::http::limits::ApiLimiter;
use crate::http::webhooks::WebhookState;
use crate::http::{AppState, register_with_fakes, routes};
use crate::webhooks::event_log::WebhookLog;

/// Points the OAuth configuration at the token endpoint fake, gives each provider without a
/// configured client the fake's own client, and registers the clients with the fake.
fn use_fake_token_endpoints(oauth: &mut OAuthConfig, fakes: &FakeProviders) {
    oauth.google_token_url = fakes.google_token_url();
    oauth.microsoft_token_url = fakes.microsoft_token_url();
    let clients = [
        (Provider::Gmail, &mut oauth.google_client_id, &mut oauth.google_client_secret),
        (Provider::Outlook, &mut oauth.microsoft_client_id, &mut oauth.microsoft_client_secret),
    ];
    for (provider, id, secret) in clients {
        let id = id.get_or_insert_with(|| FAKE_OAUTH_CLIENT_ID.to_owned());
        let secret =
            secret.get_or_insert_with(|| Sensitive::new(FAKE_OAUTH_CLIENT_SECRET.to_owned()));
        fakes.register_oauth_client(provider, id, secret.expose());
    }
}

/// A started engine with its HTTP server.
#[derive(Debug)]
pub struct RunningEngine {
    pub engine: Arc<Engine>,
    /// Address the HTTP server listens on (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// The built-in fakes, in fake mode.
    pub fakes: Option<Arc<FakeProviders>>,
    /// `http` or `https`.
    scheme: &'static str,
    /// Every verified webhook.
    pub webhook_log: WebhookLog,
    server: actix_web::dev::ServerHandle,
    /// Ended before the server stops, so that open snapshot streams do not hold it.
    streams: Arc<StreamGate>,
}

impl RunningEngine {
    /// Starts everything. Must run inside an actix system.
    pub async fn start(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let fakes = FakeConfig::new(clock.clone());
        Self::start_with_fakes(config, store, clock, metrics, fakes).await
    }

    /// Starts everything, with `fakes` as the settings of the built-in fakes in fake mode
    /// (tests use it to inject provider errors).
    pub async fn start_with_fakes(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Option<PrometheusHandle>,
        fakes: FakeConfig,
    ) -> anyhow::Result<Self> {
        Self::start_inner(config, store, clock, metrics, fakes, None).await
    }

    /// Starts everything under `clock`, a virtual clock that only the operator endpoint
    /// `POST /admin/v1/clock/run` moves, with the built-in fakes, whose `fakes` settings must be
    /// built on the same clock. The caller must not run [`Engine::run_forever`]: dispatch
    /// happens only inside that endpoint.
    pub async fn start_with_virtual_clock(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<VirtualClock>,
        metrics: Option<PrometheusHandle>,
        fakes: FakeConfig,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.providers.mode == ProvidersMode::Fake,
            "a virtual clock needs the built-in fakes (providers mode fake), not {}",
            format!("{:?}", config.providers.mode).to_lowercase()
        );
        let control = Arc::new(VirtualClockControl::new(clock.clone()));
        Self::start_inner(config, store, clock, metrics, fakes, Some(control)).await
    }

    async fn start_inner(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Option<PrometheusHandle>,
        fakes: FakeConfig,
        virtual_clock: Option<Arc<VirtualClockControl>>,
    ) -> anyhow::Result<Self> {
        let fake_config = fakes;
        let mut config = config;
        let (urls, fakes) = match config.providers.mode {
            ProvidersMode::Live => (
                ProviderUrls {
                    gmail: config.providers.gmail_base_url.clone(),
                    graph: config.providers.graph_base_url.clone(),
                    twilio: config.providers.twilio_base_url.clone(),
                },
                None,
            ),
            ProvidersMode::Null => {
                // Nothing may leave in null mode, token refreshes included, so the OAuth
                // clients are dropped and access tokens are used until they expire.
                tracing::warn!(
                    "providers mode null: every send is taken as accepted and nothing is sent"
                );
                let oauth = &mut config.oauth;
                oauth.google_client_id = None;
                oauth.microsoft_client_id = None;
                // The provider clients of null mode use no URL; these are never contacted.
                let unused = "http://127.0.0.1:9".to_owned();
                let urls =
                    ProviderUrls { gmail: unused.clone(), graph: unused.clone(), twilio: unused };
                (urls, None)
            }
            ProvidersMode::Fake => {
                let fakes = FakeProviders::start(fake_config)
                    .await
                    .context("cannot start the built-in provider fakes")?;
                let urls = ProviderUrls {
                    gmail: fakes.gmail_url().to_string(),
                    graph: fakes.graph_url().to_string(),
                    twilio: fakes.twilio_url().to_string(),
                };
                use_fake_token_endpoints(&mut config.oauth, &fakes);
                (urls, Some(Arc::new(fakes)))
            }
        };
        config.providers.check_base_url("gmail", &urls.gmail)?;
        config.providers.check_base_url("graph", &urls.graph)?;
        config.providers.check_base_url("twilio", &urls.twilio)?;
        // Token endpoints receive refresh tokens and client secrets, so they get the same
        // plain-HTTP rule as the provider APIs.
        config.providers.check_base_url("Google token", &config.oauth.google_token_url)?;
        let microsoft = config.oauth.microsoft_token_url.replace("{tenant}", "common");
        config.providers.check_base_url("Microsoft token", &microsoft)?;
        let tls = match (&config.tls.cert_file, &config.tls.key_file) {
            (Some(cert), Some(key)) => Some(tls_server_config(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("tls.cert_file and tls.key_file must be set together"),
        };
        let limits = Arc::new(ApiLimiter::new(&config.api_limits)?);
        let log = WebhookLog::open(&config.data_dir)?;
        let webhooks = Arc::new(WebhookState::new(&config.webhooks, log));
        let listen = config.listen;
        let engine = Engine::start(store, clock, config, urls).await?;
        // Stripe events recorded but not applied before the last stop are applied before the
        // server answers, so a crash between the two loses none.
        let replayed = crate::webhooks::stripe_billing::apply_unapplied(&engine, &webhooks.log);
        if let Err(error) = replayed.await {
            tracing::error!(error = %format!("{error:#}"), "applying recorded Stripe events failed");
        }
        crate::lifecycle::spawn_background(engine.clone());
        // With a refresh period of 0 the operator API counts per request instead.
        let refresh = engine.config().admin.snapshot_refresh_millis;
        if refresh > 0 {
            crate::operator_view::spawn_refresher(
                engine.clone(),
                std::time::Duration::from_millis(refresh),
            );
        }
        crate::stripe_sync::spawn_startup_sync(engine.clone());
        if let Some(fakes) = &fakes {
            for tenant in engine.live_tenants().await? {
                for connection in engine.store().connections(tenant.id).await? {
                    register_with_fakes(fakes, &connection);
                }
            }
        }
        let streams = Arc::new(StreamGate::new(engine.config().admin.max_streams));
        let state = web::Data::new(AppState {
            engine: engine.clone(),
            metrics,
            fakes: fakes.clone(),
            limits,
            webhooks: webhooks.clone(),
            streams: streams.clone(),
            virtual_clock,
        });
        let query_config = web::QueryConfig::default().error_handler(|error, _| {
            ApiError::BadRequest(format!("invalid query string: {error}")).into()
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(query_config.clone())
                .configure(routes::configure)
        })
        .workers(2)
        .disable_signals();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = match tls {
            Some(tls) => server.bind_rustls_0_23(listen, tls),
            None => server.bind(listen),
        }
        .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = server.addrs().first().copied().context("server bound no address")?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(%addr, scheme, "followup listening");
        Ok(Self {
            engine,
            addr,
            scheme,
            fakes,
            webhook_log: webhooks.log.clone(),
            server: handle,
            streams,
        })
    }

    /// Returns the base URL of the API, `https://` when TLS is configured.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Returns the built-in fakes, or an error in live mode.
    pub fn fakes(&self) -> anyhow::Result<&FakeProviders> {
        self.fakes.as_deref().context("the engine runs without the built-in fakes")
    }

    /// Ends the snapshot streams and stops the HTTP server, letting requests in progress
    /// finish, then releases the engine's tenant leases once their sends under way have
    /// finished, so that another engine on the same store takes the tenants at once.
    pub async fn stop(self) {
        self.streams.close();
        self.server.stop(true).await;
        self.engine.leases().release_all(&self.engine).await;
        if let Some(fakes) = self.fakes.and_then(Arc::into_inner) {
            fakes.shutdown().await;
        }
    }
}

/// Builds the TLS settings of the listener from a PEM certificate chain and a PEM private key.
/// Each error names the file at fault.
fn tls_server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!("cannot read TLS certificates from tls.cert_file {}", cert_file.display())
        })?;
    if chain.is_empty() {
        anyhow::bail!("tls.cert_file {} contains no PEM certificate", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!("cannot read a TLS private key from tls.key_file {}", key_file.display())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the key in tls.key_file {} does not fit the certificate in tls.cert_file {}",
                key_file.display(),
                cert_file.display()
            )
        })
}
