//! `Microsoft.Network/networkWatchers/{nw}/packetCaptures`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::watcher_scope;
use super::{check_scope, find_watcher, json_body, lro_response, next_link, skiptoken};
use crate::arm::api_version::NetworkApiVersion;
use crate::arm::ids::{self, validate_resource_name};
use crate::arm::models::{
    PacketCapture, PacketCaptureListResult, PacketCaptureParameters,
    PacketCaptureQueryStatusResult, PacketCaptureResult, PacketCaptureResultProperties, etag,
};
use crate::arm::validate;
use crate::auth::{Caller, actions};
use crate::db::models::{CaptureRow, NewCapture, WatcherRow};
use crate::db::schema::{operations, packet_captures};
use crate::error::{ApiError, ApiResult, CloudError};
use crate::state::AppState;

type CapturePath = web::Path<(String, String, String, String)>;

pub fn to_model(c: &CaptureRow) -> PacketCaptureResult {
    let parameters: PacketCaptureParameters = match serde_json::from_value(c.parameters.clone()) {
        Ok(p) => p,
        Err(e) => {
            // Written by this server from the same type: cannot happen short of manual edits.
            tracing::error!(capture = %c.id, error = %e, "stored parameters do not parse");
            PacketCaptureParameters {
                target: String::new(),
                scope: None,
                target_type: None,
                bytes_to_capture_per_packet: None,
                total_bytes_per_session: None,
                time_limit_in_seconds: None,
                storage_location: crate::arm::models::PacketCaptureStorageLocation {
                    storage_id: None,
                    storage_path: None,
                    file_path: None,
                    local_path: None,
                },
                filters: None,
                continuous_capture: None,
                capture_settings: None,
            }
        }
    };
    PacketCaptureResult {
        name: c.name.clone(),
        id: c.resource_id.clone(),
        etag: etag(c.etag),
        properties: PacketCaptureResultProperties {
            parameters,
            provisioning_state: if c.deleting {
                "Deleting".to_string()
            } else {
                c.provisioning_state.clone()
            },
        },
    }
}

pub fn status_model(c: &CaptureRow) -> PacketCaptureQueryStatusResult {
    PacketCaptureQueryStatusResult {
        name: c.name.clone(),
        id: c.resource_id.clone(),
        capture_start_time: c.capture_start_time,
        packet_capture_status: c.status.clone(),
        stop_reason: c.stop_reason.clone(),
        packet_capture_error: serde_json::from_value(c.errors.clone()).unwrap_or_default(),
        packets_captured: c.packets,
        bytes_captured: c.bytes,
        kernel_drops: c.kernel_drops,
        capture_files: serde_json::from_value(c.files.clone()).unwrap_or_default(),
        error_message: c.error_message.clone(),
    }
}

/// The registered storage account a capture names, refused when unknown or premium.
async fn capture_storage_account(
    conn: &mut AsyncPgConnection,
    storage_id: &str,
) -> ApiResult<crate::db::models::StorageAccountRow> {
    const TARGET: &str = "properties.storageLocation.storageId";
    let account = crate::storage::accounts::find(conn, storage_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                "StorageAccountNotFound",
                TARGET,
                format!(
                    "The storage account '{storage_id}' is not registered with this server (register it with `capture-api storage-accounts add`)."
                ),
            )
        })?;
    if account.premium {
        return Err(ApiError::invalid(
            "PremiumStorageAccountNotSupported",
            TARGET,
            format!(
                "The storage account '{storage_id}' is a premium storage account: premium storage accounts are not supported for packet captures."
            ),
        ));
    }
    Ok(account)
}

/// The capture `{nw}/{name}` and its watcher, in one round trip; a 404 names what is missing.
pub(super) async fn find_watcher_and_capture(
    conn: &mut AsyncPgConnection,
    subscription: &str,
    rg: &str,
    nw: &str,
    name: &str,
) -> ApiResult<CaptureRow> {
    use crate::db::schema::network_watchers;
    let row: Option<CaptureRow> = packet_captures::table
        .inner_join(network_watchers::table)
        .filter(network_watchers::identity_key.eq(super::watcher_identity(subscription, rg, nw)))
        .filter(packet_captures::name_key.eq(ids::key(name)))
        .filter(packet_captures::parent_id.is_null())
        .select(CaptureRow::as_select())
        .first(conn)
        .await
        .optional()?;
    match row {
        Some(c) => Ok(c),
        // Tell apart a missing watcher from a missing capture.
        None => {
            let watcher = find_watcher(conn, subscription, rg, nw).await?;
            Err(capture_not_found(&watcher, name))
        }
    }
}

/// [`find_watcher_and_capture`], shared by concurrent readers of the same capture.
async fn read_capture(
    state: &AppState,
    reads: &web::Data<crate::state::CaptureReads>,
    subscription: &str,
    rg: &str,
    nw: &str,
    name: &str,
) -> ApiResult<std::sync::Arc<crate::state::CaptureView>> {
    let key = ids::key(&format!("{subscription}/{rg}/{nw}/{name}"));
    let (state2, sub, rg, nw, name) = (
        state.clone(),
        subscription.to_string(),
        rg.to_string(),
        nw.to_string(),
        name.to_string(),
    );
    reads
        .clone()
        .into_inner()
        .read(key, move || {
            let (state, sub, rg, nw, name) = (
                state2.clone(),
                sub.clone(),
                rg.clone(),
                nw.clone(),
                name.clone(),
            );
            async move {
                let mut conn = state.conn().await?;
                let row = find_watcher_and_capture(&mut conn, &sub, &rg, &nw, &name).await?;
                let model = to_model(&row);
                let resource_json = serde_json::to_vec(&model).map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalServerError",
                        e.to_string(),
                    )
                })?;
                Ok(crate::state::CaptureView {
                    row,
                    etag: model.etag,
                    resource_json: resource_json.into(),
                })
            }
        })
        .await
}

/// The capture `name` of `watcher`, locked until the transaction ends (the writers' read).
async fn lock_capture(
    conn: &mut AsyncPgConnection,
    watcher: &WatcherRow,
    name: &str,
) -> ApiResult<Option<CaptureRow>> {
    Ok(packet_captures::table
        .filter(packet_captures::watcher_id.eq(watcher.id))
        .filter(packet_captures::name_key.eq(ids::key(name)))
        .filter(packet_captures::parent_id.is_null())
        .select(CaptureRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

fn capture_not_found(watcher: &WatcherRow, name: &str) -> ApiError {
    ApiError::resource_not_found(
        &format!(
            "Microsoft.Network/networkWatchers/{}/packetCaptures/{name}",
            watcher.name
        ),
        &watcher.resource_group,
    )
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

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn etag_matches(header_value: &str, current: &str) -> bool {
    header_value.split(',').map(str::trim).any(|t| {
        t == "*" || t == current || t.trim_start_matches("W/") == current.trim_start_matches("W/")
    })
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
        (status = 400, description = "Invalid parameters; `target` is the JSON path of the field", body = CloudError),
        (status = 404, description = "No such network watcher", body = CloudError),
        (status = 409, description = "Exists with other parameters", body = CloudError),
        (status = 412, description = "Precondition failed", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[put(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}"
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: CapturePath,
    v: NetworkApiVersion,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (sub, rg, nw, name) = path.into_inner();
    super::authorize_capture(
        &caller,
        &state,
        actions::CAPTURE_WRITE,
        (&sub, &rg, &nw, &name),
    )
    .await?;
    let principal = caller.id().to_string();
    validate_resource_name(&name, "packet capture")?;
    let valid = validate::capture_body(&json_body(&body)?)?;
    // Capturing a machine's traffic is a write at the machine's scope too, and storing it
    // needs at least a view of the storage account.
    caller
        .authorize(&state, actions::CAPTURE_WRITE, &valid.parameters.target)
        .await?;
    if let Some(id) = &valid.parameters.storage_location.storage_id {
        caller
            .authorize(&state, actions::STORAGE_ACCOUNT_READ, id)
            .await?;
    }
    let if_match = header(&req, "If-Match").map(str::to_string);
    let if_none_match = header(&req, "If-None-Match").map(str::to_string);

    let now = Utc::now();
    let mut params = valid.parameters.clone();
    let mut conn = state.conn().await?;
    let storage = match &params.storage_location.storage_id {
        Some(id) => {
            let account = capture_storage_account(&mut conn, id).await?;
            let blob = crate::storage::blob_name(&valid.target, now);
            params.storage_location.storage_path =
                Some(crate::storage::blob_url(&account.blob_endpoint, &blob));
            Some((account.id, blob))
        }
        None => None,
    };
    let params_json = serde_json::to_value(&params).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    })?;
    let deadline = now + state.timing.agent_wait;
    let (row, watcher, op_id) = conn
        .transaction::<_, ApiError, _>(async move |conn| {
                let watcher = super::find_watcher_for_share(conn, &sub, &rg, &nw).await?;
                if watcher.provisioning_state == "Deleting" {
                    return Err(ApiError::conflict(
                        "AnotherOperationInProgress",
                        format!("The network watcher '{}' is being deleted.", watcher.name),
                    ));
                }
                let mut existing = lock_capture(conn, &watcher, &name).await?;
                if existing.is_none() {
                    if if_match.is_some() {
                        return Err(ApiError::new(
                            StatusCode::PRECONDITION_FAILED,
                            "PreconditionFailed",
                            format!("The packet capture '{name}' does not exist, so If-Match cannot match."),
                        ));
                    }
                    let id = Uuid::new_v4();
                    let resource_id = format!("{}/packetCaptures/{name}", super::watchers::to_model(&watcher).id);
                    let inserted = diesel::insert_into(packet_captures::table)
                        .values(NewCapture {
                            id,
                            watcher_id: watcher.id,
                            name: &name,
                            name_key: ids::key(&name),
                            resource_id: resource_id.clone(),
                            parameters: params_json.clone(),
                            machine_key: valid.machine_key.clone(),
                            etag: Uuid::new_v4(),
                            provisioning_state: "Updating",
                            status: "NotStarted",
                            time_limit_seconds: valid.time_limit_seconds as i32,
                            is_scale_set: valid.parameters.target_type.as_deref() == Some("AzureVMSS"),
                            storage_account_id: storage.as_ref().map(|(a, _)| *a),
                            blob_name: storage.as_ref().map(|(_, b)| b.clone()),
                            upload_state: storage.as_ref().map(|_| "Pending"),
                        })
                        .on_conflict_do_nothing()
                        .returning(CaptureRow::as_returning())
                        .get_result(conn)
                        .await
                        .optional()?;
                    match inserted {
                        Some(row) => {
                            let op_id =

                                super::start_operation(conn, &watcher, "CreateCapture", &resource_id, Some(id), deadline, &principal).await?;
                            if row.is_scale_set {
                                crate::sweeper::expand_scale_sets(conn, Some(id)).await?;
                            }
                            return Ok((row, watcher, op_id));
                        }
                        // A concurrent PUT of the same name won: treat this one as its retry.
                        None => existing = lock_capture(conn, &watcher, &name).await?,
                    }
                }
                let Some(existing) = existing else {
                    return Err(ApiError::conflict(
                        "Conflict",
                        format!("The packet capture '{name}' was deleted while it was being created; retry."),
                    ));
                };
                let current = etag(existing.etag);
                if if_none_match.as_deref().is_some_and(|h| etag_matches(h, &current)) {
                    return Err(ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        format!("The packet capture '{name}' already exists (If-None-Match)."),
                    ));
                }
                if if_match.as_deref().is_some_and(|h| !etag_matches(h, &current)) {
                    return Err(ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        format!("The ETag of packet capture '{name}' is {current}, not the one in If-Match."),
                    ));
                }
                if existing.deleting {
                    return Err(ApiError::conflict(
                        "AnotherOperationInProgress",
                        format!("The packet capture '{name}' is being deleted; create it again once the delete completed."),
                    ));
                }
                if comparable(&existing.parameters) != comparable(&params_json) {
                    return Err(ApiError::conflict(
                        "PacketCaptureParametersConflict",
                        format!("A packet capture named '{name}' already exists with different parameters. Packet captures cannot be updated: delete it first, or use another name."),
                    ));
                }
                let op_id: Uuid = operations::table
                    .filter(operations::capture_id.eq(existing.id))
                    .filter(operations::kind.eq("CreateCapture"))
                    .select(operations::id)
                    .first(conn)
                    .await?;
                Ok((existing, watcher, op_id))
                    })
        .await?;
    state.metrics.captures_created.inc();
    let model = to_model(&row);
    Ok(lro_response(
        StatusCode::CREATED,
        &state.base_url(&req),
        &watcher.subscription_id,
        &watcher.location,
        op_id,
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
    caller: Caller,
    reads: web::Data<crate::state::CaptureReads>,
    path: CapturePath,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg, nw, name) = path.into_inner();
    super::authorize_capture(
        &caller,
        &state,
        actions::CAPTURE_READ,
        (&sub, &rg, &nw, &name),
    )
    .await?;
    let c = read_capture(&state, &reads, &sub, &rg, &nw, &name).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", c.etag.clone()))
        .content_type("application/json")
        .body(c.resource_json.clone()))
}

/// List the packet captures of a network watcher (paged with nextLink).
#[utoipa::path(
    tag = "PacketCaptures",
    operation_id = "PacketCaptures_List",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("api-version" = String, Query),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of captures", body = PacketCaptureListResult),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures"
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg, nw) = path.into_inner();
    check_scope(&sub, Some(&rg))?;
    caller
        .authorize(
            &state,
            actions::CAPTURE_READ,
            &watcher_scope(&sub, &rg, &nw),
        )
        .await?;
    let after = skiptoken(&req).unwrap_or_default();
    let mut conn = state.conn().await?;
    let watcher = find_watcher(&mut conn, &sub, &rg, &nw).await?;
    let rows: Vec<(String, CaptureRow)> = packet_captures::table
        .filter(packet_captures::watcher_id.eq(watcher.id))
        .filter(packet_captures::name_key.gt(&after))
        .filter(packet_captures::parent_id.is_null())
        .order(packet_captures::name_key)
        .limit(state.page_size + 1)
        .select((packet_captures::name_key, CaptureRow::as_select()))
        .load(&mut conn)
        .await?;
    let more = rows.len() as i64 > state.page_size;
    let page: Vec<_> = rows.into_iter().take(state.page_size as usize).collect();
    let next = match (more, page.last()) {
        (true, Some((key, _))) => Some(next_link(&state.base_url(&req), req.path(), &v.0, key)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(PacketCaptureListResult {
        value: page.iter().map(|(_, c)| to_model(c)).collect(),
        next_link: next,
    }))
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
    caller: Caller,
    reads: web::Data<crate::state::CaptureReads>,
    path: CapturePath,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg, nw, name) = path.into_inner();
    super::authorize_capture(
        &caller,
        &state,
        actions::CAPTURE_QUERY_STATUS,
        (&sub, &rg, &nw, &name),
    )
    .await?;
    let c = read_capture(&state, &reads, &sub, &rg, &nw, &name).await?;
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
    caller: Caller,
    path: CapturePath,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg, nw, name) = path.into_inner();
    super::authorize_capture(
        &caller,
        &state,
        actions::CAPTURE_STOP,
        (&sub, &rg, &nw, &name),
    )
    .await?;
    let principal = caller.id().to_string();
    let mut conn = state.conn().await?;
    let deadline = Utc::now() + state.timing.stop_grace * 2;
    let outcome = conn
        .transaction::<_, ApiError, _>(async move |conn| {
            let watcher = find_watcher(conn, &sub, &rg, &nw).await?;
            let c = lock_capture(conn, &watcher, &name)
                .await?
                .ok_or_else(|| capture_not_found(&watcher, &name))?;
            if c.status != "Running" && c.status != "NotStarted" {
                return Ok(None);
            }
            request_stop(conn, c.id).await?;
            if c.status == "NotStarted" {
                crate::sweeper::settle(conn, Some(c.id)).await?;
                return Ok(None);
            }
            let op_id = super::start_operation(
                conn,
                &watcher,
                "StopCapture",
                &c.resource_id,
                Some(c.id),
                deadline,
                &principal,
            )
            .await?;
            Ok(Some((watcher, op_id)))
        })
        .await?;
    match outcome {
        None => Ok(HttpResponse::Ok().finish()),
        Some((watcher, op_id)) => Ok(lro_response(
            StatusCode::ACCEPTED,
            &state.base_url(&req),
            &watcher.subscription_id,
            &watcher.location,
            op_id,
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
    caller: Caller,
    path: CapturePath,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg, nw, name) = path.into_inner();
    super::authorize_capture(
        &caller,
        &state,
        actions::CAPTURE_DELETE,
        (&sub, &rg, &nw, &name),
    )
    .await?;
    let principal = caller.id().to_string();
    let mut conn = state.conn().await?;
    let deadline = Utc::now() + state.timing.stop_grace * 2;
    let outcome = conn
        .transaction::<_, ApiError, _>(async move |conn| {
            let watcher = find_watcher(conn, &sub, &rg, &nw).await?;
            let Some(c) = lock_capture(conn, &watcher, &name).await? else {
                return Ok(None);
            };
            stop_and_mark_deleting(conn, None, Some(c.id)).await?;
            let op_id = super::start_operation(
                conn,
                &watcher,
                "DeleteCapture",
                &c.resource_id,
                Some(c.id),
                deadline,
                &principal,
            )
            .await?;
            crate::sweeper::settle(conn, Some(c.id)).await?;
            Ok(Some((watcher, op_id)))
        })
        .await?;
    match outcome {
        None => Ok(HttpResponse::NoContent().finish()),
        Some((watcher, op_id)) => Ok(lro_response(
            StatusCode::ACCEPTED,
            &state.base_url(&req),
            &watcher.subscription_id,
            &watcher.location,
            op_id,
            &v.0,
        )
        .finish()),
    }
}

/// Asks a capture (and, for a scale set, each instance) to stop: running ones are told to stop,
/// ones that never started are stopped at once.
async fn request_stop(conn: &mut AsyncPgConnection, capture: Uuid) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "UPDATE packet_captures SET desired_running = false, updated_at = now(),
             stop_requested_at = coalesce(stop_requested_at, now()),
             stop_requested_reason = coalesce(stop_requested_reason, 'StoppedByUser'),
             stop_reason = CASE WHEN status = 'NotStarted' THEN 'StoppedByUser' ELSE stop_reason END,
             stopped_at = CASE WHEN status = 'NotStarted' THEN now() ELSE stopped_at END,
             provisioning_state = CASE WHEN status = 'NotStarted' AND provisioning_state = 'Updating'
                                       THEN 'Canceled' ELSE provisioning_state END,
             status = CASE WHEN status = 'NotStarted' THEN 'Stopped' ELSE status END
         WHERE (id = $1 OR parent_id = $1) AND status IN ('NotStarted', 'Running')",
    )
    .bind::<SqlUuid, _>(capture)
    .execute(conn)
    .await
}

/// Marks captures (of a watcher, or one capture) as being deleted: running ones are asked to
/// stop; ones that never started are stopped at once. [`crate::sweeper::settle`] removes each
/// once it no longer runs.
pub async fn stop_and_mark_deleting(
    conn: &mut AsyncPgConnection,
    watcher: Option<Uuid>,
    capture: Option<Uuid>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "UPDATE packet_captures SET deleting = true, desired_running = false, updated_at = now(),
             stop_requested_at = coalesce(stop_requested_at, now()),
             stop_requested_reason = coalesce(stop_requested_reason, 'StoppedByUser'),
             stop_reason = CASE WHEN status = 'NotStarted' THEN 'StoppedByUser' ELSE stop_reason END,
             stopped_at = CASE WHEN status = 'NotStarted' THEN now() ELSE stopped_at END,
             status = CASE WHEN status = 'NotStarted' THEN 'Stopped' ELSE status END
         WHERE ($1::uuid IS NOT NULL AND watcher_id = $1)
            OR ($2::uuid IS NOT NULL AND (id = $2 OR parent_id = $2))",
    )
    .bind::<Nullable<SqlUuid>, _>(watcher)
    .bind::<Nullable<SqlUuid>, _>(capture)
    .execute(conn)
    .await
}
