//! The OpenAPI document, generated from the routes (`capture-api openapi`).

use actix_web::App;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Packet capture API",
        description = "Self-hosted, ARM-compatible Microsoft.Network networkWatchers and packetCaptures \
(api-versions 2022-01-01 to 2026-03-01), the long-running operation monitors, and the agent protocol.\n\n\
Errors are ARM error bodies `{\"error\": {\"code\", \"message\", \"target\", \"details\"}}`; `target` is the JSON path of \
the field in error. Long-running operations answer 201/202 with `Azure-AsyncOperation`, `Location` and `Retry-After`.\n\n\
Stop reasons (`stopReason`): `TimeExceeded`, `TotalBytesExceeded`, `StoppedByUser`, `AgentStopped`, `CaptureError`, `FileCountReached`.\n\n\
Continuous captures (`continuousCapture` true or false) write numbered files (`name_00001.cap`, …) and show them in `continuousCaptureFiles`; see the README, \"Continuous capture\".",
        license(name = "MIT"),
    ),
    tags(
        (name = "NetworkWatchers", description = "Microsoft.Network/networkWatchers"),
        (name = "PacketCaptures", description = "Microsoft.Network/networkWatchers/packetCaptures"),
        (name = "CaptureTriggers", description = "Microsoft.Network/networkWatchers/captureTriggers and their webhooks: alerts (Prometheus Alertmanager, Azure Monitor) that start packet captures. An extension of this service, not in Azure."),
        (name = "Operations", description = "Long-running operation monitors, health and metrics"),
        (name = "Compute", description = "The virtual machines and scale sets of registered agents"),
        (name = "Storage", description = "The storage accounts registered with this server (never their keys)"),
        (name = "Authorization", description = "What the caller may do (Microsoft.Authorization permissions)"),
        (name = "Subscriptions", description = "Subscriptions with resources on this server"),
        (name = "Agent protocol", description = "Used by capture agents, not by ARM clients"),
        (name = "Identity", description = "The built-in token issuer (Entra-shaped v2 endpoints)"),
    )
)]
pub struct ApiDoc;

/// The document exactly as the server serves it at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::routes::configure)
        .split_for_parts();
    api
}

/// Pretty JSON with a final newline, as checked in at `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut s = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
