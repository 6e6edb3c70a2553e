//! `Microsoft.Network/networkWatchers/{nw}/captureTriggers` (an extension of this service, not in
//! Azure): alerts delivered to a trigger's webhooks ([`super::webhooks`]) create packet captures.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use super::paths::{Action, Address, Authorized, WatcherAddress, WatcherPath, watcher_child};
use super::{next_link, page_len, skiptoken};
use crate::arm::api_version::NetworkApiVersion;
use crate::arm::ids::validate_resource_name;
use crate::arm::models::{WATCHER_TYPE, etag};
use crate::arm::put::{Preconditions, etag_matches};
use crate::auth::actions;
use crate::auth::rbac::{TRIGGER_DELETE, TRIGGER_READ, TRIGGER_WRITE};
use crate::db::models::WatcherRow;
use crate::db::triggers::{NewTrigger, TriggerEventRow, TriggerRow};
use crate::db::watchers::Lock;
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::ProvisioningState;
use crate::limits::{self, Heavy, JsonBody};
use crate::state::AppState;
use crate::triggers::model::{
    CaptureTrigger, CaptureTriggerListResult, CaptureTriggerProperties, CaptureTriggerResult,
    CaptureTriggerResultProperties, TRIGGER_TYPE, TriggerEvent, TriggerSecret,
};
use crate::triggers::validate::{ValidTrigger, trigger_body};

pub struct TriggerRead;
impl Action for TriggerRead {
    const NAME: &'static str = TRIGGER_READ;
}
pub struct TriggerWrite;
impl Action for TriggerWrite {
    const NAME: &'static str = TRIGGER_WRITE;
}
pub struct TriggerDelete;
impl Action for TriggerDelete {
    const NAME: &'static str = TRIGGER_DELETE;
}
/// Lists of triggers: `TRIGGER_READ` at the watcher, or on one of its triggers.
pub struct TriggerList;
impl Action for TriggerList {
    const NAME: &'static str = TRIGGER_READ;
    const LIST: bool = true;
}

/// What `…/networkWatchers/{nw}/captureTriggers/{captureTriggerName}` names.
#[derive(Debug, Clone)]
pub struct TriggerAddress {
    pub watcher: WatcherAddress,
    pub name: String,
}

/// `…/captureTriggers/{captureTriggerName}`, authorized for `A` at the trigger.
pub type TriggerPath<A> = Authorized<TriggerAddress, A>;

impl TriggerAddress {
    pub fn scope(&self) -> String {
        format!("{}/captureTriggers/{}", self.watcher.scope(), self.name)
    }

    fn not_found(&self, watcher: &WatcherRow) -> ApiError {
        ApiError::resource_not_found(
            &format!(
                "{WATCHER_TYPE}/{}/captureTriggers/{}",
                watcher.name, self.name
            ),
            &watcher.resource_group,
        )
    }
}

impl Address for TriggerAddress {
    fn from_path(req: &HttpRequest) -> Pin<Box<dyn Future<Output = ApiResult<Self>>>> {
        let child = watcher_child(req, "captureTriggers", "capture trigger");
        Box::pin(async move {
            let (watcher, name) = child.await?;
            Ok(TriggerAddress { watcher, name })
        })
    }

    fn authorization_scope(&self) -> String {
        self.scope()
    }
}

fn event_model(e: TriggerEventRow) -> TriggerEvent {
    TriggerEvent {
        time: e.at,
        source: e.source.to_string(),
        alert_name: e.alert_name,
        alert_id: e.alert_id,
        condition: e.condition.to_string(),
        machine: e.machine,
        outcome: e.outcome.to_string(),
        reason: e.reason.map(|r| r.to_string()),
        message: e.message,
        packet_capture: e.capture_resource_id,
    }
}

/// The trigger as callers see it (`secret` only from a create).
fn to_model(
    base_url: &str,
    t: &TriggerRow,
    events: Option<Vec<TriggerEventRow>>,
    secret: Option<String>,
) -> ApiResult<CaptureTriggerResult> {
    let properties: CaptureTriggerProperties =
        serde_json::from_value(t.properties.clone()).map_err(ApiError::internal)?;
    Ok(CaptureTriggerResult {
        id: t.resource_id.clone(),
        name: t.name.clone(),
        resource_type: TRIGGER_TYPE.to_string(),
        etag: etag(t.etag),
        properties: CaptureTriggerResultProperties {
            properties,
            provisioning_state: t.provisioning_state.clone(),
            webhooks: super::webhooks::urls(base_url, t.id),
            recent_events: events.map(|e| e.into_iter().map(event_model).collect()),
            webhook_secret: secret,
        },
    })
}

/// A trigger creates captures: its writer needs the capture write right at the watcher and at
/// each scope it may capture in, and a view of the template's storage account.
async fn authorize_trigger(
    state: &AppState,
    path: &TriggerPath<TriggerWrite>,
    properties: &CaptureTriggerProperties,
) -> ApiResult<()> {
    let caller = &path.caller;
    caller
        .authorize(&state.auth, actions::CAPTURE_WRITE, &path.watcher.scope())
        .await?;
    for scope in &properties.machines.scopes {
        caller
            .authorize(&state.auth, actions::CAPTURE_WRITE, scope)
            .await?;
    }
    if let Some(id) = &properties.capture_template.storage_location.storage_id {
        caller
            .authorize(&state.auth, actions::STORAGE_ACCOUNT_READ, id)
            .await?;
    }
    Ok(())
}

/// The template's storage account must be registered, and not premium.
async fn check_storage(conn: &mut AsyncPgConnection, valid: &ValidTrigger) -> ApiResult<()> {
    const TARGET: &str = "properties.captureTemplate.storageLocation.storageId";
    let Some(id) = &valid
        .properties
        .capture_template
        .storage_location
        .storage_id
    else {
        return Ok(());
    };
    match crate::storage::accounts::find(conn, id).await? {
        None => Err(ApiError::invalid(
            ErrorCode::StorageAccountNotFound,
            TARGET,
            format!(
                "The storage account '{id}' is not registered with this server (register it with `capture-api storage-accounts add`)."
            ),
        )),
        Some(a) if a.premium => Err(ApiError::invalid(
            ErrorCode::PremiumStorageAccountNotSupported,
            TARGET,
            format!(
                "The storage account '{id}' is a premium storage account: premium storage accounts are not supported for packet captures."
            ),
        )),
        Some(_) => Ok(()),
    }
}

async fn watcher_for_write(
    conn: &mut AsyncPgConnection,
    path: &TriggerAddress,
) -> ApiResult<WatcherRow> {
    let watcher = path.watcher.fetch(conn, Lock::Share).await?;
    if watcher.provisioning_state == ProvisioningState::Deleting {
        return Err(ApiError::new(
            ErrorCode::AnotherOperationInProgress,
            format!("The network watcher '{}' is being deleted.", watcher.name),
        ));
    }
    Ok(watcher)
}

/// `If-Match` / `If-None-Match` of a trigger PUT against what exists (its quoted ETag).
fn check_preconditions(pre: &Preconditions, existing: Option<&str>, name: &str) -> ApiResult<()> {
    let failed = |why: String| Err(ApiError::new(ErrorCode::PreconditionFailed, why));
    match existing {
        None if pre.if_match.is_some() => failed(format!(
            "The capture trigger '{name}' does not exist, so If-Match cannot match."
        )),
        Some(etag)
            if pre
                .if_none_match
                .as_deref()
                .is_some_and(|h| etag_matches(h, etag)) =>
        {
            failed(format!(
                "The capture trigger '{name}' already exists (If-None-Match)."
            ))
        }
        Some(etag)
            if pre
                .if_match
                .as_deref()
                .is_some_and(|h| !etag_matches(h, etag)) =>
        {
            failed(format!(
                "The capture trigger '{name}' has the ETag {etag}, not the If-Match one: GET it again."
            ))
        }
        _ => Ok(()),
    }
}

/// Create or replace a capture trigger (an extension of this service, not in Azure).
///
/// A trigger turns alerts into packet captures: each alert delivered to its webhooks
/// (`properties.webhooks`) creates an ordinary packet capture, from `captureTemplate`, on each
/// machine it names that is in `machines.scopes` and passes the guards. 201 on create, with the
/// webhook secret in `properties.webhookSecret` (shown this once); 200 on update (the secret
/// stays). Needs `captureTriggers/write` at the trigger, and `packetCaptures/write` at the
/// network watcher and at each scope.
#[utoipa::path(
    tag = "CaptureTriggers",
    operation_id = "CaptureTriggers_CreateOrUpdate",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("captureTriggerName" = String, Path),
        ("api-version" = String, Query),
        ("If-Match" = Option<String>, Header, description = "Only if the trigger has this ETag"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if the trigger does not exist"),
    ),
    request_body = CaptureTrigger,
    responses(
        (status = 200, description = "Updated", body = CaptureTriggerResult),
        (status = 201, description = "Created; `properties.webhookSecret` holds the webhook secret, shown only now", body = CaptureTriggerResult),
        (status = 400, description = "Invalid properties; `target` is the JSON path (a template error names `properties.captureTemplate.…` with the packet capture's own message)", body = CloudError),
        (status = 404, description = "No such network watcher", body = CloudError),
        (status = 412, description = "Precondition failed", body = CloudError),
        (status = 413, description = "Body over 1 MiB", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[put(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/captureTriggers/{captureTriggerName}"
)]
pub async fn create_or_update(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: TriggerPath<TriggerWrite>,
    v: NetworkApiVersion,
    body: JsonBody,
) -> ApiResult<HttpResponse> {
    validate_resource_name(&path.name, "capture trigger")?;
    let w = &path.watcher;
    let valid = trigger_body(&body.value, &w.subscription, &w.resource_group, &v.0)?;
    authorize_trigger(&state, &path, &valid.properties).await?;
    let properties = serde_json::to_value(&valid.properties).map_err(ApiError::internal)?;
    let enabled = valid.properties.enabled;
    let principal = path.caller.id().to_string();
    let pre = Preconditions::of(&req);
    let mut conn = state.conn().await?;
    check_storage(&mut conn, &valid).await?;
    let (row, created) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let watcher = watcher_for_write(conn, &path).await?;
            let existing = TriggerRow::find(conn, &watcher, &path.name, true).await?;
            let current = existing.as_ref().map(|t| etag(t.etag));
            check_preconditions(&pre, current.as_deref(), &path.name)?;
            if let Some(t) = existing {
                let row = t.update_properties(conn, properties, enabled).await?;
                return Ok((row, None));
            }
            let (clear, hash) = crate::triggers::secret::new_secret();
            let id = Uuid::new_v4();
            let inserted = TriggerRow::insert(
                conn,
                NewTrigger {
                    id,
                    watcher_id: watcher.id,
                    name: &path.name,
                    name_key: crate::arm::ids::key(&path.name),
                    resource_id: format!("{}/captureTriggers/{}", watcher.resource_id(), path.name),
                    properties,
                    enabled,
                    secret_hash: hash,
                    etag: Uuid::new_v4(),
                    provisioning_state: "Succeeded",
                    created_by: &principal,
                },
            )
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "The capture trigger '{}' was created by another request at the same time; retry the PUT.",
                        path.name
                    ),
                )
            })?;
            Ok((inserted, Some(clear)))
        })
        .await?;
    let events = match created {
        Some(_) => vec![],
        None => row.recent_events(&mut conn).await?,
    };
    let status = if created.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let model = to_model(&state.base_url(&req), &row, Some(events), created)?;
    Ok(HttpResponse::build(status)
        .insert_header(("ETag", model.etag.clone()))
        .json(model))
}

/// Get a capture trigger, with its webhook URLs and latest 50 events (an extension of this
/// service, not in Azure). The webhook secret is never shown again.
#[utoipa::path(
    tag = "CaptureTriggers",
    operation_id = "CaptureTriggers_Get",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("captureTriggerName" = String, Path),
        ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "The trigger", body = CaptureTriggerResult),
        (status = 404, description = "No such trigger or watcher", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/captureTriggers/{captureTriggerName}"
)]
pub async fn get_trigger(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: TriggerPath<TriggerRead>,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let mut conn = state.conn().await?;
    let watcher = path.watcher.fetch(&mut conn, Lock::None).await?;
    let row = TriggerRow::find(&mut conn, &watcher, &path.name, false)
        .await?
        .ok_or_else(|| path.not_found(&watcher))?;
    let events = row.recent_events(&mut conn).await?;
    let model = to_model(&state.base_url(&req), &row, Some(events), None)?;
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", model.etag.clone()))
        .json(model))
}

/// List the capture triggers of a network watcher, paged with nextLink (an extension of this
/// service, not in Azure). Items leave out `recentEvents` (GET a trigger for them).
#[utoipa::path(
    tag = "CaptureTriggers",
    operation_id = "CaptureTriggers_List",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("api-version" = String, Query),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of triggers", body = CaptureTriggerListResult),
        (status = 503, description = "Busy with other lists; retry after Retry-After", body = CloudError,
         headers(("Retry-After" = i32))),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/captureTriggers"
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: WatcherPath<TriggerList>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let after = skiptoken(&req)?.unwrap_or_default();
    let readable = path.caller.filter(&state.auth, TRIGGER_READ).await?;
    let _turn = limits::admit(Heavy::List).await?;
    let mut conn = state.conn().await?;
    let watcher = path.fetch(&mut conn, Lock::None).await?;
    // The page's keys and sizes first: it ends at `page_size` items or when the next one would
    // pass MAX_LIST_PAGE_BYTES, so that only what is sent is loaded.
    let sizes = TriggerRow::page_sizes(&mut conn, &watcher, &after, state.page_size + 1).await?;
    let fits = page_len(
        sizes.iter().map(|(_, n)| usize::try_from(*n).unwrap_or(0)),
        state.page_size as usize,
    );
    let rows = match sizes.get(fits.saturating_sub(1)) {
        Some((last, _)) => TriggerRow::page(&mut conn, &watcher, &after, last).await?,
        None => vec![],
    };
    drop(conn);
    let more = sizes.len() > fits;
    let next = match (more, sizes.get(fits.saturating_sub(1))) {
        (true, Some((key, _))) => Some(next_link(&state.base_url(&req), req.path(), &v.0, key)),
        _ => None,
    };
    let base = state.base_url(&req);
    let value = rows
        .iter()
        .filter(|(_, t)| readable(&t.resource_id))
        .map(|(_, t)| to_model(&base, t, None, None))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(HttpResponse::Ok().json(CaptureTriggerListResult {
        value,
        next_link: next,
    }))
}

/// Delete a capture trigger (an extension of this service, not in Azure): its webhooks stop
/// working at once; the captures it created stay.
#[utoipa::path(
    tag = "CaptureTriggers",
    operation_id = "CaptureTriggers_Delete",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("captureTriggerName" = String, Path),
        ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 204, description = "No such trigger"),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[delete(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/captureTriggers/{captureTriggerName}"
)]
pub async fn delete_trigger(
    state: web::Data<AppState>,
    path: TriggerPath<TriggerDelete>,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let mut conn = state.conn().await?;
    let deleted = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let Some(watcher) = path.watcher.fetch_if_exists(conn, Lock::Share).await? else {
                return Ok(false);
            };
            let Some(t) = TriggerRow::find(conn, &watcher, &path.name, true).await? else {
                return Ok(false);
            };
            t.delete(conn).await?;
            Ok(true)
        })
        .await?;
    Ok(match deleted {
        true => HttpResponse::Ok().finish(),
        false => HttpResponse::NoContent().finish(),
    })
}

/// Replace a capture trigger's webhook secret (an extension of this service, not in Azure):
/// the new secret is answered this once, and the old one stops working at once.
#[utoipa::path(
    tag = "CaptureTriggers",
    operation_id = "CaptureTriggers_RotateSecret",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("captureTriggerName" = String, Path),
        ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "The new secret", body = TriggerSecret),
        (status = 404, description = "No such trigger or watcher", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[post(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/captureTriggers/{captureTriggerName}/rotateSecret"
)]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    path: TriggerPath<TriggerWrite>,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    // Its secret lets whoever holds it capture on the trigger's machines: rotating needs the
    // rights a PUT of the trigger needs.
    let mut conn = state.conn().await?;
    let stored = {
        let watcher = path.watcher.fetch(&mut conn, Lock::None).await?;
        TriggerRow::find(&mut conn, &watcher, &path.name, false)
            .await?
            .ok_or_else(|| path.not_found(&watcher))?
    };
    let properties: CaptureTriggerProperties =
        serde_json::from_value(stored.properties).map_err(ApiError::internal)?;
    authorize_trigger(&state, &path, &properties).await?;
    let (secret, hash) = crate::triggers::secret::new_secret();
    conn.transaction::<_, ApiError, _>(async |conn| {
        let watcher = watcher_for_write(conn, &path).await?;
        let t = TriggerRow::find(conn, &watcher, &path.name, true)
            .await?
            .ok_or_else(|| path.not_found(&watcher))?;
        t.set_secret_hash(conn, hash).await?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(TriggerSecret {
        webhook_secret: secret,
    }))
}
