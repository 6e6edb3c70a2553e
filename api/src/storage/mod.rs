//! Azure Blob Storage: the registry of storage accounts, per-blob SAS, and the few calls the
//! server itself makes (create the container, check an uploaded blob).

pub mod accounts;
pub mod sas;
pub mod secrets;

use chrono::{DateTime, Utc};

use crate::arm::ids::ResourceId;
use crate::error::{ApiError, ErrorCode};

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

impl From<StorageError> for ApiError {
    /// The ARM error of a storage failure. Reasons that may name server configuration (a key
    /// file) go to the log only.
    fn from(e: StorageError) -> ApiError {
        let code = match &e {
            StorageError::Crypto(_) | StorageError::KeyUnavailable { .. } => {
                ErrorCode::StorageAccountKeyUnavailable
            }
            StorageError::Unreachable { .. } => ErrorCode::StorageAccountUnreachable,
            StorageError::Refused { .. } => ErrorCode::StorageRequestFailed,
        };
        tracing::error!(error = %e, code = code.as_str(), "storage request failed");
        let message = match &e {
            StorageError::KeyUnavailable { account, .. } => format!(
                "The key of storage account '{account}' is unavailable on the server; the server's log has the reason."
            ),
            StorageError::Crypto(_) => "A key sealed with the server's secrets key could not be opened (is --secrets-key-file the one this database was set up with?); the server's log has the reason.".to_string(),
            _ => e.to_string(),
        };
        ApiError::new(code, message)
    }
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
