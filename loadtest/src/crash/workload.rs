//! What a crash run asks of the engine: its tenants, their connections and sequence, and the
//! uploads, each a numbered range of contacts that can be generated again byte for byte.

use std::time::Duration;

use anyhow::Context;
use followup_core::api::CreateTenantRequest;
use followup_core::domain::{Channel, LimitOverrides};
use followup_core::sensitive::Sensitive;
use futures_util::StreamExt;
use reqwest::Body;

use crate::client::{ConnectionBody, EngineClient, UploadOutcome};
use crate::scenario::{Delay, SequenceSpec, StepSpec};

/// The plan of the run's tenants, which the run's engine configuration defines.
pub(crate) const PLAN: &str = "crashtest";

/// Rows per chunk of a slowly streamed upload.
const ROWS_PER_CHUNK: u32 = 10;

/// One tenant of the run. Tenant 0 sends email through Gmail, tenant 1 through Outlook, and
/// so on alternately; every tenant sends SMS and calls through a Twilio number of its own.
#[derive(Debug)]
pub(crate) struct CrashTenant {
    pub api_key: Sensitive<String>,
    pub sequence_id: String,
}

/// Creates tenant `index` with its connections and its sequence of one step per channel.
pub(crate) async fn create_tenant(
    client: &EngineClient,
    run_tag: &str,
    index: u32,
    channels: &[Channel],
    per_minute: u32,
    per_day: u32,
) -> anyhow::Result<CrashTenant> {
    let request = CreateTenantRequest {
        name: format!("crashtest-{run_tag}-{index}"),
        default_region: Some("US".to_owned()),
        default_timezone: Some("UTC".to_owned()),
        plan: Some(PLAN.to_owned()),
    };
    let created = client.create_tenant(&request).await?;
    let api_key = Sensitive::new(created.api_key);
    let limits = LimitOverrides {
        per_minute: Some(per_minute),
        per_day: Some(per_day),
        per_local_day: None,
        max_in_flight: None,
    };
    let mailbox = ConnectionBody {
        sender: format!("crash-sender{index}@example.com"),
        // A token per tenant: the fakes map each unknown token to a mailbox of its own.
        access_token: Some(format!("crashtest-placeholder-access-token-{index}")),
        account_sid: None,
        auth_token: None,
        limits,
    };
    let twilio = ConnectionBody {
        sender: format!("+1202555{:04}", 200 + index),
        access_token: None,
        account_sid: Some(format!("AC{:032x}", 0xc0de_0000 + index)),
        auth_token: Some("crashtest-placeholder-auth-token".to_owned()),
        limits,
    };
    let context = || format!("setting up tenant {index} ({})", created.id);
    client
        .put_connection(&api_key, mailbox_provider(index), &mailbox)
        .await
        .with_context(context)?;
    client.put_connection(&api_key, "twilio", &twilio).await.with_context(context)?;
    let sequence_id =
        client.create_sequence(&api_key, &sequence(channels)).await.with_context(context)?;
    Ok(CrashTenant { api_key, sequence_id })
}

/// Returns the provider of tenant `index`'s mailbox.
pub(crate) fn mailbox_provider(index: u32) -> &'static str {
    if index.is_multiple_of(2) { "gmail" } else { "outlook" }
}

/// Builds one step per channel, all due at once, so that every channel has work from the
/// start.
fn sequence(channels: &[Channel]) -> SequenceSpec {
    let steps = channels
        .iter()
        .map(|channel| StepSpec {
            channel: *channel,
            delay: Delay::Seconds(0),
            subject: (*channel == Channel::Email).then(|| "Crash test {{first_name}}".to_owned()),
            body: "Hello {{first_name}}, this is a crash test.".to_owned(),
        })
        .collect();
    SequenceSpec { name: "crashtest".to_owned(), steps, window: None }
}

/// The format of an upload's body; uploads alternate between the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UploadFormat {
    Csv,
    Ndjson,
}

/// One upload: contacts `first..first + count` of a tenant.
#[derive(Clone, Debug)]
pub(crate) struct Upload {
    /// Position among the run's uploads, for messages.
    pub number: u32,
    pub tenant: usize,
    pub first: u32,
    pub count: u32,
    pub format: UploadFormat,
    /// Whether the engine answered an upload of it with every row accepted.
    pub acknowledged: bool,
    /// Whether an attempt at it was cut by a kill.
    pub cut_by_kill: bool,
}

impl Upload {
    pub(crate) fn contacts(&self) -> impl Iterator<Item = u32> {
        self.first..self.first + self.count
    }

    /// Sends the whole body at once and checks that every row was accepted. Returns the rows
    /// this upload created, which is fewer than its rows when an earlier, cut attempt had
    /// stored some.
    pub(crate) async fn send(
        &self,
        client: &EngineClient,
        tenant: &CrashTenant,
    ) -> anyhow::Result<u64> {
        let body = Body::from(self.body(self.first, self.count));
        self.check(
            client.upload(&tenant.api_key, &tenant.sequence_id, self.content_type(), body).await?,
        )
    }

    /// Sends the body in chunks of [`ROWS_PER_CHUNK`] rows, `pause` apart, so that a kill can
    /// land while the engine is still reading it.
    pub(crate) async fn send_slowly(
        &self,
        client: &EngineClient,
        tenant: &CrashTenant,
        pause: Duration,
    ) -> anyhow::Result<u64> {
        let chunks: Vec<Vec<u8>> = (0..self.count.div_ceil(ROWS_PER_CHUNK))
            .map(|chunk| {
                let first = self.first + chunk * ROWS_PER_CHUNK;
                let count = ROWS_PER_CHUNK.min(self.first + self.count - first);
                let mut bytes = self.body(first, count);
                if chunk > 0 && self.format == UploadFormat::Csv {
                    bytes.drain(..csv_header().len());
                }
                bytes
            })
            .collect();
        let stream = futures_util::stream::iter(chunks).then(move |chunk| async move {
            tokio::time::sleep(pause).await;
            Ok::<_, std::io::Error>(chunk)
        });
        let body = Body::wrap_stream(stream);
        self.check(
            client.upload(&tenant.api_key, &tenant.sequence_id, self.content_type(), body).await?,
        )
    }

    fn check(&self, outcome: UploadOutcome) -> anyhow::Result<u64> {
        match outcome {
            UploadOutcome::Completed(report) if report.accepted == u64::from(self.count) => {
                Ok(report.created)
            }
            UploadOutcome::Completed(report) => anyhow::bail!(
                "upload {} accepted {} of {} rows; errors: {:?}",
                self.number,
                report.accepted,
                self.count,
                report.errors
            ),
            UploadOutcome::Stopped { status, message, .. } => {
                anyhow::bail!("upload {} stopped with {status}: {message}", self.number)
            }
        }
    }

    fn content_type(&self) -> &'static str {
        match self.format {
            UploadFormat::Csv => "text/csv",
            UploadFormat::Ndjson => "application/x-ndjson",
        }
    }

    /// Builds the body of contacts `first..first + count` of this upload's tenant.
    fn body(&self, first: u32, count: u32) -> Vec<u8> {
        let mut text = String::new();
        if self.format == UploadFormat::Csv {
            text.push_str(csv_header());
        }
        for contact in first..first + count {
            let identity = ContactIdentity::new(self.tenant, contact);
            match self.format {
                UploadFormat::Csv => text.push_str(&format!(
                    "{},{},{},C{contact}\n",
                    identity.external_id, identity.email, identity.phone
                )),
                UploadFormat::Ndjson => {
                    let line = serde_json::json!({
                        "external_id": identity.external_id,
                        "email": identity.email,
                        "phone": identity.phone,
                        "first_name": format!("C{contact}"),
                    });
                    text.push_str(&format!("{line}\n"));
                }
            }
        }
        text.into_bytes()
    }
}

fn csv_header() -> &'static str {
    "external_id,email,phone,first_name\n"
}

/// The keys of one generated contact. Every contact of a run has its own address and number,
/// so that what the fakes received maps back to one follow-up per channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContactIdentity {
    pub external_id: String,
    pub email: String,
    /// E.164 in area code 415: tenant position 0 gets 415-2xx-xxxx, position 1 gets
    /// 415-3xx-xxxx and so on, of which the first 800,000 numbers are used.
    pub phone: String,
}

impl ContactIdentity {
    pub(crate) fn new(tenant: usize, contact: u32) -> Self {
        let number = 2_000_000 + (tenant as u64 % 8) * 1_000_000 + u64::from(contact % 800_000);
        Self {
            external_id: format!("t{tenant}-c{contact}"),
            email: format!("t{tenant}.c{contact}@example.com"),
            phone: format!("+1415{number:07}"),
        }
    }
}
