//! Event: an alert is delivered to a capture trigger. A firing alert creates a packet capture
//! on each machine it names that passes the trigger's guards ([`super::create::create`], as a
//! PUT does); a resolved one stops the captures it created, when the trigger says so
//! ([`super::stop::stop`], as a stop does). Each (alert, condition, machine) is recorded once as
//! an event of the trigger: a repeated delivery finds its event and does nothing.
//!
//! Guards hold across concurrent deliveries and replicas: a delivery locks its trigger's row
//! for its whole transaction (after the watcher, before any capture: see
//! [`crate::db::triggers`]), and the unique index on the events makes a repeated delivery a
//! no-op even without it.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::create::NewCaptureSpec;
use super::states::{AlertCondition, AlertSource, ProvisioningState, SkipReason, TriggerOutcome};
use crate::arm::ids::{self, ResourceId};
use crate::db::models::{CaptureRow, WatcherRow};
use crate::db::triggers::{NewTriggerEvent, TriggerMachine, TriggerRow};
use crate::triggers::alerts::{self, Alert, host_of};
use crate::triggers::model::{CaptureTriggerProperties, DeliveryResult, MATCH_HOSTNAME};
use crate::triggers::validate::capture_for;

/// Why a delivery was refused as a whole (nothing of it is kept).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// The trigger (or its watcher) was deleted.
    #[error("the trigger no longer exists")]
    TriggerGone,
    /// The secret was rotated after the delivery's was checked.
    #[error("the trigger's secret changed")]
    SecretChanged,
    /// The trigger's network watcher is being deleted.
    #[error("the network watcher '{0}' is being deleted")]
    WatcherDeleting(String),
    /// Stored properties that do not read back (written by hand?).
    #[error("stored trigger properties do not parse: {0}")]
    Corrupt(String),
    /// The payload is not the source's (read with the trigger's properties under its lock).
    #[error("{0}")]
    Invalid(crate::error::ApiError),
}

/// One delivery.
pub struct Delivery<'a> {
    pub trigger: Uuid,
    /// The secret hash the delivery's secret was verified against.
    pub secret_hash: &'a str,
    /// Who sent it, and its JSON payload.
    pub source: AlertSource,
    pub body: &'a serde_json::Value,
    /// When the delivery arrived.
    pub now: DateTime<Utc>,
    /// When a created capture's create operation fails if its agent did not start it.
    pub create_deadline: DateTime<Utc>,
    /// When a stop operation may end at the latest.
    pub stop_deadline: DateTime<Utc>,
}

/// What the delivery did, and its events per (source, outcome) for the metrics.
#[derive(Debug, Default)]
pub struct Delivered {
    pub result: DeliveryResult,
    pub outcomes: Vec<(AlertSource, TriggerOutcome)>,
}

struct Ctx<'a> {
    trigger: TriggerRow,
    watcher: WatcherRow,
    props: CaptureTriggerProperties,
    delivery: &'a Delivery<'a>,
    principal: String,
    out: Delivered,
}

/// A machine an alert names, and whether it may be captured.
struct Target {
    /// Lower-cased id (or `host:NAME` for an unknown host name, `''` for none).
    key: String,
    shown: Option<String>,
    /// The registered machine, when it passed the scope and registration checks.
    machine: Option<TriggerMachine>,
    skip: Option<(SkipReason, String)>,
}

/// Applies a delivery in the caller's transaction.
pub async fn deliver(
    conn: &mut AsyncPgConnection,
    delivery: &Delivery<'_>,
) -> Result<Delivered, DeliveryError> {
    // Lock order: the watcher (share), then the trigger, then captures.
    let seen = TriggerRow::by_id(conn, delivery.trigger, false)
        .await?
        .ok_or(DeliveryError::TriggerGone)?;
    let watcher = seen
        .watcher(conn)
        .await?
        .ok_or(DeliveryError::TriggerGone)?;
    let trigger = TriggerRow::by_id(conn, delivery.trigger, true)
        .await?
        .ok_or(DeliveryError::TriggerGone)?;
    if trigger.secret_hash != delivery.secret_hash {
        return Err(DeliveryError::SecretChanged);
    }
    if watcher.provisioning_state == ProvisioningState::Deleting {
        return Err(DeliveryError::WatcherDeleting(watcher.name.clone()));
    }
    let props: CaptureTriggerProperties = serde_json::from_value(trigger.properties.clone())
        .map_err(|e| DeliveryError::Corrupt(e.to_string()))?;
    // Read with the properties of this lock (a PUT may have changed the label since).
    let alerts = match delivery.source {
        AlertSource::Alertmanager => {
            alerts::alertmanager(delivery.body, &props.machines.alertmanager_label)
        }
        AlertSource::AzureMonitor => alerts::azure_monitor(delivery.body),
    }
    .map_err(DeliveryError::Invalid)?;
    let mut ctx = Ctx {
        principal: format!("trigger:{}", trigger.id),
        trigger,
        watcher,
        props,
        delivery,
        out: Delivered::default(),
    };
    for alert in &alerts {
        match alert.condition {
            AlertCondition::Fired => fired(conn, &mut ctx, alert).await?,
            AlertCondition::Resolved => resolved(conn, &mut ctx, alert).await?,
        }
    }
    ctx.trigger.prune_events(conn, delivery.now).await?;
    Ok(ctx.out)
}

/// Whether the machine `key` is under one of `scopes`.
fn in_scope(key: &str, scopes: &[String]) -> bool {
    scopes.iter().any(|s| {
        let s = ids::key(s);
        key == s || (key.starts_with(&s) && key.as_bytes().get(s.len()) == Some(&b'/'))
    })
}

fn skipped(key: String, shown: Option<String>, reason: SkipReason, message: String) -> Target {
    Target {
        key,
        shown,
        machine: None,
        skip: Some((reason, message)),
    }
}

/// Checks a registered (or not) machine: scope, registration, region.
fn check_machine(
    ctx: &Ctx<'_>,
    key: String,
    shown: String,
    machine: Option<TriggerMachine>,
) -> Target {
    if !in_scope(&key, &ctx.props.machines.scopes) {
        let message = format!(
            "The machine '{shown}' is not under any of the trigger's scopes (properties.machines.scopes); add its id, resource group or subscription there to capture it."
        );
        return skipped(key, Some(shown), SkipReason::OutsideScope, message);
    }
    let Some(m) = machine.filter(|m| m.revoked_at.is_none()) else {
        let message = format!(
            "No agent is registered for the machine '{shown}': start capture-agent there (see the README, \"The agent\")."
        );
        return skipped(key, Some(shown), SkipReason::MachineNotRegistered, message);
    };
    if m.lost {
        let message = format!(
            "The agent of the machine '{shown}' is lost (it stopped polling the server); restart it there."
        );
        return skipped(key, Some(shown), SkipReason::MachineNotRegistered, message);
    }
    if ids::location_key(&m.location) != ids::location_key(&ctx.watcher.location) {
        let message = format!(
            "The machine '{shown}' is in the region '{}', and the trigger's network watcher '{}' in '{}': create the trigger under the network watcher of the machine's region.",
            m.location, ctx.watcher.name, ctx.watcher.location
        );
        return skipped(key, Some(shown), SkipReason::OtherRegion, message);
    }
    Target {
        key,
        shown: Some(m.resource_id.clone()),
        machine: Some(m),
        skip: None,
    }
}

/// The machines an alert names.
async fn targets(
    conn: &mut AsyncPgConnection,
    ctx: &Ctx<'_>,
    alert: &Alert,
) -> Result<Vec<Target>, DeliveryError> {
    let by_host = alert.source == AlertSource::Alertmanager
        && ctx.props.machines.label_matches == MATCH_HOSTNAME;
    if alert.machines.is_empty() {
        let message = match alert.source {
            AlertSource::Alertmanager => format!(
                "The alert has no label '{}' naming its machine: add it to the alert's labels (e.g. in the alerting rule), or set properties.machines.alertmanagerLabel to the label that names it.",
                ctx.props.machines.alertmanager_label
            ),
            AlertSource::AzureMonitor => {
                "The alert's data.essentials.alertTargetIDs names no machine.".to_string()
            }
        };
        return Ok(vec![skipped(
            String::new(),
            None,
            SkipReason::NoMachineInAlert,
            message,
        )]);
    }
    let mut out = Vec::new();
    for value in &alert.machines {
        if by_host {
            let host = host_of(value);
            let found =
                TriggerMachine::with_hostname(conn, &ctx.watcher.subscription_id, host).await?;
            if found.is_empty() {
                let message = format!(
                    "No registered machine of the subscription '{}' has the host name '{host}' (from the label '{}' = '{value}'): start capture-agent on that machine.",
                    ctx.watcher.subscription_id, ctx.props.machines.alertmanager_label
                );
                out.push(skipped(
                    format!("host:{}", host.to_lowercase()),
                    Some(value.clone()),
                    SkipReason::MachineNotRegistered,
                    message,
                ));
            }
            for m in found {
                let (key, shown) = (m.resource_key.clone(), m.resource_id.clone());
                out.push(check_machine(ctx, key, shown, Some(m)));
            }
            continue;
        }
        let is_vm = ResourceId::parse(value)
            .is_some_and(|id| id.is_type("Microsoft.Compute", &["virtualMachines"]));
        if !is_vm {
            let message = format!(
                "'{value}' is not a virtual machine id (/subscriptions/{{id}}/resourceGroups/{{rg}}/providers/Microsoft.Compute/virtualMachines/{{name}}); with host names or Prometheus instances, set properties.machines.labelMatches to 'hostname'."
            );
            out.push(skipped(
                format!("id:{}", ids::key(value)),
                Some(value.clone()),
                SkipReason::NoMachineInAlert,
                message,
            ));
            continue;
        }
        let key = ids::key(value);
        let machine = TriggerMachine::find(conn, &key).await?;
        out.push(check_machine(ctx, key, value.clone(), machine));
    }
    Ok(out)
}

/// The name of a capture of `trigger` on `machine` at `now`:
/// `{trigger}-{machine}-{YYYYMMDDTHHMMSSZ}`, cut to fit 80 characters, `-{n}` added for the
/// `n`th try.
pub fn capture_name(trigger: &str, machine: &str, now: DateTime<Utc>, n: u32) -> String {
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let suffix = if n > 1 {
        format!("-{n}")
    } else {
        String::new()
    };
    let budget = crate::limits::MAX_NETWORK_NAME_CHARS - stamp.len() - 2 - suffix.len();
    let machine: String = machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trigger_len = trigger
        .len()
        .min(budget.saturating_sub(machine.len().min(budget / 2)));
    let machine_len = machine.len().min(budget - trigger_len);
    format!(
        "{}-{}-{stamp}{suffix}",
        &trigger[..trigger_len],
        &machine[..machine_len]
    )
}

enum Decision {
    Skip(SkipReason, String),
    Create(
        Box<crate::arm::validate::ValidCapture>,
        Option<(Uuid, String)>,
        String,
    ),
}

/// The guards, then the capture to create.
async fn decide(
    conn: &mut AsyncPgConnection,
    ctx: &Ctx<'_>,
    machine: &TriggerMachine,
) -> Result<Decision, DeliveryError> {
    let now = ctx.delivery.now;
    let g = &ctx.props.guards;
    let shown = &machine.resource_id;
    if ctx
        .trigger
        .running_captures(conn, Some(&machine.resource_key))
        .await?
        > 0
    {
        return Ok(Decision::Skip(
            SkipReason::AlreadyCapturing,
            format!("A capture of this trigger is already running on '{shown}'."),
        ));
    }
    // No cooldown, no wait (a delivery's clock may be behind a later one's).
    let last = match g.cooldown_in_seconds {
        0 => None,
        _ => {
            ctx.trigger
                .last_capture_on(conn, &machine.resource_key)
                .await?
        }
    };
    if let Some(last) = last {
        let ends = last + TimeDelta::seconds(i64::from(g.cooldown_in_seconds));
        if ends > now {
            return Ok(Decision::Skip(
                SkipReason::Cooldown,
                format!(
                    "The trigger captured '{shown}' at {}; its cooldown of {} s ends at {} (properties.guards.cooldownInSeconds).",
                    last.to_rfc3339_opts(SecondsFormat::Secs, true),
                    g.cooldown_in_seconds,
                    ends.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            ));
        }
    }
    let running = ctx.trigger.running_captures(conn, None).await?;
    if running >= i64::from(g.max_concurrent_captures) {
        return Ok(Decision::Skip(
            SkipReason::ConcurrencyLimit,
            format!(
                "{running} captures of this trigger are running, its limit (properties.guards.maxConcurrentCaptures = {}); stop one or raise the limit.",
                g.max_concurrent_captures
            ),
        ));
    }
    let vm_name = ResourceId::parse(&machine.resource_id)
        .map(|id| id.name().to_string())
        .unwrap_or_default();
    let name = capture_name(&ctx.trigger.name, &vm_name, now, 1);
    let template = serde_json::to_value(&ctx.props.capture_template)
        .map_err(|e| DeliveryError::Corrupt(e.to_string()))?;
    let mut valid = capture_for(&template, &machine.resource_id, &name)
        .map_err(|e| DeliveryError::Corrupt(e.to_string()))?;
    let storage = match valid.parameters.storage_location.storage_id.clone() {
        None => None,
        Some(id) => match crate::storage::accounts::find(conn, &id).await? {
            Some(account) if !account.premium => {
                let blob = crate::storage::blob_name(&valid.target, now);
                valid.parameters.storage_location.storage_path =
                    Some(crate::storage::blob_url(&account.blob_endpoint, &blob));
                Some((account.id, blob))
            }
            _ => {
                return Ok(Decision::Skip(
                    SkipReason::StorageAccountNotFound,
                    format!(
                        "The template's storage account '{id}' is no longer registered (or is premium): register it again with `capture-api storage-accounts add`, or change properties.captureTemplate.storageLocation."
                    ),
                ));
            }
        },
    };
    Ok(Decision::Create(Box::new(valid), storage, name))
}

fn event<'a>(
    ctx: &Ctx<'_>,
    alert: &'a Alert,
    key: &'a str,
    machine: Option<&'a str>,
    outcome: TriggerOutcome,
    reason: Option<SkipReason>,
    message: &'a str,
) -> NewTriggerEvent<'a> {
    NewTriggerEvent {
        trigger_id: ctx.trigger.id,
        at: ctx.delivery.now,
        source: alert.source,
        alert_name: &alert.name,
        alert_key: &alert.key,
        alert_id: &alert.id,
        condition: alert.condition,
        machine_key: key,
        machine,
        outcome,
        reason,
        message,
        capture_id: None,
        capture_resource_id: None,
    }
}

async fn fired(
    conn: &mut AsyncPgConnection,
    ctx: &mut Ctx<'_>,
    alert: &Alert,
) -> Result<(), DeliveryError> {
    for target in targets(conn, ctx, alert).await? {
        let decision = if !ctx.props.enabled {
            Decision::Skip(
                SkipReason::TriggerDisabled,
                "The trigger is disabled: set properties.enabled to true for its alerts to create captures.".to_string(),
            )
        } else if let Some((reason, message)) = target.skip {
            Decision::Skip(reason, message)
        } else if let Some(m) = &target.machine {
            decide(conn, ctx, m).await?
        } else {
            continue;
        };
        let shown = target.shown.as_deref();
        match decision {
            Decision::Skip(reason, message) => {
                skip(conn, ctx, alert, (&target.key, shown), reason, &message).await?;
            }
            Decision::Create(valid, storage, name) => {
                let e = event(
                    ctx,
                    alert,
                    &target.key,
                    shown,
                    TriggerOutcome::CaptureCreated,
                    None,
                    "",
                );
                let Some(event_id) =
                    record(conn, ctx, alert.source, TriggerOutcome::CaptureCreated, e).await?
                else {
                    continue;
                };
                let Some(row) = create_capture(conn, ctx, &valid, storage, &name).await? else {
                    let message = format!(
                        "No capture was created: '{name}' and its {} numbered names ('{name}-2' …) are all taken by captures of the network watcher; delete some of them.",
                        CAPTURE_NAMES - 1
                    );
                    let reason = SkipReason::CaptureNotCreated;
                    TriggerRow::set_event_skipped(conn, event_id, reason, &message).await?;
                    ctx.out.outcomes.pop();
                    ctx.out
                        .outcomes
                        .push((alert.source, TriggerOutcome::Skipped));
                    ctx.out.result.skipped += 1;
                    continue;
                };
                let message = format!("Created the packet capture '{}'.", row.name);
                TriggerRow::set_event_capture(conn, event_id, row.id, &row.resource_id, &message)
                    .await?;
                ctx.out.result.captures_created.push(row.resource_id);
            }
        }
    }
    Ok(())
}

/// Records that the alert did nothing for the machine (`key`, as shown), and why.
async fn skip(
    conn: &mut AsyncPgConnection,
    ctx: &mut Ctx<'_>,
    alert: &Alert,
    (key, machine): (&str, Option<&str>),
    reason: SkipReason,
    message: &str,
) -> Result<(), DeliveryError> {
    let e = event(
        ctx,
        alert,
        key,
        machine,
        TriggerOutcome::Skipped,
        Some(reason),
        message,
    );
    record(conn, ctx, alert.source, TriggerOutcome::Skipped, e).await?;
    Ok(())
}

/// Records an event; `None` (and counted as a duplicate) when the alert already has it.
async fn record(
    conn: &mut AsyncPgConnection,
    ctx: &mut Ctx<'_>,
    source: AlertSource,
    outcome: TriggerOutcome,
    event: NewTriggerEvent<'_>,
) -> Result<Option<i64>, DeliveryError> {
    let id = TriggerRow::record(conn, event).await?;
    match id {
        None => ctx.out.result.duplicates += 1,
        Some(_) => {
            if outcome == TriggerOutcome::Skipped {
                ctx.out.result.skipped += 1;
            }
            ctx.out.outcomes.push((source, outcome));
        }
    }
    Ok(id)
}

/// The names a trigger tries for a capture, the first one then suffixed ones.
const CAPTURE_NAMES: u32 = 20;

/// Creates the capture, under another name when one of that name exists; `None` when all
/// [`CAPTURE_NAMES`] names are taken.
async fn create_capture(
    conn: &mut AsyncPgConnection,
    ctx: &Ctx<'_>,
    valid: &crate::arm::validate::ValidCapture,
    storage: Option<(Uuid, String)>,
    first_name: &str,
) -> Result<Option<CaptureRow>, DeliveryError> {
    let vm_name = valid.target.name().to_string();
    let parameters = serde_json::to_value(&valid.parameters)
        .map_err(|e| DeliveryError::Corrupt(e.to_string()))?;
    for n in 1..=CAPTURE_NAMES {
        let name = match n {
            1 => first_name.to_string(),
            _ => capture_name(&ctx.trigger.name, &vm_name, ctx.delivery.now, n),
        };
        let mut parameters = parameters.clone();
        if n > 1 {
            // The file is named after the capture.
            let template = serde_json::to_value(&ctx.props.capture_template)
                .map_err(|e| DeliveryError::Corrupt(e.to_string()))?;
            let renamed = capture_for(&template, &valid.parameters.target, &name)
                .map_err(|e| DeliveryError::Corrupt(e.to_string()))?;
            let mut p = renamed.parameters;
            p.storage_location.storage_path =
                valid.parameters.storage_location.storage_path.clone();
            parameters =
                serde_json::to_value(&p).map_err(|e| DeliveryError::Corrupt(e.to_string()))?;
        }
        let spec = NewCaptureSpec::of(
            &name,
            parameters,
            valid,
            storage.clone(),
            ctx.delivery.create_deadline,
            &ctx.principal,
        );
        if let Some((row, _op)) =
            super::create::create(conn, &ctx.watcher, spec, ctx.delivery.now).await?
        {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

async fn resolved(
    conn: &mut AsyncPgConnection,
    ctx: &mut Ctx<'_>,
    alert: &Alert,
) -> Result<(), DeliveryError> {
    let first = alert.machines.first().map(String::as_str);
    if !ctx.props.guards.stop_when_resolved {
        let message = "The alert resolved; the trigger does not stop captures then (properties.guards.stopWhenResolved is false).";
        skip(
            conn,
            ctx,
            alert,
            ("", first),
            SkipReason::StopNotRequested,
            message,
        )
        .await?;
        return Ok(());
    }
    let captures = ctx.trigger.captures_of_alert(conn, &alert.key).await?;
    if captures.is_empty() {
        let message = "The alert resolved; it created no capture of this trigger.";
        skip(
            conn,
            ctx,
            alert,
            ("", first),
            SkipReason::NoRunningCapture,
            message,
        )
        .await?;
        return Ok(());
    }
    for (capture_id, machine_key, machine) in captures {
        let capture = CaptureRow::lock_of_machine(conn, capture_id, &machine_key)
            .await?
            .filter(|c| c.status.is_active());
        let shown = machine.as_deref();
        let Some(capture) = capture else {
            let message =
                "The alert resolved; the capture it created had already ended (or was deleted).";
            skip(
                conn,
                ctx,
                alert,
                (&machine_key, shown),
                SkipReason::NoRunningCapture,
                message,
            )
            .await?;
            continue;
        };
        let message = format!(
            "Stopped the packet capture '{}': the alert resolved.",
            capture.name
        );
        let mut e = event(
            ctx,
            alert,
            &machine_key,
            shown,
            TriggerOutcome::CaptureStopped,
            None,
            &message,
        );
        e.capture_id = Some(capture.id);
        e.capture_resource_id = Some(&capture.resource_id);
        if record(conn, ctx, alert.source, TriggerOutcome::CaptureStopped, e)
            .await?
            .is_none()
        {
            continue;
        }
        let request = super::stop::Request {
            principal: &ctx.principal,
            deadline: ctx.delivery.stop_deadline,
            now: ctx.delivery.now,
        };
        super::stop::stop(conn, &ctx.watcher, &capture, request).await?;
        ctx.out
            .result
            .captures_stopped
            .push(capture.resource_id.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_names_fit_the_name_rules() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T04:05:06Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(capture_name("t1", "vm1", now, 1), "t1-vm1-20261203T040506Z");
        assert_eq!(
            capture_name("t1", "vm1", now, 2),
            "t1-vm1-20261203T040506Z-2"
        );
        let long = capture_name(&"a".repeat(80), &"b".repeat(64), now, 12);
        assert!(long.len() <= 80, "{long}");
        assert!(ids::is_resource_name(&long), "{long}");
        assert!(long.contains("-b"), "{long}");
        assert!(in_scope(
            "/subscriptions/s/resourcegroups/rg1/x",
            &["/subscriptions/S/resourceGroups/RG1".into()]
        ));
        assert!(!in_scope(
            "/subscriptions/s/resourcegroups/rg10/x",
            &["/subscriptions/s/resourceGroups/rg1".into()]
        ));
    }
}
