//! Wire shapes of `Microsoft.Network/networkWatchers/{nw}/captureTriggers` (an extension of
//! this service: Azure has no such resource).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::arm::models::{
    PacketCaptureFilter, PacketCaptureSettings, PacketCaptureStorageLocation,
};

pub const TRIGGER_TYPE: &str = "Microsoft.Network/networkWatchers/captureTriggers";

/// Body of `PUT captureTriggers/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"properties": {
    "captureTemplate": {"storageLocation": {"filePath": "/var/captures/alerts/web.cap"}, "timeLimitInSeconds": 300,
                        "filters": [{"protocol": "TCP", "localPort": "443"}]},
    "machines": {"scopes": ["/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1"],
                 "alertmanagerLabel": "azure_resource_id", "labelMatches": "resourceId"},
    "guards": {"cooldownInSeconds": 600, "maxConcurrentCaptures": 5, "stopWhenResolved": true}}}))]
pub struct CaptureTrigger {
    pub properties: CaptureTriggerProperties,
}

/// What a trigger is made of; in responses every default is filled in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTriggerProperties {
    /// Whether alerts create captures (default true). A disabled trigger records its alerts
    /// as `Skipped` / `TriggerDisabled`.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
    pub capture_template: CaptureTemplate,
    pub machines: TriggerMachines,
    #[serde(default)]
    pub guards: TriggerGuards,
}

fn yes() -> bool {
    true
}

/// Every packet capture property but the target (`target`, `targetType`, `scope`), which comes
/// from each alert. Validated as a packet capture; each capture's file is
/// `<folder of filePath (or localPath)>/<capture name>.cap`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTemplate {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4294967295_u64, default = 0)]
    pub bytes_to_capture_per_packet: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4294967295_u64, default = 1073741824)]
    pub total_bytes_per_session: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 18000, default = 18000)]
    pub time_limit_in_seconds: Option<u32>,
    pub storage_location: PacketCaptureStorageLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub filters: Option<Vec<PacketCaptureFilter>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuous_capture: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_settings: Option<PacketCaptureSettings>,
}

/// Which machines a trigger may capture on, and how an Alertmanager alert names its machine.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerMachines {
    /// Subscription, resource group or virtual machine ids, all in the network watcher's
    /// subscription: 1 to 100. An alert's machine must be under one of them.
    #[schema(min_items = 1, max_items = 100)]
    pub scopes: Vec<String>,
    /// The Alertmanager label that names the machine (default `azure_resource_id`).
    #[serde(default = "default_label")]
    #[schema(default = "azure_resource_id", max_length = 128)]
    pub alertmanager_label: String,
    /// `resourceId` (default): the label holds the VM's ARM id. `hostname`: the label holds a
    /// host name, maybe with a port (Prometheus `instance`, `host:9100`), matched without case
    /// against the host names the registered agents reported. Azure Monitor alerts always name
    /// their machines by id (`alertTargetIDs`).
    #[serde(default = "default_matches")]
    #[schema(default = "resourceId")]
    pub label_matches: String,
}

pub const DEFAULT_LABEL: &str = "azure_resource_id";
pub const MATCH_RESOURCE_ID: &str = "resourceId";
pub const MATCH_HOSTNAME: &str = "hostname";

fn default_label() -> String {
    DEFAULT_LABEL.to_string()
}

fn default_matches() -> String {
    MATCH_RESOURCE_ID.to_string()
}

/// Guards; also fixed: at most one running capture per machine and trigger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerGuards {
    /// After a capture is created on a machine, no other is created there by this trigger for
    /// this long (default 600, 0 to 86400).
    #[schema(minimum = 0, maximum = 86400, default = 600)]
    pub cooldown_in_seconds: u32,
    /// At most this many captures of the trigger run at once (default 5, 1 to 100).
    #[schema(minimum = 1, maximum = 100, default = 5)]
    pub max_concurrent_captures: u32,
    /// Stop the capture an alert created when that alert resolves (default false).
    #[schema(default = false)]
    pub stop_when_resolved: bool,
}

pub const DEFAULT_COOLDOWN: u32 = 600;
pub const MAX_COOLDOWN: u32 = 86_400;
pub const DEFAULT_MAX_CONCURRENT: u32 = 5;
pub const MAX_CONCURRENT: u32 = 100;

impl Default for TriggerGuards {
    fn default() -> Self {
        TriggerGuards {
            cooldown_in_seconds: DEFAULT_COOLDOWN,
            max_concurrent_captures: DEFAULT_MAX_CONCURRENT,
            stop_when_resolved: false,
        }
    }
}

/// A capture trigger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CaptureTriggerResult {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub etag: String,
    pub properties: CaptureTriggerResultProperties,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTriggerResultProperties {
    #[serde(flatten)]
    pub properties: CaptureTriggerProperties,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Where the alerting systems deliver (read-only).
    pub webhooks: TriggerWebhooks,
    /// The latest 50 events, newest first (read-only; in a GET of the trigger, not in lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_events: Option<Vec<TriggerEvent>>,
    /// The webhook secret: only in the response of the PUT that created the trigger (and of
    /// `rotateSecret`), never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// The trigger's webhook URLs. The secret goes as `Authorization: Bearer SECRET` (Alertmanager's
/// `http_config.authorization`) or as `?code=SECRET` (Azure Monitor action groups).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerWebhooks {
    /// The trigger's opaque id in the webhook URLs.
    pub trigger_id: String,
    /// For Prometheus Alertmanager's `webhook_configs` (payload version 4).
    pub alertmanager: String,
    /// For an Azure Monitor action group webhook with the common alert schema.
    pub azure_monitor: String,
}

/// What one alert did on the trigger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerEvent {
    /// When the delivery arrived.
    pub time: DateTime<Utc>,
    /// `Alertmanager` or `AzureMonitor`.
    pub source: String,
    /// The alert's `alertname` label, or Azure Monitor's `alertRule`.
    pub alert_name: String,
    /// The Alertmanager fingerprint, or Azure Monitor's `alertId`.
    pub alert_id: String,
    /// `Fired` or `Resolved`.
    pub condition: String,
    /// The machine the alert named (absent when it named none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// `CaptureCreated`, `CaptureStopped` or `Skipped`.
    pub outcome: String,
    /// Why nothing was done: `OutsideScope`, `Cooldown`, `ConcurrencyLimit`,
    /// `AlreadyCapturing`, `MachineNotRegistered`, `OtherRegion`, `NoMachineInAlert`,
    /// `TriggerDisabled`, `StorageAccountNotFound`, `StopNotRequested`, `NoRunningCapture`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message: String,
    /// The id of the packet capture created or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_capture: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTriggerListResult {
    pub value: Vec<CaptureTriggerResult>,
    /// URL of the next page (absent on the last page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// The answer of `rotateSecret`: the new secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSecret {
    pub webhook_secret: String,
}

/// The answer of a webhook delivery: what its alerts did (the details are in the trigger's
/// `recentEvents`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryResult {
    /// Ids of the packet captures created.
    pub captures_created: Vec<String>,
    /// Ids of the packet captures stopped.
    pub captures_stopped: Vec<String>,
    /// Events recorded as `Skipped`.
    pub skipped: u32,
    /// Alerts (per machine) already delivered before: nothing done, nothing recorded.
    pub duplicates: u32,
}
