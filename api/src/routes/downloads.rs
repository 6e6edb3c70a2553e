//! `download` of a capture's file (an extension of the ARM API): a read-only SAS URL for a blob,
//! or the file kept on the machine, which its agent sends through the server.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::agent_files::{notify, transfer_key};
use super::paths::{CapturePath, CaptureRead};
use crate::arm::api_version::NetworkApiVersion;
use crate::db::models::{CaptureRow, TransferRow};
use crate::db::schema::{file_transfers, machines, transfer_chunks};
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::{TransferState, UploadState};
use crate::state::AppState;

/// How long a caller waits for the agent to start sending a file.
const AGENT_ANSWER_WAIT: Duration = Duration::from_secs(30);
/// How long a transfer may make no progress before it is abandoned.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Where to get a capture's file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureDownload {
    /// `StorageAccount`: a read-only SAS URL of the capture's blob. `Agent`: the file kept on the
    /// machine, streamed by this server from the capture's agent (GET it with the same
    /// credentials as any other request).
    #[schema(example = "StorageAccount")]
    pub source: String,
    pub download_url: String,
    /// When a SAS URL stops working (absent for `Agent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<DateTime<Utc>>,
}

fn not_available(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::CaptureFileNotAvailable, message)
}

/// Get a capture's file: a short-lived read-only SAS URL of its blob once uploaded, else the
/// URL of `…/content`, through which the machine's agent sends the file it kept. With
/// `Accept: application/octet-stream` (and no blob), the file itself is the answer.
///
/// An extension of this server: not part of the Azure REST API.
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_Download",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("packetCaptureName" = String, Path),
        ("api-version" = String, Query), FileIndex,
    ),
    responses(
        (status = 200, description = "Where to download the file (or, with Accept: application/octet-stream, the file)",
         content(
            (PacketCaptureDownload = "application/json"),
            (Vec<u8> = "application/octet-stream"),
         )),
        (status = 404, description = "No such capture", body = CloudError),
        (status = 409, description = "No file yet, or it is no longer on the machine (`CaptureFileNotAvailable`); agent unreachable (`CaptureAgentUnavailable`)", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[post(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}/download"
)]
pub async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: CapturePath<CaptureRead>,
    v: NetworkApiVersion,
    file: web::Query<FileIndex>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.conn().await?;
    let c = path.fetch(&mut conn).await?;
    let wants_file = req
        .headers()
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/octet-stream"));
    let source = pick_source(&c, file.file_index)?;
    if let Source::Blob(blob) = &source
        && let Some(answer) = blob_answer(&state, &mut conn, &c, blob).await?
    {
        return Ok(answer);
    }
    if !matches!(source, Source::Single) {
        if wants_file {
            drop(conn);
            return stream_source(&state, c, source).await;
        }
        let query = file
            .file_index
            .map(|i| format!("&fileIndex={i}"))
            .unwrap_or_default();
        let content_url = format!(
            "{}{}/content?api-version={}{query}",
            state.base_url(&req),
            req.path().trim_end_matches("/download"),
            v.0
        );
        return Ok(HttpResponse::Ok().json(PacketCaptureDownload {
            source: if matches!(source, Source::Blobs(_)) {
                "StorageAccount".into()
            } else {
                "Agent".into()
            },
            download_url: content_url,
            expires_on: None,
        }));
    }
    if c.upload_state == Some(UploadState::Uploaded)
        && let Some(blob) = &c.blob_name
        && let Some(answer) = blob_answer(&state, &mut conn, &c, blob).await?
    {
        return Ok(answer);
    }
    check_agent_file(&c)?;
    if wants_file {
        drop(conn);
        return stream_from_agent(&state, c, None).await;
    }
    let content_url = format!(
        "{}{}/content?api-version={}",
        state.base_url(&req),
        req.path().trim_end_matches("/download"),
        v.0
    );
    Ok(HttpResponse::Ok().json(PacketCaptureDownload {
        source: "Agent".into(),
        download_url: content_url,
        expires_on: None,
    }))
}

/// A read-only SAS URL of `blob` of the capture's storage account (`None` when the account is no
/// longer registered).
async fn blob_answer(
    state: &AppState,
    conn: &mut diesel_async::AsyncPgConnection,
    c: &CaptureRow,
    blob: &str,
) -> ApiResult<Option<HttpResponse>> {
    let Some(account_id) = c.storage_account_id else {
        return Ok(None);
    };
    let Some(account) = crate::storage::accounts::by_ids(conn, &[account_id])
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let sas = state.storage.download_sas(&account, blob)?;
    Ok(Some(HttpResponse::Ok().json(PacketCaptureDownload {
        source: "StorageAccount".into(),
        download_url: sas.url,
        expires_on: Some(sas.expires_on),
    })))
}

/// The file of a capture as kept on its machine, sent by the machine's agent through this
/// server (`application/vnd.tcpdump.pcap`).
///
/// An extension of this server: not part of the Azure REST API.
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_GetContent",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("packetCaptureName" = String, Path),
        ("api-version" = String, Query), FileIndex,
    ),
    responses(
        (status = 200, description = "The capture file", content_type = "application/vnd.tcpdump.pcap", body = Vec<u8>),
        (status = 404, description = "No such capture", body = CloudError),
        (status = 409, description = "No file, or the agent cannot send it", body = CloudError),
        (status = 504, description = "The agent did not answer in time", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}/content"
)]
pub async fn content(
    state: web::Data<AppState>,
    path: CapturePath<CaptureRead>,
    _v: NetworkApiVersion,
    file: web::Query<FileIndex>,
) -> ApiResult<HttpResponse> {
    let c = {
        let mut conn = state.conn().await?;
        path.fetch(&mut conn).await?
    };
    let source = pick_source(&c, file.file_index)?;
    if matches!(source, Source::Single) {
        check_agent_file(&c)?;
        return stream_from_agent(&state, c, None).await;
    }
    stream_source(&state, c, source).await
}

/// `fileIndex`: one file of a continuous capture (see `continuousCaptureFiles`); without it, a
/// continuous capture's kept files are merged into one pcap.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct FileIndex {
    #[param(minimum = 1)]
    pub file_index: Option<u32>,
}

/// Where the bytes of a download come from.
enum Source {
    /// A single-file capture: as before (its blob once uploaded, else its agent).
    Single,
    /// One uploaded file of a continuous capture.
    Blob(String),
    /// Uploaded files of a continuous capture, merged (blob, size) in order.
    Blobs(Vec<(String, u64)>),
    /// From the agent: one file of a continuous capture, or (None) its kept files merged.
    Agent(Option<u32>),
}

fn pick_source(c: &CaptureRow, file: Option<u32>) -> ApiResult<Source> {
    use crate::db::file_set::FileState;
    let p: Option<crate::arm::models::PacketCaptureParameters> =
        serde_json::from_value(c.parameters.clone()).ok();
    let Some(p) = p.filter(|p| p.continuous_capture.is_some()) else {
        return match file {
            None => Ok(Source::Single),
            Some(_) => Err(ApiError::invalid(
                ErrorCode::InvalidRequestFormat,
                "fileIndex",
                format!(
                    "'fileIndex' applies only to a continuous capture; '{}' has one file: leave 'fileIndex' out.",
                    c.name
                ),
            )),
        };
    };
    check_agent_file(c)?;
    let kept: Vec<crate::db::file_set::StoredFile> = c
        .file_set()
        .into_iter()
        .filter(|f| f.state != FileState::Discarded)
        .collect();
    let local = p.storage_location.local_path.is_some();
    match file {
        Some(i) => {
            let Some(f) = kept.iter().find(|f| f.index == i) else {
                let range = match (<[_]>::first(&kept), <[_]>::last(&kept)) {
                    (Some(a), Some(b)) => format!("files {} to {}", a.index, b.index),
                    _ => "no file yet".to_string(),
                };
                return Err(not_available(format!(
                    "The packet capture '{}' keeps no file {i} (it keeps {range}; older files left the ring).",
                    c.name
                )));
            };
            match (f.state, c.file_blob(i)) {
                (FileState::Uploaded, Some(blob)) => Ok(Source::Blob(blob)),
                _ => Ok(Source::Agent(Some(i))),
            }
        }
        None if local => Ok(Source::Agent(None)),
        None => {
            if kept.is_empty() {
                return Err(not_available(format!(
                    "The packet capture '{}' has no file yet.",
                    c.name
                )));
            }
            if kept.iter().all(|f| f.state == FileState::Uploaded) {
                Ok(Source::Blobs(
                    kept.iter()
                        .filter_map(|f| c.file_blob(f.index).map(|b| (b, f.size)))
                        .collect(),
                ))
            } else {
                Ok(Source::Agent(None))
            }
        }
    }
}

/// Streams a continuous capture's file(s): merged from its blobs, or from its agent.
async fn stream_source(state: &AppState, c: CaptureRow, source: Source) -> ApiResult<HttpResponse> {
    match source {
        Source::Blobs(blobs) => stream_blobs(state, c, blobs).await,
        Source::Blob(blob) => {
            let size = c
                .file_set()
                .iter()
                .find(|f| c.file_blob(f.index).as_deref() == Some(blob.as_str()))
                .map(|f| f.size)
                .unwrap_or(0);
            stream_blobs(state, c, vec![(blob, size)]).await
        }
        Source::Agent(file) => stream_from_agent(state, c, file).await,
        Source::Single => stream_from_agent(state, c, None).await,
    }
}

/// The blobs of a continuous capture merged into one pcap: the first whole, the others without
/// their 24-byte header (the files follow one another in time).
async fn stream_blobs(
    state: &AppState,
    c: CaptureRow,
    blobs: Vec<(String, u64)>,
) -> ApiResult<HttpResponse> {
    const HEADER: u64 = 24;
    let account = {
        let mut conn = state.conn().await?;
        match c.storage_account_id {
            Some(id) => crate::storage::accounts::by_ids(&mut conn, &[id])
                .await?
                .pop(),
            None => None,
        }
    }
    .ok_or_else(|| {
        not_available(format!(
            "The storage account of '{}' is no longer registered.",
            c.name
        ))
    })?;
    let size: u64 = blobs
        .iter()
        .enumerate()
        .map(|(n, (_, s))| if n == 0 { *s } else { s.saturating_sub(HEADER) })
        .sum();
    let storage = state.storage.clone();
    let parts = futures_util::stream::iter(blobs.into_iter().enumerate())
        .then(move |(n, (blob, _))| {
            let (storage, account) = (storage.clone(), account.clone());
            async move {
                let resp = storage
                    .read_blob(&account, &blob)
                    .await
                    .map_err(|e| actix_web::error::ErrorBadGateway(e.to_string()))?;
                let mut skip = if n == 0 { 0 } else { HEADER as usize };
                let body = resp.bytes_stream().map(move |chunk| {
                    let mut chunk =
                        chunk.map_err(|e| actix_web::error::ErrorBadGateway(e.to_string()))?;
                    let cut = skip.min(chunk.len());
                    skip -= cut;
                    Ok::<_, actix_web::Error>(chunk.split_off(cut))
                });
                Ok::<_, actix_web::Error>(body)
            }
        })
        .try_flatten();
    Ok(HttpResponse::Ok()
        .content_type("application/vnd.tcpdump.pcap")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"{}.cap\"", c.name),
        ))
        .body(SizedStream::new(size, Box::pin(parts))))
}

/// Whether the capture's agent can have a file for it.
fn check_agent_file(c: &CaptureRow) -> ApiResult<()> {
    if c.is_scale_set {
        return Err(ApiError::new(
            ErrorCode::DownloadNotSupportedForScaleSet,
            "A scale set capture has one file per instance: download them from the storage account (storageLocation.storagePath).",
        ));
    }
    if c.capture_start_time.is_none() {
        return Err(not_available(format!(
            "The packet capture '{}' has not started: there is no file yet.",
            c.name
        )));
    }
    Ok(())
}

/// Asks the capture's agent for its file, and streams it to the caller as it arrives.
async fn stream_from_agent(
    state: &AppState,
    c: CaptureRow,
    file: Option<u32>,
) -> ApiResult<HttpResponse> {
    let id = Uuid::new_v4();
    let key = transfer_key(id);
    let mut sub = state.hub.subscribe(&key);
    // From here on, the transfer is removed whenever this request ends early (the caller went
    // away, the agent declined, a timeout): the agent's sending then stops.
    let guard = TransferGuard {
        state: state.clone(),
        id,
        finished: false,
    };
    request_transfer(state, &c, id, file).await?;
    let t = wait_for_sender(state, &c, id, &mut sub).await?;
    let size = t.size.unwrap_or(0).max(0) as u64;
    let reader = ChunkReader {
        state: state.clone(),
        sub,
        guard,
        seq: 0,
        sent: 0,
        size,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        if r.sent >= r.size {
            r.guard.finish().await;
            return None;
        }
        match r.next_chunk().await {
            Ok(bytes) => {
                r.sent += bytes.len() as u64;
                r.state.metrics.file_bytes_streamed.add(bytes.len() as u64);
                Some((Ok::<_, actix_web::Error>(bytes), r))
            }
            Err(e) => {
                tracing::warn!(transfer = %r.guard.id, error = %e, "file transfer abandoned");
                Some((Err(actix_web::error::ErrorBadGateway(e)), r.end()))
            }
        }
    });
    let file_name = match file {
        Some(i) => agent_protocol::file_name(&c.name, i),
        None => format!("{}.cap", c.name),
    };
    Ok(HttpResponse::Ok()
        .content_type("application/vnd.tcpdump.pcap")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"{file_name}\""),
        ))
        .body(SizedStream::new(size, stream)))
}

/// Asks the capture's agent (which must be connected) to send its file as transfer `id`.
async fn request_transfer(
    state: &AppState,
    c: &CaptureRow,
    id: Uuid,
    file: Option<u32>,
) -> ApiResult<()> {
    let mut conn = state.conn().await?;
    let lost: Option<bool> = machines::table
        .find(&c.machine_key)
        .select(machines::lost)
        .first(&mut conn)
        .await
        .optional()?;
    if lost != Some(false) {
        return Err(ApiError::new(
            ErrorCode::CaptureAgentUnavailable,
            format!(
                "The agent of '{}' is not connected: the file cannot be fetched now.",
                c.machine_key
            ),
        ));
    }
    diesel::insert_into(file_transfers::table)
        .values((
            file_transfers::id.eq(id),
            file_transfers::capture_id.eq(c.id),
            file_transfers::machine_key.eq(&c.machine_key),
            file_transfers::file_index.eq(file.and_then(|i| i32::try_from(i).ok())),
        ))
        .execute(&mut conn)
        .await?;
    notify(&mut conn, &c.machine_key).await
}

/// Waits for the agent to start sending transfer `id` (or to decline it).
async fn wait_for_sender(
    state: &AppState,
    c: &CaptureRow,
    id: Uuid,
    sub: &mut crate::notify::Subscription,
) -> ApiResult<TransferRow> {
    let deadline = tokio::time::Instant::now() + AGENT_ANSWER_WAIT;
    loop {
        sub.mark_seen();
        let t = transfer(state, id).await?;
        match t.state {
            TransferState::Sending | TransferState::Done => return Ok(t),
            TransferState::Failed => {
                return Err(not_available(format!(
                    "The agent cannot send the file of '{}': {}",
                    c.name,
                    t.error_message.unwrap_or_default()
                )));
            }
            _ => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ApiError::new(
                ErrorCode::AgentTimeout,
                format!(
                    "The agent of '{}' did not start sending the file within {} s.",
                    c.machine_key,
                    AGENT_ANSWER_WAIT.as_secs()
                ),
            ));
        }
        sub.changed(deadline - now).await;
    }
}

async fn transfer(state: &AppState, id: Uuid) -> ApiResult<TransferRow> {
    let mut conn = state.conn().await?;
    file_transfers::table
        .find(id)
        .select(TransferRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| not_available("The transfer was removed (the capture was deleted)."))
}

/// Reads a transfer's chunks in order, deleting each once read.
struct ChunkReader {
    state: AppState,
    sub: crate::notify::Subscription,
    guard: TransferGuard,
    seq: i32,
    sent: u64,
    size: u64,
}

impl ChunkReader {
    async fn next_chunk(&mut self) -> Result<web::Bytes, String> {
        let id = self.guard.id;
        let started = tokio::time::Instant::now();
        let mut sender_done = false;
        loop {
            self.sub.mark_seen();
            let mut conn = self.state.conn().await.map_err(|e| e.to_string())?;
            let data: Option<Vec<u8>> = diesel::delete(transfer_chunks::table.find((id, self.seq)))
                .returning(transfer_chunks::data)
                .get_result(&mut conn)
                .await
                .optional()
                .map_err(|e| e.to_string())?;
            if let Some(data) = data {
                self.seq += 1;
                // Room for the agent's next chunk.
                let _ = notify(&mut conn, &transfer_key(id)).await;
                return Ok(data.into());
            }
            if sender_done {
                return Err("the agent's file ended early".into());
            }
            drop(conn);
            let t = transfer(&self.state, id).await.map_err(|e| e.to_string())?;
            match t.state {
                TransferState::Failed => {
                    return Err(t
                        .error_message
                        .unwrap_or_else(|| "the agent stopped sending".to_string()));
                }
                // Its last chunk may have been written after our read: read once more.
                TransferState::Done => sender_done = true,
                _ => {
                    if started.elapsed() > STALL_LIMIT {
                        return Err("no data from the agent for a minute".into());
                    }
                    self.sub.changed(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Ends the stream after an error (the next poll returns None).
    fn end(mut self) -> Self {
        self.size = self.sent;
        self
    }
}

/// Removes a transfer when its caller is done or gone; the agent's upload then stops.
struct TransferGuard {
    state: AppState,
    id: Uuid,
    finished: bool,
}

impl TransferGuard {
    async fn finish(&mut self) {
        self.finished = true;
        remove_transfer(self.state.clone(), self.id).await;
    }
}

async fn remove_transfer(state: AppState, id: Uuid) {
    if let Ok(mut conn) = state.conn().await {
        let _ = diesel::delete(file_transfers::table.find(id))
            .execute(&mut conn)
            .await;
        let _ = notify(&mut conn, &transfer_key(id)).await;
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        if !self.finished {
            actix_web::rt::spawn(remove_transfer(self.state.clone(), self.id));
        }
    }
}
