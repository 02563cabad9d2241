//! Helpers the unit tests of the clients and the fakes share.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use followup_core::clock::VirtualClock;
use followup_core::domain::Channel;
use followup_core::ids::{FollowUpId, ScheduleId};

use crate::fakes::{FakeConfig, FakeProviders};
use crate::http::{HttpSettings, build_http_client};
use crate::outbound::OutboundMessage;

pub(crate) fn start_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("valid instant")
}

pub(crate) fn virtual_clock() -> Arc<VirtualClock> {
    Arc::new(VirtualClock::new(start_instant()))
}

/// Fakes reading `clock`, configured by `adjust`.
pub(crate) async fn start_fakes(
    clock: &Arc<VirtualClock>,
    adjust: impl FnOnce(FakeConfig) -> FakeConfig,
) -> FakeProviders {
    let config = adjust(FakeConfig::new(clock.clone()));
    FakeProviders::start(config).await.expect("fakes start on loopback")
}

pub(crate) fn http() -> reqwest::Client {
    build_http_client(&HttpSettings::default()).expect("http client builds")
}

pub(crate) fn email(from: &str, to: &str, subject: &str, body: &str) -> OutboundMessage {
    OutboundMessage {
        follow_up: FollowUpId { schedule: ScheduleId::generate(), step: 1 },
        channel: Channel::Email,
        from: from.to_owned(),
        to: to.to_owned(),
        to_name: Some("Ann Example".to_owned()),
        subject: Some(subject.to_owned()),
        body: body.to_owned(),
        html_body: None,
        unsubscribe_url: None,
        status_callback: None,
    }
}

pub(crate) fn phone(channel: Channel, from: &str, to: &str, body: &str) -> OutboundMessage {
    OutboundMessage {
        follow_up: FollowUpId { schedule: ScheduleId::generate(), step: 1 },
        channel,
        from: from.to_owned(),
        to: to.to_owned(),
        to_name: None,
        subject: None,
        body: body.to_owned(),
        html_body: None,
        unsubscribe_url: None,
        status_callback: None,
    }
}

/// Returns the path of a provider API description kept beside the repository.
pub(crate) fn spec_file(relative: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/specs").join(relative);
    assert!(path.exists(), "provider API description not found at {}", path.display());
    path
}
