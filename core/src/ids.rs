//! Typed identifiers, so that a tenant id can never be passed where a contact id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Creates a new random, time-ordered id (UUID v7).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Returns the 16 bytes of the id, in an order that sorts like the id.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// One customer account of the service.
    TenantId
);
uuid_id!(
    /// One sending identity of a tenant: a mailbox or a phone number.
    ConnectionId
);
uuid_id!(
    /// One person a tenant follows up with. Derived from the contact's key under the tenant's
    /// record id key (`crypto::RecordIdKey`), so the same person uploaded twice gets the same
    /// id and the id does not reveal the person.
    ContactId
);
uuid_id!(
    /// One deletion of a tenant's account.
    DeletionId
);
uuid_id!(
    /// One sequence of steps.
    SequenceId
);
uuid_id!(
    /// One contact enrolled in one sequence. Derived from the sequence and the contact's key
    /// under the tenant's record id key, which makes bulk ingest idempotent.
    ScheduleId
);

/// One follow-up: the step with index `step` of one schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FollowUpId {
    pub schedule: ScheduleId,
    pub step: u16,
}

impl fmt::Display for FollowUpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schedule, self.step)
    }
}

/// Error for a follow-up id that is not `<schedule uuid>.<step>`.
#[derive(Debug, thiserror::Error)]
#[error("invalid follow-up id {0:?}: expected <schedule id>.<step number>")]
pub struct InvalidFollowUpId(String);

impl FromStr for FollowUpId {
    type Err = InvalidFollowUpId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidFollowUpId(s.to_owned());
        let (schedule, step) = s.rsplit_once('.').ok_or_else(invalid)?;
        Ok(Self {
            schedule: schedule.parse().map_err(|_| invalid())?,
            step: step.parse().map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_up_id_round_trips() {
        let id = FollowUpId { schedule: ScheduleId::generate(), step: 2 };
        assert_eq!(id.to_string().parse::<FollowUpId>().ok(), Some(id));
        assert!("nonsense".parse::<FollowUpId>().is_err());
    }
}
