//! Starting and stopping a whole engine: store, clock, actors, HTTP server and, in fake mode,
//! the built-in provider fakes.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use followup_adapters::fakes::{FakeConfig, FakeProviders};
use followup_core::clock::Clock;
use followup_core::store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{Config, ProvidersMode};
use crate::engine::{Engine, ProviderUrls};
use crate::http::error::ApiError;
use crate::http::{AppState, register_with_fakes, routes};

/// A started engine with its HTTP server.
#[derive(Debug)]
pub struct RunningEngine {
    pub engine: Arc<Engine>,
    /// Address the HTTP server listens on (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// The built-in fakes, in fake mode.
    pub fakes: Option<Arc<FakeProviders>>,
    server: actix_web::dev::ServerHandle,
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
        let fake_config = fakes;
        let (urls, fakes) = match config.providers.mode {
            ProvidersMode::Live => (
                ProviderUrls {
                    gmail: config.providers.gmail_base_url.clone(),
                    graph: config.providers.graph_base_url.clone(),
                    twilio: config.providers.twilio_base_url.clone(),
                },
                None,
            ),
            ProvidersMode::Fake => {
                let fakes = FakeProviders::start(fake_config)
                    .await
                    .context("cannot start the built-in provider fakes")?;
                let urls = ProviderUrls {
                    gmail: fakes.gmail_url().to_string(),
                    graph: fakes.graph_url().to_string(),
                    twilio: fakes.twilio_url().to_string(),
                };
                (urls, Some(Arc::new(fakes)))
            }
        };
        let listen = config.listen;
        let engine = Engine::start(store, clock, config, urls).await?;
        if let Some(fakes) = &fakes {
            for tenant in engine.live_tenants().await? {
                for connection in engine.store().connections(tenant.id).await? {
                    register_with_fakes(fakes, &connection);
                }
            }
        }
        let state =
            web::Data::new(AppState { engine: engine.clone(), metrics, fakes: fakes.clone() });
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
        .disable_signals()
        .bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = server.addrs().first().copied().context("server bound no address")?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(%addr, "followup listening");
        Ok(Self { engine, addr, fakes, server: handle })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the built-in fakes, or an error in live mode.
    pub fn fakes(&self) -> anyhow::Result<&FakeProviders> {
        self.fakes.as_deref().context("the engine runs without the built-in fakes")
    }

    /// Stops the HTTP server, letting requests in progress finish.
    pub async fn stop(self) {
        self.server.stop(true).await;
        if let Some(fakes) = self.fakes.and_then(Arc::into_inner) {
            fakes.shutdown().await;
        }
    }
}
