//! The server's view of a continuous capture's files (`packet_captures.file_set`, a JSON array):
//! what the capture's agent reported of each kept file, and each file's upload. Only
//! `lifecycle::files` changes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::CaptureRow;

/// Where one file of a continuous capture is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum FileState {
    /// Being written.
    Writing,
    /// Complete, kept on the machine (no storage account).
    Complete,
    /// Complete; its upload to the storage account is pending.
    Uploading,
    /// In the storage account, checked (size and MD5).
    Uploaded,
    /// The agent gave up uploading it; kept on the machine.
    UploadFailed,
    /// Left the ring after (or during) its upload: its blob is being deleted. Not shown.
    Discarded,
}

/// One file, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    pub index: u32,
    pub size: u64,
    pub packets: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_packet_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_packet_time: Option<DateTime<Utc>>,
    pub state: FileState,
    /// Why its upload failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CaptureRow {
    /// The capture's files, oldest first (empty for a single-file capture).
    pub fn file_set(&self) -> Vec<StoredFile> {
        serde_json::from_value(self.file_set.clone()).unwrap_or_else(|e| {
            tracing::error!(capture = %self.id, error = %e, "stored file set does not parse");
            vec![]
        })
    }

    /// The blob of file `index` of a continuous capture.
    pub fn file_blob(&self, index: u32) -> Option<String> {
        self.blob_name
            .as_deref()
            .map(|b| agent_protocol::file_name(b, index))
    }
}
