//! The webhooks of capture triggers (an extension of this service, not in Azure):
//! `POST /webhooks/captureTriggers/{triggerId}/alertmanager` (Prometheus Alertmanager's webhook
//! receiver, payload version 4) and `…/azureMonitor` (an Azure Monitor action group webhook with
//! the common alert schema). Not under `/subscriptions`: no bearer JWT, but the trigger's own
//! secret, as `Authorization: Bearer SECRET` or `?code=SECRET`.
//!
//! Order: the trigger (404), the secret (401, before the body is read), the body (413, 400),
//! then the delivery in one transaction ([`crate::lifecycle::triggers::deliver`]).

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use diesel_async::AsyncConnection;
use uuid::Uuid;

use crate::db::states::AlertSource;
use crate::db::triggers::TriggerRow;
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::triggers::{Delivery, DeliveryError, deliver};
use crate::limits::{self, Heavy};
use crate::state::AppState;
use crate::triggers::model::{DeliveryResult, TriggerWebhooks};
use crate::triggers::secret;

/// The largest delivery body.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;
/// The most JSON values in a delivery body (1000 alerts of about 60 values each).
pub const MAX_WEBHOOK_JSON_VALUES: usize = 65_536;

/// A trigger's webhook URLs.
pub fn urls(base_url: &str, trigger: Uuid) -> TriggerWebhooks {
    let prefix = format!("{base_url}/webhooks/captureTriggers/{trigger}");
    TriggerWebhooks {
        trigger_id: trigger.to_string(),
        alertmanager: format!("{prefix}/alertmanager"),
        azure_monitor: format!("{prefix}/azureMonitor"),
    }
}

fn unknown_trigger(id: &str) -> ApiError {
    ApiError::invalid(
        ErrorCode::ResourceNotFound,
        "triggerId",
        format!(
            "No capture trigger has the webhook id '{}': copy the URL from the trigger's properties.webhooks (GET the trigger).",
            limits::shown(id)
        ),
    )
}

fn too_large() -> ApiError {
    ApiError::invalid(
        ErrorCode::RequestEntityTooLarge,
        "body",
        format!(
            "The delivery is larger than {} KiB: lower the receiver's `max_alerts` (Alertmanager), or split the alert's targets.",
            MAX_WEBHOOK_BODY_BYTES / 1024
        ),
    )
}

async fn read_body(req: &HttpRequest, payload: web::Payload) -> ApiResult<web::Bytes> {
    if limits::declared_length(req).is_some_and(|n| n > MAX_WEBHOOK_BODY_BYTES as u64) {
        return Err(too_large());
    }
    limits::read_limited(
        payload.into_inner(),
        MAX_WEBHOOK_BODY_BYTES,
        too_large,
        "delivery's body",
    )
    .await
}

fn parse(bytes: &[u8]) -> ApiResult<serde_json::Value> {
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            "The delivery has no body: it must be the alerting system's JSON payload.",
        ));
    }
    limits::parse_json(bytes, MAX_WEBHOOK_JSON_VALUES).map_err(|e| match e {
        limits::JsonError::Syntax(e) => ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            format!("The delivery is not JSON: {e}"),
        ),
        limits::JsonError::TooManyValues { target } => ApiError::invalid(
            ErrorCode::InvalidAlertPayload,
            &target,
            format!(
                "'{target}' holds too many items: a delivery may hold at most {MAX_WEBHOOK_JSON_VALUES} JSON values; lower the receiver's `max_alerts`."
            ),
        ),
    })
}

/// Checks the delivery's secret against the trigger's (401 otherwise).
fn authenticate(req: &HttpRequest, state: &AppState, trigger: &TriggerRow) -> ApiResult<()> {
    let Some(presented) = secret::presented(req) else {
        state.metrics.auth_failures.inc();
        return Err(ApiError::new(
            ErrorCode::InvalidWebhookSecret,
            "The delivery carries no secret: send the trigger's webhook secret as 'Authorization: Bearer SECRET' (Alertmanager: http_config.authorization.credentials) or as '?code=SECRET' in the URL (Azure Monitor action groups).",
        ));
    };
    if !secret::verify(&trigger.secret_hash, &presented) {
        state.metrics.auth_failures.inc();
        return Err(ApiError::new(
            ErrorCode::InvalidWebhookSecret,
            "The delivery's secret is not this trigger's (it may have been rotated): use the webhookSecret of the trigger's create, or of its latest rotateSecret.",
        ));
    }
    Ok(())
}

async fn delivery(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: String,
    payload: web::Payload,
    source: AlertSource,
) -> ApiResult<HttpResponse> {
    let now = Utc::now();
    let trigger_id = id.parse::<Uuid>().map_err(|_| unknown_trigger(&id))?;
    let trigger = {
        let mut conn = state.conn().await?;
        TriggerRow::by_id(&mut conn, trigger_id, false)
            .await?
            .ok_or_else(|| unknown_trigger(&id))?
    };
    authenticate(&req, &state, &trigger)?;
    let _turn = limits::admit(Heavy::Body).await?;
    let body = parse(&read_body(&req, payload).await?)?;
    let d = Delivery {
        trigger: trigger_id,
        secret_hash: &trigger.secret_hash,
        source,
        body: &body,
        now,
        create_deadline: now + state.timing.agent_wait,
        stop_deadline: now + state.timing.stop_grace * 2,
    };
    let mut conn = state.conn().await?;
    let done = conn
        .transaction::<_, DeliveryError, _>(async |conn| deliver(conn, &d).await)
        .await
        .map_err(|e| match e {
            DeliveryError::Database(e) => ApiError::Database(e),
            DeliveryError::TriggerGone => unknown_trigger(&id),
            DeliveryError::SecretChanged => ApiError::new(
                ErrorCode::InvalidWebhookSecret,
                "The trigger's secret was rotated while this delivery was checked: use the new secret.",
            ),
            DeliveryError::WatcherDeleting(nw) => ApiError::new(
                ErrorCode::AnotherOperationInProgress,
                format!("The trigger's network watcher '{nw}' is being deleted."),
            ),
            DeliveryError::Corrupt(m) => ApiError::internal(m),
            DeliveryError::Invalid(e) => e,
        })?;
    for (source, outcome) in &done.outcomes {
        state
            .metrics
            .trigger_event(source.as_str(), outcome.as_str());
    }
    state
        .metrics
        .captures_created
        .add(done.result.captures_created.len() as u64);
    Ok(HttpResponse::Ok().json(done.result))
}

/// Deliver Prometheus Alertmanager notifications to a capture trigger (an extension of this
/// service, not in Azure).
///
/// For an Alertmanager `webhook_configs` receiver (payload version 4). Each alert's machine is
/// the value of the trigger's `machines.alertmanagerLabel`; `firing` alerts create captures,
/// `resolved` ones stop them (with `stopWhenResolved`). A repeated delivery of an alert
/// (same fingerprint and `startsAt`) does nothing. The answer sums up what was done; the trigger's
/// `recentEvents` tell why.
#[utoipa::path(
    tag = "CaptureTriggers",
    operation_id = "CaptureTriggers_Alertmanager",
    params(
        ("triggerId" = String, Path, description = "`properties.webhooks.triggerId` of the trigger"),
        ("code" = Option<String>, Query, description = "The webhook secret, when it is not sent as a bearer token"),
    ),
    request_body(content = serde_json::Value, description = "Alertmanager's webhook payload (version 4), at most 1 MiB and 1000 alerts"),
    responses(
        (status = 200, description = "Delivered", body = DeliveryResult),
        (status = 400, description = "Not JSON, or not Alertmanager's payload version 4; `target` is the JSON path", body = CloudError),
        (status = 401, description = "No secret, or another one", body = CloudError),
        (status = 404, description = "No such trigger", body = CloudError),
        (status = 413, description = "Body over 1 MiB", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    ),
)]
#[post("/webhooks/captureTriggers/{triggerId}/alertmanager")]
pub async fn alertmanager(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    delivery(
        req,
        state,
        path.into_inner(),
        payload,
        AlertSource::Alertmanager,
    )
    .await
}

/// Deliver Azure Monitor alerts (common alert schema) to a capture trigger (an extension of
/// this service, not in Azure).
///
/// For an action group's webhook action with the common alert schema on; give the URL with
/// `?code=SECRET`. `data.essentials.alertTargetIDs` are the machines; `monitorCondition`
/// `Fired` creates captures, `Resolved` stops them (with `stopWhenResolved`). A repeated
/// delivery (same `alertId`, `monitorCondition` and `firedDateTime`) does nothing.
#[utoipa::path(
    tag = "CaptureTriggers",
    operation_id = "CaptureTriggers_AzureMonitor",
    params(
        ("triggerId" = String, Path, description = "`properties.webhooks.triggerId` of the trigger"),
        ("code" = Option<String>, Query, description = "The webhook secret (action groups cannot set headers)"),
    ),
    request_body(content = serde_json::Value, description = "An Azure Monitor common alert schema payload, at most 1 MiB"),
    responses(
        (status = 200, description = "Delivered", body = DeliveryResult),
        (status = 400, description = "Not JSON, or not the common alert schema; `target` is the JSON path", body = CloudError),
        (status = 401, description = "No secret, or another one", body = CloudError),
        (status = 404, description = "No such trigger", body = CloudError),
        (status = 413, description = "Body over 1 MiB", body = CloudError),
        (status = "default", description = "ARM error", body = CloudError),
    ),
)]
#[post("/webhooks/captureTriggers/{triggerId}/azureMonitor")]
pub async fn azure_monitor(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    delivery(
        req,
        state,
        path.into_inner(),
        payload,
        AlertSource::AzureMonitor,
    )
    .await
}
