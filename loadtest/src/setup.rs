//! Creation of the run's tenants, each with a Gmail and a Twilio connection and a sequence.

use anyhow::Context;
use followup_core::api::CreateTenantRequest;
use followup_core::ids::TenantId;
use followup_core::sensitive::Sensitive;
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::time::Instant;

use crate::client::{ConnectionBody, EngineClient};
use crate::progress::{PROGRESS_INTERVAL, Progress};
use crate::scenario::{Scenario, SequenceSpec};

/// One tenant created for the run.
#[derive(Debug)]
pub(crate) struct LoadTenant {
    /// Position among the run's tenants; seeds its contacts.
    pub index: u32,
    pub id: TenantId,
    pub api_key: Sensitive<String>,
    pub sequence_id: String,
}

/// Creates the scenario's tenants, `concurrency` at a time. Names carry `run_tag`, so that
/// tenants of different runs on one engine stay apart.
pub(crate) async fn create_tenants(
    client: &EngineClient,
    scenario: &Scenario,
    run_tag: &str,
    show_progress: bool,
) -> anyhow::Result<Vec<LoadTenant>> {
    let total = scenario.tenants;
    let progress = Progress::start("setup", "tenants", u64::from(total), show_progress);
    let mut created = stream::iter(0..total)
        .map(|index| create_tenant(client, scenario, run_tag, index))
        .buffer_unordered(scenario.concurrency);
    let mut tenants = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut last_line = Instant::now();
    while let Some(tenant) = created.try_next().await? {
        tenants.push(tenant);
        // A backlog of 100,000 tenants takes minutes to set up.
        if last_line.elapsed() >= PROGRESS_INTERVAL {
            progress.print(tenants.len() as u64);
            last_line = Instant::now();
        }
    }
    progress.print(tenants.len() as u64);
    tenants.sort_by_key(|tenant| tenant.index);
    Ok(tenants)
}

/// The start of the names of a run's tenants, which finds them among an engine's others.
pub(crate) fn tenant_name_prefix(scenario: &Scenario, run_tag: &str) -> String {
    format!("loadtest-{}-{run_tag}-", scenario.name)
}

async fn create_tenant(
    client: &EngineClient,
    scenario: &Scenario,
    run_tag: &str,
    index: u32,
) -> anyhow::Result<LoadTenant> {
    let request = CreateTenantRequest {
        name: format!("{}{index}", tenant_name_prefix(scenario, run_tag)),
        default_region: Some("US".to_owned()),
        default_timezone: Some("UTC".to_owned()),
        plan: Some(scenario.plan.clone()),
    };
    let created = client.create_tenant(&request).await?;
    let api_key = Sensitive::new(created.api_key);
    let context = || format!("setting up tenant {index} ({})", created.id);

    for (provider, body) in connection_bodies(scenario, index) {
        client.put_connection(&api_key, provider, &body).await.with_context(context)?;
    }
    let sequence = with_receipt_refs(&scenario.sequence, run_tag);
    let sequence_id = client.create_sequence(&api_key, &sequence).await.with_context(context)?;
    Ok(LoadTenant { index, id: created.id, api_key, sequence_id })
}

/// Ends every step's body with a reference line, `ref RUN_TAG/EXTERNAL_ID-sSTEP`, so that what
/// the fakes received can be matched one to one with the follow-ups the uploads created. The
/// run tag keeps apart the receipts of two runs with the same seed against the same fakes.
pub(crate) fn with_receipt_refs(sequence: &SequenceSpec, run_tag: &str) -> SequenceSpec {
    let mut sequence = sequence.clone();
    for (index, step) in sequence.steps.iter_mut().enumerate() {
        step.body = format!("{}\n{REF_PREFIX}{run_tag}/{{{{external_id}}}}-s{index}", step.body);
    }
    sequence
}

/// What starts the reference line of every message the harness has the engine send.
pub(crate) const REF_PREFIX: &str = "ref ";

/// Builds the two connection bodies of tenant `index`. The credentials are placeholders that only the
/// engine's built-in fake providers accept; senders use reserved, unroutable addresses.
fn connection_bodies(scenario: &Scenario, index: u32) -> [(&'static str, ConnectionBody); 2] {
    let gmail = ConnectionBody {
        sender: format!("sender{index}@example.com"),
        // One token per tenant: fakes with open accounts give each token a mailbox of its own,
        // so each tenant's limits are checked on its own mailbox.
        access_token: Some(format!("loadtest-placeholder-access-token-{index}")),
        account_sid: None,
        auth_token: None,
        limits: scenario.connections.gmail.into(),
    };
    let twilio = ConnectionBody {
        sender: format!("+1202555{:04}", 100 + index % 100),
        access_token: None,
        account_sid: Some(format!("AC{index:032x}")),
        auth_token: Some("loadtest-placeholder-auth-token".to_owned()),
        limits: scenario.connections.twilio.into(),
    };
    [("gmail", gmail), ("twilio", twilio)]
}
