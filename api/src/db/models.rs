//! Rows of the tables, as read (`*Row`) and as inserted (`New*`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::states::{
    CaptureStatus, OperationKind, OperationStatus, ProvisioningState, StopReason, TransferState,
    UploadState,
};

use super::schema::{
    file_transfers, machines, network_watchers, operations, packet_captures, storage_accounts,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = network_watchers)]
pub struct WatcherRow {
    pub id: Uuid,
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub tags: serde_json::Value,
    pub etag: Uuid,
    pub provisioning_state: ProvisioningState,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = network_watchers)]
pub struct NewWatcher<'a> {
    pub id: Uuid,
    pub subscription_id: &'a str,
    pub resource_group: &'a str,
    pub name: &'a str,
    pub identity_key: String,
    pub subscription_key: String,
    pub location: &'a str,
    pub location_key: String,
    pub tags: serde_json::Value,
    pub etag: Uuid,
    pub provisioning_state: ProvisioningState,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = machines)]
pub struct MachineRow {
    pub resource_key: String,
    pub resource_id: String,
    pub location: String,
    pub agent_id: Uuid,
    pub lost: bool,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = machines)]
pub struct NewMachine<'a> {
    pub resource_key: String,
    pub resource_id: &'a str,
    pub subscription_id: &'a str,
    pub subscription_key: String,
    pub location: &'a str,
    pub agent_id: Uuid,
    pub hostname: &'a str,
    pub os: &'a str,
    pub agent_version: &'a str,
    pub interfaces: serde_json::Value,
    pub last_seen_at: DateTime<Utc>,
    pub lost: bool,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = packet_captures)]
pub struct CaptureRow {
    pub id: Uuid,
    pub watcher_id: Uuid,
    pub name: String,
    pub resource_id: String,
    pub parameters: serde_json::Value,
    pub machine_key: String,
    pub etag: Uuid,
    pub provisioning_state: ProvisioningState,
    pub status: CaptureStatus,
    pub desired_running: bool,
    pub deleting: bool,
    pub capture_start_time: Option<DateTime<Utc>>,
    /// When the capture stopped or ended with an error.
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<StopReason>,
    pub stop_requested_reason: Option<StopReason>,
    pub errors: serde_json::Value,
    pub error_message: Option<String>,
    pub packets: Option<i64>,
    pub bytes: Option<i64>,
    pub kernel_drops: Option<i64>,
    pub files: serde_json::Value,
    pub is_scale_set: bool,
    pub storage_account_id: Option<Uuid>,
    pub blob_name: Option<String>,
    pub upload_state: Option<UploadState>,
    /// A continuous capture's files ([`crate::db::file_set`]).
    pub file_set: serde_json::Value,
    /// The session's time limit in seconds (a continuous capture's `sessionTimeLimitInSeconds`).
    pub time_limit_seconds: i32,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = packet_captures)]
pub struct NewCapture<'a> {
    pub id: Uuid,
    pub watcher_id: Uuid,
    pub name: &'a str,
    pub name_key: String,
    pub resource_id: String,
    pub parameters: serde_json::Value,
    pub machine_key: String,
    pub etag: Uuid,
    pub provisioning_state: ProvisioningState,
    pub status: CaptureStatus,
    pub time_limit_seconds: i32,
    pub is_scale_set: bool,
    pub storage_account_id: Option<Uuid>,
    pub blob_name: Option<String>,
    pub upload_state: Option<UploadState>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = operations)]
pub struct OperationRow {
    pub id: Uuid,
    pub subscription_key: String,
    pub location: String,
    pub kind: OperationKind,
    pub resource_id: String,
    pub capture_id: Option<Uuid>,
    pub status: OperationStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub principal_id: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = operations)]
pub struct NewOperation<'a> {
    pub id: Uuid,
    pub subscription_key: String,
    pub location: &'a str,
    pub kind: OperationKind,
    pub resource_id: &'a str,
    pub capture_id: Option<Uuid>,
    pub watcher_id: Option<Uuid>,
    pub principal_id: Option<&'a str>,
    pub status: OperationStatus,
    pub deadline: DateTime<Utc>,
}

/// A registered storage account. The key itself is never part of a read model: see
/// [`crate::storage::accounts`].
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = storage_accounts)]
pub struct StorageAccountRow {
    pub id: Uuid,
    pub resource_id: String,
    pub account_name: String,
    pub blob_endpoint: String,
    pub premium: bool,
    pub key_sealed: Option<Vec<u8>>,
    pub key_file: Option<String>,
    pub key_env: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = storage_accounts)]
pub struct NewStorageAccount<'a> {
    pub id: Uuid,
    pub resource_id: &'a str,
    pub resource_key: String,
    pub account_name: &'a str,
    pub blob_endpoint: &'a str,
    pub premium: bool,
    pub key_sealed: Option<Vec<u8>>,
    pub key_file: Option<&'a str>,
    pub key_env: Option<&'a str>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = file_transfers)]
pub struct TransferRow {
    pub id: Uuid,
    pub capture_id: Uuid,
    pub machine_key: String,
    pub state: TransferState,
    pub size: Option<i64>,
    pub error_message: Option<String>,
    /// One file of a continuous capture (none: the capture's file, or all of them merged).
    pub file_index: Option<i32>,
}
