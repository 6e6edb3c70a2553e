//! `Microsoft.Network/networkWatchers/{nw}/packetCaptures`. The handlers validate and answer;
//! every state change is a call into [`crate::lifecycle`].

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::paths::{
    CaptureAddress, CaptureDelete, CaptureList, CapturePath, CaptureQueryStatus, CaptureRead,
    CaptureStop, CaptureWrite, WatcherPath,
};
use super::{lro_response, next_link, page_len, skiptoken};
use crate::arm::api_version::NetworkApiVersion;
use crate::arm::ids::validate_resource_name;
use crate::arm::models::{
    PacketCapture, PacketCaptureListResult, PacketCaptureParameters,
    PacketCaptureQueryStatusResult, PacketCaptureResult, PacketCaptureResultProperties, etag,
};
use crate::arm::put::{self, Existing, Preconditions, PutDecision};
use crate::arm::validate::{self, ValidCapture};
use crate::auth::{Caller, actions};
use crate::db::models::{CaptureRow, StorageAccountRow, WatcherRow};
use crate::db::schema::packet_captures;
use crate::db::watchers::Lock;
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::create::NewCaptureSpec;
use crate::lifecycle::{self, ProvisioningState, stop::Request};
use crate::limits::{self, Heavy, JsonBody};
use crate::state::{AppState, CaptureReads, CaptureView};

pub fn to_model(c: &CaptureRow) -> PacketCaptureResult {
    let parameters: PacketCaptureParameters = serde_json::from_value(c.parameters.clone())
        .unwrap_or_else(|e| {
            // Written by this server from the same type: cannot happen short of manual edits.
            tracing::error!(capture = %c.id, error = %e, "stored parameters do not parse");
            PacketCaptureParameters::default()
        });
    let provisioning_state = if c.deleting {
        ProvisioningState::Deleting
    } else {
        c.provisioning_state
    };
    PacketCaptureResult {
        name: c.name.clone(),
        id: c.resource_id.clone(),
        etag: etag(c.etag),
        properties: PacketCaptureResultProperties {
            continuous_capture_files: file_views(c, &parameters),
            parameters,
            provisioning_state: provisioning_state.to_string(),
            capture_status: None,
        },
    }
}

/// What callers see of a continuous capture's files (`None` for a single-file capture).
fn file_views(
    c: &CaptureRow,
    p: &PacketCaptureParameters,
) -> Option<Vec<crate::arm::models::PacketCaptureFileInfo>> {
    use crate::db::file_set::FileState;
    p.continuous_capture?;
    let local = p.storage_location.local_path.as_deref();
    let blob = p.storage_location.storage_path.as_deref();
    Some(
        c.file_set()
            .into_iter()
            .filter(|f| f.state != FileState::Discarded)
            .map(|f| crate::arm::models::PacketCaptureFileInfo {
                index: f.index,
                size_in_bytes: f.size,
                packets: f.packets,
                first_packet_time: f.first_packet_time,
                last_packet_time: f.last_packet_time,
                state: format!("{:?}", f.state),
                local_path: local.map(|l| agent_protocol::file_name(l, f.index)),
                blob_url: blob
                    .filter(|_| f.state == FileState::Uploaded)
                    .map(|b| agent_protocol::file_name(b, f.index)),
                message: f.message,
            })
            .collect(),
    )
}

pub fn status_model(c: &CaptureRow) -> PacketCaptureQueryStatusResult {
    let files = serde_json::from_value::<PacketCaptureParameters>(c.parameters.clone())
        .ok()
        .and_then(|p| file_views(c, &p));
    // A continuous capture's data: each kept file on the machine and/or its blob.
    let capture_files = match &files {
        Some(files) => files
            .iter()
            .flat_map(|f| f.local_path.iter().chain(f.blob_url.iter()).cloned())
            .collect(),
        None => serde_json::from_value(c.files.clone()).unwrap_or_default(),
    };
    PacketCaptureQueryStatusResult {
        name: c.name.clone(),
        id: c.resource_id.clone(),
        capture_start_time: c.capture_start_time,
        capture_stop_time: c.stopped_at.filter(|_| !c.status.is_active()),
        packet_capture_status: c.status.to_string(),
        stop_reason: c.stop_reason.map(|r| r.to_string()),
        packet_capture_error: serde_json::from_value(c.errors.clone()).unwrap_or_default(),
        packets_captured: c.packets,
        bytes_captured: c.bytes,
        kernel_drops: c.kernel_drops,
        capture_files,
        error_message: c.error_message.clone(),
        continuous_capture_files: files,
    }
}

/// The registered storage account a capture names, refused when unknown or premium.
async fn capture_storage_account(
    conn: &mut AsyncPgConnection,
    storage_id: &str,
) -> ApiResult<StorageAccountRow> {
    const TARGET: &str = "properties.storageLocation.storageId";
    let account = crate::storage::accounts::find(conn, storage_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::StorageAccountNotFound,
                TARGET,
                format!(
                    "The storage account '{storage_id}' is not registered with this server (register it with `capture-api storage-accounts add`)."
                ),
            )
        })?;
    if account.premium {
        return Err(ApiError::invalid(
            ErrorCode::PremiumStorageAccountNotSupported,
            TARGET,
            format!(
                "The storage account '{storage_id}' is a premium storage account: premium storage accounts are not supported for packet captures."
            ),
        ));
    }
    Ok(account)
}

/// [`CaptureAddress::fetch`], shared by concurrent readers of the same capture.
async fn read_capture(
    state: &AppState,
    reads: &web::Data<CaptureReads>,
    address: &CaptureAddress,
) -> ApiResult<Arc<CaptureView>> {
    let (state, address2) = (state.clone(), address.clone());
    reads
        .clone()
        .into_inner()
        .read(address.key(), move || {
            let (state, address) = (state.clone(), address2.clone());
            async move {
                let mut conn = state.conn().await?;
                let row = address.fetch(&mut conn).await?;
                let model = to_model(&row);
                let resource_json = serde_json::to_vec(&model).map_err(ApiError::internal)?;
                Ok(CaptureView {
                    row,
                    etag: model.etag,
                    resource_json: resource_json.into(),
                })
            }
        })
        .await
}

/// Parameters compared for an idempotent PUT: everything the client gave, not what the
/// server derived.
fn comparable(p: &serde_json::Value) -> serde_json::Value {
    let mut p = p.clone();
    if let Some(sl) = p.get_mut("storageLocation").and_then(|v| v.as_object_mut()) {
        sl.remove("storagePath");
    }
    p
}

fn as_existing(c: &CaptureRow, parameters: &serde_json::Value) -> Existing {
    Existing {
        etag: etag(c.etag),
        deleting: c.deleting,
        same_parameters: comparable(&c.parameters) == comparable(parameters),
    }
}

/// Capturing a machine's traffic is a write at the machine's scope too, and storing it needs
/// at least a view of the storage account.
async fn authorize_target(
    state: &AppState,
    caller: &Caller,
    valid: &ValidCapture,
) -> ApiResult<()> {
    let target = &valid.parameters.target;
    caller
        .authorize(&state.auth, actions::CAPTURE_WRITE, target)
        .await?;
    if let Some(id) = &valid.parameters.storage_location.storage_id {
        caller
            .authorize(&state.auth, actions::STORAGE_ACCOUNT_READ, id)
            .await?;
    }
    Ok(())
}

/// The capture to create from a validated body: its storage account is looked up, and its
/// blob path set.
async fn new_capture<'a>(
    conn: &mut AsyncPgConnection,
    name: &'a str,
    valid: &ValidCapture,
    principal: &'a str,
    deadline: DateTime<Utc>,
) -> ApiResult<NewCaptureSpec<'a>> {
    let mut params = valid.parameters.clone();
    let storage = match &params.storage_location.storage_id {
        Some(id) => {
            let account = capture_storage_account(conn, id).await?;
            let blob = crate::storage::blob_name(&valid.target, Utc::now());
            params.storage_location.storage_path =
                Some(crate::storage::blob_url(&account.blob_endpoint, &blob));
            Some((account.id, blob))
        }
        None => None,
    };
    let parameters = serde_json::to_value(&params).map_err(ApiError::internal)?;
    Ok(NewCaptureSpec::of(
        name, parameters, valid, storage, deadline, principal,
    ))
}

/// The PUT in its transaction: the capture created, or the same one again.
async fn put_capture(
    conn: &mut AsyncPgConnection,
    address: &CaptureAddress,
    pre: &Preconditions,
    spec: NewCaptureSpec<'_>,
) -> ApiResult<(CaptureRow, WatcherRow, Uuid)> {
    let watcher = address.watcher.fetch(conn, Lock::Share).await?;
    if watcher.provisioning_state == ProvisioningState::Deleting {
        return Err(ApiError::new(
            ErrorCode::AnotherOperationInProgress,
            format!("The network watcher '{}' is being deleted.", watcher.name),
        ));
    }
    let name = &address.name;
    let parameters = spec.parameters.clone();
    let mut existing = address.lock(conn, &watcher).await?;
    let seen = existing.as_ref().map(|c| as_existing(c, &parameters));
    if put::decide(seen.as_ref(), pre, name)? == PutDecision::Create {
        if let Some((row, op)) = lifecycle::create::create(conn, &watcher, spec, Utc::now()).await?
        {
            return Ok((row, watcher, op));
        }
        // A concurrent PUT of the same name won: this one is judged as its retry.
        existing = address.lock(conn, &watcher).await?;
        let seen = existing.as_ref().map(|c| as_existing(c, &parameters));
        put::decide_after_race(seen.as_ref(), pre, name)?;
    }
    let existing = existing.ok_or_else(|| ApiError::internal("PUT decision without a capture"))?;
    let op = existing.create_operation(conn).await?;
    Ok((existing, watcher, op))
}

/// Create a packet capture (long-running: 201, then follow Azure-AsyncOperation).
///
/// A PUT of an existing capture with the same parameters answers 201 with the existing
/// resource; different parameters answer 409 `PacketCaptureParametersConflict`.
/// `If-None-Match: *` and `If-Match` are honoured (412 `PreconditionFailed`).
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_Create",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("packetCaptureName" = String, Path),
        ("api-version" = String, Query),
        ("If-Match" = Option<String>, Header, description = "Only if the capture has this ETag"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if the capture does not exist"),
    ),
    request_body = PacketCapture,
    responses(
        (status = 201, description = "Created; provisioningState Updating until the agent started the capture", body = PacketCaptureResult,
         headers(("Azure-AsyncOperation" = String), ("Location" = String), ("Retry-After" = i32))),
        (status = 400, description = "Invalid parameters, or over a bound (at most 100 filters of at most 512 characters a value, 1000 instances in each scope list, 4096 JSON values); `target` is the JSON path of the field", body = CloudError),
        (status = 404, description = "No such network watcher", body = CloudError),
        (status = 409, description = "Exists with other parameters", body = CloudError),
        (status = 412, description = "Precondition failed", body = CloudError),
        (status = 413, description = "Body over 1 MiB", body = CloudError),
        (status = 503, description = "Busy with other requests with a body; retry after Retry-After", body = CloudError,
         headers(("Retry-After" = i32))),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[put(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}"
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: CapturePath<CaptureWrite>,
    v: NetworkApiVersion,
    body: JsonBody,
) -> ApiResult<HttpResponse> {
    validate_resource_name(&path.name, "packet capture")?;
    let valid = validate::capture_body(&body.value)?;
    validate::for_api_version(&valid, &v.0)?;
    authorize_target(&state, &path.caller, &valid).await?;
    let pre = Preconditions::of(&req);
    let principal = path.caller.id().to_string();
    let deadline = Utc::now() + state.timing.agent_wait;
    let mut conn = state.conn().await?;
    let spec = new_capture(&mut conn, &path.name, &valid, &principal, deadline).await?;
    let (row, watcher, op) = conn
        .transaction::<_, ApiError, _>(async |conn| put_capture(conn, &path, &pre, spec).await)
        .await?;
    state.metrics.captures_created.inc();
    let model = to_model(&row);
    Ok(lro_response(
        StatusCode::CREATED,
        &state.base_url(&req),
        &watcher,
        op,
        &v.0,
    )
    .insert_header(("ETag", model.etag.clone()))
    .json(model))
}

/// Get a packet capture.
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_Get",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("packetCaptureName" = String, Path),
        ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "The capture", body = PacketCaptureResult),
        (status = 404, description = "No such capture or watcher", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}"
)]
pub async fn get_capture(
    state: web::Data<AppState>,
    reads: web::Data<CaptureReads>,
    path: CapturePath<CaptureRead>,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let c = read_capture(&state, &reads, &path).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", c.etag.clone()))
        .content_type("application/json")
        .body(c.resource_json.clone()))
}

/// List the packet captures of a network watcher (paged with nextLink).
///
/// A page holds at most `--page-size` captures, and ends early past 1 MiB of them.
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_List",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("api-version" = String, Query),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
        ("$expand" = Option<String>, Query, description = "Extension: `status` adds each capture's queryStatus result as properties.captureStatus"),
    ),
    responses(
        (status = 200, description = "A page of captures", body = PacketCaptureListResult),
        (status = 503, description = "Busy with other lists; retry after Retry-After", body = CloudError,
         headers(("Retry-After" = i32))),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures"
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: WatcherPath<CaptureList>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let after = skiptoken(&req)?.unwrap_or_default();
    let with_status = expand_status(&req)?;
    let readable = path
        .caller
        .filter(&state.auth, actions::CAPTURE_READ)
        .await?;
    let _turn = limits::admit(Heavy::List).await?;
    let mut conn = state.conn().await?;
    let watcher = path.fetch(&mut conn, Lock::None).await?;
    let captures = || {
        packet_captures::table
            .filter(packet_captures::watcher_id.eq(watcher.id))
            .filter(packet_captures::name_key.gt(&after))
            .filter(packet_captures::parent_id.is_null())
    };
    // The page's keys and sizes first: the page ends at `page_size` items or when the next one
    // would pass MAX_LIST_PAGE_BYTES, so that only what is sent is loaded.
    let sizes: Vec<(String, i32)> = captures()
        .order(packet_captures::name_key)
        .limit(state.page_size + 1)
        .select((
            packet_captures::name_key,
            diesel::dsl::sql::<diesel::sql_types::Integer>(if with_status {
                STORED_SIZE_WITH_STATUS
            } else {
                STORED_SIZE
            }),
        ))
        .load(&mut conn)
        .await?;
    let fits = page_len(
        sizes.iter().map(|(_, n)| usize::try_from(*n).unwrap_or(0)),
        state.page_size as usize,
    );
    let rows: Vec<(String, CaptureRow)> = match sizes.get(fits.saturating_sub(1)) {
        Some((last, _)) => {
            captures()
                .filter(packet_captures::name_key.le(last))
                .order(packet_captures::name_key)
                .limit(fits as i64)
                .select((packet_captures::name_key, CaptureRow::as_select()))
                .load(&mut conn)
                .await?
        }
        None => vec![],
    };
    drop(conn);
    // More after this page: measured, or a capture created in between took a place in it.
    let measured_last = sizes.get(fits.saturating_sub(1)).map(|(k, _)| k.as_str());
    let overtaken = rows.len() == fits && rows.last().map(|(k, _)| k.as_str()) != measured_last;
    let more = sizes.len() > fits || overtaken;
    let next = match (more, rows.last()) {
        (true, Some((key, _))) => {
            let link = next_link(&state.base_url(&req), req.path(), &v.0, key);
            Some(if with_status {
                format!("{link}&$expand=status")
            } else {
                link
            })
        }
        _ => None,
    };
    // What the caller may not read stays out (the next link follows the scan).
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|(_, c)| readable(&c.resource_id))
        .collect();
    // Built off the worker's thread: a page of large captures does not hold up other requests.
    let body = web::block(move || {
        serde_json::to_vec(&PacketCaptureListResult {
            value: rows
                .iter()
                .map(|(_, c)| {
                    let mut model = to_model(c);
                    if with_status {
                        model.properties.capture_status = Some(Box::new(status_model(c)));
                    }
                    model
                })
                .collect(),
            next_link: next,
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// A capture's stored size in a list page: its parameters, id and files.
const STORED_SIZE: &str = "octet_length(packet_captures.parameters::text) + octet_length(packet_captures.resource_id) + octet_length(packet_captures.file_set::text)";
/// The same with its status (`$expand=status`): the files again, and its error.
const STORED_SIZE_WITH_STATUS: &str = "octet_length(packet_captures.parameters::text) + 2 * octet_length(packet_captures.resource_id) + 2 * octet_length(packet_captures.file_set::text) + octet_length(packet_captures.files::text) + octet_length(packet_captures.errors::text) + coalesce(octet_length(packet_captures.error_message), 0) + 256";

/// Whether a list asks for each capture's status (`$expand=status`, this server's extension, in
/// the manner of ARM's `$expand=instanceView`); any other `$expand` is refused.
fn expand_status(req: &HttpRequest) -> ApiResult<bool> {
    let mut expand = url::form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(k, _)| k.eq_ignore_ascii_case("$expand"));
    match expand.next() {
        None => Ok(false),
        Some((_, v)) if v.eq_ignore_ascii_case("status") && expand.next().is_none() => Ok(true),
        Some(_) => Err(ApiError::invalid(
            ErrorCode::InvalidParameter,
            "$expand",
            "The only $expand of a packet capture list is `status` (each capture's queryStatus result in properties.captureStatus): use $expand=status once, or leave it out.",
        )),
    }
}

/// Query the status of a packet capture (answers 200 at once).
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_GetStatus",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("packetCaptureName" = String, Path),
        ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "The status", body = PacketCaptureQueryStatusResult),
        (status = 404, description = "No such capture", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[post(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}/queryStatus"
)]
pub async fn query_status(
    state: web::Data<AppState>,
    reads: web::Data<CaptureReads>,
    path: CapturePath<CaptureQueryStatus>,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let c = read_capture(&state, &reads, &path).await?;
    Ok(HttpResponse::Ok().json(status_model(&c.row)))
}

/// Stop a packet capture. Idempotent: 200 when it is not running, 202 (follow Location) while
/// the agent stops it.
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_Stop",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("packetCaptureName" = String, Path),
        ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "Not running (any more)"),
        (status = 202, description = "Stopping; follow the Location header",
         headers(("Azure-AsyncOperation" = String), ("Location" = String), ("Retry-After" = i32))),
        (status = 404, description = "No such capture", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[post(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}/stop"
)]
pub async fn stop(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: CapturePath<CaptureStop>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let principal = path.caller.id().to_string();
    let now = Utc::now();
    let deadline = now + state.timing.stop_grace * 2;
    let mut conn = state.conn().await?;
    let outcome = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let watcher = path.watcher.fetch(conn, Lock::None).await?;
            let c = path
                .lock(conn, &watcher)
                .await?
                .ok_or_else(|| path.not_found(&watcher))?;
            let request = Request {
                principal: &principal,
                deadline,
                now,
            };
            let op = lifecycle::stop::stop(conn, &watcher, &c, request).await?;
            Ok(op.map(|op| (watcher, op)))
        })
        .await?;
    match outcome {
        None => Ok(HttpResponse::Ok().finish()),
        Some((watcher, op)) => Ok(lro_response(
            StatusCode::ACCEPTED,
            &state.base_url(&req),
            &watcher,
            op,
            &v.0,
        )
        .finish()),
    }
}

/// Delete a packet capture: a running capture is stopped first. Capture files are never deleted.
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_Delete",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("packetCaptureName" = String, Path),
        ("api-version" = String, Query),
    ),
    responses(
        (status = 202, description = "Deleting; follow the Location header",
         headers(("Azure-AsyncOperation" = String), ("Location" = String), ("Retry-After" = i32))),
        (status = 204, description = "No such capture"),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[delete(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}"
)]
pub async fn delete_capture(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: CapturePath<CaptureDelete>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let principal = path.caller.id().to_string();
    let now = Utc::now();
    let deadline = now + state.timing.stop_grace * 2;
    let mut conn = state.conn().await?;
    let outcome = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let watcher = path.watcher.fetch(conn, Lock::None).await?;
            let Some(c) = path.lock(conn, &watcher).await? else {
                return Ok(None);
            };
            let request = Request {
                principal: &principal,
                deadline,
                now,
            };
            let op = lifecycle::stop::delete_capture(conn, &watcher, &c, request).await?;
            Ok(Some((watcher, op)))
        })
        .await?;
    match outcome {
        None => Ok(HttpResponse::NoContent().finish()),
        Some((watcher, op)) => Ok(lro_response(
            StatusCode::ACCEPTED,
            &state.base_url(&req),
            &watcher,
            op,
            &v.0,
        )
        .finish()),
    }
}
