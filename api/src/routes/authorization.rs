//! `Microsoft.Authorization/permissions`: what the caller may do at a subscription or resource
//! group, as ARM answers it (`actions` / `notActions` of each role assigned at or above the
//! scope). The web console reads it to enable or disable its actions.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::arm::api_version::AnyApiVersion;
use crate::arm::ids;
use crate::auth::Caller;
use crate::error::{ApiResult, CloudError};
use crate::state::AppState;

/// The actions a role allows (see `auth::rbac::Role::allows`).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    #[schema(example = json!(["*/read"]))]
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PermissionListResult {
    pub value: Vec<Permission>,
}

async fn permissions(
    state: &AppState,
    caller: &Caller,
    sub: &str,
    rg: Option<&str>,
) -> ApiResult<HttpResponse> {
    ids::validate_subscription(sub)?;
    let mut scope = format!("/subscriptions/{sub}");
    if let Some(rg) = rg {
        ids::validate_resource_group(rg)?;
        scope.push_str(&format!("/resourceGroups/{rg}"));
    }
    let value = caller
        .permissions(&state.auth, &scope)
        .await?
        .into_iter()
        .map(|actions| Permission {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_actions: vec![],
            data_actions: vec![],
            not_data_actions: vec![],
        })
        .collect();
    Ok(HttpResponse::Ok().json(PermissionListResult { value }))
}

/// What the caller may do in a subscription: one entry per role assigned to it at or above
/// the subscription.
#[utoipa::path(
    tag = "Authorization",
    operation_id = "Permissions_ListForSubscription",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("api-version" = String, Query, description = "Any Microsoft.Authorization api-version (YYYY-MM-DD), e.g. 2022-04-01"),
    ),
    responses(
        (status = 200, description = "The caller's permissions", body = PermissionListResult),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get("/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/permissions")]
pub async fn list_for_subscription(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    _v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    permissions(&state, &caller, &path.into_inner(), None).await
}

/// What the caller may do in a resource group (ARM's Permissions - List For Resource Group).
#[utoipa::path(
    tag = "Authorization",
    operation_id = "Permissions_ListForResourceGroup",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("resourceGroupName" = String, Path, description = "Resource group"),
        ("api-version" = String, Query, description = "Any Microsoft.Authorization api-version (YYYY-MM-DD), e.g. 2022-04-01"),
    ),
    responses(
        (status = 200, description = "The caller's permissions", body = PermissionListResult),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Authorization/permissions"
)]
pub async fn list_for_resource_group(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    _v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg) = path.into_inner();
    permissions(&state, &caller, &sub, Some(&rg)).await
}
