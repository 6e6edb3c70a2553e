//! HTTP handlers, one module per resource.

pub mod agent_files;
pub mod agents;
pub mod captures;
pub mod downloads;
pub mod identity;
pub mod misc;
pub mod operations;
pub mod paths;
pub mod watchers;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::arm::ids;
use crate::error::{ApiError, ApiResult, ErrorCode};

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
        .service(misc::get_vm)
        .service(misc::list_subscriptions)
        .service(identity::discovery)
        .service(identity::jwks)
        .service(identity::instance_discovery)
        .service(identity::cloud_metadata)
        .service(identity::token)
        .service(misc::healthz)
        .service(misc::readyz)
        .service(misc::metrics);
}

/// Parses a JSON request body, answering ARM errors for what is not JSON.
pub fn json_body(body: &web::Bytes) -> ApiResult<serde_json::Value> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            "The request body is required.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            format!("The request content was invalid and could not be deserialized: {e}"),
        )
    })
}

/// Parses an agent protocol body of type `T`; `what` names it in the error.
pub fn agent_body<T: serde::de::DeserializeOwned>(body: &web::Bytes, what: &str) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            format!("Invalid {what}: {e}"),
        )
    })
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
    let loc = ids::location_key(&watcher.location);
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
