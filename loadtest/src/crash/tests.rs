use std::path::Path;

use super::StoreTarget;

#[test]
fn store_directory_is_embedded() {
    let target = StoreTarget::parse("/tmp/crash-store").expect("a directory is accepted");
    assert!(
        matches!(target, StoreTarget::Embedded(Some(dir)) if dir == Path::new("/tmp/crash-store"))
    );
}

#[test]
fn store_mongo_uri_on_loopback_is_accepted() {
    for uri in ["mongodb://127.0.0.1:27017/crash", "mongodb://[::1]:27017/crash"] {
        let target = StoreTarget::parse(uri).expect("a loopback URI is accepted");
        assert!(matches!(target, StoreTarget::Mongo(_)), "{uri}");
    }
}

#[test]
fn store_mongo_uri_elsewhere_is_rejected() {
    let cases = [
        ("mongodb://10.255.255.1:27017/crash", "not a loopback IP address"),
        ("mongodb://localhost:27017/crash", "not a loopback IP address"),
        ("mongodb://db.example.com/crash", "not a loopback IP address"),
        ("mongodb+srv://cluster.example.com/crash", "look hosts up in DNS"),
        ("mongodb://127.0.0.1:27017", "names no database"),
    ];
    for (uri, expected) in cases {
        let error = StoreTarget::parse(uri).expect_err(uri).to_string();
        assert!(error.contains(expected), "{uri}: {error}");
    }
}

#[test]
fn store_display_hides_credentials() {
    let target = StoreTarget::parse("mongodb://crash:s3cret-pass@127.0.0.1:27017/crash")
        .expect("a loopback URI is accepted");
    let shown = target.to_string();
    assert!(!shown.contains("s3cret-pass"), "{shown}");
    assert!(shown.contains("127.0.0.1:27017/crash"), "{shown}");
}
