use std::net::TcpListener;
use std::time::Duration;

use followup_core::domain::Provider;
use followup_core::sensitive::Sensitive;

use super::{OAuthClientSettings, OAuthRefresher, RefreshError};
use crate::fakes::{FakeProviders, TokenMode};
use crate::http::HttpSettings;
use crate::testing::{start_fakes, virtual_clock};

const CLIENT_ID: &str = "engine-client";
const CLIENT_SECRET: &str = "engine-client-secret";
const MAILBOX: &str = "owner@shop.example";

fn client(token_url: String, secret: &str) -> OAuthClientSettings {
    OAuthClientSettings {
        client_id: CLIENT_ID.into(),
        client_secret: Sensitive::new(secret.into()),
        token_url,
    }
}

/// Fakes with the engine's client and a refresh token of `MAILBOX` registered at both
/// providers, and a refresher that authenticates with `secret`.
async fn refresher_and_fakes(secret: &str) -> (OAuthRefresher, FakeProviders) {
    let fakes = start_fakes(&virtual_clock(), |config| config).await;
    for provider in [Provider::Gmail, Provider::Outlook] {
        fakes.register_oauth_client(provider, CLIENT_ID, CLIENT_SECRET);
        fakes.register_refresh_token(provider, "refresh-1", MAILBOX);
    }
    let google = client(fakes.google_token_url(), secret);
    let microsoft = client(fakes.microsoft_token_url(), secret);
    let refresher = OAuthRefresher::new(&HttpSettings::default(), Some(google), Some(microsoft))
        .expect("client builds");
    (refresher, fakes)
}

fn refresh_token() -> Sensitive<String> {
    Sensitive::new("refresh-1".into())
}

#[tokio::test]
async fn google_refresh_returns_access_token_only() {
    let (refresher, fakes) = refresher_and_fakes(CLIENT_SECRET).await;

    let tokens =
        refresher.refresh(Provider::Gmail, refresh_token(), None).await.expect("refreshed");

    assert!(!tokens.access_token.expose().is_empty());
    assert_eq!(tokens.expires_in, Some(Duration::from_secs(3_599)));
    assert!(tokens.refresh_token.is_none(), "Google does not rotate by default");
    let requests = fakes.token_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].presented_refresh_token, "refresh-1");
}

#[tokio::test]
async fn microsoft_refresh_rotates_through_tenant_endpoint() {
    let (refresher, fakes) = refresher_and_fakes(CLIENT_SECRET).await;
    let tenant = Some("contoso.example".to_owned());

    let tokens = refresher.refresh(Provider::Outlook, refresh_token(), tenant).await.expect("ok");

    let rotated = tokens.refresh_token.expect("Microsoft rotates the refresh token");
    let requests = fakes.token_requests();
    assert_eq!(requests[0].issued_refresh_token.as_deref(), Some(rotated.expose().as_str()));
    assert_eq!(requests[0].status, 200);
}

#[tokio::test]
async fn revoked_grant_is_reported_in_provider_words() {
    let (refresher, fakes) = refresher_and_fakes(CLIENT_SECRET).await;
    fakes.set_token_mode(Provider::Gmail, TokenMode::Revoking);
    fakes.set_token_mode(Provider::Outlook, TokenMode::Revoking);

    let google = refresher.refresh(Provider::Gmail, refresh_token(), None).await;
    let microsoft = refresher.refresh(Provider::Outlook, refresh_token(), None).await;

    let Err(RefreshError::GrantRevoked(reason)) = google else { panic!("{google:?}") };
    assert!(reason.contains("invalid_grant: Token has been expired or revoked."), "{reason}");
    let Err(RefreshError::GrantRevoked(reason)) = microsoft else { panic!("{microsoft:?}") };
    assert!(reason.contains("AADSTS50173"), "{reason}");
    assert!(!reason.contains("refresh-1"), "the token leaked into the reason");
}

#[tokio::test]
async fn unknown_refresh_token_is_invalid_grant() {
    let (refresher, _fakes) = refresher_and_fakes(CLIENT_SECRET).await;
    let unknown = Sensitive::new("never-issued".to_owned());

    let result = refresher.refresh(Provider::Gmail, unknown, None).await;

    assert!(matches!(result, Err(RefreshError::GrantRevoked(_))), "{result:?}");
}

#[tokio::test]
async fn server_errors_and_unreachable_endpoints_are_transient() {
    let (refresher, fakes) = refresher_and_fakes(CLIENT_SECRET).await;
    fakes.set_token_mode(Provider::Outlook, TokenMode::Failing);

    let failing = refresher.refresh(Provider::Outlook, refresh_token(), None).await;
    assert!(
        matches!(&failing, Err(RefreshError::Transient(r)) if r.contains("503")),
        "{failing:?}"
    );

    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let closed = client(format!("http://127.0.0.1:{port}/token"), CLIENT_SECRET);
    let refresher = OAuthRefresher::new(&HttpSettings::default(), Some(closed), None).expect("ok");
    let unreachable = refresher.refresh(Provider::Gmail, refresh_token(), None).await;
    assert!(matches!(unreachable, Err(RefreshError::Transient(_))), "{unreachable:?}");
}

#[tokio::test]
async fn wrong_client_secret_is_rejected() {
    let (refresher, _fakes) = refresher_and_fakes("not-the-secret").await;

    let result = refresher.refresh(Provider::Gmail, refresh_token(), None).await;

    let Err(RefreshError::Rejected(reason)) = &result else { panic!("{result:?}") };
    assert!(reason.contains("invalid_client"), "{reason}");
    assert!(!reason.contains("not-the-secret"), "the secret leaked into the reason");
}

#[tokio::test]
async fn provider_without_client_cannot_refresh() {
    let refresher = OAuthRefresher::new(&HttpSettings::default(), None, None).expect("ok");

    assert!(!refresher.can_refresh(Provider::Gmail));
    let result = refresher.refresh(Provider::Outlook, refresh_token(), None).await;
    assert!(matches!(result, Err(RefreshError::Rejected(_))), "{result:?}");
}
