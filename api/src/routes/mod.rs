//! HTTP handlers, one module per resource.

pub mod agent_files;
pub mod agents;
pub mod captures;
pub mod downloads;
pub mod identity;
pub mod misc;
pub mod operations;
pub mod watchers;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::arm::ids;
use crate::db::models::WatcherRow;
use crate::db::schema::network_watchers;
use crate::error::{ApiError, ApiResult};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Parses a JSON request body, answering ARM errors for what is not JSON.
pub fn json_body(body: &web::Bytes) -> ApiResult<serde_json::Value> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "InvalidRequestContent",
            "body",
            "The request body is required.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "InvalidRequestContent",
            "body",
            format!("The request content was invalid and could not be deserialized: {e}"),
        )
    })
}

/// Parses an agent protocol body of type `T`; `what` names it in the error.
pub fn agent_body<T: serde::de::DeserializeOwned>(body: &web::Bytes, what: &str) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "InvalidRequestContent",
            "body",
            format!("Invalid {what}: {e}"),
        )
    })
}

/// Checks the path's scope, then that the caller may do `action` on the capture it names.
pub async fn authorize_capture(
    caller: &crate::auth::Caller,
    state: &crate::state::AppState,
    action: &str,
    (sub, rg, nw, name): (&str, &str, &str, &str),
) -> ApiResult<()> {
    check_scope(sub, Some(rg))?;
    caller
        .authorize(state, action, &capture_scope(sub, rg, nw, name))
        .await
}

/// Path of a resource group: `{subscriptionId}/{resourceGroupName}`, validated.
pub fn check_scope(subscription: &str, resource_group: Option<&str>) -> ApiResult<()> {
    ids::validate_subscription(subscription)?;
    if let Some(rg) = resource_group {
        ids::validate_resource_group(rg)?;
    }
    Ok(())
}

/// ARM id of a network watcher, as the request named it (an authorization scope).
pub fn watcher_scope(subscription: &str, rg: &str, nw: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.Network/networkWatchers/{nw}"
    )
}

/// ARM id of a packet capture, as the request named it (an authorization scope).
pub fn capture_scope(subscription: &str, rg: &str, nw: &str, name: &str) -> String {
    format!(
        "{}/packetCaptures/{name}",
        watcher_scope(subscription, rg, nw)
    )
}

pub fn watcher_identity(subscription: &str, rg: &str, name: &str) -> String {
    ids::key(&format!("{subscription}/{rg}/{name}"))
}

fn watcher_not_found(rg: &str, name: &str) -> ApiError {
    ApiError::resource_not_found(&format!("Microsoft.Network/networkWatchers/{name}"), rg)
}

/// The watcher `{sub}/{rg}/{name}` (any casing), or a 404 naming it.
pub async fn find_watcher(
    conn: &mut AsyncPgConnection,
    subscription: &str,
    rg: &str,
    name: &str,
) -> ApiResult<WatcherRow> {
    network_watchers::table
        .filter(network_watchers::identity_key.eq(watcher_identity(subscription, rg, name)))
        .select(WatcherRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| watcher_not_found(rg, name))
}

/// Records a long-running operation on a watcher's resource; its monitors answer from it.
pub async fn start_operation(
    conn: &mut AsyncPgConnection,
    watcher: &WatcherRow,
    kind: &str,
    resource_id: &str,
    capture_id: Option<uuid::Uuid>,
    deadline: chrono::DateTime<chrono::Utc>,
    principal: &str,
) -> diesel::QueryResult<uuid::Uuid> {
    let id = uuid::Uuid::new_v4();
    diesel::insert_into(crate::db::schema::operations::table)
        .values(crate::db::models::NewOperation {
            id,
            subscription_key: ids::key(&watcher.subscription_id),
            location: &watcher.location,
            kind,
            resource_id,
            capture_id,
            watcher_id: Some(watcher.id),
            status: "InProgress",
            deadline,
            principal_id: Some(principal),
        })
        .execute(conn)
        .await?;
    Ok(id)
}

/// [`find_watcher`], holding a share lock until the transaction ends: a concurrent delete of the
/// watcher waits, and one that committed first is seen as Deleting (or gone).
pub async fn find_watcher_for_share(
    conn: &mut AsyncPgConnection,
    subscription: &str,
    rg: &str,
    name: &str,
) -> ApiResult<WatcherRow> {
    network_watchers::table
        .filter(network_watchers::identity_key.eq(watcher_identity(subscription, rg, name)))
        .select(WatcherRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| watcher_not_found(rg, name))
}

/// The headers of a long-running operation's 201/202: both monitors and a Retry-After.
pub fn lro_response(
    status: StatusCode,
    base_url: &str,
    subscription: &str,
    location: &str,
    operation_id: uuid::Uuid,
    api_version: &str,
) -> actix_web::HttpResponseBuilder {
    let loc = ids::location_key(location);
    let prefix = format!(
        "{base_url}/subscriptions/{subscription}/providers/Microsoft.Network/locations/{loc}"
    );
    let mut resp = HttpResponse::build(status);
    resp.insert_header((
        "Azure-AsyncOperation",
        format!("{prefix}/operations/{operation_id}?api-version={api_version}"),
    ))
    .insert_header((
        "Location",
        format!("{prefix}/operationResults/{operation_id}?api-version={api_version}"),
    ))
    .insert_header(("Retry-After", "1"));
    resp
}

/// `nextLink` for keyset paging: the same URL with the last key seen as `$skiptoken`.
pub fn next_link(base_url: &str, path: &str, api_version: &str, last_key: &str) -> String {
    let token: String = url::form_urlencoded::byte_serialize(last_key.as_bytes()).collect();
    format!("{base_url}{path}?api-version={api_version}&$skiptoken={token}")
}

/// The `$skiptoken` of a list request, if any.
pub fn skiptoken(req: &actix_web::HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(_, v)| v.into_owned())
}
