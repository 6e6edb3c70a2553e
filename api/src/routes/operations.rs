//! Long-running operation monitors, answered from the `operations` table (so they survive
//! restarts and work on every replica).

use actix_web::{HttpRequest, HttpResponse, get, web};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::paths::check_scope;
use crate::arm::api_version::NetworkApiVersion;
use crate::arm::ids;
use crate::arm::models::{AsyncOperationResult, OperationError};
use crate::db::models::{CaptureRow, OperationRow};
use crate::db::schema::{operations, packet_captures};
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::{OperationKind, OperationStatus};
use crate::state::AppState;

type OpPath = web::Path<(String, String, String)>;

async fn find_operation(
    state: &AppState,
    caller: &crate::auth::Caller,
    sub: &str,
    location: &str,
    id: &str,
) -> ApiResult<OperationRow> {
    check_scope(sub, None)?;
    let not_found = || {
        ApiError::new(
            ErrorCode::ResourceNotFound,
            format!("The operation '{id}' was not found."),
        )
    };
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let mut conn = state.conn().await?;
    let op: OperationRow = operations::table
        .find(id)
        .select(OperationRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(not_found)?;
    // Another subscription (or region), or another caller than the one that started it, does
    // not see the operation at all.
    let other_caller = !caller.0.unrestricted && op.principal_id.as_deref() != Some(caller.id());
    if op.subscription_key != ids::key(sub)
        || ids::location_key(&op.location) != ids::location_key(location)
        || other_caller
    {
        return Err(not_found());
    }
    Ok(op)
}

/// Azure-AsyncOperation monitor: always 200 with the operation's status.
#[utoipa::path(
    tag = "Operations",
    operation_id = "Operations_GetAsyncStatus",
    params(
        ("subscriptionId" = String, Path), ("location" = String, Path),
        ("operationId" = String, Path), ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "Status (Retry-After while InProgress)", body = AsyncOperationResult),
        (status = 404, description = "No such operation", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/providers/Microsoft.Network/locations/{location}/operations/{operationId}"
)]
pub async fn operation_status(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: OpPath,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, location, id) = path.into_inner();
    let op = find_operation(&state, &caller, &sub, &location, &id).await?;
    let mut resp = HttpResponse::Ok();
    if op.status == OperationStatus::InProgress {
        resp.insert_header(("Retry-After", "1"));
    }
    Ok(resp.json(AsyncOperationResult {
        id: req.path().to_string(),
        name: op.id.to_string(),
        status: op.status.to_string(),
        start_time: op.created_at,
        end_time: op.finished_at,
        error: match (&op.error_code, &op.error_message) {
            (Some(code), message) if op.status != OperationStatus::Succeeded => {
                Some(OperationError {
                    code: code.clone(),
                    message: message.clone().unwrap_or_default(),
                })
            }
            _ => None,
        },
    }))
}

/// Location monitor: 202 while in progress, then what the synchronous call would have answered
/// (the capture for a create, 204 for a delete, 200 for a stop).
#[utoipa::path(
    tag = "Operations",
    operation_id = "Operations_GetResult",
    params(
        ("subscriptionId" = String, Path), ("location" = String, Path),
        ("operationId" = String, Path), ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "Done (create: the capture; stop: empty)"),
        (status = 202, description = "In progress; poll again after Retry-After"),
        (status = 204, description = "Delete done"),
        (status = 404, description = "No such operation", body = CloudError),
        (status = "default", description = "The operation failed", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/providers/Microsoft.Network/locations/{location}/operationResults/{operationId}"
)]
pub async fn operation_result(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: OpPath,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, location, id) = path.into_inner();
    let op = find_operation(&state, &caller, &sub, &location, &id).await?;
    if op.status == OperationStatus::InProgress {
        let url = format!("{}{}", state.base_url(&req), req.uri());
        return Ok(HttpResponse::Accepted()
            .insert_header(("Location", url))
            .insert_header(("Retry-After", "1"))
            .finish());
    }
    if op.status != OperationStatus::Succeeded {
        return Err(ApiError::Arm {
            code: if op.status == OperationStatus::Canceled {
                ErrorCode::OperationCanceled
            } else {
                ErrorCode::OperationFailed
            },
            message: format!(
                "{}: {}",
                op.error_code
                    .clone()
                    .unwrap_or_else(|| op.status.to_string()),
                op.error_message.clone().unwrap_or_default()
            ),
            target: None,
        });
    }
    match op.kind {
        OperationKind::CreateCapture => created_capture(&state, &op).await,
        OperationKind::DeleteCapture | OperationKind::DeleteWatcher => {
            Ok(HttpResponse::NoContent().finish())
        }
        OperationKind::StopCapture => Ok(HttpResponse::Ok().finish()),
    }
}

/// The answer of a create's result monitor once it succeeded: the capture as it is now.
async fn created_capture(state: &AppState, op: &OperationRow) -> ApiResult<HttpResponse> {
    let mut conn = state.conn().await?;
    let row: Option<CaptureRow> = match op.capture_id {
        Some(cid) => packet_captures::table
            .find(cid)
            .select(CaptureRow::as_select())
            .first(&mut conn)
            .await
            .optional()?,
        None => None,
    };
    match row {
        Some(c) => Ok(HttpResponse::Ok().json(super::captures::to_model(&c))),
        None => Err(ApiError::new(
            ErrorCode::ResourceNotFound,
            format!(
                "The resource '{}' of this operation no longer exists.",
                op.resource_id
            ),
        )),
    }
}
