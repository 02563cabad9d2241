//! Published sending limits of each provider, the defaults of every connection.
//!
//! Sources, as read in late 2026:
//! - Gmail: 6,000 quota units per minute per user for projects created from 2026-05-01, and
//!   `messages.send` costs 100 units, so 60 sends a minute; Google Workspace mailboxes may send
//!   2,000 messages per rolling 24 hours.
//! - Outlook (Exchange Online): 30 messages per minute and 10,000 recipients per rolling
//!   24 hours per mailbox; one recipient per follow-up, so 10,000 messages.
//! - Twilio: a US long code sends 1 message segment per second; outbound calls leave at
//!   1 call per second per account. Twilio sets no daily cap on a long code.

use serde::{Deserialize, Serialize};

use crate::domain::{Channel, LimitOverrides, Provider};

/// How many sends one connection may make on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendLimits {
    /// Sends per minute, spread evenly: one every `60 / per_minute` seconds.
    pub per_minute: u32,
    /// Sends per rolling 24 hours.
    pub per_day: u32,
}

impl SendLimits {
    /// The provider's published limits for `channel`.
    pub fn published(provider: Provider, channel: Channel) -> Self {
        match (provider, channel) {
            (Provider::Gmail, _) => Self { per_minute: 60, per_day: 2_000 },
            (Provider::Outlook, _) => Self { per_minute: 30, per_day: 10_000 },
            (Provider::Twilio, Channel::Call) => Self { per_minute: 60, per_day: u32::MAX },
            (Provider::Twilio, _) => Self { per_minute: 60, per_day: u32::MAX },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_published_limits() {
        let published = SendLimits::published(Provider::Gmail, Channel::Email);
        assert_eq!(published, SendLimits { per_minute: 60, per_day: 2_000 });
        let overridden =
            published.with_overrides(&LimitOverrides { per_minute: Some(600), per_day: Some(0) });
        assert_eq!(overridden, SendLimits { per_minute: 600, per_day: 2_000 });
    }
}
