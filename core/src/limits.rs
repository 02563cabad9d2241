//! Published sending limits of each provider by account kind, the defaults of every connection.
//!
//! Sources, as read in late 2026:
//! - Gmail: 6,000 quota units per minute per user for Cloud projects created from 2026-05-01
//!   (15,000 for projects that used the Gmail API before). `messages.send` costs 100 units,
//!   so a mailbox may send 60 a minute, or 150 on an older project (set a per-minute
//!   override). Google Workspace mailboxes may send 2,000 messages per rolling 24 hours,
//!   trial Workspace accounts 500. Google publishes no firm number for consumer @gmail.com accounts; 500 a day is a
//!   cautious estimate, not a published figure.
//! - Outlook (Exchange Online): 30 messages per minute and 10,000 recipients per rolling 24
//!   hours per mailbox. A follow-up has one recipient, so that is 10,000 messages. Graph
//!   allows at most 4 concurrent requests per mailbox.
//! - Twilio: message segments per second per sender by number type: a US long code 1, a
//!   toll-free number 3, a short code 100. Outbound calls leave at 1 call per second per
//!   account. Twilio sets no daily cap on these numbers.
//!
//! Concurrency limits of Gmail and Twilio are not published as figures; the defaults here are
//! our own conservative choices.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::{Channel, Connection, LimitOverrides, Provider};

/// How many sends one connection may make on one channel, as the provider counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendLimits {
    /// Sends per minute, spread evenly: one every `60 / per_minute` seconds.
    pub per_minute: u32,
    /// Sends per rolling 24 hours.
    pub per_day: u32,
}

/// The kind of account behind a connection, which decides its published limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A paid Google Workspace mailbox.
    GoogleWorkspace,
    /// A Google Workspace mailbox during its trial.
    GoogleWorkspaceTrial,
    /// A consumer @gmail.com account.
    GmailConsumer,
    /// An Exchange Online (Microsoft 365) mailbox.
    ExchangeOnline,
    /// A US long code (classic 10-digit number).
    TwilioLongCode,
    /// A US toll-free number.
    TwilioTollFree,
    /// A short code.
    TwilioShortCode,
}

impl AccountKind {
    pub const ALL: [AccountKind; 7] = [
        AccountKind::GoogleWorkspace,
        AccountKind::GoogleWorkspaceTrial,
        AccountKind::GmailConsumer,
        AccountKind::ExchangeOnline,
        AccountKind::TwilioLongCode,
        AccountKind::TwilioTollFree,
        AccountKind::TwilioShortCode,
    ];

    /// Returns the kind a connection of `provider` has when the tenant names none.
    pub fn default_for(provider: Provider) -> Self {
        match provider {
            Provider::Gmail => AccountKind::GoogleWorkspace,
            Provider::Outlook => AccountKind::ExchangeOnline,
            Provider::Twilio => AccountKind::TwilioLongCode,
        }
    }

    /// Returns the provider that accounts of this kind belong to.
    pub fn provider(self) -> Provider {
        match self {
            AccountKind::GoogleWorkspace
            | AccountKind::GoogleWorkspaceTrial
            | AccountKind::GmailConsumer => Provider::Gmail,
            AccountKind::ExchangeOnline => Provider::Outlook,
            AccountKind::TwilioLongCode
            | AccountKind::TwilioTollFree
            | AccountKind::TwilioShortCode => Provider::Twilio,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::GoogleWorkspace => "google_workspace",
            AccountKind::GoogleWorkspaceTrial => "google_workspace_trial",
            AccountKind::GmailConsumer => "gmail_consumer",
            AccountKind::ExchangeOnline => "exchange_online",
            AccountKind::TwilioLongCode => "twilio_long_code",
            AccountKind::TwilioTollFree => "twilio_toll_free",
            AccountKind::TwilioShortCode => "twilio_short_code",
        }
    }

    /// Returns the published limits of an account of this kind on `channel`.
    pub fn published(self, channel: Channel) -> SendLimits {
        const NO_DAILY_CAP: u32 = u32::MAX;
        match (self, channel) {
            (AccountKind::GoogleWorkspace, _) => SendLimits { per_minute: 60, per_day: 2_000 },
            (AccountKind::GoogleWorkspaceTrial | AccountKind::GmailConsumer, _) => {
                SendLimits { per_minute: 60, per_day: 500 }
            }
            (AccountKind::ExchangeOnline, _) => SendLimits { per_minute: 30, per_day: 10_000 },
            // Calls leave at one per second per account, whatever the number type.
            (_, Channel::Call) => SendLimits { per_minute: 60, per_day: NO_DAILY_CAP },
            (AccountKind::TwilioLongCode, _) => {
                SendLimits { per_minute: 60, per_day: NO_DAILY_CAP }
            }
            (AccountKind::TwilioTollFree, _) => {
                SendLimits { per_minute: 180, per_day: NO_DAILY_CAP }
            }
            (AccountKind::TwilioShortCode, _) => {
                SendLimits { per_minute: 6_000, per_day: NO_DAILY_CAP }
            }
        }
    }

    /// Returns the maximum requests in flight an override may set: Graph's four per mailbox
    /// for Outlook, and no published bound for the others.
    pub fn max_in_flight_allowed(self) -> u32 {
        match self.provider() {
            Provider::Outlook => 4,
            Provider::Gmail | Provider::Twilio => u32::MAX,
        }
    }

    /// Requests one connection of this kind may have in flight at once.
    pub fn max_in_flight(self) -> u32 {
        match self.provider() {
            // Graph rejects a fifth concurrent request on a mailbox with MailboxConcurrency.
            Provider::Outlook => 4,
            Provider::Gmail | Provider::Twilio => 8,
        }
    }
}

impl std::fmt::Display for AccountKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SendLimits {
    /// The published limits of `provider`'s default account kind on `channel`.
    pub fn published(provider: Provider, channel: Channel) -> Self {
        AccountKind::default_for(provider).published(channel)
    }

    /// These limits with a connection's overrides applied. Zero overrides are ignored,
    /// because a limit of zero would stop the connection for good.
    pub fn with_overrides(self, overrides: &LimitOverrides) -> Self {
        Self {
            per_minute: overrides.per_minute.filter(|&n| n > 0).unwrap_or(self.per_minute),
            per_day: overrides.per_day.filter(|&n| n > 0).unwrap_or(self.per_day),
        }
    }
}

/// Every limit the engine keeps for one connection on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionLimits {
    /// The provider's own limits, with the tenant's overrides.
    #[serde(flatten)]
    pub send: SendLimits,
    /// The tenant's own cap per calendar day in the mailbox's timezone, if it set one (to warm
    /// up a new mailbox, say). It resets at local midnight, unlike the provider's rolling day.
    pub per_local_day: Option<u32>,
    /// The timezone whose midnight resets `per_local_day`.
    #[serde(serialize_with = "serialize_timezone")]
    pub timezone: Tz,
    /// Requests in flight at once.
    pub max_in_flight: u32,
}

impl ConnectionLimits {
    /// Returns the limits in force for `connection` on `channel`.
    pub fn of(connection: &Connection, channel: Channel) -> Self {
        let kind = connection.account_kind();
        let overrides = &connection.limits;
        Self {
            send: kind.published(channel).with_overrides(overrides),
            per_local_day: overrides.per_local_day.filter(|&n| n > 0),
            timezone: connection.timezone(),
            max_in_flight: overrides
                .max_in_flight
                .filter(|&n| n > 0)
                .map_or_else(|| kind.max_in_flight(), |n| n.min(kind.max_in_flight_allowed())),
        }
    }
}

fn serialize_timezone<S: serde::Serializer>(
    timezone: &Tz,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(timezone.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_published_limits() {
        let published = SendLimits::published(Provider::Gmail, Channel::Email);
        assert_eq!(published, SendLimits { per_minute: 60, per_day: 2_000 });
        let overrides =
            LimitOverrides { per_minute: Some(600), per_day: Some(0), ..LimitOverrides::default() };
        let overridden = published.with_overrides(&overrides);
        assert_eq!(overridden, SendLimits { per_minute: 600, per_day: 2_000 });
    }

    #[test]
    fn account_kinds_carry_their_published_limits() {
        let trial = AccountKind::GoogleWorkspaceTrial.published(Channel::Email);
        assert_eq!(trial.per_day, 500);
        let toll_free = AccountKind::TwilioTollFree.published(Channel::Sms);
        assert_eq!(toll_free.per_minute, 180, "3 segments a second");
        let short_code_calls = AccountKind::TwilioShortCode.published(Channel::Call);
        assert_eq!(short_code_calls.per_minute, 60, "calls are per account, 1 a second");
        assert_eq!(AccountKind::ExchangeOnline.max_in_flight(), 4);
        for kind in AccountKind::ALL {
            assert_eq!(AccountKind::default_for(kind.provider()).provider(), kind.provider());
        }
    }
}
