//! Transport security. The API serves HTTPS with the configured certificate. The engine's
//! outbound client trusts only the web PKI roots, so it rejects a certificate it does not know.
//! Bad TLS files, and plain-HTTP provider URLs to other machines, stop the engine at start.

use std::path::Path;
use std::sync::Arc;

use followup_adapters::http::{HttpSettings, build_http_client};
use followup_core::clock::SystemClock;
use followup_dispatcher::config::{Config, ProvidersMode};
use followup_dispatcher::server::RunningEngine;
use followup_tests::TestEngine;

/// Writes a self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files.
fn write_certificate(dir: &Path) -> anyhow::Result<String> {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem)?;
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())?;
    Ok(cert_pem)
}

#[actix_rt::test]
async fn engine_serves_https_to_clients_that_trust_it() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    let cert_pem = write_certificate(certs.path())?;
    let engine = TestEngine::start(|config| {
        config.tls.cert_file = Some(certs.path().join("cert.pem"));
        config.tls.key_file = Some(certs.path().join("key.pem"));
    })
    .await?;
    let url = engine.url("/healthz");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes())?])
        .build()?;
    let response = trusting.get(&url).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "ok\n");

    // The engine's own outbound client trusts only the web PKI roots.
    let outbound = build_http_client(&HttpSettings::default())?;
    let error = outbound.get(&url).send().await.expect_err("an unknown certificate is rejected");
    assert!(error.is_connect(), "rejected while connecting: {error:?}");
    let chain = format!("{:?}", error);
    assert!(chain.contains("UnknownIssuer"), "rejected for its issuer: {chain}");

    let plain = url.replacen("https://", "http://", 1);
    assert!(trusting.get(&plain).send().await.is_err(), "no plain HTTP on the TLS port");
    Ok(())
}

fn tls_config(data_dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<Config> {
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.tls.cert_file = Some(cert.to_path_buf());
    config.tls.key_file = Some(key.to_path_buf());
    Ok(config)
}

async fn start_error(config: Config, data_dir: &Path) -> anyhow::Result<String> {
    let store = Arc::new(followup_adapters::embedded::open(data_dir)?);
    match RunningEngine::start(config, store, Arc::new(SystemClock), None).await {
        Ok(running) => {
            running.stop().await;
            anyhow::bail!("the engine started")
        }
        Err(error) => Ok(format!("{error:#}")),
    }
}

#[actix_rt::test]
async fn bad_tls_files_stop_the_start_naming_the_file() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    write_certificate(dir.path())?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n")?;

    let cases = [
        ("missing certificate", &missing, &key, "tls.cert_file", &missing),
        ("certificate not PEM", &garbage, &key, "tls.cert_file", &garbage),
        ("missing key", &cert, &missing, "tls.key_file", &missing),
        ("key not PEM", &cert, &garbage, "tls.key_file", &garbage),
    ];
    for (case, cert_file, key_file, setting, named) in cases {
        let data = tempfile::tempdir()?;
        let config = tls_config(data.path(), cert_file, key_file)?;
        let message = start_error(config, data.path()).await?;
        assert!(message.contains(setting), "{case}: {message}");
        assert!(message.contains(&named.display().to_string()), "{case}: {message}");
    }
    Ok(())
}

#[actix_rt::test]
async fn plain_http_to_another_host_is_rejected() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    type Configure = fn(&mut Config);
    let cases: [(&str, Configure); 2] = [
        ("twilio base URL", |config| {
            config.providers.twilio_base_url = "http://api.twilio.com".into()
        }),
        ("Google token base URL", |config| {
            config.oauth.google_token_url = "http://oauth2.googleapis.com/token".into();
        }),
    ];
    for (named, configure) in cases {
        let data = tempfile::tempdir()?;
        let mut config = Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: data.path().to_path_buf(),
            ..Config::default()
        };
        config.providers.mode = ProvidersMode::Live;
        // Only the configuration is checked: nothing connects to these addresses.
        configure(&mut config);
        let message = start_error(config, data.path()).await?;
        assert!(message.contains(named), "{message}");
        assert!(message.contains("plain http"), "{message}");
        assert!(message.contains("providers.plain_http_hosts"), "{message}");
    }
    Ok(())
}
