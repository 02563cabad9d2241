//! Requests the console sends to the engine, and their responses.
//!
//! The [`App`](crate::App) only records what it needs as [`Request`] values; the event loop
//! runs them with the [`AdminClient`] and hands each [`Response`] back. Keeping the network out
//! of the `App` lets tests check which requests a key press issues.

use followup_core::api::{ActionOutcome, DeadLetterPage, TenantDetail, TenantPage};
use followup_core::ids::TenantId;

use crate::client::{AdminClient, FetchError};
use crate::tenants::SortKey;

/// One page of `GET /admin/v1/tenant-summaries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantQuery {
    pub sort: SortKey,
    pub filter: String,
    pub offset: u64,
    pub limit: u64,
}

/// One page of `GET /admin/v1/dead-letters`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only this tenant's dead letters, or all of them.
    pub tenant: Option<TenantId>,
    pub offset: u64,
    pub limit: u64,
}

/// An operator action, with the names the confirmation dialog shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    PauseTenant {
        tenant: TenantId,
        name: String,
    },
    ResumeTenant {
        tenant: TenantId,
        name: String,
    },
    PauseConnection {
        tenant: TenantId,
        name: String,
        provider: String,
    },
    ResumeConnection {
        tenant: TenantId,
        name: String,
        provider: String,
    },
    /// Retry the dead letters of one tenant (id and name), or of all tenants.
    RetryDeadLetters {
        tenant: Option<(TenantId, String)>,
        /// Dead letters on screen when the operator pressed the key, for the dialog. The
        /// engine retries those it has when the request arrives, which may be more.
        seen: Option<u64>,
    },
}

impl Action {
    /// Describes what the action will do, for the confirmation dialog.
    pub fn describe(&self) -> String {
        match self {
            Action::PauseTenant { name, .. } => {
                format!("Pause tenant {name}: none of its follow-ups is sent until it is resumed.")
            }
            Action::ResumeTenant { name, .. } => {
                format!("Resume tenant {name}: its due follow-ups are sent again.")
            }
            Action::PauseConnection { name, provider, .. } => format!(
                "Pause the {provider} connection of {name}: nothing is sent through it until \
                 it is resumed."
            ),
            Action::ResumeConnection { name, provider, .. } => {
                format!("Resume the {provider} connection of {name}: it sends again.")
            }
            Action::RetryDeadLetters { tenant, seen } => {
                let whose = match tenant {
                    Some((_, name)) => name.clone(),
                    None => "ALL tenants".to_owned(),
                };
                let count = seen.map_or_else(String::new, |n| format!(" ({n} on screen)"));
                format!(
                    "Retry every dead letter of {whose}{count}: they are queued to be sent again."
                )
            }
        }
    }

    /// Names the action in the past tense, for the status line after it succeeded.
    pub fn done(&self) -> String {
        match self {
            Action::PauseTenant { name, .. } => format!("paused tenant {name}"),
            Action::ResumeTenant { name, .. } => format!("resumed tenant {name}"),
            Action::PauseConnection { name, provider, .. } => {
                format!("paused the {provider} connection of {name}")
            }
            Action::ResumeConnection { name, provider, .. } => {
                format!("resumed the {provider} connection of {name}")
            }
            Action::RetryDeadLetters { tenant: Some((_, name)), .. } => {
                format!("queued the dead letters of {name} again")
            }
            Action::RetryDeadLetters { tenant: None, .. } => {
                "queued the dead letters of all tenants again".to_owned()
            }
        }
    }

    /// Names the action as a verb phrase, for the status line after it failed.
    pub fn attempted(&self) -> String {
        match self {
            Action::PauseTenant { name, .. } => format!("pause tenant {name}"),
            Action::ResumeTenant { name, .. } => format!("resume tenant {name}"),
            Action::PauseConnection { name, provider, .. } => {
                format!("pause the {provider} connection of {name}")
            }
            Action::ResumeConnection { name, provider, .. } => {
                format!("resume the {provider} connection of {name}")
            }
            Action::RetryDeadLetters { tenant: Some((_, name)), .. } => {
                format!("retry the dead letters of {name}")
            }
            Action::RetryDeadLetters { tenant: None, .. } => {
                "retry the dead letters of all tenants".to_owned()
            }
        }
    }
}

/// Something the console needs from the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    TenantPage(TenantQuery),
    TenantDetail(TenantId),
    DeadLetters(DeadLetterQuery),
    Action(Action),
}

/// The engine's response to a [`Request`], with that request.
#[derive(Debug)]
pub enum Response {
    TenantPage(TenantQuery, Result<TenantPage, FetchError>),
    TenantDetail(TenantId, Result<TenantDetail, FetchError>),
    DeadLetters(DeadLetterQuery, Result<DeadLetterPage, FetchError>),
    Action(Action, Result<ActionOutcome, FetchError>),
}

/// Sends `request` to the engine and waits for its response.
pub async fn execute(client: &AdminClient, request: Request) -> Response {
    match request {
        Request::TenantPage(query) => {
            let result = client.tenant_page(&query).await;
            Response::TenantPage(query, result)
        }
        Request::TenantDetail(tenant) => {
            Response::TenantDetail(tenant, client.tenant_detail(tenant).await)
        }
        Request::DeadLetters(query) => {
            let result = client.dead_letters(&query).await;
            Response::DeadLetters(query, result)
        }
        Request::Action(action) => {
            let result = client.act(&action).await;
            Response::Action(action, result)
        }
    }
}
