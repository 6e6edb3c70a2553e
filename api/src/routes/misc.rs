//! Health, metrics, and the few resources of other providers that clients read.

use actix_web::{HttpResponse, get, web};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::paths::check_scope;
use crate::arm::api_version::AnyApiVersion;
use crate::arm::ids;
use crate::arm::models::{Subscription, SubscriptionListResult, VirtualMachine};
use crate::db::schema::{machines, network_watchers};
use crate::error::{ApiError, ApiResult, CloudError};
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(tag = "Operations", responses((status = 200, description = "Alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Readiness: the database answers.
// 503 `ServiceUnavailable` (with `Retry-After`) while it does not, and while this process
// restarts its embedded database (`/healthz`, liveness only, stays 200 meanwhile: the process
// recovers by itself and needs no restart).
#[utoipa::path(tag = "Operations", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Database unavailable", body = CloudError),
))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if state.metrics.embedded_db_restarting.get() > 0 {
        return Err(ApiError::new(
            crate::error::ErrorCode::ServiceUnavailable,
            "The embedded database is restarting: its PostgreSQL process exited and the server is starting it again. Retry the request later.",
        ));
    }
    let check = async {
        let mut conn = state.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok::<_, ApiError>(())
    };
    // Whatever keeps the database from answering (connection refused, the connection ended by a
    // dying server, recovery in progress), the server is not ready: never a 500 here.
    if let Err(e) = check.await {
        tracing::warn!(error = %e, "not ready: the database does not answer");
        return Err(ApiError::new(
            crate::error::ErrorCode::ServiceUnavailable,
            "The database is unavailable. Retry the request later.",
        ));
    }
    Ok(HttpResponse::Ok().content_type("text/plain").body("ready"))
}

/// Prometheus metrics.
#[utoipa::path(tag = "Operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut text = state.metrics.render();
    // Captures by status, from the database (shared by all replicas).
    if let Ok(mut conn) = state.pool.get().await {
        let rows: QueryResult<Vec<(String, i64)>> = crate::db::schema::packet_captures::table
            .group_by(crate::db::schema::packet_captures::status)
            .select((
                crate::db::schema::packet_captures::status,
                diesel::dsl::count_star(),
            ))
            .load(&mut conn)
            .await;
        if let Ok(rows) = rows {
            text.push_str("# HELP capture_api_captures Packet captures by status.\n# TYPE capture_api_captures gauge\n");
            for (status, n) in rows {
                text.push_str(&format!(
                    "capture_api_captures{{status=\"{status}\"}} {n}\n"
                ));
            }
        }
        let agents: QueryResult<Vec<(bool, i64)>> = machines::table
            .group_by(machines::lost)
            .select((machines::lost, diesel::dsl::count_star()))
            .load(&mut conn)
            .await;
        if let Ok(rows) = agents {
            text.push_str("# HELP capture_api_agents Registered agents (lost = stopped polling).\n# TYPE capture_api_agents gauge\n");
            for (lost, n) in rows {
                text.push_str(&format!("capture_api_agents{{lost=\"{lost}\"}} {n}\n"));
            }
        }
    }
    text.push_str(&format!(
        "# HELP capture_api_long_polls_waiting Agent long polls waiting in this process.\n# TYPE capture_api_long_polls_waiting gauge\ncapture_api_long_polls_waiting {}\n",
        state.hub.waiting()
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

/// A virtual machine whose agent registered (the fields `az` reads: id, name, type, location).
#[utoipa::path(
    tag = "Compute",
    operation_id = "VirtualMachines_Get",
    params(
        ("subscriptionId" = String, Path), ("resourceGroupName" = String, Path),
        ("vmName" = String, Path), ("api-version" = String, Query),
    ),
    responses(
        (status = 200, description = "The machine", body = VirtualMachine),
        (status = 404, description = "No agent registered for it", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines/{vmName}"
)]
pub async fn get_vm(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: web::Path<(String, String, String)>,
    _v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg, vm) = path.into_inner();
    check_scope(&sub, Some(&rg))?;
    super::paths::check_vm_name(&rg, &vm)?;
    caller
        .authorize(
            &state.auth,
            crate::auth::actions::VM_READ,
            &format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}"),
        )
        .await?;
    let key = ids::key(&format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}"
    ));
    let mut conn = state.conn().await?;
    let row: Option<(String, String)> = machines::table
        .find(&key)
        .select((machines::resource_id, machines::location))
        .first(&mut conn)
        .await
        .optional()?;
    let (id, location) = row.ok_or_else(|| {
        ApiError::resource_not_found(&format!("Microsoft.Compute/virtualMachines/{vm}"), &rg)
    })?;
    let name = ids::ResourceId::parse(&id)
        .map(|r| r.name().to_string())
        .unwrap_or(vm);
    Ok(HttpResponse::Ok().json(VirtualMachine {
        id,
        name,
        resource_type: "Microsoft.Compute/virtualMachines".to_string(),
        location,
    }))
}

/// The subscriptions this server holds resources for.
#[utoipa::path(
    tag = "Subscriptions",
    operation_id = "Subscriptions_List",
    params(("api-version" = String, Query)),
    responses((status = 200, description = "Subscriptions", body = SubscriptionListResult))
)]
#[get("/subscriptions")]
pub async fn list_subscriptions(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    _v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let visible = caller.subscription_filter(&state.auth).await?;
    let mut conn = state.conn().await?;
    let mut subs: Vec<String> = network_watchers::table
        .select(network_watchers::subscription_id)
        .distinct()
        .load(&mut conn)
        .await?;
    subs.extend(
        machines::table
            .select(machines::subscription_id)
            .distinct()
            .load::<String>(&mut conn)
            .await?,
    );
    subs.extend(caller.assigned_subscriptions(&state.auth).await?);
    subs.sort_by_key(|s| s.to_lowercase());
    subs.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    Ok(HttpResponse::Ok().json(SubscriptionListResult {
        value: subs
            .into_iter()
            .filter(|s| visible(s))
            .map(|s| Subscription {
                id: format!("/subscriptions/{s}"),
                subscription_id: s.clone(),
                display_name: s,
                state: "Enabled".to_string(),
            })
            .collect(),
    }))
}
