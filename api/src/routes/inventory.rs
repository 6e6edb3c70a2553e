//! What a console lists besides watchers and captures: the registered machines (virtual
//! machines, scale sets and their instances, as Microsoft.Compute shows them) and the registered
//! storage accounts (as Microsoft.Storage shows them), in ARM's list shape (`value`, `nextLink`).
//!
//! Each list is authorized for its provider's read action at the listed scope (or on something
//! below it) and shows only what the caller may read. What this server knows beyond ARM's
//! fields (a machine's agent: host name, OS, version, status, last seen) is under `properties`,
//! as documented extensions. Storage accounts never show a key, nor where one is kept.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::paths::check_scope;
use super::{next_link, page_len, skiptoken};
use crate::arm::api_version::AnyApiVersion;
use crate::arm::ids;
use crate::auth::rbac::{VMSS_READ, VMSS_VM_READ};
use crate::auth::{Caller, actions};
use crate::db::machines::{MachineSummary, ScaleSetSummary};
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::limits::{self, Heavy, shown};
use crate::state::AppState;
use crate::storage::accounts::{self, AccountSummary};

pub const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
pub const SCALE_SET_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";
pub const SCALE_SET_VM_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines";
pub const STORAGE_ACCOUNT_TYPE: &str = "Microsoft.Storage/storageAccounts";

/// Microsoft.Storage api-versions accepted by the storage account lists: Azure's stable versions
/// from 2023-01-01 to 2025-06-01 (the fields shown are the same in all of them).
pub const STORAGE_API_VERSIONS: &[&str] = &[
    "2023-01-01",
    "2023-04-01",
    "2023-05-01",
    "2024-01-01",
    "2025-01-01",
    "2025-06-01",
];

/// A validated Microsoft.Storage api-version.
#[derive(Debug, Clone)]
pub struct StorageApiVersion(pub String);

impl FromRequest for StorageApiVersion {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let given = url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
            .map(|(_, v)| v.into_owned());
        ready(match given {
            None => Err(ApiError::new(
                ErrorCode::MissingApiVersionParameter,
                "The api-version query parameter (?api-version=) is required for all requests.",
            )),
            Some(v) if STORAGE_API_VERSIONS.contains(&v.as_str()) => Ok(StorageApiVersion(v)),
            Some(v) => Err(ApiError::new(
                ErrorCode::InvalidApiVersionParameter,
                format!(
                    "The api-version '{}' is invalid. The supported versions are '{}'.",
                    shown(&v),
                    STORAGE_API_VERSIONS.join(",")
                ),
            )),
        })
    }
}

/// The state of a machine's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum AgentStatus {
    /// The agent polls.
    Connected,
    /// The agent stopped polling for `--agent-lost-seconds` (its captures ended).
    Lost,
    /// The agent's access was revoked (`capture-api agents revoke`).
    Revoked,
}

/// A registered machine's `properties`: ARM's `provisioningState`, and what its agent reported
/// (extensions of this server).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredMachineProperties {
    /// Always `Succeeded`.
    pub provisioning_state: String,
    /// Extension: the machine's host name, as its agent reported it.
    pub hostname: String,
    /// Extension: the operating system, as its agent reported it.
    pub os: String,
    /// Extension: the agent's version.
    pub agent_version: String,
    /// Extension: `Connected`, `Lost` or `Revoked`.
    pub agent_status: AgentStatus,
    /// Extension: when the agent last polled or reported.
    pub last_seen: DateTime<Utc>,
    /// Extension: when the agent (last) registered.
    pub registered_at: DateTime<Utc>,
    /// Extension: the `--interface` values its agent runs with (none or several: it captures on
    /// `any`).
    pub interfaces: Vec<String>,
}

/// A virtual machine whose agent registered, as Microsoft.Compute lists it (`id`, `name`,
/// `type`, `location`), with its agent's state under `properties`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1", "name": "vm1", "type": "Microsoft.Compute/virtualMachines", "location": "eastus", "properties": {"provisioningState": "Succeeded", "hostname": "vm1", "os": "Linux", "agentVersion": "0.1.0", "agentStatus": "Connected", "lastSeen": "2026-12-02T03:00:00Z", "registeredAt": "2026-12-01T09:00:00Z", "interfaces": ["eth0"]}}))]
pub struct RegisteredVirtualMachine {
    pub id: String,
    pub name: String,
    /// `Microsoft.Compute/virtualMachines`.
    #[serde(rename = "type")]
    pub resource_type: String,
    pub location: String,
    pub properties: RegisteredMachineProperties,
}

/// A page of registered virtual machines.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredVirtualMachineListResult {
    pub value: Vec<RegisteredVirtualMachine>,
    /// URL of the next page (absent on the last page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A registered scale set instance, as Microsoft.Compute lists the VMs of a scale set.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines/0", "name": "ss1_0", "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines", "instanceId": "0", "location": "eastus", "properties": {"provisioningState": "Succeeded", "hostname": "ss1000000", "os": "Linux", "agentVersion": "0.1.0", "agentStatus": "Lost", "lastSeen": "2026-12-02T03:00:00Z", "registeredAt": "2026-12-01T09:00:00Z", "interfaces": ["any"]}}))]
pub struct ScaleSetVirtualMachine {
    pub id: String,
    /// `{scale set}_{instanceId}`, as in Azure.
    pub name: String,
    /// `Microsoft.Compute/virtualMachineScaleSets/virtualMachines`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The instance id: what a capture's `scope.include` / `scope.exclude` names.
    pub instance_id: String,
    pub location: String,
    pub properties: RegisteredMachineProperties,
}

/// A page of registered scale set instances.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetVirtualMachineListResult {
    pub value: Vec<ScaleSetVirtualMachine>,
    /// URL of the next page (absent on the last page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A scale set's `properties`: ARM's `provisioningState`, and its registered instances
/// (extensions of this server).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetProperties {
    /// Always `Succeeded`.
    pub provisioning_state: String,
    /// Extension: instances whose agent registered.
    pub registered_instances: i64,
    /// Extension: of those, instances whose agent is connected (neither lost nor revoked).
    pub connected_instances: i64,
    /// Extension: when an instance's agent was last seen.
    pub last_seen: DateTime<Utc>,
    /// Extension: the list of its registered instances
    /// (`…/virtualMachineScaleSets/{name}/virtualMachines?api-version=…`).
    pub instances_link: String,
}

/// A scale set with registered instances, as Microsoft.Compute lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1", "name": "ss1", "type": "Microsoft.Compute/virtualMachineScaleSets", "location": "eastus", "properties": {"provisioningState": "Succeeded", "registeredInstances": 2, "connectedInstances": 1, "lastSeen": "2026-12-02T03:00:00Z", "instancesLink": "https://capture.example/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines?api-version=2024-07-01"}}))]
pub struct VirtualMachineScaleSet {
    pub id: String,
    pub name: String,
    /// `Microsoft.Compute/virtualMachineScaleSets`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The region of its instances (of one of them, should they differ).
    pub location: String,
    pub properties: ScaleSetProperties,
}

/// A page of scale sets.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineScaleSetListResult {
    pub value: Vec<VirtualMachineScaleSet>,
    /// URL of the next page (absent on the last page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A storage account's tier: captures may not go to a premium account (as in Azure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum StorageSkuTier {
    Standard,
    Premium,
}

/// A storage account's SKU. The replication of a registered account is not known: `name` is
/// `Standard_LRS` or `Premium_LRS` after its tier.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StorageAccountSku {
    /// `Standard_LRS` or `Premium_LRS`.
    pub name: String,
    /// `Premium` for an account registered with `--premium`, else `Standard`.
    pub tier: StorageSkuTier,
}

/// A storage account's endpoints (only the blob endpoint is registered).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StorageAccountEndpoints {
    /// The blob endpoint, with a final `/` as in Azure.
    pub blob: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccountProperties {
    /// Always `Succeeded`.
    pub provisioning_state: String,
    pub primary_endpoints: StorageAccountEndpoints,
    /// When the account was registered on this server.
    pub creation_time: DateTime<Utc>,
}

/// A registered storage account, as Microsoft.Storage lists it. Never a key, nor where one is
/// kept.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/captures1", "name": "captures1", "type": "Microsoft.Storage/storageAccounts", "sku": {"name": "Standard_LRS", "tier": "Standard"}, "kind": "StorageV2", "properties": {"provisioningState": "Succeeded", "primaryEndpoints": {"blob": "https://captures1.blob.core.windows.net/"}, "creationTime": "2026-12-01T09:00:00Z"}}))]
pub struct StorageAccount {
    pub id: String,
    pub name: String,
    /// `Microsoft.Storage/storageAccounts`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The account's region; absent, as the server is not told it when an account is registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub sku: StorageAccountSku,
    /// `StorageV2`.
    pub kind: String,
    pub properties: StorageAccountProperties,
}

/// A page of storage accounts.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccountListResult {
    pub value: Vec<StorageAccount>,
    /// URL of the next page (absent on the last page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// The list's scope (an authorization scope): the subscription, or one of its resource groups.
fn scope_of(subscription: &str, resource_group: Option<&str>) -> String {
    match resource_group {
        Some(rg) => format!("/subscriptions/{subscription}/resourceGroups/{rg}"),
        None => format!("/subscriptions/{subscription}"),
    }
}

/// The rows of one page: at most `page_size` items, and no more than the page byte bound given
/// each row's `size`; with the `nextLink` that follows the last one when more rows came.
fn page<R>(
    req: &HttpRequest,
    state: &AppState,
    api_version: &str,
    mut rows: Vec<R>,
    key: impl Fn(&R) -> &str,
    size: impl Fn(&R) -> usize,
) -> (Vec<R>, Option<String>) {
    let fits = page_len(rows.iter().map(size), state.page_size as usize);
    let more = rows.len() > fits;
    rows.truncate(fits);
    let next = match (more, rows.last()) {
        (true, Some(last)) => Some(next_link(
            &state.base_url(req),
            req.path(),
            api_version,
            key(last),
        )),
        _ => None,
    };
    (rows, next)
}

fn agent_status(m: &MachineSummary) -> AgentStatus {
    if m.revoked_at.is_some() {
        AgentStatus::Revoked
    } else if m.lost {
        AgentStatus::Lost
    } else {
        AgentStatus::Connected
    }
}

fn machine_properties(m: &MachineSummary) -> RegisteredMachineProperties {
    RegisteredMachineProperties {
        provisioning_state: "Succeeded".to_string(),
        hostname: m.hostname.clone(),
        os: m.os.clone(),
        agent_version: m.agent_version.clone(),
        agent_status: agent_status(m),
        last_seen: m.last_seen_at,
        registered_at: m.registered_at,
        interfaces: serde_json::from_value(m.interfaces.clone()).unwrap_or_default(),
    }
}

/// What a machine adds to a page, in bytes (its longest fields).
fn machine_size(m: &MachineSummary) -> usize {
    m.resource_id.len()
        + m.location.len()
        + m.hostname.len()
        + m.os.len()
        + m.agent_version.len()
        + m.interfaces.to_string().len()
}

fn vm_model(m: &MachineSummary) -> RegisteredVirtualMachine {
    let name = ids::ResourceId::parse(&m.resource_id)
        .map(|r| r.name().to_string())
        .unwrap_or_default();
    RegisteredVirtualMachine {
        id: m.resource_id.clone(),
        name,
        resource_type: VM_TYPE.to_string(),
        location: m.location.clone(),
        properties: machine_properties(m),
    }
}

fn instance_model(m: &MachineSummary) -> ScaleSetVirtualMachine {
    let parsed = ids::ResourceId::parse(&m.resource_id);
    let scale_set = parsed
        .as_ref()
        .and_then(|r| r.types.first())
        .map(|(_, n)| n.clone())
        .unwrap_or_default();
    let instance_id = parsed
        .as_ref()
        .map(|r| r.name().to_string())
        .unwrap_or_default();
    ScaleSetVirtualMachine {
        id: m.resource_id.clone(),
        name: format!("{scale_set}_{instance_id}"),
        resource_type: SCALE_SET_VM_TYPE.to_string(),
        instance_id,
        location: m.location.clone(),
        properties: machine_properties(m),
    }
}

/// `{base}{id}/virtualMachines?api-version=…`, the path percent-encoded where needed.
fn instances_link(base_url: &str, scale_set_id: &str, api_version: &str) -> String {
    let raw = format!("{base_url}{scale_set_id}/virtualMachines");
    let mut link = url::Url::parse(&raw).map(String::from).unwrap_or(raw);
    let version: String = url::form_urlencoded::byte_serialize(api_version.as_bytes()).collect();
    link.push_str("?api-version=");
    link.push_str(&version);
    link
}

fn scale_set_model(
    s: &ScaleSetSummary,
    base_url: &str,
    api_version: &str,
) -> VirtualMachineScaleSet {
    let name = ids::ResourceId::parse(&s.scale_set_id)
        .map(|r| r.name().to_string())
        .unwrap_or_default();
    VirtualMachineScaleSet {
        id: s.scale_set_id.clone(),
        name,
        resource_type: SCALE_SET_TYPE.to_string(),
        location: s.location.clone(),
        properties: ScaleSetProperties {
            provisioning_state: "Succeeded".to_string(),
            registered_instances: s.instances,
            connected_instances: s.connected,
            last_seen: s.last_seen_at,
            instances_link: instances_link(base_url, &s.scale_set_id, api_version),
        },
    }
}

fn storage_model(a: &AccountSummary) -> StorageAccount {
    let name = ids::ResourceId::parse(&a.resource_id)
        .map(|r| r.name().to_string())
        .unwrap_or_else(|| a.account_name.clone());
    let (sku, tier) = if a.premium {
        ("Premium_LRS", StorageSkuTier::Premium)
    } else {
        ("Standard_LRS", StorageSkuTier::Standard)
    };
    StorageAccount {
        id: a.resource_id.clone(),
        name,
        resource_type: STORAGE_ACCOUNT_TYPE.to_string(),
        location: None,
        sku: StorageAccountSku {
            name: sku.to_string(),
            tier,
        },
        kind: "StorageV2".to_string(),
        properties: StorageAccountProperties {
            provisioning_state: "Succeeded".to_string(),
            primary_endpoints: StorageAccountEndpoints {
                blob: format!("{}/", a.blob_endpoint.trim_end_matches('/')),
            },
            creation_time: a.created_at,
        },
    }
}

/// What every list at a scope starts with: the scope checked, the caller's filter for the
/// list's read action (403 when it reaches nothing there), the continuation, a turn among the
/// heavy requests and a connection.
struct ListStart<F> {
    readable: F,
    after: String,
    _turn: limits::Permit,
    conn: crate::db::DbConn,
}

impl ListStart<()> {
    async fn begin(
        req: &HttpRequest,
        state: &AppState,
        caller: &Caller,
        action: &str,
        subscription: &str,
        resource_group: Option<&str>,
    ) -> ApiResult<ListStart<impl Fn(&str) -> bool + use<>>> {
        check_scope(subscription, resource_group)?;
        let readable = caller
            .list_filter(&state.auth, action, &scope_of(subscription, resource_group))
            .await?;
        let after = skiptoken(req)?.unwrap_or_default();
        let _turn = limits::admit(Heavy::List).await?;
        let conn = state.conn().await?;
        Ok(ListStart {
            readable,
            after,
            _turn,
            conn,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Virtual machines

/// A page of the registered virtual machines (not scale set instances) at a scope.
async fn vms(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    v: &AnyApiVersion,
    subscription: &str,
    resource_group: Option<&str>,
) -> ApiResult<HttpResponse> {
    let ListStart {
        readable,
        after,
        _turn,
        mut conn,
    } = ListStart::begin(
        req,
        state,
        caller,
        actions::VM_READ,
        subscription,
        resource_group,
    )
    .await?;
    let rows = MachineSummary::list_vms(
        &mut conn,
        subscription,
        resource_group,
        &after,
        state.page_size + 1,
    )
    .await?;
    let (rows, next_link) = page(req, state, &v.0, rows, |m| &m.resource_key, machine_size);
    Ok(HttpResponse::Ok().json(RegisteredVirtualMachineListResult {
        value: rows
            .iter()
            .filter(|m| readable(&m.resource_id))
            .map(vm_model)
            .collect(),
        next_link,
    }))
}

/// List the registered virtual machines of a subscription.
///
/// The machines whose agent registered (scale set instances are listed under their scale set),
/// that the caller may read (`Microsoft.Compute/virtualMachines/read`); each with its agent's
/// state under `properties` (extensions).
#[utoipa::path(
    tag = "Compute",
    operation_id = "VirtualMachines_ListAll",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("api-version" = String, Query, description = "Any Microsoft.Compute api-version (YYYY-MM-DD), e.g. 2024-07-01"),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of machines", body = RegisteredVirtualMachineListResult),
        (status = 403, description = "`AuthorizationFailed`: no read access at or under the subscription", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get("/subscriptions/{subscriptionId}/providers/Microsoft.Compute/virtualMachines")]
pub async fn list_vms_in_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let sub = path.into_inner();
    vms(&req, &state, &caller, &v, &sub, None).await
}

/// List the registered virtual machines of a resource group.
///
/// As the subscription's list, for one resource group (any casing).
#[utoipa::path(
    tag = "Compute",
    operation_id = "VirtualMachines_List",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("resourceGroupName" = String, Path, description = "Resource group"),
        ("api-version" = String, Query, description = "Any Microsoft.Compute api-version (YYYY-MM-DD), e.g. 2024-07-01"),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of machines", body = RegisteredVirtualMachineListResult),
        (status = 403, description = "`AuthorizationFailed`: no read access at or under the resource group", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines"
)]
pub async fn list_vms_in_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg) = path.into_inner();
    vms(&req, &state, &caller, &v, &sub, Some(&rg)).await
}

// ---------------------------------------------------------------------------------------------
// Scale sets

/// A page of the scale sets with registered instances at a scope.
async fn scale_sets(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    v: &AnyApiVersion,
    subscription: &str,
    resource_group: Option<&str>,
) -> ApiResult<HttpResponse> {
    let ListStart {
        readable,
        after,
        _turn,
        mut conn,
    } = ListStart::begin(req, state, caller, VMSS_READ, subscription, resource_group).await?;
    let rows = ScaleSetSummary::list(
        &mut conn,
        subscription,
        resource_group,
        &after,
        state.page_size + 1,
    )
    .await?;
    let (rows, next_link) = page(
        req,
        state,
        &v.0,
        rows,
        |s| &s.scale_set_key,
        |s| s.scale_set_id.len() * 3 + s.location.len(),
    );
    let base = state.base_url(req);
    Ok(HttpResponse::Ok().json(VirtualMachineScaleSetListResult {
        value: rows
            .iter()
            .filter(|s| readable(&s.scale_set_id))
            .map(|s| scale_set_model(s, &base, &v.0))
            .collect(),
        next_link,
    }))
}

/// List the scale sets of a subscription that have registered instances.
///
/// Each with its count of registered and connected instances and the link to list them
/// (extensions); only those the caller may read (`Microsoft.Compute/virtualMachineScaleSets/read`).
#[utoipa::path(
    tag = "Compute",
    operation_id = "VirtualMachineScaleSets_ListAll",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("api-version" = String, Query, description = "Any Microsoft.Compute api-version (YYYY-MM-DD), e.g. 2024-07-01"),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of scale sets", body = VirtualMachineScaleSetListResult),
        (status = 403, description = "`AuthorizationFailed`: no read access at or under the subscription", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get("/subscriptions/{subscriptionId}/providers/Microsoft.Compute/virtualMachineScaleSets")]
pub async fn list_scale_sets_in_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let sub = path.into_inner();
    scale_sets(&req, &state, &caller, &v, &sub, None).await
}

/// List the scale sets of a resource group that have registered instances.
#[utoipa::path(
    tag = "Compute",
    operation_id = "VirtualMachineScaleSets_List",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("resourceGroupName" = String, Path, description = "Resource group"),
        ("api-version" = String, Query, description = "Any Microsoft.Compute api-version (YYYY-MM-DD), e.g. 2024-07-01"),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of scale sets", body = VirtualMachineScaleSetListResult),
        (status = 403, description = "`AuthorizationFailed`: no read access at or under the resource group", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets"
)]
pub async fn list_scale_sets_in_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg) = path.into_inner();
    scale_sets(&req, &state, &caller, &v, &sub, Some(&rg)).await
}

/// List the registered instances of a scale set.
///
/// Only those the caller may read
/// (`Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read`); 404 `ResourceNotFound`
/// when the scale set has no registered instance.
#[utoipa::path(
    tag = "Compute",
    operation_id = "VirtualMachineScaleSetVMs_List",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("resourceGroupName" = String, Path, description = "Resource group"),
        ("virtualMachineScaleSetName" = String, Path, description = "Scale set name"),
        ("api-version" = String, Query, description = "Any Microsoft.Compute api-version (YYYY-MM-DD), e.g. 2024-07-01"),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of instances", body = ScaleSetVirtualMachineListResult),
        (status = 403, description = "`AuthorizationFailed`: no read access at or under the scale set", body = CloudError),
        (status = 404, description = "`ResourceNotFound`: no instance of the scale set registered", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{virtualMachineScaleSetName}/virtualMachines"
)]
pub async fn list_scale_set_vms(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
    v: AnyApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg, ss) = path.into_inner();
    check_scope(&sub, Some(&rg))?;
    let not_found = || {
        ApiError::resource_not_found(
            &format!("{SCALE_SET_TYPE}/{}", shown(&ss).escape_default()),
            &rg,
        )
    };
    if !ids::is_compute_name(&ss) {
        return Err(not_found());
    }
    let scale_set = format!(
        "{}/providers/{SCALE_SET_TYPE}/{ss}",
        scope_of(&sub, Some(&rg))
    );
    let readable = caller
        .list_filter(&state.auth, VMSS_VM_READ, &scale_set)
        .await?;
    let after = skiptoken(&req)?;
    let _turn = limits::admit(Heavy::List).await?;
    let mut conn = state.conn().await?;
    let rows = MachineSummary::list_instances(
        &mut conn,
        &scale_set,
        after.as_deref().unwrap_or_default(),
        state.page_size + 1,
    )
    .await?;
    // The scale set exists here through its registered instances.
    if rows.is_empty() && after.is_none() {
        return Err(not_found());
    }
    let (rows, next_link) = page(&req, &state, &v.0, rows, |m| &m.resource_key, machine_size);
    Ok(HttpResponse::Ok().json(ScaleSetVirtualMachineListResult {
        value: rows
            .iter()
            .filter(|m| readable(&m.resource_id))
            .map(instance_model)
            .collect(),
        next_link,
    }))
}

// ---------------------------------------------------------------------------------------------
// Storage accounts

/// A page of the registered storage accounts at a scope.
async fn storage_accounts(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    v: &StorageApiVersion,
    subscription: &str,
    resource_group: Option<&str>,
) -> ApiResult<HttpResponse> {
    let ListStart {
        readable,
        after,
        _turn,
        mut conn,
    } = ListStart::begin(
        req,
        state,
        caller,
        actions::STORAGE_ACCOUNT_READ,
        subscription,
        resource_group,
    )
    .await?;
    let rows = accounts::list_page(
        &mut conn,
        subscription,
        resource_group,
        &after,
        state.page_size + 1,
    )
    .await?;
    let (rows, next_link) = page(
        req,
        state,
        &v.0,
        rows,
        |a| &a.resource_key,
        |a| a.resource_id.len() + a.blob_endpoint.len(),
    );
    Ok(HttpResponse::Ok().json(StorageAccountListResult {
        value: rows
            .iter()
            .filter(|a| readable(&a.resource_id))
            .map(storage_model)
            .collect(),
        next_link,
    }))
}

/// List the registered storage accounts of a subscription.
///
/// The accounts captures may name in `storageLocation.storageId`, that the caller may read
/// (`Microsoft.Storage/storageAccounts/read`). `sku.tier` is `Premium` for the accounts
/// registered as premium: a capture naming one is refused (`PremiumStorageAccountNotSupported`),
/// as in Azure. No key, nor where one is kept, is ever shown.
#[utoipa::path(
    tag = "Storage",
    operation_id = "StorageAccounts_List",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("api-version" = String, Query, description = "A Microsoft.Storage api-version: 2023-01-01, 2023-04-01, 2023-05-01, 2024-01-01, 2025-01-01 or 2025-06-01"),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of storage accounts", body = StorageAccountListResult),
        (status = 403, description = "`AuthorizationFailed`: no read access at or under the subscription", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get("/subscriptions/{subscriptionId}/providers/Microsoft.Storage/storageAccounts")]
pub async fn list_storage_accounts_in_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    v: StorageApiVersion,
) -> ApiResult<HttpResponse> {
    let sub = path.into_inner();
    storage_accounts(&req, &state, &caller, &v, &sub, None).await
}

/// List the registered storage accounts of a resource group.
#[utoipa::path(
    tag = "Storage",
    operation_id = "StorageAccounts_ListByResourceGroup",
    params(
        ("subscriptionId" = String, Path, description = "Subscription id (a GUID)"),
        ("resourceGroupName" = String, Path, description = "Resource group"),
        ("api-version" = String, Query, description = "A Microsoft.Storage api-version: 2023-01-01, 2023-04-01, 2023-05-01, 2024-01-01, 2025-01-01 or 2025-06-01"),
        ("$skiptoken" = Option<String>, Query, description = "Continuation from nextLink"),
    ),
    responses(
        (status = 200, description = "A page of storage accounts", body = StorageAccountListResult),
        (status = 403, description = "`AuthorizationFailed`: no read access at or under the resource group", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    )
)]
#[get(
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Storage/storageAccounts"
)]
pub async fn list_storage_accounts_in_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    v: StorageApiVersion,
) -> ApiResult<HttpResponse> {
    let (sub, rg) = path.into_inner();
    storage_accounts(&req, &state, &caller, &v, &sub, Some(&rg)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_models() {
        assert_eq!(
            instances_link(
                "http://h:1",
                "/subscriptions/s/resourceGroups/rg(é)/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
                "2024-07-01"
            ),
            "http://h:1/subscriptions/s/resourceGroups/rg(%C3%A9)/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines?api-version=2024-07-01"
        );
        let a = AccountSummary {
            resource_key: "k".into(),
            resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/Acct1".into(),
            account_name: "acct1".into(),
            blob_endpoint: "http://127.0.0.1:10000/acct1".into(),
            premium: true,
            created_at: Utc::now(),
        };
        let m = serde_json::to_value(storage_model(&a)).unwrap_or_default();
        assert_eq!(m["name"], "Acct1");
        assert_eq!(m["sku"]["tier"], "Premium");
        assert_eq!(m["sku"]["name"], "Premium_LRS");
        assert_eq!(
            m["properties"]["primaryEndpoints"]["blob"],
            "http://127.0.0.1:10000/acct1/"
        );
        assert!(m.get("location").is_none());
    }
}
