//! A small client of the engine's HTTP API: only the calls a load run makes.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use followup_core::api::{
    AdminSnapshot, CreateTenantRequest, CreateTenantResponse, TenantFollowUpCounts, TenantPage,
};
use followup_core::domain::LimitOverrides;
use followup_core::ids::TenantId;
use followup_core::ingest::RowError;
use followup_core::sensitive::Sensitive;
use reqwest::{Body, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crash::processes::FakeUrls;
use crate::guard::LoopbackUrl;
use crate::scenario::SequenceSpec;

/// Maximum characters of an error response body quoted in an error message.
const MAX_QUOTED_BODY: usize = 400;

/// Client of one engine, built only from a URL that passed the loopback guard.
#[derive(Debug)]
pub struct EngineClient {
    http: reqwest::Client,
    base: Url,
    admin_token: Sensitive<String>,
}

/// Body of `PUT /v1/connections/{provider}`.
#[derive(Debug, Serialize)]
pub struct ConnectionBody {
    /// Mailbox address or E.164 number sends come from.
    pub sender: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    pub limits: LimitOverrides,
}

/// The engine's report of one bulk upload. Fields the harness does not read, such as the
/// column mapping, are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UploadReport {
    /// Data rows the engine read.
    pub rows: u64,
    pub accepted: u64,
    pub created: u64,
    pub duplicates: u64,
    pub rejected: u64,
    #[serde(default)]
    pub errors: Vec<RowError>,
}

/// The engine's clock, as `GET /admin/v1/clock` returns it.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct EngineClock {
    /// Whether the engine runs under a virtual clock.
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// Whether `POST /admin/v1/clock/run` moves the clock.
    pub operator_driven: bool,
    pub now: DateTime<Utc>,
}

/// Outcome of one `POST /admin/v1/clock/run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockRunOutcome {
    /// No follow-up is waiting in the engine.
    Settled,
    /// The next work is after the requested instant, where the clock now is.
    UntilReached,
    /// The wall-time budget was spent; another request carries on.
    BudgetSpent,
}

/// The response of `POST /admin/v1/clock/run`.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct ClockRun {
    pub outcome: ClockRunOutcome,
    /// The virtual clock when the run ended.
    pub now: DateTime<Utc>,
    pub rounds: u64,
}

/// Result of one upload.
#[derive(Debug)]
pub enum UploadOutcome {
    /// The engine read the whole body.
    Completed(UploadReport),
    /// The engine stopped early; `report` counts the rows stored before the stop.
    Stopped { status: StatusCode, message: String, report: UploadReport },
}

#[derive(Deserialize)]
struct StoppedBody {
    error: ErrorBody,
    report: UploadReport,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

impl EngineClient {
    /// Builds the client. `timeout` bounds every request, uploads included.
    pub fn new(
        target: &LoopbackUrl,
        admin_token: Sensitive<String>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        // reqwest is built without a default TLS provider; installing one twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();

        // No proxy and no redirects, because either could carry requests off this machine.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout);
        if let Some((name, address)) = &target.pinned {
            builder = builder.resolve(name, *address);
        }
        let http = builder.build().context("failed to build the HTTP client")?;
        Ok(Self { http, base: target.url.clone(), admin_token })
    }

    /// `POST /admin/v1/tenants`.
    pub async fn create_tenant(
        &self,
        request: &CreateTenantRequest,
    ) -> anyhow::Result<CreateTenantResponse> {
        let response = self
            .http
            .post(self.endpoint("/admin/v1/tenants")?)
            .bearer_auth(self.admin_token.expose())
            .json(request)
            .send()
            .await
            .context("create tenant request failed")?;
        read_json(response, StatusCode::CREATED, "create tenant").await
    }

    /// `PUT /v1/connections/{provider}`.
    pub async fn put_connection(
        &self,
        api_key: &Sensitive<String>,
        provider: &str,
        body: &ConnectionBody,
    ) -> anyhow::Result<()> {
        let what = format!("put {provider} connection");
        let response = self
            .http
            .put(self.endpoint(&format!("/v1/connections/{provider}"))?)
            .bearer_auth(api_key.expose())
            .json(body)
            .send()
            .await
            .with_context(|| format!("{what} request failed"))?;
        read_json::<serde_json::Value>(response, StatusCode::OK, &what).await?;
        Ok(())
    }

    /// `POST /v1/sequences`; returns the new sequence's id.
    pub async fn create_sequence(
        &self,
        api_key: &Sensitive<String>,
        sequence: &SequenceSpec,
    ) -> anyhow::Result<String> {
        let response = self
            .http
            .post(self.endpoint("/v1/sequences")?)
            .bearer_auth(api_key.expose())
            .json(sequence)
            .send()
            .await
            .context("create sequence request failed")?;
        let created: Created = read_json(response, StatusCode::CREATED, "create sequence").await?;
        Ok(created.id)
    }

    /// `POST /v1/schedules/bulk` with a CSV body streamed from `body`.
    pub async fn upload_csv(
        &self,
        api_key: &Sensitive<String>,
        sequence_id: &str,
        body: Body,
    ) -> anyhow::Result<UploadOutcome> {
        self.upload(api_key, sequence_id, "text/csv", body).await
    }

    /// `POST /v1/schedules/bulk` with a body of `content_type` (CSV or NDJSON) streamed from
    /// `body`.
    pub async fn upload(
        &self,
        api_key: &Sensitive<String>,
        sequence_id: &str,
        content_type: &str,
        body: Body,
    ) -> anyhow::Result<UploadOutcome> {
        let response = self
            .http
            .post(self.endpoint("/v1/schedules/bulk")?)
            .query(&[("sequence", sequence_id)])
            .bearer_auth(api_key.expose())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .context("bulk upload request failed")?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(UploadOutcome::Completed(read_json(response, status, "bulk upload").await?));
        }

        // A stopped upload still reports the rows it stored; any other error body does not.
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<StoppedBody>(&text) {
            Ok(stopped) => Ok(UploadOutcome::Stopped {
                status,
                message: stopped.error.message,
                report: stopped.report,
            }),
            Err(_) => bail!("bulk upload failed with status {status}: {}", quote_body(&text)),
        }
    }

    /// `GET /v1/export`: every record of the key's tenant, one JSON object a line.
    pub async fn export(&self, api_key: &Sensitive<String>) -> anyhow::Result<String> {
        let response = self
            .http
            .get(self.endpoint("/v1/export")?)
            .bearer_auth(api_key.expose())
            .send()
            .await
            .context("export request failed")?;
        let status = response.status();
        let text = response.text().await.context("export: failed to read body")?;
        if status != StatusCode::OK {
            bail!("export failed with status {status}: {}", quote_body(&text));
        }
        Ok(text)
    }

    /// `GET /admin/v1/snapshot`.
    pub async fn snapshot(&self) -> anyhow::Result<AdminSnapshot> {
        let response = self
            .http
            .get(self.endpoint("/admin/v1/snapshot")?)
            .bearer_auth(self.admin_token.expose())
            .send()
            .await
            .context("snapshot request failed")?;
        read_json(response, StatusCode::OK, "snapshot").await
    }

    /// `GET /admin/v1/tenants/{id}/follow-up-counts`: the tenant's follow-ups per state,
    /// counted at the request.
    pub async fn tenant_follow_up_counts(
        &self,
        tenant: TenantId,
    ) -> anyhow::Result<TenantFollowUpCounts> {
        let path = format!("/admin/v1/tenants/{tenant}/follow-up-counts");
        let response = self
            .http
            .get(self.endpoint(&path)?)
            .bearer_auth(self.admin_token.expose())
            .send()
            .await
            .context("follow-up-counts request failed")?;
        read_json(response, StatusCode::OK, "follow-up-counts").await
    }

    /// `GET /admin/v1/tenant-summaries`: one page of the tenants whose id or name contains
    /// `filter`, by name.
    pub async fn tenant_summaries(
        &self,
        filter: &str,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<TenantPage> {
        let mut url = self.endpoint("/admin/v1/tenant-summaries")?;
        url.query_pairs_mut()
            .append_pair("sort", "name")
            .append_pair("filter", filter)
            .append_pair("offset", &offset.to_string())
            .append_pair("limit", &limit.to_string());
        let response = self
            .http
            .get(url)
            .bearer_auth(self.admin_token.expose())
            .send()
            .await
            .context("tenant-summaries request failed")?;
        read_json(response, StatusCode::OK, "tenant-summaries").await
    }

    /// `GET /admin/v1/clock`; `None` from an engine without that endpoint, which predates
    /// virtual clocks and so runs on the system clock.
    pub async fn clock(&self) -> anyhow::Result<Option<EngineClock>> {
        let response = self
            .http
            .get(self.endpoint("/admin/v1/clock")?)
            .bearer_auth(self.admin_token.expose())
            .send()
            .await
            .context("clock request failed")?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        read_json(response, StatusCode::OK, "clock").await.map(Some)
    }

    /// `POST /admin/v1/clock/run`: dispatches under the engine's virtual clock up to `until`,
    /// for at most `max_wall` of wall time.
    pub async fn run_clock(
        &self,
        until: DateTime<Utc>,
        max_wall: Duration,
    ) -> anyhow::Result<ClockRun> {
        let body = serde_json::json!({
            "until": until,
            "max_wall_millis": u64::try_from(max_wall.as_millis()).unwrap_or(u64::MAX),
        });
        let response = self
            .http
            .post(self.endpoint("/admin/v1/clock/run")?)
            .bearer_auth(self.admin_token.expose())
            .json(&body)
            .send()
            .await
            .context("clock run request failed")?;
        read_json(response, StatusCode::OK, "clock run").await
    }

    /// `GET /admin/v1/fakes`: the base URLs of the engine's built-in fakes.
    pub(crate) async fn fake_urls(&self) -> anyhow::Result<FakeUrls> {
        let response = self
            .http
            .get(self.endpoint("/admin/v1/fakes")?)
            .bearer_auth(self.admin_token.expose())
            .send()
            .await
            .context("fakes request failed")?;
        read_json(response, StatusCode::OK, "fakes").await
    }

    fn endpoint(&self, path: &str) -> anyhow::Result<Url> {
        self.base.join(path).with_context(|| format!("failed to join {path} to {}", self.base))
    }
}

/// Reads a JSON body after checking the status, quoting the body of an unexpected status.
async fn read_json<T: DeserializeOwned>(
    response: Response,
    expected: StatusCode,
    what: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    let text = response.text().await.with_context(|| format!("{what}: failed to read body"))?;
    if status != expected {
        bail!("{what} failed with status {status}, expected {expected}: {}", quote_body(&text));
    }
    serde_json::from_str(&text)
        .with_context(|| format!("{what}: invalid response body {}", quote_body(&text)))
}

fn quote_body(text: &str) -> String {
    let cut: String = text.chars().take(MAX_QUOTED_BODY).collect();
    if cut.len() < text.len() { format!("{cut:?}…") } else { format!("{cut:?}") }
}
