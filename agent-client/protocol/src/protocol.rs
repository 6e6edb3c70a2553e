//! Wire types of the agent protocol (`/agent/v1`).
//!
//! An agent registers its machine, long-polls for the desired state of the captures
//! assigned to it, and reports what it is doing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Prefix of every agent protocol route.
pub const AGENT_API_PREFIX: &str = "/agent/v1";

/// Registration of a machine's agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// ARM resource id of the machine, e.g.
    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`.
    pub machine_id: String,
    /// Azure region name of the machine (e.g. `eastus`); empty = the server's default location.
    #[serde(default)]
    pub location: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    /// Capture interfaces of the machine.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Captures this agent is still running (after an agent restart); every other capture the
    /// server believed running on this machine ends as `Error` / `AgentStopped`.
    #[serde(default)]
    pub running_captures: Vec<Uuid>,
}

/// Answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// The agent's id, used in every further call.
    pub agent_id: Uuid,
    /// Longest wait the server grants a long poll, in seconds.
    pub max_poll_seconds: u32,
    /// An agent that has not polled for this long is considered lost.
    pub lost_after_seconds: u32,
    /// A new credential for this machine (registration with an enrollment token): send it as
    /// `Authorization: Bearer` on every further call, including later registrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_expires_on: Option<DateTime<Utc>>,
}

/// A rotated agent credential.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredential {
    pub credential: String,
    pub expires_on: DateTime<Utc>,
}

/// What the server wants a capture to be doing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub enum DesiredState {
    Running,
    Stopped,
}

/// Transport protocol of a filter.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
pub enum FilterProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[default]
    Any,
}

/// One packet filter; fields are AND-ed, filters are OR-ed. Address and port values are a
/// single value, a range `a-b` or a list `a;b;c` (no range inside a list), already validated by
/// the server with the grammar the agents compile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CaptureFilter {
    pub protocol: FilterProtocol,
    #[serde(rename = "localIPAddress", skip_serializing_if = "Option::is_none")]
    pub local_ip_address: Option<String>,
    #[serde(rename = "remoteIPAddress", skip_serializing_if = "Option::is_none")]
    pub remote_ip_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<String>,
}

/// Everything an agent needs to run one capture.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaptureAssignment {
    pub capture_id: Uuid,
    /// ARM id of the packet capture resource.
    pub resource_id: String,
    pub desired: DesiredState,
    /// Snap length; 0 = whole packet.
    pub bytes_to_capture_per_packet: u64,
    pub total_bytes_per_session: u64,
    pub time_limit_in_seconds: u32,
    pub filters: Vec<CaptureFilter>,
    /// Local file to write, when the capture is kept on the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// Blob URL the capture is stored at, when a storage account was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// Continuous capture: the capture writes a sequence of files (see [`FileSettings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<FileSettings>,
    /// Where to upload the capture file once the capture has stopped (a storage account was
    /// given). Not part of the generation: a fresh SAS alone does not wake a poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTarget>,
}

/// The files of a continuous capture. The capture writes `{name}_00001.cap`,
/// `{name}_00002.cap`, … next to the file it names, each at most `fileSizeInBytes` (a record is
/// never split). With `ring`, once `fileCount` files exist the oldest is deleted before the next
/// one starts, and the capture runs until stopped or its time limit; without, the capture stops
/// (`FileCountReached`) when the last of `fileCount` files is full.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileSettings {
    pub ring: bool,
    pub file_count: u32,
    pub file_size_in_bytes: u64,
}

/// The name of file `index` of a continuous capture whose path is `base` (`…/name.cap` →
/// `…/name_00001.cap`): at least five digits, more past 99,999.
pub fn file_name(base: &str, index: u32) -> String {
    let stem = base.strip_suffix(".cap").unwrap_or(base);
    format!("{stem}_{index:05}.cap")
}

/// A SAS URL allowing to create and write exactly one blob, until `expiresOn`. Renew it with
/// `POST …/captures/{captureId}/upload-sas`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadTarget {
    pub blob_url: String,
    pub expires_on: DateTime<Utc>,
}

/// How an upload ended, as the agent reports it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(tag = "state")]
pub enum UploadResult {
    /// Every block committed; the server checks the blob's size and MD5 before answering 204,
    /// and only then may the agent remove its local copy.
    Uploaded {
        size: u64,
        /// Base64 MD5 of the whole file, set as the blob's Content-MD5.
        #[serde(rename = "contentMd5")]
        content_md5: String,
    },
    /// The retry period ended without an upload; the file stays at `localPath`.
    Failed {
        message: String,
        #[serde(rename = "localPath")]
        local_path: String,
    },
}

/// A caller wants a capture's file: send it with `PUT …/transfers/{transferId}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct TransferRequest {
    pub transfer_id: Uuid,
    pub capture_id: Uuid,
    /// One file of a continuous capture; without it, every kept file of a continuous capture,
    /// merged into one pcap in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<u32>,
}

/// Why an agent cannot send a requested file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct TransferFailure {
    pub message: String,
}

/// The desired state of every capture assigned to a machine.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Assignments {
    /// Changes whenever the assignments change; send it back as `since` to long-poll.
    pub generation: i64,
    pub captures: Vec<CaptureAssignment>,
    /// Files callers asked for (`download` of a capture kept on the machine).
    #[serde(default)]
    pub transfers: Vec<TransferRequest>,
    /// Stopped captures whose upload has not been confirmed (for example because the agent
    /// restarted meanwhile): upload them if their file is still here.
    #[serde(default)]
    pub uploads: Vec<PendingUpload>,
}

/// A stopped capture still to be uploaded to its storage account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct PendingUpload {
    pub capture_id: Uuid,
    /// The capture also keeps its local file (`filePath` given): do not remove it.
    pub keep_local: bool,
    /// A continuous capture: upload every file of it this agent still holds and has not
    /// uploaded, each with `?file=N`.
    #[serde(default)]
    pub continuous: bool,
}

/// Why a capture stopped. Serialized as the `stopReason` of the ARM status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub enum StopReason {
    /// `timeLimitInSeconds` reached.
    TimeExceeded,
    /// `totalBytesPerSession` reached.
    TotalBytesExceeded,
    /// Stopped through the API (`stop` or `delete`).
    StoppedByUser,
    /// The agent stopped, restarted or stopped polling.
    AgentStopped,
    /// The capture ended with an error (see `packetCaptureError`).
    CaptureError,
    /// `continuousCapture: false`: the last of `captureSettings.fileCount` files is full.
    FileCountReached,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::TimeExceeded => "TimeExceeded",
            StopReason::TotalBytesExceeded => "TotalBytesExceeded",
            StopReason::StoppedByUser => "StoppedByUser",
            StopReason::AgentStopped => "AgentStopped",
            StopReason::CaptureError => "CaptureError",
            StopReason::FileCountReached => "FileCountReached",
        }
    }
}

/// Error codes of a capture (`packetCaptureError` in ARM).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub enum CaptureErrorCode {
    InternalError,
    AgentStopped,
    CaptureFailed,
    LocalFileFailed,
    StorageFailed,
}

impl CaptureErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureErrorCode::InternalError => "InternalError",
            CaptureErrorCode::AgentStopped => "AgentStopped",
            CaptureErrorCode::CaptureFailed => "CaptureFailed",
            CaptureErrorCode::LocalFileFailed => "LocalFileFailed",
            CaptureErrorCode::StorageFailed => "StorageFailed",
        }
    }
}

/// What an agent reports about one capture.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(tag = "state")]
pub enum CaptureReport {
    /// The capture is running (first report: started; later: counters).
    Running {
        #[serde(rename = "startTime")]
        start_time: DateTime<Utc>,
        #[serde(flatten)]
        counters: CaptureCounters,
    },
    /// The capture ended normally.
    Stopped {
        #[serde(rename = "stopReason")]
        stop_reason: StopReason,
        #[serde(flatten)]
        counters: CaptureCounters,
    },
    /// The capture failed.
    Failed {
        code: CaptureErrorCode,
        message: String,
        #[serde(flatten)]
        counters: CaptureCounters,
    },
}

impl CaptureReport {
    pub fn counters(&self) -> &CaptureCounters {
        match self {
            CaptureReport::Running { counters, .. }
            | CaptureReport::Stopped { counters, .. }
            | CaptureReport::Failed { counters, .. } => counters,
        }
    }
}

/// Running counters and file locations of a capture.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CaptureCounters {
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub kernel_drops: u64,
    /// Where the capture's data is (local paths and/or blob URLs).
    #[serde(default)]
    pub files: Vec<String>,
    /// A continuous capture's kept files, oldest first (the one being written last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_set: Vec<CaptureFile>,
}

/// One file of a continuous capture, as its agent sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CaptureFile {
    /// 1 for the first file of the session, then 2, 3, … (never reused).
    pub index: u32,
    /// Bytes of the file (pcap headers included), as flushed.
    pub size: u64,
    pub packets: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_packet_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_packet_time: Option<DateTime<Utc>>,
    /// The file is full (or the capture ended): it no longer changes.
    pub complete: bool,
}

/// Error body of the agent protocol (the same shape as ARM's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}
