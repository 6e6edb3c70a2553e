//! Azure Blob Storage: the registry of storage accounts, per-blob SAS, and the few calls the
//! server itself makes (create the container, check an uploaded blob).

pub mod accounts;
pub mod sas;
pub mod secrets;

use chrono::{DateTime, Utc};

use crate::arm::ids::ResourceId;

/// The container Network Watcher writes packet captures to.
pub const CONTAINER: &str = "network-watcher-logs";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Crypto(String),
    /// The account key cannot be read (missing file or variable, wrong secrets key).
    #[error("the key of storage account '{account}' is unavailable: {reason}")]
    KeyUnavailable { account: String, reason: String },
    /// The storage service could not be reached.
    #[error("storage account '{account}' is unreachable: {reason}")]
    Unreachable { account: String, reason: String },
    /// The storage service answered with an error.
    #[error("storage account '{account}' refused the request: HTTP {status} {code}")]
    Refused {
        account: String,
        status: u16,
        code: String,
    },
}

/// The blob name (inside [`CONTAINER`]) of a capture of `target` created at `now`, as Azure
/// names it; for a scale set instance, the instance's folder sits under the scale set's.
pub fn blob_name(target: &ResourceId, now: DateTime<Utc>) -> String {
    let kind = if target.is_type("Microsoft.Compute", &["virtualMachineScaleSets"]) {
        "virtualmachinescalesets"
    } else {
        "virtualmachines"
    };
    format!(
        "subscriptions/{}/resourcegroups/{}/providers/microsoft.compute/{kind}/{}/{}/packetcapture_{}.cap",
        target.subscription.to_lowercase(),
        target.resource_group.to_lowercase(),
        target.name().to_lowercase(),
        now.format("%Y/%m/%d"),
        now.format("%H_%M_%S_%3f"),
    )
}

/// `{endpoint}/{container}/{blob}`.
pub fn blob_url(endpoint: &str, blob: &str) -> String {
    format!("{}/{CONTAINER}/{blob}", endpoint.trim_end_matches('/'))
}
