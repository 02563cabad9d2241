//! Starting one fake's HTTP server, the inspection endpoints every fake serves, and request
//! helpers the handlers share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{ServerHandle, Service as _};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;

use super::state::FakeState;

/// Largest request body accepted: Gmail's 35 MiB message limit, plus base64 overhead.
const MAX_BODY_BYTES: usize = 48 * 1024 * 1024;

/// Longer than a pooled client connection usually idles, so that the fake rarely closes a
/// connection the client is about to reuse.
const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// One started server.
#[derive(Debug)]
pub(crate) struct RunningServer {
    pub url: reqwest::Url,
    pub handle: ServerHandle,
}

/// Starts a server on `127.0.0.1` and a free port with the provider routes of `routes` and
/// the inspection endpoints, spawned on the current Tokio runtime.
pub(crate) fn serve(
    state: Arc<FakeState>,
    routes: fn(&mut web::ServiceConfig),
) -> std::io::Result<RunningServer> {
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .configure(routes)
            .route("/_fake/received", web::get().to(received))
            .route("/_fake/stats", web::get().to(stats))
            .wrap_fn(|request, service| {
                // Counted from arrival to the response, latency and stalls included, so that a
                // test in another process can tell when a request of the engine is in flight.
                let counted = !request.path().starts_with("/_fake/");
                let gauge = counted.then(|| {
                    let state = request.app_data::<web::Data<FakeState>>().cloned();
                    state.map(|state| state.enter_request())
                });
                let response = service.call(request);
                async move {
                    let response = response.await;
                    drop(gauge);
                    response
                }
            })
    })
    .workers(1)
    .disable_signals()
    .keep_alive(KEEP_ALIVE)
    .shutdown_timeout(5)
    .bind(("127.0.0.1", 0))?;

    let address: SocketAddr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("fake server bound no address"))?;
    let url = reqwest::Url::parse(&format!("http://{address}")).map_err(std::io::Error::other)?;

    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(RunningServer { url, handle })
}

async fn received(state: web::Data<FakeState>) -> HttpResponse {
    HttpResponse::Ok().json(state.received())
}

async fn stats(state: web::Data<FakeState>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats())
}

/// Joins `path` (which starts with `/`) to a server's base URL.
pub(crate) fn join(base: &reqwest::Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

/// Waits the configured latency plus the fault profile's draw, in real time.
pub(crate) async fn pause(state: &FakeState) {
    let delay = state.latency + state.faults.draw_latency();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer_token(request: &HttpRequest) -> Option<&str> {
    parse_bearer(request.headers().get("authorization")?.to_str().ok()?)
}

/// Returns the token of an `Authorization` header value of the Bearer scheme.
pub(crate) fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// The user and password of an `Authorization: Basic` header.
pub(crate) fn basic_credentials(request: &HttpRequest) -> Option<(String, String)> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `count` random lowercase hex digits.
pub(crate) fn random_hex(count: usize) -> String {
    let mut rng = rand::rng();
    (0..count).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
}
