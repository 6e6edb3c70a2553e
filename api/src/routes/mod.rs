//! HTTP handlers, one module per resource.

pub mod agent_files;
pub mod agents;
pub mod authorization;
pub mod captures;
pub mod console;
pub mod downloads;
pub mod identity;
pub mod inventory;
pub mod misc;
pub mod operations;
pub mod paths;
pub mod ring;
pub mod signin;
pub mod triggers;
pub mod watchers;
pub mod webhooks;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::arm::ids;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits;

/// Every route, registered once for both the server and the OpenAPI document.
pub fn configure(cfg: &mut ServiceConfig) {
    // Matched in order: the hot paths (reads, monitors, agents' polls) come first.
    cfg.service(captures::get_capture)
        .service(captures::create)
        .service(captures::delete_capture)
        .service(captures::query_status)
        .service(captures::stop)
        .service(captures::list)
        .service(operations::operation_status)
        .service(operations::operation_result)
        .service(agents::poll)
        .service(agents::report)
        .service(agents::register)
        .service(agents::rotate_credential)
        .service(agent_files::upload_sas)
        .service(agent_files::upload_result)
        .service(agent_files::send_file)
        .service(agent_files::decline_file)
        .service(downloads::download)
        .service(downloads::content)
        .service(watchers::get_watcher)
        .service(watchers::create_or_update)
        .service(watchers::update_tags)
        .service(watchers::delete_watcher)
        .service(watchers::list_in_group)
        .service(watchers::list_in_subscription)
        .service(triggers::get_trigger)
        .service(triggers::create_or_update)
        .service(triggers::delete_trigger)
        .service(triggers::list)
        .service(triggers::rotate_secret)
        .service(webhooks::alertmanager)
        .service(webhooks::azure_monitor)
        .service(misc::get_vm)
        .service(misc::list_subscriptions)
        .service(authorization::list_for_subscription)
        .service(authorization::list_for_resource_group)
        .service(inventory::list_vms_in_subscription)
        .service(inventory::list_vms_in_group)
        .service(inventory::list_scale_sets_in_subscription)
        .service(inventory::list_scale_sets_in_group)
        .service(inventory::list_scale_set_vms)
        .service(inventory::list_storage_accounts_in_subscription)
        .service(inventory::list_storage_accounts_in_group)
        .service(identity::discovery)
        .service(identity::jwks)
        .service(identity::instance_discovery)
        .service(identity::cloud_metadata)
        .service(identity::token)
        .service(identity::root_discovery)
        .service(signin::authorize)
        .service(signin::authorize_form)
        .service(signin::stylesheet)
        .service(signin::logout)
        .service(signin::revoke)
        .service(signin::console_config)
        .service(misc::healthz)
        .service(misc::readyz)
        .service(misc::metrics);
}

/// Parses an agent protocol body of type `T`; `what` names it in the error.
/// Text with a NUL character anywhere is refused, naming the field: PostgreSQL cannot store it.
pub fn agent_body<T: serde::de::DeserializeOwned>(body: &web::Bytes, what: &str) -> ApiResult<T> {
    let invalid = |message: String| {
        ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            format!("Invalid {what}: {message}"),
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    if let Some(field) = nul_at(&value, "") {
        return Err(ApiError::invalid(
            ErrorCode::InvalidParameter,
            &field,
            format!("'{field}' may not contain NUL characters (\\u0000)."),
        ));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// The JSON path of the first text holding a NUL character, if any.
fn nul_at(v: &serde_json::Value, path: &str) -> Option<String> {
    let join = |key: &str| match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Some(match path {
            "" => "body".to_string(),
            _ => path.to_string(),
        }),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, &format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "\\u0000")))
            } else {
                nul_at(v, &join(k))
            }
        }),
        _ => None,
    }
}

/// The headers of a long-running operation's 201/202: both monitors and a Retry-After.
pub fn lro_response(
    status: StatusCode,
    base_url: &str,
    watcher: &crate::db::models::WatcherRow,
    operation_id: uuid::Uuid,
    api_version: &str,
) -> actix_web::HttpResponseBuilder {
    let subscription = &watcher.subscription_id;
    // Percent-encoded: the headers can always be built, whatever a stored location holds.
    let loc: String =
        url::form_urlencoded::byte_serialize(ids::location_key(&watcher.location).as_bytes())
            .collect();
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

/// How many items of a list page: at most `max_items`, and no more than fit in
/// [`limits::MAX_LIST_PAGE_BYTES`] given each item's stored size (in key order), but always one
/// when there is one.
pub fn page_len(sizes: impl IntoIterator<Item = usize>, max_items: usize) -> usize {
    /// What an item adds to its stored size in a page: name, etag, state, punctuation.
    const ITEM_OVERHEAD: usize = 256;
    let mut total = 0usize;
    let mut n = 0;
    for size in sizes.into_iter().take(max_items) {
        total = total.saturating_add(size.saturating_add(ITEM_OVERHEAD));
        if n > 0 && total > limits::MAX_LIST_PAGE_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// The `$skiptoken` of a list request, if any: 400 for one that no `nextLink` holds (too long,
/// or with control characters).
pub fn skiptoken(req: &actix_web::HttpRequest) -> ApiResult<Option<String>> {
    let Some(token) = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(_, v)| v.into_owned())
    else {
        return Ok(None);
    };
    limits::check_text(
        &token,
        limits::MAX_SKIPTOKEN_CHARS,
        ErrorCode::InvalidParameter,
        "$skiptoken",
    )
    .map_err(|_| {
        ApiError::invalid(
            ErrorCode::InvalidParameter,
            "$skiptoken",
            format!(
                "The $skiptoken is not one this server gives in a nextLink (at most {} characters, no control characters): follow nextLink as given.",
                limits::MAX_SKIPTOKEN_CHARS
            ),
        )
    })?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_end_at_items_or_bytes_with_at_least_one() {
        assert_eq!(page_len([], 100), 0);
        assert_eq!(page_len([10; 500], 100), 100);
        let big = limits::MAX_LIST_PAGE_BYTES / 4;
        assert_eq!(page_len([big; 10], 100), 3);
        assert_eq!(page_len([limits::MAX_LIST_PAGE_BYTES * 3; 2], 100), 1);
    }
}
