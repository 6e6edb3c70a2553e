//! The alerts of a webhook delivery, from Prometheus Alertmanager's webhook payload (version 4)
//! or Azure Monitor's common alert schema, read into one shape. Every refusal is 400
//! `InvalidAlertPayload` with the JSON path of the field in error as `target`.

use serde_json::{Map, Value};

use crate::db::states::{AlertCondition, AlertSource};
use crate::error::{ApiError, ErrorCode};
use crate::limits::{check_text, shown};

type Result<T> = std::result::Result<T, ApiError>;

/// At most this many alerts in one delivery (Alertmanager's `max_alerts` bounds a group's).
pub const MAX_ALERTS: usize = 1000;
/// At most this many machines named by one alert (`alertTargetIDs`).
pub const MAX_TARGETS: usize = 100;
/// The longest text kept of an alert (names, ids, label values).
pub const MAX_TEXT_CHARS: usize = 1024;
/// The only Alertmanager webhook payload version read.
pub const ALERTMANAGER_VERSION: &str = "4";
/// Azure Monitor's `schemaId` of the common alert schema.
pub const COMMON_SCHEMA: &str = "azureMonitorCommonAlertSchema";

/// One alert of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub source: AlertSource,
    /// `alertname` label or `alertRule`.
    pub name: String,
    /// The Alertmanager fingerprint, or the Azure Monitor `alertId`.
    pub id: String,
    /// What makes two deliveries the same alert (with the condition): the fingerprint and
    /// `startsAt`, or the `alertId` and `firedDateTime`.
    pub key: String,
    pub condition: AlertCondition,
    /// How the alert names its machines: label values (one at most) or target ids.
    pub machines: Vec<String>,
}

fn payload_error(target: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidAlertPayload, target, message)
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| payload_error(path, format!("'{path}' must be a JSON object.")))
}

/// A text member of `obj` (`None` when absent or null), checked for length and control
/// characters.
fn text(obj: &Map<String, Value>, name: &str, path: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_text(s, MAX_TEXT_CHARS, ErrorCode::InvalidAlertPayload, path)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(payload_error(path, format!("'{path}' must be a string."))),
    }
}

fn required(obj: &Map<String, Value>, name: &str, path: &str, what: &str) -> Result<String> {
    text(obj, name, path)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| payload_error(path, format!("'{path}' is required: {what}.")))
}

/// The alerts of an Alertmanager webhook payload; `label` names each alert's machine.
pub fn alertmanager(body: &Value, label: &str) -> Result<Vec<Alert>> {
    let root = object(body, "body")?;
    match root.get("version") {
        Some(Value::String(v)) if v == ALERTMANAGER_VERSION => {}
        other => {
            let got = other
                .map(|v| shown(&v.to_string()))
                .unwrap_or_else(|| "absent".into());
            return Err(payload_error(
                "version",
                format!(
                    "'version' is {got}; this webhook reads Alertmanager's webhook payload version \"{ALERTMANAGER_VERSION}\" (Alertmanager 0.16 and later). Point only an Alertmanager `webhook_configs` receiver at it; Azure Monitor alerts go to the trigger's azureMonitor URL."
                ),
            ));
        }
    }
    let alerts = root
        .get("alerts")
        .ok_or_else(|| {
            payload_error(
                "alerts",
                "'alerts' is required: the array of the notification's alerts.",
            )
        })?
        .as_array()
        .ok_or_else(|| payload_error("alerts", "'alerts' must be an array."))?;
    if alerts.len() > MAX_ALERTS {
        return Err(payload_error(
            "alerts",
            format!(
                "'alerts' holds {} alerts; a delivery may hold at most {MAX_ALERTS}. Set `max_alerts: {MAX_ALERTS}` (or less) in the receiver's webhook_config.",
                alerts.len()
            ),
        ));
    }
    alerts
        .iter()
        .enumerate()
        .map(|(i, a)| alertmanager_alert(a, &format!("alerts[{i}]"), label))
        .collect()
}

fn alertmanager_alert(a: &Value, path: &str, label: &str) -> Result<Alert> {
    let a = object(a, path)?;
    let status_path = format!("{path}.status");
    let condition = match text(a, "status", &status_path)?.as_deref() {
        Some("firing") => AlertCondition::Fired,
        Some("resolved") => AlertCondition::Resolved,
        other => {
            return Err(payload_error(
                &status_path,
                format!(
                    "'{status_path}' is {}; it must be \"firing\" or \"resolved\".",
                    other
                        .map(|s| format!("\"{}\"", shown(s)))
                        .unwrap_or_else(|| "absent".into())
                ),
            ));
        }
    };
    let labels_path = format!("{path}.labels");
    let labels = match a.get("labels") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => object(v, &labels_path)?.clone(),
    };
    let name = text(&labels, "alertname", &format!("{labels_path}.alertname"))?.unwrap_or_default();
    let machine =
        text(&labels, label, &format!("{labels_path}.{label}"))?.filter(|s| !s.trim().is_empty());
    let fingerprint = required(
        a,
        "fingerprint",
        &format!("{path}.fingerprint"),
        "Alertmanager's fingerprint of the alert's labels",
    )?;
    let starts_at = required(
        a,
        "startsAt",
        &format!("{path}.startsAt"),
        "when the alert started firing",
    )?;
    Ok(Alert {
        source: AlertSource::Alertmanager,
        name,
        key: format!("am:{fingerprint}:{starts_at}"),
        id: fingerprint,
        condition,
        machines: machine.into_iter().collect(),
    })
}

/// The alert of an Azure Monitor common alert schema payload.
pub fn azure_monitor(body: &Value) -> Result<Vec<Alert>> {
    let root = object(body, "body")?;
    match root.get("schemaId") {
        Some(Value::String(s)) if s == COMMON_SCHEMA => {}
        other => {
            let got = other
                .map(|v| shown(&v.to_string()))
                .unwrap_or_else(|| "absent".into());
            return Err(payload_error(
                "schemaId",
                format!(
                    "'schemaId' is {got}; this webhook reads Azure Monitor's common alert schema (\"{COMMON_SCHEMA}\"). Turn on \"Enable the common alert schema\" in the action group's webhook."
                ),
            ));
        }
    }
    let data = object(
        root.get("data").ok_or_else(|| {
            payload_error(
                "data",
                "'data' is required: the alert's essentials and context.",
            )
        })?,
        "data",
    )?;
    const E: &str = "data.essentials";
    let essentials = object(
        data.get("essentials").ok_or_else(|| {
            payload_error(
                E,
                format!("'{E}' is required: the alert's id, rule, condition and targets."),
            )
        })?,
        E,
    )?;
    let alert_id = required(
        essentials,
        "alertId",
        &format!("{E}.alertId"),
        "the alert's id",
    )?;
    let name = text(essentials, "alertRule", &format!("{E}.alertRule"))?.unwrap_or_default();
    let condition_path = format!("{E}.monitorCondition");
    let condition = match text(essentials, "monitorCondition", &condition_path)?.as_deref() {
        Some("Fired") => AlertCondition::Fired,
        Some("Resolved") => AlertCondition::Resolved,
        other => {
            return Err(payload_error(
                &condition_path,
                format!(
                    "'{condition_path}' is {}; it must be \"Fired\" or \"Resolved\".",
                    other
                        .map(|s| format!("\"{}\"", shown(s)))
                        .unwrap_or_else(|| "absent".into())
                ),
            ));
        }
    };
    let fired = required(
        essentials,
        "firedDateTime",
        &format!("{E}.firedDateTime"),
        "when the alert fired",
    )?;
    let targets_path = format!("{E}.alertTargetIDs");
    let targets = match essentials.get("alertTargetIDs") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) => {
            if items.len() > MAX_TARGETS {
                return Err(payload_error(
                    &targets_path,
                    format!(
                        "'{targets_path}' holds {} ids; an alert may name at most {MAX_TARGETS} machines.",
                        items.len()
                    ),
                ));
            }
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let p = format!("{targets_path}[{i}]");
                let s = item
                    .as_str()
                    .ok_or_else(|| payload_error(&p, format!("'{p}' must be a string.")))?;
                check_text(s, MAX_TEXT_CHARS, ErrorCode::InvalidAlertPayload, &p)?;
                ids.push(s.to_string());
            }
            ids
        }
        Some(_) => {
            return Err(payload_error(
                &targets_path,
                format!("'{targets_path}' must be an array of resource ids."),
            ));
        }
    };
    Ok(vec![Alert {
        source: AlertSource::AzureMonitor,
        name,
        key: format!("az:{alert_id}:{fired}"),
        id: alert_id,
        condition,
        machines: targets,
    }])
}

/// The host of a Prometheus `instance`-like value: `host:port` → `host`, `[v6]:port` → `v6`.
pub fn host_of(value: &str) -> &str {
    let v = value.trim();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match v.rsplit_once(':') {
        // One colon: a port. More: an IPv6 address without brackets.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(r: Result<Vec<Alert>>) -> String {
        let e = r.expect_err("refused");
        let (status, code, _, target) = e.arm_parts();
        assert_eq!(status.as_u16(), 400);
        assert_eq!(code, ErrorCode::InvalidAlertPayload);
        target.unwrap_or_default()
    }

    #[test]
    fn alertmanager_payloads() {
        let ok = json!({"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "HighLatency", "instance": "web1:9100"},
             "startsAt": "2026-12-03T04:00:00Z", "fingerprint": "abc"}]});
        let a = alertmanager(&ok, "instance").expect("valid");
        assert_eq!(a[0].machines, vec!["web1:9100".to_string()]);
        assert_eq!(a[0].condition, AlertCondition::Fired);
        assert_eq!(a[0].key, "am:abc:2026-12-03T04:00:00Z");
        assert!(
            alertmanager(&ok, "azure_resource_id").expect("valid")[0]
                .machines
                .is_empty()
        );
        assert_eq!(
            target(alertmanager(&json!({"version": "3", "alerts": []}), "x")),
            "version"
        );
        assert_eq!(
            target(alertmanager(&json!({"version": "4"}), "x")),
            "alerts"
        );
        let mut bad = ok.clone();
        bad["alerts"][0]["status"] = json!("pending");
        assert_eq!(target(alertmanager(&bad, "x")), "alerts[0].status");
        let mut bad = ok.clone();
        bad["alerts"][0]
            .as_object_mut()
            .map(|o| o.remove("fingerprint"));
        assert_eq!(target(alertmanager(&bad, "x")), "alerts[0].fingerprint");
    }

    #[test]
    fn azure_monitor_payloads() {
        let ok = json!({"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {
            "alertId": "/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/1",
            "alertRule": "cpu", "monitorCondition": "Fired",
            "alertTargetIDs": ["/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm1"],
            "firedDateTime": "2026-12-03T04:00:00.0Z"}, "alertContext": {}}});
        let a = azure_monitor(&ok).expect("valid");
        assert_eq!(a[0].machines.len(), 1);
        assert_eq!(target(azure_monitor(&json!({"schemaId": "x"}))), "schemaId");
        assert_eq!(
            target(azure_monitor(
                &json!({"schemaId": COMMON_SCHEMA, "data": {}})
            )),
            "data.essentials"
        );
        let mut bad = ok.clone();
        bad["data"]["essentials"]["monitorCondition"] = json!("Open");
        assert_eq!(
            target(azure_monitor(&bad)),
            "data.essentials.monitorCondition"
        );
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("web1:9100"), "web1");
        assert_eq!(host_of("web1"), "web1");
        assert_eq!(host_of("[::1]:9100"), "::1");
        assert_eq!(host_of("fe80::1"), "fe80::1");
    }
}
