//! The loopback guard: the harness sends load only to an engine on this machine.
//!
//! A URL passes when its host is an IPv4 address in 127.0.0.0/8, the IPv6 address `::1`
//! (also written IPv4-mapped, `::ffff:127.x.y.z`) or the name `localhost`. The name must
//! also resolve to loopback addresses only, and the client is then pinned to the address
//! checked here, so that a later lookup cannot send requests elsewhere.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use reqwest::Url;

/// A base URL whose host was checked to be loopback.
#[derive(Clone, Debug)]
pub struct LoopbackUrl {
    pub url: Url,
    /// The address `localhost` resolved to, for the client to use instead of its own
    /// lookup. `None` when the URL's host is an IP address.
    pub pinned: Option<(String, SocketAddr)>,
}

/// Parses `raw` and checks that it names a loopback host, by syntax and, for `localhost`,
/// by resolving it.
pub async fn check_loopback(raw: &str) -> anyhow::Result<LoopbackUrl> {
    let url = parse_loopback(raw)?;
    let host = url.host_str().unwrap_or_default();
    let pinned = match parse_ip(host) {
        Some(_) => None,
        None => Some((host.to_owned(), resolve_loopback(&url, host).await?)),
    };
    Ok(LoopbackUrl { url, pinned })
}

/// Parses `raw` and checks its scheme and host by syntax alone, without resolving names.
pub fn parse_loopback(raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).with_context(|| format!("invalid --url {raw:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("invalid --url {raw:?}: the scheme must be http or https");
    }
    // The URL parser has already normalised the host: IPv4 in dotted decimal (`127.1` becomes
    // `127.0.0.1`), IPv6 in brackets, names in lowercase.
    let host = url.host_str().unwrap_or_default();
    let loopback = match parse_ip(host) {
        Some(address) => address.to_canonical().is_loopback(),
        None => host == "localhost",
    };
    if !loopback {
        bail!(
            "rejected --url {raw:?}: the load harness sends only to a loopback host \
             (127.0.0.0/8, ::1 or localhost); start the engine on this machine and point \
             --url at it"
        );
    }
    Ok(url)
}

/// Reads a URL host as an IP address; IPv6 hosts come in brackets.
fn parse_ip(host: &str) -> Option<IpAddr> {
    let bare = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

/// Resolves `name` and returns its first address, after checking that every address it
/// resolves to is loopback.
async fn resolve_loopback(url: &Url, name: &str) -> anyhow::Result<SocketAddr> {
    let port = url.port_or_known_default().unwrap_or(80);
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .with_context(|| format!("failed to resolve {name:?} from --url"))?
        .collect();
    if let Some(outside) = addresses.iter().find(|address| !address.ip().is_loopback()) {
        bail!(
            "rejected --url {url}: {name:?} resolves to {}, which is not a loopback \
             address; use --url http://127.0.0.1:PORT instead",
            outside.ip()
        );
    }
    addresses
        .first()
        .copied()
        .with_context(|| format!("{name:?} resolves to no address; use 127.0.0.1 instead"))
}

#[cfg(test)]
mod tests;
