//! The records of the engine: tenants, connections, contacts, sequences, schedules,
//! follow-ups and attempts.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::ids::{
    ConnectionId, ContactId, DeletionId, FollowUpId, ScheduleId, SequenceId, TenantId,
};
use crate::limits::AccountKind;
use crate::sensitive::Sensitive;

/// One customer account of the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// ISO 3166-1 alpha-2 region used to read phone numbers written without a country code.
    pub default_region: String,
    /// IANA timezone of contacts whose row names none.
    pub default_timezone: String,
    /// Name of the billing plan, a key of the configured plans.
    pub plan: String,
    /// SHA-256 of the tenant's API key, lowercase hex. The key itself is never stored.
    pub api_key_sha256: String,
    pub created_at: DateTime<Utc>,
    /// Whether a suppressed address stops only its own channel or every channel of a contact
    /// that has it.
    #[serde(default)]
    pub suppression_scope: crate::suppression::SuppressionScope,
    /// Set while an operator has paused the whole tenant: its rounds send nothing.
    #[serde(default)]
    pub paused: Option<TenantPause>,
}

/// An operator's pause of a whole tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPause {
    /// Name of the operator credential that paused it.
    pub by: String,
    pub since: DateTime<Utc>,
}

/// The provider behind a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Gmail,
    Outlook,
    Twilio,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Gmail, Provider::Outlook, Provider::Twilio];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Gmail => "gmail",
            Provider::Outlook => "outlook",
            Provider::Twilio => "twilio",
        }
    }

    /// Returns whether this provider carries `channel`.
    pub fn carries(self, channel: Channel) -> bool {
        match self {
            Provider::Gmail | Provider::Outlook => channel == Channel::Email,
            Provider::Twilio => matches!(channel, Channel::Sms | Channel::Call),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gmail" => Ok(Provider::Gmail),
            "outlook" => Ok(Provider::Outlook),
            "twilio" => Ok(Provider::Twilio),
            other => Err(format!("unknown provider {other:?}: expected gmail, outlook or twilio")),
        }
    }
}

/// The way a follow-up reaches its contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Call,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Call];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Call => "call",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Credentials of a connection. Every secret is wrapped in [`Sensitive`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    /// OAuth tokens of a Gmail or Outlook mailbox.
    OAuth {
        access_token: Sensitive<String>,
        refresh_token: Option<Sensitive<String>>,
        /// When the access token expires; unknown when `None`, and then it is refreshed only
        /// after the provider refuses it.
        expires_at: Option<DateTime<Utc>>,
        /// The Microsoft tenant whose token endpoint refreshes an Outlook grant (`common`,
        /// `organizations`, `consumers`, or a tenant id or domain); `common` when `None`.
        #[serde(default)]
        microsoft_tenant: Option<String>,
    },
    /// Twilio account credentials: the Account SID and its auth token.
    Twilio { account_sid: String, auth_token: Sensitive<String> },
}

/// Sending limits of one connection; each `None` takes the provider's published default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Sends per minute.
    pub per_minute: Option<u32>,
    /// Sends per rolling 24 hours.
    pub per_day: Option<u32>,
    /// The tenant's own cap per calendar day in the connection's timezone; none by default.
    #[serde(default)]
    pub per_local_day: Option<u32>,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

/// One sending identity of a tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant: TenantId,
    pub provider: Provider,
    /// The mailbox address (Gmail, Outlook) or the E.164 number (Twilio) sends come from.
    pub sender: String,
    pub credentials: Credentials,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// The kind of account, which decides the published limits; the provider's most common
    /// kind when `None`.
    #[serde(default)]
    pub account_kind: Option<AccountKind>,
    /// IANA timezone of the mailbox or number, whose midnight resets a per-local-day cap; UTC
    /// when `None`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Reason sending through this connection is paused, if it is.
    #[serde(default)]
    pub paused_reason: Option<String>,
}

impl Connection {
    pub fn account_kind(&self) -> AccountKind {
        self.account_kind.unwrap_or_else(|| AccountKind::default_for(self.provider))
    }

    /// Returns the connection's timezone. A name that does not parse (the API checks names, so only a
    /// hand-edited record has one) counts as UTC.
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone.as_deref().and_then(|name| name.parse().ok()).unwrap_or(chrono_tz::UTC)
    }
}

/// A person a tenant follows up with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: ContactId,
    pub tenant: TenantId,
    /// The tenant's own id for the contact, if the upload had one.
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    /// Normalised email address.
    pub email: Option<String>,
    /// Phone number in E.164.
    pub phone: Option<String>,
    /// IANA timezone name.
    pub timezone: String,
    /// Columns of the upload that map to no contact field, usable in templates.
    pub custom: BTreeMap<String, String>,
}

impl Contact {
    /// Looks up a template field: a contact field by its canonical name, else a custom field.
    pub fn field(&self, name: &str) -> Option<&str> {
        let value = match name {
            "external_id" => self.external_id.as_deref(),
            "first_name" => self.first_name.as_deref(),
            "last_name" => self.last_name.as_deref(),
            "full_name" | "name" => self.full_name.as_deref(),
            "email" => self.email.as_deref(),
            "phone" => self.phone.as_deref(),
            "timezone" => Some(self.timezone.as_str()),
            // Upload columns are stored under lowercase keys, so `{{Company}}` finds the
            // `Company` column too.
            other => self
                .custom
                .get(other)
                .or_else(|| self.custom.get(&other.to_lowercase()))
                .map(String::as_str),
        };
        value.filter(|v| !v.is_empty())
    }

    /// Returns the key ingest derived the contact's id and schedule ids from: the external id,
    /// else the email address in lowercase, else the phone number.
    pub fn identity_key(&self) -> Option<String> {
        self.external_id
            .clone()
            .or_else(|| self.email.as_ref().map(|email| email.to_lowercase()))
            .or_else(|| self.phone.clone())
    }

    /// Returns the address this contact is reached at on `channel`, if it has one.
    pub fn address(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms | Channel::Call => self.phone.as_deref(),
        }
    }

    /// Returns the reason a follow-up on `channel` is skipped when the contact has no address
    /// for it.
    pub fn missing_address_reason(channel: Channel) -> String {
        let address = if channel == Channel::Email { "email address" } else { "phone number" };
        format!("contact has no {address}")
    }
}

/// The days and local hours in which a sequence may send, read in the contact's timezone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendWindow {
    pub weekdays: Vec<Weekday>,
    /// First local time of day at which a send may go out.
    pub start: NaiveTime,
    /// Local time of day at which sending stops (exclusive).
    pub end: NaiveTime,
}

impl SendWindow {
    /// Returns a window open every day, every hour.
    pub fn always() -> Self {
        Self {
            weekdays: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ],
            start: NaiveTime::MIN,
            end: NaiveTime::MIN,
        }
    }
}

/// One step of a sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub channel: Channel,
    /// Time after the previous step (or after the schedule's start, for the first step), in
    /// seconds.
    pub delay_seconds: u64,
    /// Subject template; used by email only.
    #[serde(default)]
    pub subject: Option<String>,
    /// Body template: the email body, the SMS text, or the words spoken on the call.
    pub body: String,
    /// Template of an HTML alternative of an email body, sent beside the plain text.
    #[serde(default)]
    pub html_body: Option<String>,
    /// How late past its planned instant the step may still go out, in seconds; past it (after
    /// an outage or a pause) the sequence's [`StalePolicy`] applies. No limit when `None`.
    #[serde(default)]
    pub max_lateness_seconds: Option<u64>,
}

/// What happens to a follow-up found later than its step's maximum lateness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicy {
    /// Plan it again from now into the next opening of the send window, and the later steps
    /// of its schedule from it, as the plan would have.
    #[default]
    Replan,
    /// Skip it; the later steps keep their plan.
    Skip,
}

/// An ordered list of steps that schedules enroll contacts in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    pub id: SequenceId,
    pub tenant: TenantId,
    pub name: String,
    pub steps: Vec<Step>,
    pub window: SendWindow,
    /// Template of each recipient's HTTPS unsubscribe URL, such as
    /// `https://example.com/unsubscribe?id={{external_id}}`. Emails carry it in the
    /// List-Unsubscribe headers (RFC 8058 one-click); field values are percent-encoded.
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    /// What happens to a follow-up later than its step's maximum lateness.
    #[serde(default)]
    pub stale_policy: StalePolicy,
    pub created_at: DateTime<Utc>,
}

/// One contact enrolled in one sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: ScheduleId,
    pub tenant: TenantId,
    pub sequence: SequenceId,
    pub contact: ContactId,
    /// Instant from which the first step's delay counts.
    pub start_at: DateTime<Utc>,
    /// Line of the upload the schedule came from, for messages about it.
    pub source_line: u64,
    pub created_at: DateTime<Utc>,
}

/// Stage of a follow-up's life. A follow-up moves
/// pending -> claimed -> sending -> sent | retry | failed | dead | skipped | cancelled,
/// and to in-doubt when the engine stopped after a request left and before its response was
/// stored. A follow-up over its plan's quota under a plan that holds is held, and returns to
/// pending in a new billing period or after an upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpState {
    /// Waiting for its due instant.
    Pending,
    /// Taken by a tenant actor for dispatch; nothing has left yet. Returns to pending after a
    /// restart.
    Claimed,
    /// Its request may have left for the provider.
    Sending,
    /// The provider accepted it.
    Sent,
    /// A retryable error; due again at `due_at`.
    Retry,
    /// The provider rejected it for good.
    Failed,
    /// Its retry budget ran out.
    Dead,
    /// Not sent on purpose, for the reason recorded.
    Skipped,
    /// Cancelled before it was sent.
    Cancelled,
    /// A request may or may not have reached the provider before a crash.
    InDoubt,
    /// Over the plan's quota, waiting for a new billing period or a larger plan. Not due: the
    /// tenant actor returns it to pending when either comes.
    Held,
}

impl FollowUpState {
    pub const ALL: [FollowUpState; 11] = [
        FollowUpState::Pending,
        FollowUpState::Claimed,
        FollowUpState::Sending,
        FollowUpState::Sent,
        FollowUpState::Retry,
        FollowUpState::Failed,
        FollowUpState::Dead,
        FollowUpState::Skipped,
        FollowUpState::Cancelled,
        FollowUpState::InDoubt,
        FollowUpState::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FollowUpState::Pending => "pending",
            FollowUpState::Claimed => "claimed",
            FollowUpState::Sending => "sending",
            FollowUpState::Sent => "sent",
            FollowUpState::Retry => "retry",
            FollowUpState::Failed => "failed",
            FollowUpState::Dead => "dead",
            FollowUpState::Skipped => "skipped",
            FollowUpState::Cancelled => "cancelled",
            FollowUpState::InDoubt => "in_doubt",
            FollowUpState::Held => "held",
        }
    }

    /// Returns whether the follow-up waits to be dispatched at its due instant.
    pub fn is_due_kind(self) -> bool {
        matches!(self, FollowUpState::Pending | FollowUpState::Retry)
    }

    /// Returns whether the follow-up has reached an end state.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            FollowUpState::Sent
                | FollowUpState::Failed
                | FollowUpState::Dead
                | FollowUpState::Skipped
                | FollowUpState::Cancelled
                | FollowUpState::InDoubt
        )
    }
}

impl fmt::Display for FollowUpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One due send produced by a step of a schedule: the unit of dispatch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    pub id: FollowUpId,
    pub tenant: TenantId,
    pub sequence: SequenceId,
    pub contact: ContactId,
    pub channel: Channel,
    pub state: FollowUpState,
    /// When it should go out (or, in state retry, go out again).
    pub due_at: DateTime<Utc>,
    /// The due instant the plan gave it, before any retry or throttling moved it.
    pub planned_at: DateTime<Utc>,
    /// Number of attempts made so far.
    pub attempts: u32,
    /// Value of `attempts` when an operator last retried it after it went dead: the retry
    /// budget counts the attempts after it. Attempt numbers go on from `attempts`, so the
    /// earlier attempts keep their records.
    #[serde(default)]
    pub attempts_before_retry: u32,
    /// Reason it ended as it did, or the last attempt's failure.
    pub reason: Option<String>,
    /// The provider's id of the sent message or call.
    pub provider_message_id: Option<String>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl FollowUp {
    /// Returns the attempts that count against the retry budget: those since the operator's
    /// last retry of the dead letter, or all of them.
    pub fn budgeted_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.attempts_before_retry)
    }

    /// Creates step `step` of `schedule`, pending and due at `due_at`, written at `now`.
    pub fn pending(
        schedule: &Schedule,
        step: u16,
        channel: Channel,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: FollowUpId { schedule: schedule.id, step },
            tenant: schedule.tenant,
            sequence: schedule.sequence,
            contact: schedule.contact,
            channel,
            state: FollowUpState::Pending,
            due_at,
            planned_at: due_at,
            attempts: 0,
            attempts_before_retry: 0,
            reason: None,
            provider_message_id: None,
            sent_at: None,
            updated_at: now,
        }
    }
}

/// One try at handing a follow-up to a provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub follow_up: FollowUpId,
    /// 1 for the first attempt.
    pub number: u32,
    pub provider: Provider,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The state the attempt left the follow-up in.
    pub result: FollowUpState,
    pub detail: Option<String>,
    /// The message as rendered for the contact, on an attempt that sent it or may have; kept
    /// for `retention.sent_message_days` and then removed by the retention sweep.
    #[serde(default)]
    pub message: Option<SentMessage>,
}

/// The texts of a message that went out: what the tenant and its support see of it later.
/// The HTML alternative of an email is left out to keep the record small.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Email subject; `None` for SMS and calls.
    pub subject: Option<String>,
    /// Email body (plain text), SMS text, or the words the call spoke.
    pub body: String,
}

/// Record of a tenant's deletion. It outlives the tenant's data, so it contains no personal
/// data: ids, the plan and instants only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantDeletion {
    pub id: DeletionId,
    pub tenant: TenantId,
    /// The tenant's billing plan when it was deleted.
    pub plan: String,
    pub requested_at: DateTime<Utc>,
    /// Records purged so far.
    pub records_purged: u64,
    /// When the last record was purged; `None` while the purge runs.
    pub completed_at: Option<DateTime<Utc>>,
}

/// What a deleted tenant was billed on, kept after its data is purged. No personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BillingRecord {
    pub tenant: TenantId,
    pub plan: String,
    /// Follow-ups sent per calendar month (`YYYY-MM`, UTC) and channel.
    pub sends: BTreeMap<String, BTreeMap<Channel, u64>>,
    pub deleted_at: DateTime<Utc>,
}
