use super::*;

#[test]
fn loopback_hosts_pass() {
    for url in [
        "http://127.0.0.1:8080",
        "http://127.0.0.1",
        "https://127.0.0.1:8443/",
        "http://127.1.2.3:9000",
        "http://127.255.255.254:1",
        "http://127.1:8080",
        "http://[::1]:8080",
        "http://[::ffff:127.0.0.1]:8080",
        "http://localhost:8080",
        "http://LOCALHOST:8080",
    ] {
        let checked = parse_loopback(url);
        assert!(checked.is_ok(), "{url}: {:?}", checked.err());
    }
}

#[test]
fn other_hosts_rejected() {
    for url in [
        "http://10.0.0.1:8080",
        "http://192.168.1.10",
        "http://0.0.0.0:8080",
        "http://169.254.169.254/latest/meta-data",
        "http://128.0.0.1",
        "http://[::]:8080",
        "http://[::2]:8080",
        "http://[::ffff:10.0.0.1]:8080",
        "http://[fe80::1]:8080",
        "http://example.com",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://foo.localhost",
        "http://localhost.",
    ] {
        let error = parse_loopback(url).expect_err(url);
        assert!(error.to_string().contains("loopback"), "{url}: {error}");
    }
}

#[test]
fn other_schemes_rejected() {
    for url in ["ftp://127.0.0.1", "file:///tmp/socket", "unix:/run/engine.sock"] {
        let error = parse_loopback(url).expect_err(url);
        assert!(error.to_string().contains("scheme"), "{url}: {error}");
    }
}

#[test]
fn unparsable_url_rejected() {
    for url in ["", "127.0.0.1:8080", "http://", "not a url"] {
        assert!(parse_loopback(url).is_err(), "{url}");
    }
}

#[test]
fn userinfo_does_not_hide_host() {
    let error = parse_loopback("http://127.0.0.1@example.com/").expect_err("host is example.com");
    assert!(error.to_string().contains("loopback"), "{error}");
}

#[tokio::test]
async fn ip_host_is_not_pinned() {
    let checked = check_loopback("http://127.0.0.1:8080").await.expect("loopback");
    assert!(checked.pinned.is_none());
}

#[tokio::test]
async fn localhost_is_pinned_to_loopback() {
    let checked = check_loopback("http://localhost:8080").await.expect("localhost resolves");
    let (name, address) = checked.pinned.expect("a name is pinned");
    assert_eq!(name, "localhost");
    assert!(address.ip().is_loopback(), "{address}");
    assert_eq!(address.port(), 8080);
}

#[tokio::test]
async fn remote_url_rejected_before_lookup() {
    let error = check_loopback("http://example.com").await.expect_err("not loopback");
    assert!(error.to_string().contains("loopback"), "{error}");
}
