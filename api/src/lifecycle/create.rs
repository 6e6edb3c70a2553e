//! Event: a PUT creates a capture. It starts `NotStarted` / `Updating`, with a `CreateCapture`
//! operation that completes when an agent starts it ([`super::agent::report`]) or fails at its
//! deadline ([`super::deadlines`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::states::{CaptureStatus, OperationKind, ProvisioningState, UploadState};
use crate::arm::ids;
use crate::arm::validate::ValidCapture;
use crate::db::models::{CaptureRow, NewCapture, WatcherRow};
use crate::db::schema::packet_captures;

/// What a new capture is made of (validated and normalised by the caller).
pub struct NewCaptureSpec<'a> {
    pub name: &'a str,
    /// The normalised parameters, as echoed.
    pub parameters: serde_json::Value,
    /// Lower-cased id of the target machine (or scale set).
    pub machine_key: String,
    pub time_limit_seconds: i32,
    pub is_scale_set: bool,
    /// The storage account and blob name, when the capture is uploaded.
    pub storage: Option<(Uuid, String)>,
    /// When the create operation fails if no agent started the capture.
    pub deadline: DateTime<Utc>,
    pub principal: &'a str,
}

impl<'a> NewCaptureSpec<'a> {
    /// The capture a validated body makes: `parameters` are its parameters as stored (the
    /// blob path set when it is uploaded to `storage`).
    pub fn of(
        name: &'a str,
        parameters: serde_json::Value,
        valid: &ValidCapture,
        storage: Option<(Uuid, String)>,
        deadline: DateTime<Utc>,
        principal: &'a str,
    ) -> Self {
        NewCaptureSpec {
            name,
            parameters,
            machine_key: valid.machine_key.clone(),
            time_limit_seconds: i32::try_from(valid.time_limit_seconds).unwrap_or(i32::MAX),
            is_scale_set: valid.parameters.target_type.as_deref() == Some("AzureVMSS"),
            storage,
            deadline,
            principal,
        }
    }
}

/// Inserts the capture and its create operation. `None`: a capture of that name appeared
/// concurrently (the caller looks again).
pub async fn create(
    conn: &mut AsyncPgConnection,
    watcher: &WatcherRow,
    spec: NewCaptureSpec<'_>,
    now: DateTime<Utc>,
) -> diesel::QueryResult<Option<(CaptureRow, Uuid)>> {
    let id = Uuid::new_v4();
    let resource_id = format!("{}/packetCaptures/{}", watcher.resource_id(), spec.name);
    let inserted = diesel::insert_into(packet_captures::table)
        .values(NewCapture {
            id,
            watcher_id: watcher.id,
            name: spec.name,
            name_key: ids::key(spec.name),
            resource_id: resource_id.clone(),
            parameters: spec.parameters,
            machine_key: spec.machine_key,
            etag: Uuid::new_v4(),
            provisioning_state: ProvisioningState::Updating,
            status: CaptureStatus::NotStarted,
            time_limit_seconds: spec.time_limit_seconds,
            is_scale_set: spec.is_scale_set,
            storage_account_id: spec.storage.as_ref().map(|(a, _)| *a),
            blob_name: spec.storage.as_ref().map(|(_, b)| b.clone()),
            upload_state: spec.storage.as_ref().map(|_| UploadState::Pending),
        })
        .on_conflict_do_nothing()
        .returning(CaptureRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    let op = super::operations::start(
        conn,
        watcher,
        OperationKind::CreateCapture,
        &resource_id,
        Some(id),
        spec.deadline,
        spec.principal,
    )
    .await?;
    if row.is_scale_set {
        super::scale_sets::expand(conn, Some(id), now).await?;
    }
    Ok(Some((row, op)))
}
