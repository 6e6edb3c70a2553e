//! The states of captures, operations, uploads and transfers, as Rust enums.
//!
//! Each is stored as its name in a TEXT column that a CHECK constraint limits to these names
//! (migration `2026-12-01-000001_lifecycle_states`). A new state is a new variant here, in that
//! constraint (a new migration), and in the transitions of [`crate::lifecycle`] that enter and
//! leave it.

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// Declares a state enum stored as TEXT: its names are the variants' names.
macro_rules! text_state {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and ARM wire) name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $(stringify!($variant) => Ok($name::$variant),)+
                    _ => Err(UnknownState { kind: stringify!($name), value: s.to_string() }),
                }
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                let s = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
                Ok(s.parse::<$name>()?)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

/// A stored state name that no enum variant has (a row written by a newer version, or by hand).
#[derive(Debug, thiserror::Error)]
#[error("'{value}' is not a {kind}")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

text_state! {
    /// `packetCaptureStatus`: what the capture is doing on its machine.
    CaptureStatus {
        /// Created; no agent has started it yet.
        NotStarted,
        /// An agent captures.
        Running,
        /// Ended normally (see [`StopReason`]).
        Stopped,
        /// Ended by a failure (see the capture's errors).
        Error,
    }
}

impl CaptureStatus {
    /// Still to be run or running: an agent acts on it.
    pub fn is_active(self) -> bool {
        matches!(self, CaptureStatus::NotStarted | CaptureStatus::Running)
    }
}

text_state! {
    /// `provisioningState` of a capture or a network watcher. A capture stores `Updating`,
    /// `Succeeded`, `Failed` or `Canceled` (it shows `Deleting` while its `deleting` flag is
    /// set); a watcher stores `Succeeded` or `Deleting`.
    ProvisioningState {
        /// The create operation runs: no agent has started the capture yet.
        Updating,
        Succeeded,
        Failed,
        /// Stopped or deleted before it started.
        Canceled,
        Deleting,
    }
}

text_state! {
    /// `stopReason`: why a capture stopped.
    StopReason {
        TimeExceeded,
        TotalBytesExceeded,
        StoppedByUser,
        AgentStopped,
        CaptureError,
        /// `continuousCapture: false`: the last of `captureSettings.fileCount` files is full.
        FileCountReached,
    }
}

impl From<agent_protocol::StopReason> for StopReason {
    fn from(r: agent_protocol::StopReason) -> Self {
        use agent_protocol::StopReason as P;
        match r {
            P::TimeExceeded => StopReason::TimeExceeded,
            P::TotalBytesExceeded => StopReason::TotalBytesExceeded,
            P::StoppedByUser => StopReason::StoppedByUser,
            P::AgentStopped => StopReason::AgentStopped,
            P::CaptureError => StopReason::CaptureError,
            P::FileCountReached => StopReason::FileCountReached,
        }
    }
}

text_state! {
    /// The upload of a capture that has a storage account.
    UploadState {
        /// The file is still to be uploaded (or is being uploaded) by the agent.
        Pending,
        /// The blob was verified (size and MD5).
        Uploaded,
        /// The agent gave up; the file is kept on the machine.
        Failed,
    }
}

text_state! {
    /// What a long-running operation does.
    OperationKind {
        CreateCapture,
        StopCapture,
        DeleteCapture,
        DeleteWatcher,
    }
}

text_state! {
    /// The status of a long-running operation (ARM's values).
    OperationStatus {
        InProgress,
        Succeeded,
        Failed,
        Canceled,
    }
}

impl OperationStatus {
    pub fn is_done(self) -> bool {
        self != OperationStatus::InProgress
    }
}

text_state! {
    /// A capture file on its way from an agent to a downloading caller.
    TransferState {
        /// Waiting for the agent to start sending.
        Requested,
        Sending,
        Done,
        Failed,
    }
}

text_state! {
    /// Which alerting system delivered an alert to a capture trigger.
    AlertSource {
        /// Prometheus Alertmanager's webhook receiver (version 4).
        Alertmanager,
        /// An Azure Monitor action group webhook (common alert schema).
        AzureMonitor,
    }
}

text_state! {
    /// Whether an alert fired or resolved (Alertmanager `firing`/`resolved`; Azure Monitor's
    /// `monitorCondition`).
    AlertCondition {
        Fired,
        Resolved,
    }
}

text_state! {
    /// What an alert did on a capture trigger (`recentEvents[].outcome`).
    TriggerOutcome {
        /// A packet capture was created on the machine.
        CaptureCreated,
        /// The capture this alert created was stopped (it resolved, with `stopWhenResolved`).
        CaptureStopped,
        /// Nothing was done; `reason` says why.
        Skipped,
    }
}

text_state! {
    /// Why an alert created no capture, or stopped none (`recentEvents[].reason`).
    SkipReason {
        /// The machine is not in the trigger's `machines.scopes`.
        OutsideScope,
        /// The trigger captured this machine less than `cooldownInSeconds` ago.
        Cooldown,
        /// `maxConcurrentCaptures` captures of the trigger are running.
        ConcurrencyLimit,
        /// A capture of the trigger is running on the machine.
        AlreadyCapturing,
        /// No agent is registered (or connected) for the machine.
        MachineNotRegistered,
        /// The machine is registered in another region than the trigger's network watcher.
        OtherRegion,
        /// The alert names no machine (no label, no target id).
        NoMachineInAlert,
        /// The trigger is disabled.
        TriggerDisabled,
        /// The template's storage account is no longer registered (or is premium).
        StorageAccountNotFound,
        /// The alert resolved, and the trigger does not stop captures then.
        StopNotRequested,
        /// The alert resolved, but no capture of it runs.
        NoRunningCapture,
        /// Every name the trigger would give the capture is taken by another capture.
        CaptureNotCreated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in CaptureStatus::ALL {
            assert_eq!(s.as_str().parse::<CaptureStatus>().ok(), Some(*s));
        }
        for s in OperationKind::ALL {
            assert_eq!(s.as_str().parse::<OperationKind>().ok(), Some(*s));
        }
        assert!("running".parse::<CaptureStatus>().is_err());
        assert_eq!(
            serde_json::to_string(&ProvisioningState::Canceled).ok(),
            Some("\"Canceled\"".to_string())
        );
    }

    #[test]
    fn protocol_stop_reasons_have_the_same_names() {
        use agent_protocol::StopReason as P;
        for p in [
            P::TimeExceeded,
            P::TotalBytesExceeded,
            P::StoppedByUser,
            P::AgentStopped,
            P::CaptureError,
        ] {
            assert_eq!(StopReason::from(p).as_str(), p.as_str());
        }
    }
}
