//! Files leaving an agent: upload credentials and results for captures with a storage account,
//! and files kept on the machine sent to a caller of `download` (see [`super::downloads`]).
//!
//! A transfer goes through the database in numbered chunks, so that the agent and the caller
//! may be connected to different server replicas; at most [`WINDOW`] chunks wait at a time.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, post, put, web};
use agent_protocol::{TransferFailure, UploadResult, UploadTarget};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use uuid::Uuid;

use crate::arm::models::PacketCaptureParameters;
use crate::auth::agents::AgentBearer;
use crate::db::file_set::FileState;
use crate::db::models::{CaptureRow, StorageAccountRow, TransferRow};
use crate::db::schema::{file_transfers, transfer_chunks};
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::{self, TransferState, UploadState};
use crate::state::AppState;

/// Size of one chunk of a transfer.
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks written but not yet streamed to the caller, at most.
pub const WINDOW: i64 = 8;

/// The hub key that wakes both ends of a transfer.
pub fn transfer_key(id: Uuid) -> String {
    format!("transfer:{id}")
}

/// Wakes whoever waits on `key`, in every replica.
pub async fn notify(conn: &mut AsyncPgConnection, key: &str) -> ApiResult<()> {
    Ok(crate::notify::send(conn, key).await?)
}

fn not_assigned(capture_id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::CaptureNotAssigned,
        format!("Capture {capture_id} is not assigned to this agent's machine (or was deleted)."),
    )
}

/// A capture of the agent's machine, in any state.
async fn own_capture(
    conn: &mut AsyncPgConnection,
    agent_id: Uuid,
    bearer: &AgentBearer,
    capture_id: Uuid,
) -> ApiResult<CaptureRow> {
    let machine = super::agents::touch(conn, agent_id, bearer).await?;
    CaptureRow::find_of_machine(conn, capture_id, &machine.resource_key)
        .await?
        .ok_or_else(|| not_assigned(capture_id))
}

fn no_upload(c: &CaptureRow, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NoUploadPending,
        format!("Capture {} has no upload pending: {why}.", c.id),
    )
}

/// The account and blob of a capture whose upload is still pending. A removed account is a
/// distinct error (`StorageAccountRemoved`): the agent then reports the upload failed.
///
/// `file`: one file of a continuous capture (its own blob, `…_00001.cap`); such a capture's files
/// are uploaded one by one, and only while they are wanted (not left the ring).
async fn pending_upload(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    file: Option<u32>,
) -> ApiResult<(StorageAccountRow, String)> {
    let continuous = is_continuous(c);
    match file {
        None if continuous => {
            return Err(no_upload(
                c,
                "it is a continuous capture: each of its files is uploaded with ?file=N",
            ));
        }
        Some(_) if !continuous => {
            return Err(no_upload(c, "it is not a continuous capture (no ?file=N)"));
        }
        Some(i)
            if c.upload_state == Some(UploadState::Failed)
                || !lifecycle::files::uploadable(c, i) =>
        {
            return Err(no_upload(
                c,
                &format!(
                    "its file {i} is not waiting for an upload (it left the ring, or its upload ended)"
                ),
            ));
        }
        Some(_) if c.storage_account_id.is_some() => {}
        _ if c.upload_state != Some(UploadState::Pending) => {
            return Err(no_upload(
                c,
                "it has no storage account, or its upload ended",
            ));
        }
        _ => {}
    }
    let removed = || {
        ApiError::new(
            ErrorCode::StorageAccountRemoved,
            format!(
                "The storage account of capture {} is no longer registered with the server.",
                c.id
            ),
        )
    };
    let (Some(account_id), Some(blob)) = (c.storage_account_id, &c.blob_name) else {
        return Err(removed());
    };
    let account = crate::storage::accounts::by_ids(conn, &[account_id])
        .await?
        .pop()
        .ok_or_else(removed)?;
    let blob = match file {
        Some(i) => agent_protocol::file_name(blob, i),
        None => blob.clone(),
    };
    Ok((account, blob))
}

fn is_continuous(c: &CaptureRow) -> bool {
    serde_json::from_value::<PacketCaptureParameters>(c.parameters.clone())
        .is_ok_and(|p| p.continuous_capture.is_some())
}

/// `?file=N`: one file of a continuous capture.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct FileQuery {
    /// The index of a continuous capture's file (1, 2, …).
    #[param(minimum = 1)]
    pub file: Option<u32>,
}

/// A fresh upload SAS for a capture of this agent (create and write its one blob). The
/// captures container is created first if it is missing.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_RenewUploadSas",
    params(("agentId" = Uuid, Path), ("captureId" = Uuid, Path), FileQuery),
    responses(
        (status = 200, description = "A new SAS URL", body = UploadTarget),
        (status = 404, description = "Unknown agent, or not a capture of this agent's machine", body = CloudError),
        (status = 409, description = "The capture has no upload pending (`NoUploadPending`), or its storage account was removed (`StorageAccountRemoved`)", body = CloudError),
        (status = 502, description = "The storage account could not be reached; retry", body = CloudError),
    )
)]
#[post("/agent/v1/agents/{agentId}/captures/{captureId}/upload-sas")]
pub async fn upload_sas(
    state: web::Data<AppState>,
    bearer: AgentBearer,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<FileQuery>,
) -> ApiResult<HttpResponse> {
    let (agent_id, capture_id) = path.into_inner();
    let mut conn = state.conn().await?;
    let c = own_capture(&mut conn, agent_id, &bearer, capture_id).await?;
    let (account, blob) = pending_upload(&mut conn, &c, query.file).await?;
    drop(conn);
    state.storage.ensure_container(&account).await?;
    let sas = state.storage.upload_sas(&account, &blob)?;
    Ok(HttpResponse::Ok().json(UploadTarget {
        blob_url: sas.url,
        expires_on: sas.expires_on,
    }))
}

/// The capture file's path as ARM names it, when the capture keeps one on the machine.
fn arm_file(c: &CaptureRow) -> Option<String> {
    let p: PacketCaptureParameters = serde_json::from_value(c.parameters.clone()).ok()?;
    p.storage_location
        .file_path
        .or(p.storage_location.local_path)
}

fn storage_path(c: &CaptureRow) -> Option<String> {
    let p: PacketCaptureParameters = serde_json::from_value(c.parameters.clone()).ok()?;
    p.storage_location.storage_path
}

/// Record how an upload ended. `Uploaded` is checked against the blob itself (size, and
/// Content-MD5): 204 means the blob is there and complete, and the agent may remove its copy.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_ReportUpload",
    params(("agentId" = Uuid, Path), ("captureId" = Uuid, Path), FileQuery),
    request_body = UploadResult,
    responses(
        (status = 204, description = "Recorded (and for `Uploaded`, verified)"),
        (status = 404, description = "Unknown agent, or not a capture of this agent's machine", body = CloudError),
        (status = 409, description = "The blob is missing or differs (`UploadMismatch`), no upload is pending (`NoUploadPending`), or the account was removed (`StorageAccountRemoved`)", body = CloudError),
        (status = 502, description = "The storage account could not be checked; retry", body = CloudError),
    )
)]
#[post("/agent/v1/agents/{agentId}/captures/{captureId}/upload")]
pub async fn upload_result(
    state: web::Data<AppState>,
    bearer: AgentBearer,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<FileQuery>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (agent_id, capture_id) = path.into_inner();
    let mut conn = state.conn().await?;
    // Who is asking comes first: a refused credential learns nothing of the body's schema.
    let c = own_capture(&mut conn, agent_id, &bearer, capture_id).await?;
    let result: UploadResult = super::agent_body(&body, "upload result")?;
    if let Some(index) = query.file {
        return file_upload_result(&state, conn, c, index, result).await;
    }
    match result {
        // A retry of a report that was recorded but whose answer was lost.
        UploadResult::Uploaded { .. } if c.upload_state == Some(UploadState::Uploaded) => {}
        UploadResult::Failed { .. } if c.upload_state == Some(UploadState::Failed) => {}
        UploadResult::Uploaded { size, content_md5 } => {
            let (account, blob) = pending_upload(&mut conn, &c, None).await?;
            drop(conn);
            verify_blob(&state, &c, &account, &blob, size, &content_md5).await?;
            let mut files: Vec<String> = storage_path(&c).into_iter().collect();
            files.extend(arm_file(&c));
            let mut conn = state.conn().await?;
            lifecycle::upload::verified(&mut conn, &c, &files, Utc::now()).await?;
            state.metrics.uploads_verified.inc();
            tracing::info!(capture = %c.id, bytes = size, "upload verified");
        }
        UploadResult::Failed {
            message,
            local_path,
        } => {
            if c.upload_state != Some(UploadState::Pending) {
                return Err(no_upload(
                    &c,
                    "it has no storage account, or its upload ended",
                ));
            }
            lifecycle::upload::failed(&mut conn, &c, &message, &local_path, Utc::now()).await?;
            state.metrics.uploads_failed.inc();
            tracing::warn!(capture = %c.id, "upload failed; file kept on the machine");
        }
    }
    Ok(HttpResponse::NoContent().finish())
}

/// How the upload of file `index` of a continuous capture ended.
async fn file_upload_result(
    state: &AppState,
    mut conn: crate::db::DbConn,
    c: CaptureRow,
    index: u32,
    result: UploadResult,
) -> ApiResult<HttpResponse> {
    let already = |want: FileState| {
        c.file_set()
            .iter()
            .any(|f| f.index == index && f.state == want)
    };
    match result {
        // A retry of a report that was recorded but whose answer was lost.
        UploadResult::Uploaded { .. } if already(FileState::Uploaded) => {}
        UploadResult::Failed { .. } if already(FileState::UploadFailed) => {}
        UploadResult::Uploaded { size, content_md5 } => {
            let (account, blob) = match pending_upload(&mut conn, &c, Some(index)).await {
                Ok(found) => found,
                Err(e) => {
                    // Written after the file left its ring: its blob goes too.
                    if let (Some(account_id), Some(blob)) =
                        (c.storage_account_id, c.file_blob(index))
                        && let Some(account) =
                            crate::storage::accounts::by_ids(&mut conn, &[account_id])
                                .await?
                                .pop()
                        && let Err(err) = state.storage.delete_blob(&account, &blob).await
                    {
                        tracing::warn!(capture = %c.id, file = index, error = %err, "cannot delete the blob of a file that left the ring");
                    }
                    return Err(e);
                }
            };
            drop(conn);
            verify_blob(state, &c, &account, &blob, size, &content_md5).await?;
            let mut conn = state.conn().await?;
            conn.transaction::<_, ApiError, _>(async |conn| {
                let c = CaptureRow::lock_of_machine(conn, c.id, &c.machine_key)
                    .await?
                    .ok_or_else(|| not_assigned(c.id))?;
                Ok(lifecycle::files::upload_verified(conn, &c, index, size, Utc::now()).await?)
            })
            .await?;
            state.metrics.uploads_verified.inc();
            tracing::info!(capture = %c.id, file = index, bytes = size, "upload verified");
        }
        UploadResult::Failed { message, .. } => {
            conn.transaction::<_, ApiError, _>(async |conn| {
                let c = CaptureRow::lock_of_machine(conn, c.id, &c.machine_key)
                    .await?
                    .ok_or_else(|| not_assigned(c.id))?;
                Ok(lifecycle::files::upload_failed(conn, &c, index, &message, Utc::now()).await?)
            })
            .await?;
            state.metrics.uploads_failed.inc();
            tracing::warn!(capture = %c.id, file = index, "upload of a file failed; kept on the machine");
        }
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Checks the uploaded blob against the agent's file: it exists, with the same size and MD5.
async fn verify_blob(
    state: &AppState,
    c: &CaptureRow,
    account: &StorageAccountRow,
    blob: &str,
    size: u64,
    content_md5: &str,
) -> ApiResult<()> {
    let mismatch =
        |m: String| ApiError::new(ErrorCode::UploadMismatch, format!("Capture {}: {m}", c.id));
    let Some((blob_size, blob_md5)) = state.storage.blob_properties(account, blob).await? else {
        return Err(mismatch("the blob does not exist".into()));
    };
    if blob_size != size {
        return Err(mismatch(format!(
            "the blob has {blob_size} bytes, the file {size}"
        )));
    }
    if let Some(md5) = blob_md5
        && md5 != content_md5
    {
        return Err(mismatch(format!(
            "the blob's MD5 is {md5}, the file's {content_md5}"
        )));
    }
    Ok(())
}

/// The transfer `id` of the agent's machine.
async fn own_transfer(
    conn: &mut AsyncPgConnection,
    agent_id: Uuid,
    bearer: &AgentBearer,
    id: Uuid,
) -> ApiResult<TransferRow> {
    let machine = super::agents::touch(conn, agent_id, bearer).await?;
    file_transfers::table
        .find(id)
        .filter(file_transfers::machine_key.eq(&machine.resource_key))
        .select(TransferRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TransferNotFound,
                format!("No file transfer {id} is asked of this agent's machine."),
            )
        })
}

fn canceled() -> ApiError {
    ApiError::new(
        ErrorCode::TransferCanceled,
        "The caller is gone: the transfer was canceled.",
    )
}

/// Send a requested capture file, `Content-Length` bytes; the server hands it on to the caller
/// as it arrives.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_SendFile",
    params(("agentId" = Uuid, Path), ("transferId" = Uuid, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Delivered"),
        (status = 404, description = "No such transfer for this agent", body = CloudError),
        (status = 409, description = "The transfer was canceled or already sent", body = CloudError),
    )
)]
#[put("/agent/v1/agents/{agentId}/transfers/{transferId}")]
pub async fn send_file(
    req: HttpRequest,
    state: web::Data<AppState>,
    bearer: AgentBearer,
    path: web::Path<(Uuid, Uuid)>,
    mut payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (agent_id, id) = path.into_inner();
    let key = transfer_key(id);
    let size = {
        let mut conn = state.conn().await?;
        // Who is asking comes first, then what the request says.
        own_transfer(&mut conn, agent_id, &bearer, id).await?;
        let size: i64 = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::new(ErrorCode::LengthRequired, "Content-Length is required.")
            })?;
        // Only the first sender of a requested transfer goes on.
        let started = diesel::update(
            file_transfers::table
                .find(id)
                .filter(file_transfers::state.eq(TransferState::Requested)),
        )
        .set((
            file_transfers::state.eq(TransferState::Sending),
            file_transfers::size.eq(size),
            file_transfers::updated_at.eq(Utc::now()),
        ))
        .execute(&mut conn)
        .await?;
        if started == 0 {
            return Err(canceled());
        }
        notify(&mut conn, &key).await?;
        size
    };
    match receive_chunks(&state, id, size, &mut payload).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(e) => {
            // Tell the caller at once rather than letting it wait for chunks that won't come.
            let (_, _, message, _) = e.arm_parts();
            if let Ok(mut conn) = state.conn().await {
                let _ = diesel::update(
                    file_transfers::table
                        .find(id)
                        .filter(file_transfers::state.eq(TransferState::Sending)),
                )
                .set((
                    file_transfers::state.eq(TransferState::Failed),
                    file_transfers::error_message.eq(message),
                    file_transfers::updated_at.eq(Utc::now()),
                ))
                .execute(&mut conn)
                .await;
                let _ = notify(&mut conn, &key).await;
            }
            Err(e)
        }
    }
}

/// Writes the agent's body into numbered chunks, at most [`WINDOW`] ahead of the caller.
async fn receive_chunks(
    state: &AppState,
    id: Uuid,
    size: i64,
    payload: &mut web::Payload,
) -> ApiResult<()> {
    let mut sub = state.hub.subscribe(&transfer_key(id));
    let mut seq = 0i32;
    let mut received = 0i64;
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    loop {
        let next = payload.next().await;
        if let Some(item) = &next {
            let bytes = item.as_ref().map_err(|e| {
                ApiError::new(
                    ErrorCode::IncompleteBody,
                    format!("the file did not arrive: {e}"),
                )
            })?;
            buf.extend_from_slice(bytes);
            received += bytes.len() as i64;
            if buf.len() < CHUNK_BYTES {
                continue;
            }
        }
        if !buf.is_empty() {
            wait_for_room(state, &mut sub, id).await?;
            write_chunk(state, id, seq, std::mem::take(&mut buf)).await?;
            seq += 1;
        }
        if next.is_none() {
            break;
        }
    }
    if received != size {
        return Err(ApiError::new(
            ErrorCode::IncompleteBody,
            format!("the agent sent {received} of {size} bytes"),
        ));
    }
    let mut conn = state.conn().await?;
    diesel::update(
        file_transfers::table
            .find(id)
            .filter(file_transfers::state.eq(TransferState::Sending)),
    )
    .set((
        file_transfers::state.eq(TransferState::Done),
        file_transfers::updated_at.eq(Utc::now()),
    ))
    .execute(&mut conn)
    .await?;
    notify(&mut conn, &transfer_key(id)).await?;
    Ok(())
}

/// Stores chunk `seq` of transfer `id` and wakes the caller's replica.
async fn write_chunk(state: &AppState, id: Uuid, seq: i32, data: Vec<u8>) -> ApiResult<()> {
    let mut conn = state.conn().await?;
    diesel::insert_into(transfer_chunks::table)
        .values((
            transfer_chunks::transfer_id.eq(id),
            transfer_chunks::seq.eq(seq),
            transfer_chunks::data.eq(data),
        ))
        .execute(&mut conn)
        .await?;
    diesel::update(file_transfers::table.find(id))
        .set(file_transfers::updated_at.eq(Utc::now()))
        .execute(&mut conn)
        .await?;
    notify(&mut conn, &transfer_key(id)).await
}

/// Waits until fewer than [`WINDOW`] chunks of transfer `id` wait for the caller.
async fn wait_for_room(
    state: &AppState,
    sub: &mut crate::notify::Subscription,
    id: Uuid,
) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        sub.mark_seen();
        let (waiting, transfer_state) = {
            let mut conn = state.conn().await?;
            let waiting: i64 = transfer_chunks::table
                .filter(transfer_chunks::transfer_id.eq(id))
                .count()
                .get_result(&mut conn)
                .await?;
            let s: Option<TransferState> = file_transfers::table
                .find(id)
                .select(file_transfers::state)
                .first(&mut conn)
                .await
                .optional()?;
            (waiting, s)
        };
        if transfer_state != Some(TransferState::Sending) {
            return Err(canceled());
        }
        if waiting < WINDOW {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(canceled());
        }
        sub.changed(Duration::from_secs(1)).await;
    }
}

/// Decline a requested file (for example: it is no longer on the machine).
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_DeclineFile",
    params(("agentId" = Uuid, Path), ("transferId" = Uuid, Path)),
    request_body = TransferFailure,
    responses(
        (status = 204, description = "Recorded"),
        (status = 404, description = "No such transfer for this agent", body = CloudError),
    )
)]
#[post("/agent/v1/agents/{agentId}/transfers/{transferId}/failure")]
pub async fn decline_file(
    state: web::Data<AppState>,
    bearer: AgentBearer,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (agent_id, id) = path.into_inner();
    let mut conn = state.conn().await?;
    // Who is asking comes first: a refused credential learns nothing of the body's schema.
    own_transfer(&mut conn, agent_id, &bearer, id).await?;
    let failure: TransferFailure = super::agent_body(&body, "failure")?;
    diesel::update(
        file_transfers::table.find(id).filter(
            file_transfers::state.eq_any([TransferState::Requested, TransferState::Sending]),
        ),
    )
    .set((
        file_transfers::state.eq(TransferState::Failed),
        file_transfers::error_message.eq(&failure.message),
        file_transfers::updated_at.eq(Utc::now()),
    ))
    .execute(&mut conn)
    .await?;
    notify(&mut conn, &transfer_key(id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
