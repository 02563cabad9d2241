//! docs/openapi.yaml describes exactly the routes the server has.

use std::collections::BTreeSet;
use std::path::PathBuf;

use followup_tests::TestEngine;
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// (method, path) of every operation in the OpenAPI file.
fn documented_routes() -> anyhow::Result<BTreeSet<(String, String)>> {
    let text = std::fs::read_to_string(repo_file("docs/openapi.yaml"))?;
    let document: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let paths = document["paths"].as_mapping().ok_or_else(|| anyhow::anyhow!("no paths"))?;
    let mut routes = BTreeSet::new();
    for (path, operations) in paths {
        let path = path.as_str().unwrap_or_default().to_owned();
        for (method, _) in operations.as_mapping().into_iter().flatten() {
            routes.insert((method.as_str().unwrap_or_default().to_owned(), path.clone()));
        }
    }
    Ok(routes)
}

/// (method, path) of every `.route("PATH", web::METHOD()` in the server's route table.
fn registered_routes() -> anyhow::Result<BTreeSet<(String, String)>> {
    let source = std::fs::read_to_string(repo_file("dispatcher/src/http/routes.rs"))?;
    // Without whitespace, every registration reads `.route("PATH",web::METHOD()`, however
    // rustfmt wrapped it.
    let compact: String = source.split_whitespace().collect();
    let mut routes = BTreeSet::new();
    for registration in compact.split(".route(\"").skip(1) {
        let Some((path, rest)) = registration.split_once('"') else { continue };
        let Some(method) = rest.strip_prefix(",web::").and_then(|m| m.split('(').next()) else {
            continue;
        };
        routes.insert((method.to_owned(), path.to_owned()));
    }
    Ok(routes)
}

#[test]
fn openapi_lists_every_registered_route() -> anyhow::Result<()> {
    let documented = documented_routes()?;
    let registered = registered_routes()?;
    assert!(registered.len() >= 10, "route table parsed: {registered:?}");
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&registered).collect();
    assert!(undocumented.is_empty(), "routes missing from docs/openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "documented routes the server lacks: {unserved:?}");
    Ok(())
}

#[actix_rt::test]
async fn every_documented_route_is_served() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let any_id = "0190f3c4-0000-7000-8000-000000000000";
    for (method, path) in documented_routes()? {
        let concrete = path
            .replace("{id}", any_id)
            .replace("{connection}", any_id)
            .replace("{provider}", "gmail");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
        let response = engine.http.request(method.clone(), engine.url(&concrete)).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path} is not routed");
        assert_ne!(body["error"]["code"], "route_not_found", "{method} {path} is not routed");
    }
    Ok(())
}
