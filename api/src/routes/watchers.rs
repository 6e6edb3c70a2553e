//! `Microsoft.Network/networkWatchers`: one per subscription and region.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, put, web};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::paths::{
    WatcherAddress, WatcherDelete, WatcherPath, WatcherRead, WatcherWrite, check_scope,
};
use super::{lro_response, next_link, skiptoken};
use crate::arm::api_version::NetworkApiVersion;
use crate::arm::ids::{self, validate_resource_name};
use crate::arm::models::{
    NetworkWatcher, NetworkWatcherCreate, NetworkWatcherListResult, NetworkWatcherProperties,
    TagsObject, WATCHER_TYPE, etag,
};
use crate::auth::{Caller, actions};
use crate::db::models::{NewWatcher, WatcherRow};
use crate::db::schema::network_watchers;
use crate::db::watchers::Lock;
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::{self, ProvisioningState, stop::Request};
use crate::limits::{self, JsonBody};
use crate::state::AppState;

pub fn to_model(w: &WatcherRow) -> NetworkWatcher {
    let tags = serde_json::from_value(w.tags.clone()).unwrap_or_default();
    NetworkWatcher {
        id: w.resource_id(),
        name: w.name.clone(),
        resource_type: WATCHER_TYPE.to_string(),
        location: w.location.clone(),
        tags,
        etag: etag(w.etag),
        properties: NetworkWatcherProperties {
            provisioning_state: w.provisioning_state.to_string(),
        },
    }
}

fn tags_of(obj: &serde_json::Map<String, Value>) -> ApiResult<Option<BTreeMap<String, String>>> {
    match obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("tags"))
        .map(|(_, v)| v)
    {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            if m.len() > limits::MAX_TAGS {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidTagsCount,
                    "tags",
                    format!(
                        "{} tags were given; at most {} tags are allowed.",
                        m.len(),
                        limits::MAX_TAGS
                    ),
                ));
            }
            m.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => {
                        let target = format!("tags.{}", limits::shown(k));
                        let code = ErrorCode::InvalidTagNameOrValue;
                        limits::check_text(k, limits::MAX_TAG_NAME_CHARS, code, &target)
                            .and_then(|()| {
                                limits::check_text(s, limits::MAX_TAG_VALUE_CHARS, code, &target)
                            })
                            .map_err(|_| {
                                ApiError::invalid(
                                    code,
                                    &target,
                                    format!(
                                        "Tag names are at most {} characters and tag values at most {}, without control characters.",
                                        limits::MAX_TAG_NAME_CHARS,
                                        limits::MAX_TAG_VALUE_CHARS
                                    ),
                                )
                            })?;
                        Ok((k.clone(), s.clone()))
                    }
                    _ => Err(ApiError::invalid(
                        ErrorCode::InvalidRequestFormat,
                        &format!("tags.{}", limits::shown(k)),
                        "Tag values must be strings.",
                    )),
                })
                .collect::<ApiResult<BTreeMap<_, _>>>()
                .map(Some)
        }
        Some(_) => Err(ApiError::invalid(
            ErrorCode::InvalidRequestFormat,
            "tags",
            "'tags' must be an object of strings.",
        )),
    }
}

/// Create or update a network watcher.
#[utoipa::path(
    tag = "NetworkWatchers",
    operation_id = "NetworkWatchers_CreateOrUpdate",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("resourceGroupName" = String, Path, description = "Resource group"),
        ("networkWatcherName" = String, Path, description = "Network watcher name"),
        ("api-version" = String, Query, description = "2022-01-01 to 2026-03-01"),
    ),
    request_body = NetworkWatcherCreate,
    responses(
        (status = 200, description = "Updated", body = NetworkWatcher),
        (status = 201, description = "Created", body = NetworkWatcher),
        (status = 400, description = "Invalid location (`LocationNotAvailableForResourceType`: a region name is 1-64 letters, digits and spaces) or tags (at most 50)", body = CloudError),
        (status = 413, description = "Body over 1 MiB", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[put(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}"
)]
pub async fn create_or_update(
    state: web::Data<AppState>,
    path: WatcherPath<WatcherWrite>,
    _v: NetworkApiVersion,
    body: JsonBody,
) -> ApiResult<HttpResponse> {
    validate_resource_name(&path.name, "network watcher")?;
    let obj = body.value.as_object().ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidRequestFormat,
            "body",
            "The body must be a JSON object.",
        )
    })?;
    let location = location_of(obj)?;
    let tags = serde_json::to_value(tags_of(obj)?.unwrap_or_default()).unwrap_or_default();
    let mut conn = state.conn().await?;
    let (row, created) = conn
        .transaction::<_, ApiError, _>(async |conn| put_watcher(conn, &path, &location, tags).await)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(to_model(&row)))
}

fn location_of(obj: &serde_json::Map<String, Value>) -> ApiResult<String> {
    match obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v)
    {
        Some(Value::String(s)) if !s.trim().is_empty() => ids::validate_location(
            s,
            ErrorCode::LocationNotAvailableForResourceType,
            "location",
        ),
        _ => Err(ApiError::invalid(
            ErrorCode::LocationRequired,
            "location",
            "The location property is required for this definition.",
        )),
    }
}

/// The PUT in its transaction: the watcher updated (its tags), or created (`true`).
async fn put_watcher(
    conn: &mut AsyncPgConnection,
    path: &WatcherAddress,
    location: &str,
    tags: Value,
) -> ApiResult<(WatcherRow, bool)> {
    let name = &path.name;
    if let Some(w) = path.fetch_if_exists(conn, Lock::Update).await? {
        if ids::location_key(&w.location) != ids::location_key(location) {
            return Err(ApiError::invalid(
                ErrorCode::InvalidResourceLocation,
                "location",
                format!(
                    "The resource '{name}' already exists in location '{}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'.",
                    w.location, path.resource_group
                ),
            ));
        }
        if w.provisioning_state == ProvisioningState::Deleting {
            return Err(being_deleted(name));
        }
        let row = diesel::update(network_watchers::table.find(w.id))
            .set((
                network_watchers::tags.eq(&tags),
                network_watchers::etag.eq(Uuid::new_v4()),
            ))
            .returning(WatcherRow::as_returning())
            .get_result(conn)
            .await?;
        return Ok((row, false));
    }
    let new = NewWatcher {
        id: Uuid::new_v4(),
        subscription_id: &path.subscription,
        resource_group: &path.resource_group,
        name,
        identity_key: path.identity(),
        subscription_key: ids::key(&path.subscription),
        location,
        location_key: ids::location_key(location),
        tags,
        etag: Uuid::new_v4(),
        provisioning_state: ProvisioningState::Succeeded,
    };
    let inserted = diesel::insert_into(network_watchers::table)
        .values(&new)
        .on_conflict_do_nothing()
        .returning(WatcherRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    inserted.map(|row| (row, true)).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NetworkWatcherCountLimitReached,
            format!(
                "Cannot create more than 1 network watchers for this subscription in this region ('{location}'), or another request created '{name}' at the same time."
            ),
        )
    })
}

fn being_deleted(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::AnotherOperationInProgress,
        format!("The network watcher '{name}' is being deleted."),
    )
}

/// Get a network watcher.
#[utoipa::path(
    tag = "NetworkWatchers",
    operation_id = "NetworkWatchers_Get",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "The watcher", body = NetworkWatcher),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}"
)]
pub async fn get_watcher(
    state: web::Data<AppState>,
    path: WatcherPath<WatcherRead>,
    _v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let mut conn = state.conn().await?;
    let w = path.fetch(&mut conn, Lock::None).await?;
    Ok(HttpResponse::Ok().json(to_model(&w)))
}

/// Update a network watcher's tags.
#[utoipa::path(
    tag = "NetworkWatchers",
    operation_id = "NetworkWatchers_UpdateTags",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("api-version" = String, Query),
    ),
    request_body = TagsObject,
    responses(
        (status = 200, description = "Updated", body = NetworkWatcher),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[patch(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}"
)]
pub async fn update_tags(
    state: web::Data<AppState>,
    path: WatcherPath<WatcherWrite>,
    _v: NetworkApiVersion,
    body: crate::limits::JsonBody,
) -> ApiResult<HttpResponse> {
    let body = body.value;
    let obj = body.as_object().ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidRequestFormat,
            "body",
            "The body must be a JSON object.",
        )
    })?;
    let tags = serde_json::to_value(tags_of(obj)?.unwrap_or_default()).unwrap_or_default();
    let mut conn = state.conn().await?;
    // Locked: a concurrent DELETE either committed first (404, or 409 while it runs) or waits.
    let row = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let w = path.fetch(conn, Lock::Update).await?;
            if w.provisioning_state == ProvisioningState::Deleting {
                return Err(being_deleted(&path.name));
            }
            Ok(diesel::update(network_watchers::table.find(w.id))
                .set((
                    network_watchers::tags.eq(&tags),
                    network_watchers::etag.eq(Uuid::new_v4()),
                ))
                .returning(WatcherRow::as_returning())
                .get_result(conn)
                .await?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(to_model(&row)))
}

/// Delete a network watcher: its running captures are stopped, then it and its captures are
/// removed (long-running).
#[utoipa::path(
    tag = "NetworkWatchers",
    operation_id = "NetworkWatchers_Delete",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("networkWatcherName" = String, Path), ("api-version" = String, Query),
    ),
    responses(
        (status = 202, description = "Accepted; follow the Location header"),
        (status = 204, description = "No such watcher"),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[delete(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}"
)]
pub async fn delete_watcher(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: WatcherPath<WatcherDelete>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let principal = path.caller.id().to_string();
    let now = chrono::Utc::now();
    let deadline = now + state.timing.stop_grace * 3;
    let mut conn = state.conn().await?;
    let found = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let Some(w) = path.fetch_if_exists(conn, Lock::Update).await? else {
                return Ok(None);
            };
            let request = Request {
                principal: &principal,
                deadline,
                now,
            };
            let op = lifecycle::stop::delete_watcher(conn, &w, request).await?;
            Ok(Some((w, op)))
        })
        .await?;
    match found {
        None => Ok(HttpResponse::NoContent().finish()),
        Some((w, op)) => {
            Ok(lro_response(StatusCode::ACCEPTED, &state.base_url(&req), &w, op, &v.0).finish())
        }
    }
}

/// List the network watchers of a resource group.
#[utoipa::path(
    tag = "NetworkWatchers",
    operation_id = "NetworkWatchers_List",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("api-version" = String, Query),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of watchers", body = NetworkWatcherListResult),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers"
)]
pub async fn list_in_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg) = path.into_inner();
    check_scope(&sub, Some(&rg))?;
    let scope = format!("/subscriptions/{sub}/resourceGroups/{rg}");
    let prefix = ids::key(&format!("{sub}/{rg}/"));
    list(&req, &state, &caller, &v, &scope, prefix).await
}

/// List the network watchers of a subscription.
#[utoipa::path(
    tag = "NetworkWatchers",
    operation_id = "NetworkWatchers_ListAll",
    params(
        ("subscriptionId" = String, Path), ("api-version" = String, Query),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of watchers", body = NetworkWatcherListResult),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get("/subscriptions/{subscriptionId}/providers/Microsoft.Network/networkWatchers")]
pub async fn list_in_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    v: NetworkApiVersion,
) -> ApiResult<HttpResponse> {
    let sub = path.into_inner();
    check_scope(&sub, None)?;
    let scope = format!("/subscriptions/{sub}");
    list(
        &req,
        &state,
        &caller,
        &v,
        &scope,
        ids::key(&format!("{sub}/")),
    )
    .await
}

/// A page of the watchers of `scope`, whose identities start with `prefix`, showing only those
/// the caller may read (the next link follows the scan, so pages may hold fewer items); 403
/// for a caller that may read nothing at or under the scope.
async fn list(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    v: &NetworkApiVersion,
    scope: &str,
    prefix: String,
) -> ApiResult<HttpResponse> {
    let readable = caller
        .list_filter(&state.auth, actions::WATCHER_READ, scope)
        .await?;
    let after = skiptoken(req)?.unwrap_or_default();
    let _turn = crate::limits::admit(crate::limits::Heavy::List).await?;
    let mut conn = state.conn().await?;
    let pattern = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let rows: Vec<(String, WatcherRow)> = network_watchers::table
        .filter(network_watchers::identity_key.like(pattern))
        .filter(network_watchers::identity_key.gt(&after))
        .order(network_watchers::identity_key)
        .limit(state.page_size + 1)
        .select((network_watchers::identity_key, WatcherRow::as_select()))
        .load(&mut conn)
        .await?;
    // Pages end at `page_size` items, or earlier at the page byte bound (tags make the size).
    let fits = super::page_len(
        rows.iter()
            .map(|(key, w)| key.len() + w.location.len() + w.tags.to_string().len()),
        state.page_size as usize,
    );
    let more = rows.len() > fits;
    let page: Vec<_> = rows.into_iter().take(fits).collect();
    let next = match (more, page.last()) {
        (true, Some((key, _))) => Some(next_link(&state.base_url(req), req.path(), &v.0, key)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(NetworkWatcherListResult {
        value: page
            .iter()
            .map(|(_, w)| to_model(w))
            .filter(|m| readable(&m.id))
            .collect(),
        next_link: next,
    }))
}
