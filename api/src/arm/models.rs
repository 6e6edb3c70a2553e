//! ARM wire shapes of Microsoft.Network networkWatchers and packetCaptures (api-version
//! 2026-03-01), plus the few documented extensions of this server.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const WATCHER_TYPE: &str = "Microsoft.Network/networkWatchers";
pub const CAPTURE_TYPE: &str = "Microsoft.Network/networkWatchers/packetCaptures";

/// Network watcher in a resource group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1", "name": "nw1", "type": "Microsoft.Network/networkWatchers", "location": "eastus", "tags": {}, "etag": "W/\"00000000-0000-0000-0000-000000000000\"", "properties": {"provisioningState": "Succeeded"}}))]
pub struct NetworkWatcher {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub etag: String,
    pub properties: NetworkWatcherProperties,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkWatcherProperties {
    /// Succeeded, or Deleting while a delete is in progress.
    pub provisioning_state: String,
}

/// Body of `PUT networkWatchers/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"location": "eastus", "tags": {}, "properties": {}}))]
pub struct NetworkWatcherCreate {
    /// Region of the watcher; one watcher per subscription and region. A region name: 1-64
    /// letters, digits and spaces (`eastus`, `East US 2`).
    #[schema(
        max_length = 64,
        pattern = "^[A-Za-z0-9]([A-Za-z0-9 ]{0,62}[A-Za-z0-9])?$"
    )]
    pub location: String,
    /// At most 50 tags; names at most 512 characters, values at most 256.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: Option<serde_json::Value>,
}

/// Body of `PATCH networkWatchers/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"tags": {"tag1": "value1"}}))]
pub struct TagsObject {
    /// At most 50 tags; names at most 512 characters, values at most 256.
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkWatcherListResult {
    pub value: Vec<NetworkWatcher>,
    /// URL of the next page (absent on the last page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// Body of `PUT packetCaptures/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"properties": {"target": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1", "storageLocation": {"filePath": "/var/captures/pc1.cap"}, "timeLimitInSeconds": 100, "totalBytesPerSession": 100000, "filters": [{"protocol": "TCP", "localIPAddress": "10.0.0.4", "localPort": "80"}]}}))]
pub struct PacketCapture {
    pub properties: PacketCaptureParameters,
}

/// Parameters of a packet capture. In responses every default is filled in.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureParameters {
    /// Resource id of the target VM (or VM scale set).
    pub target: String,
    /// VM scale set instances to include or exclude (AzureVMSS targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<PacketCaptureMachineScope>,
    /// `AzureVM` (default) or `AzureVMSS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    /// Bytes kept of each packet (snap length); 0 (default) = the whole packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4294967295_u64, default = 0)]
    pub bytes_to_capture_per_packet: Option<u64>,
    /// Maximum size of the capture's packet data in bytes; default 1073741824. 0 = the maximum
    /// (4294967295).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4294967295_u64, default = 1073741824)]
    pub total_bytes_per_session: Option<u64>,
    /// Maximum duration in seconds; default 18000. 0 = the maximum (18000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 18000, default = 18000)]
    pub time_limit_in_seconds: Option<u32>,
    pub storage_location: PacketCaptureStorageLocation,
    /// Filters, OR-ed; the fields of one filter are AND-ed. At most 100 filters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub filters: Option<Vec<PacketCaptureFilter>>,
    /// Nullable: absent = null. With true or false, `localPath` is used instead of `filePath`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuous_capture: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_settings: Option<PacketCaptureSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PacketCaptureMachineScope {
    /// Instances to capture on (ids, or instance ids like `"0"`); at most 1000.
    #[schema(max_items = 1000)]
    pub include: Vec<String>,
    /// Instances not to capture on; at most 1000.
    #[schema(max_items = 1000)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureStorageLocation {
    /// Resource id of the storage account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_id: Option<String>,
    /// Blob URL of the capture; set by the server when `storageId` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// Local file on the machine: must start with `/var/captures` and end in `.cap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// Local file when `continuousCapture` is given; same rules as `filePath`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
}

/// A packet filter. Values: a single value, a range `a-b`, or a list `a;b;c`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureFilter {
    /// `TCP`, `UDP` or `Any` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// An address, a range `a-b` or a list `a;b;c`; at most 512 characters.
    #[serde(rename = "localIPAddress", skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub local_ip_address: Option<String>,
    /// An address, a range `a-b` or a list `a;b;c`; at most 512 characters.
    #[serde(rename = "remoteIPAddress", skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub remote_ip_address: Option<String>,
    /// A port, a range `a-b` or a list `a;b;c`; at most 512 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub local_port: Option<String>,
    /// A port, a range `a-b` or a list `a;b;c`; at most 512 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub remote_port: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureSettings {
    /// Files kept by a ring (`continuousCapture: true`), or written before the capture stops
    /// with `FileCountReached` (`false`).
    #[schema(minimum = 1, maximum = 10000, default = 10)]
    pub file_count: Option<u32>,
    /// Largest file, headers included; at least one record (24 + 16 + the snap length, whole
    /// packets 262,144). A record is never split between files.
    #[schema(minimum = 0, maximum = 4294967295_u64, default = 104857600)]
    pub file_size_in_bytes: Option<u64>,
    /// The session's duration (0 = the maximum). `timeLimitInSeconds` may only repeat it or stay
    /// at its default.
    #[schema(minimum = 0, maximum = 604800, default = 86400)]
    pub session_time_limit_in_seconds: Option<u32>,
}

/// A packet capture resource.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PacketCaptureResult {
    pub name: String,
    pub id: String,
    pub etag: String,
    pub properties: PacketCaptureResultProperties,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureResultProperties {
    #[serde(flatten)]
    pub parameters: PacketCaptureParameters,
    /// Updating while the capture starts, then Succeeded or Failed; Deleting during a delete.
    pub provisioning_state: String,
    /// Extension: the kept files of a continuous capture, oldest first (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_capture_files: Option<Vec<PacketCaptureFileInfo>>,
    /// Extension: the capture's `queryStatus` result, in lists asked with `$expand=status` only
    /// (read-only), so that a list of captures with their statuses is one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_status: Option<Box<PacketCaptureQueryStatusResult>>,
}

/// Extension of this server: one file of a continuous capture. Files are numbered from 1 in the
/// order they are written; file `N` of `localPath` `/var/captures/x/name.cap` is
/// `/var/captures/x/name_0000N.cap` (at least five digits), and its blob is `storagePath` with
/// the same suffix.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureFileInfo {
    pub index: u32,
    /// Bytes of the file, pcap headers included (the part written so far while `Writing`).
    pub size_in_bytes: u64,
    pub packets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_packet_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_packet_time: Option<DateTime<Utc>>,
    /// `Writing`, `Complete` (kept on the machine), `Uploading`, `Uploaded` or `UploadFailed`.
    pub state: String,
    /// The file on the machine (when the capture has a `localPath`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    /// The file's blob, once uploaded and checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_url: Option<String>,
    /// Why its upload failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureListResult {
    pub value: Vec<PacketCaptureResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// Status of a packet capture session.
///
/// `stopReason` is set once the capture stopped: `TimeExceeded` (time limit),
/// `TotalBytesExceeded` (byte limit), `StoppedByUser` (stop or delete through the API),
/// `AgentStopped` (the machine's agent stopped or was lost), `CaptureError` (see
/// `packetCaptureError`), `FileCountReached` (`continuousCapture: false`: the last of
/// `captureSettings.fileCount` files is full). `packetsCaptured`, `bytesCaptured`, `kernelDrops`, `captureFiles`
/// and `errorMessage` are extensions of this server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "pc1", "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/pc1", "captureStartTime": "2026-09-07T12:35:24Z", "packetCaptureStatus": "Stopped", "stopReason": "TimeExceeded", "packetCaptureError": [], "packetsCaptured": 120, "bytesCaptured": 9600, "kernelDrops": 0, "captureFiles": ["/var/captures/pc1.cap"]}))]
pub struct PacketCaptureQueryStatusResult {
    pub name: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_start_time: Option<DateTime<Utc>>,
    /// Extension: when the capture stopped or ended with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_stop_time: Option<DateTime<Utc>>,
    /// NotStarted, Running, Stopped, Error or Unknown.
    pub packet_capture_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// InternalError, AgentStopped, CaptureFailed, LocalFileFailed, StorageFailed.
    pub packet_capture_error: Vec<String>,
    /// Extension: packets written so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_captured: Option<i64>,
    /// Extension: packet bytes written so far (record data, without pcap headers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_captured: Option<i64>,
    /// Extension: packets the kernel dropped before the capture saw them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_drops: Option<i64>,
    /// Extension: where the capture's data is.
    pub capture_files: Vec<String>,
    /// Extension: the message of the error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Extension: the kept files of a continuous capture, oldest first. The counters above are
    /// the whole session's, files that left the ring included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_capture_files: Option<Vec<PacketCaptureFileInfo>>,
}

/// Answer of the `Azure-AsyncOperation` monitor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Network/locations/eastus/operations/6c3b0e53-3e2f-4b62-9d7c-2f0e2f6e9a11", "name": "6c3b0e53-3e2f-4b62-9d7c-2f0e2f6e9a11", "status": "Succeeded", "startTime": "2026-09-07T12:35:24Z", "endTime": "2026-09-07T12:35:25Z"}))]
pub struct AsyncOperationResult {
    pub id: String,
    pub name: String,
    /// InProgress, Succeeded, Failed or Canceled.
    pub status: String,
    pub start_time: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationError {
    pub code: String,
    pub message: String,
}

/// The VM of a registered agent, as Microsoft.Compute shows it (the fields `az` reads).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VirtualMachine {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub location: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub subscription_id: String,
    pub display_name: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionListResult {
    pub value: Vec<Subscription>,
}

pub fn etag(uuid: uuid::Uuid) -> String {
    format!("W/\"{uuid}\"")
}
