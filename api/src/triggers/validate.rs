//! Validation of a `PUT captureTriggers/{name}` body. The capture template is validated by the
//! packet capture's own validation ([`crate::arm::validate`]), its errors' targets and messages
//! moved under `properties.captureTemplate`.

use serde_json::{Map, Value, json};

use super::model::{
    CaptureTemplate, CaptureTriggerProperties, DEFAULT_COOLDOWN, DEFAULT_LABEL,
    DEFAULT_MAX_CONCURRENT, MATCH_HOSTNAME, MATCH_RESOURCE_ID, MAX_CONCURRENT, MAX_COOLDOWN,
    TriggerGuards, TriggerMachines,
};
use crate::arm::ids::{self, ResourceId};
use crate::arm::validate::{self, ValidCapture, field, format_error, invalid, object};
use crate::error::ApiError;
use crate::limits::shown;

type Result<T> = std::result::Result<T, ApiError>;

/// At most this many scopes per trigger.
pub const MAX_SCOPES: usize = 100;
/// The longest Alertmanager label name a trigger takes.
pub const MAX_LABEL_CHARS: usize = 128;
/// The longest capture name a trigger makes ([`crate::limits::MAX_NETWORK_NAME_CHARS`]).
const LONGEST_CAPTURE_NAME: usize = crate::limits::MAX_NETWORK_NAME_CHARS;

const TEMPLATE: &str = "properties.captureTemplate";

fn boolean(obj: &Map<String, Value>, name: &str, path: &str, default: bool) -> Result<bool> {
    match field(obj, name) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format_error(
            path,
            format!("'{path}' must be true or false."),
        )),
    }
}

fn integer(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
    range: (u32, u32),
) -> Result<Option<u32>> {
    let Some(v) = field(obj, name) else {
        return Ok(None);
    };
    let (min, max) = range;
    let message = format!("'{path}' must be an integer from {min} to {max}.");
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => return Err(format_error(path, message)),
    };
    match n.and_then(|n| u32::try_from(n).ok()) {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(path, message)),
    }
}

/// A validated trigger: its normalised properties (as stored and echoed).
#[derive(Debug, Clone)]
pub struct ValidTrigger {
    pub properties: CaptureTriggerProperties,
}

/// Moves a capture validation error under the template: `properties.x` becomes
/// `properties.captureTemplate.x`, in the target and in the message.
fn under_template(e: ApiError) -> ApiError {
    match e {
        ApiError::Arm {
            code,
            message,
            target,
        } => ApiError::Arm {
            code,
            message: message.replace("'properties.", &format!("'{TEMPLATE}.")),
            target: Some(match target.as_deref() {
                Some(t) if t.starts_with("properties.") => {
                    format!("{TEMPLATE}{}", &t["properties".len()..])
                }
                _ => TEMPLATE.to_string(),
            }),
        },
        other => other,
    }
}

/// The capture body a template makes for `target` (the template's file paths as given).
pub fn capture_body(template: &Value, target: &str) -> Value {
    let mut props = template.clone();
    if let Some(o) = props.as_object_mut() {
        o.insert("target".to_string(), Value::String(target.to_string()));
    }
    json!({ "properties": props })
}

/// The capture a template makes for the machine `target` with the capture `name`: the file of
/// `filePath` (or `localPath`) becomes `<its folder>/<name>.cap`, so that each capture of the
/// trigger has its own file.
pub fn capture_for(template: &Value, target: &str, name: &str) -> Result<ValidCapture> {
    let mut body = capture_body(template, target);
    if let Some(sl) = body
        .pointer_mut("/properties/storageLocation")
        .and_then(Value::as_object_mut)
    {
        for (k, v) in sl.iter_mut() {
            if (k.eq_ignore_ascii_case("filePath") || k.eq_ignore_ascii_case("localPath"))
                && let Value::String(path) = v
            {
                let folder = path.rsplit_once('/').map(|(f, _)| f).unwrap_or("");
                *v = Value::String(format!("{folder}/{name}.cap"));
            }
        }
    }
    validate::capture_body(&body)
}

/// Validates the body of a trigger PUT for a watcher in `subscription` / `resource_group` at
/// `api_version`.
pub fn trigger_body(
    body: &Value,
    subscription: &str,
    resource_group: &str,
    api_version: &str,
) -> Result<ValidTrigger> {
    let root = object(body, "body")?;
    let props_v = field(root, "properties").ok_or_else(|| {
        format_error(
            "properties",
            "The request body must have a 'properties' object.",
        )
    })?;
    let props = object(props_v, "properties")?;
    let enabled = boolean(props, "enabled", "properties.enabled", true)?;
    let capture_template = template(props, subscription, resource_group, api_version)?;
    let machines = machines(props, subscription)?;
    let guards = guards(props)?;
    Ok(ValidTrigger {
        properties: CaptureTriggerProperties {
            enabled,
            capture_template,
            machines,
            guards,
        },
    })
}

fn template(
    props: &Map<String, Value>,
    subscription: &str,
    resource_group: &str,
    api_version: &str,
) -> Result<CaptureTemplate> {
    let t = field(props, "captureTemplate").ok_or_else(|| {
        invalid(
            TEMPLATE,
            format!("'{TEMPLATE}' is required: the packet capture properties (storageLocation, filters, limits) of the captures the trigger creates."),
        )
    })?;
    let obj = object(t, TEMPLATE)?;
    for name in ["target", "targetType", "scope"] {
        if let Some((k, _)) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            return Err(invalid(
                &format!("{TEMPLATE}.{k}"),
                format!(
                    "'{TEMPLATE}.{k}' is not allowed: a trigger captures on the machine each alert names. Remove it, and say which machines the trigger may capture on in 'properties.machines.scopes'."
                ),
            ));
        }
    }
    // Validated as a capture of a machine of the watcher's subscription.
    let placeholder = format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/template"
    );
    let valid = validate::capture_body(&capture_body(t, &placeholder)).map_err(under_template)?;
    validate::for_api_version(&valid, api_version).map_err(under_template)?;
    // Each capture's file is named after the capture: the longest name must fit too.
    let longest = "x".repeat(LONGEST_CAPTURE_NAME);
    capture_for(t, &placeholder, &longest).map_err(|e| {
        let (_, _, message, target) = e.arm_parts();
        invalid(
            &target
                .map(|t| t.replace("properties.", &format!("{TEMPLATE}.")))
                .unwrap_or_else(|| TEMPLATE.to_string()),
            format!(
                "Each capture of the trigger writes '<folder of the path>/<capture name>.cap' (capture names have up to {LONGEST_CAPTURE_NAME} characters), which is not a valid path here: {message} Use a shorter folder."
            ),
        )
    })?;
    let p = valid.parameters;
    Ok(CaptureTemplate {
        bytes_to_capture_per_packet: p.bytes_to_capture_per_packet,
        total_bytes_per_session: p.total_bytes_per_session,
        time_limit_in_seconds: p.time_limit_in_seconds,
        storage_location: p.storage_location,
        filters: p.filters,
        continuous_capture: p.continuous_capture,
        capture_settings: p.capture_settings,
    })
}

/// A scope of `machines.scopes`: a subscription, a resource group or a virtual machine of the
/// watcher's subscription. Answers it as given (trimmed of a final `/`).
fn scope(raw: &str, subscription: &str, target: &str) -> Result<String> {
    let s = raw.trim().trim_end_matches('/');
    let forms = "a subscription id (/subscriptions/{id}), a resource group id (/subscriptions/{id}/resourceGroups/{name}) or a virtual machine id (…/providers/Microsoft.Compute/virtualMachines/{name})";
    let bad = || {
        invalid(
            target,
            format!("'{target}' is '{}', which is not {forms}.", shown(raw)),
        )
    };
    if s.chars().count() > crate::limits::MAX_RESOURCE_ID_CHARS || s.chars().any(char::is_control) {
        return Err(bad());
    }
    let parts: Vec<&str> = s.strip_prefix('/').unwrap_or("").split('/').collect();
    let sub = match parts.as_slice() {
        [subs, sub, rgs, rg]
            if subs.eq_ignore_ascii_case("subscriptions")
                && rgs.eq_ignore_ascii_case("resourceGroups") =>
        {
            ids::validate_resource_group(rg).map_err(|_| bad())?;
            sub.to_string()
        }
        [subs, sub] if subs.eq_ignore_ascii_case("subscriptions") => sub.to_string(),
        _ => {
            let id = ResourceId::parse(s)
                .filter(|id| id.is_type("Microsoft.Compute", &["virtualMachines"]))
                .ok_or_else(bad)?;
            ids::check_id_parts(s, &id, target)?;
            id.subscription
        }
    };
    ids::validate_subscription(&sub).map_err(|_| bad())?;
    if !sub.eq_ignore_ascii_case(subscription) {
        return Err(invalid(
            target,
            format!(
                "'{target}' is in the subscription '{}'; the trigger's network watcher is in '{subscription}', and a trigger captures only in its own subscription. Create the trigger under a network watcher of that subscription.",
                shown(&sub)
            ),
        ));
    }
    Ok(s.to_string())
}

fn machines(props: &Map<String, Value>, subscription: &str) -> Result<TriggerMachines> {
    const PATH: &str = "properties.machines";
    let m = field(props, "machines").ok_or_else(|| {
        invalid(
            PATH,
            format!("'{PATH}' is required: at least 'scopes', the subscription, resource group or machine ids the trigger may capture on."),
        )
    })?;
    let m = object(m, PATH)?;
    let scopes_path = format!("{PATH}.scopes");
    let scopes_v = field(m, "scopes").ok_or_else(|| {
        invalid(
            &scopes_path,
            format!("'{scopes_path}' is required: 1 to {MAX_SCOPES} subscription, resource group or machine ids."),
        )
    })?;
    let items = scopes_v.as_array().ok_or_else(|| {
        format_error(
            &scopes_path,
            format!("'{scopes_path}' must be an array of ids."),
        )
    })?;
    if items.is_empty() || items.len() > MAX_SCOPES {
        return Err(invalid(
            &scopes_path,
            format!(
                "'{scopes_path}' has {} ids; it must have 1 to {MAX_SCOPES}.",
                items.len()
            ),
        ));
    }
    let mut scopes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let target = format!("{scopes_path}[{i}]");
        let s = item
            .as_str()
            .ok_or_else(|| format_error(&target, format!("'{target}' must be a string.")))?;
        scopes.push(scope(s, subscription, &target)?);
    }
    let label_path = format!("{PATH}.alertmanagerLabel");
    let alertmanager_label = match field(m, "alertmanagerLabel") {
        None => DEFAULT_LABEL.to_string(),
        Some(Value::String(s)) => {
            let ok = !s.is_empty()
                && s.len() <= MAX_LABEL_CHARS
                && s.bytes().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == b'_' || (i > 0 && c.is_ascii_digit())
                });
            if !ok {
                return Err(invalid(
                    &label_path,
                    format!(
                        "'{label_path}' is '{}', which is not a Prometheus label name: 1-{MAX_LABEL_CHARS} letters, digits and '_', not starting with a digit.",
                        shown(s)
                    ),
                ));
            }
            s.clone()
        }
        Some(_) => {
            return Err(format_error(
                &label_path,
                format!("'{label_path}' must be a string."),
            ));
        }
    };
    let matches_path = format!("{PATH}.labelMatches");
    let label_matches = match field(m, "labelMatches") {
        None => MATCH_RESOURCE_ID.to_string(),
        Some(Value::String(s)) if s.eq_ignore_ascii_case(MATCH_RESOURCE_ID) => {
            MATCH_RESOURCE_ID.to_string()
        }
        Some(Value::String(s)) if s.eq_ignore_ascii_case(MATCH_HOSTNAME) => {
            MATCH_HOSTNAME.to_string()
        }
        Some(v) => {
            return Err(invalid(
                &matches_path,
                format!(
                    "'{matches_path}' is {}; it must be '{MATCH_RESOURCE_ID}' (the label holds the machine's id) or '{MATCH_HOSTNAME}' (the label holds its host name, maybe with a port).",
                    shown(&v.to_string())
                ),
            ));
        }
    };
    Ok(TriggerMachines {
        scopes,
        alertmanager_label,
        label_matches,
    })
}

fn guards(props: &Map<String, Value>) -> Result<TriggerGuards> {
    const PATH: &str = "properties.guards";
    let Some(g) = field(props, "guards") else {
        return Ok(TriggerGuards::default());
    };
    let g = object(g, PATH)?;
    Ok(TriggerGuards {
        cooldown_in_seconds: integer(
            g,
            "cooldownInSeconds",
            &format!("{PATH}.cooldownInSeconds"),
            (0, MAX_COOLDOWN),
        )?
        .unwrap_or(DEFAULT_COOLDOWN),
        max_concurrent_captures: integer(
            g,
            "maxConcurrentCaptures",
            &format!("{PATH}.maxConcurrentCaptures"),
            (1, MAX_CONCURRENT),
        )?
        .unwrap_or(DEFAULT_MAX_CONCURRENT),
        stop_when_resolved: boolean(
            g,
            "stopWhenResolved",
            &format!("{PATH}.stopWhenResolved"),
            false,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn body(template: Value, scopes: Value) -> Value {
        json!({"properties": {"captureTemplate": template, "machines": {"scopes": scopes}}})
    }

    fn err(v: &Value) -> (String, Option<String>, String) {
        let (_, code, message, target) = trigger_body(v, SUB, "rg1", "2026-03-01")
            .map(|_| ())
            .expect_err("refused")
            .arm_parts();
        (code.to_string(), target, message)
    }

    #[test]
    fn defaults_are_filled_in() {
        let v = body(
            json!({"storageLocation": {"filePath": "/var/captures/a/t.cap"}}),
            json!([format!("/subscriptions/{SUB}")]),
        );
        let t = trigger_body(&v, SUB, "rg1", "2026-03-01").expect("valid");
        let p = t.properties;
        assert!(p.enabled);
        assert_eq!(p.guards, TriggerGuards::default());
        assert_eq!(p.machines.alertmanager_label, "azure_resource_id");
        assert_eq!(p.machines.label_matches, "resourceId");
        assert_eq!(p.capture_template.time_limit_in_seconds, Some(18000));
        assert_eq!(p.capture_template.filters, Some(vec![]));
    }

    #[test]
    fn template_errors_name_the_template() {
        let scopes = json!([format!("/subscriptions/{SUB}")]);
        let (code, target, message) = err(&body(
            json!({"storageLocation": {"filePath": "/tmp/x.cap"}}),
            scopes.clone(),
        ));
        assert_eq!(code, "InvalidParameter");
        assert_eq!(
            target.as_deref(),
            Some("properties.captureTemplate.storageLocation.filePath")
        );
        assert!(
            message.contains("not a valid capture file path"),
            "{message}"
        );
        let (_, target, _) = err(&body(
            json!({"target": "x", "storageLocation": {"filePath": "/var/captures/x.cap"}}),
            scopes.clone(),
        ));
        assert_eq!(target.as_deref(), Some("properties.captureTemplate.target"));
        let (_, target, _) = err(&body(
            json!({"storageLocation": {"filePath": "/var/captures/x.cap"},
                   "filters": [{"protocol": "XYZ"}]}),
            scopes,
        ));
        assert_eq!(
            target.as_deref(),
            Some("properties.captureTemplate.filters[0].protocol")
        );
    }

    #[test]
    fn scopes_are_ids_of_the_watchers_subscription() {
        let t = json!({"storageLocation": {"filePath": "/var/captures/x.cap"}});
        for (scopes, target) in [
            (json!([]), "properties.machines.scopes"),
            (
                json!(["/subscriptions/nope"]),
                "properties.machines.scopes[0]",
            ),
            (
                json!([
                    format!("/subscriptions/{SUB}"),
                    "/subscriptions/00000000-0000-0000-0000-000000000002"
                ]),
                "properties.machines.scopes[1]",
            ),
            (
                json!([format!("/subscriptions/{SUB}/foo")]),
                "properties.machines.scopes[0]",
            ),
        ] {
            let (_, got, _) = err(&body(t.clone(), scopes));
            assert_eq!(got.as_deref(), Some(target));
        }
        let vm = format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
        );
        let ok = body(
            t,
            json!([vm, format!("/subscriptions/{SUB}/resourceGroups/rg2/")]),
        );
        let p = trigger_body(&ok, SUB, "rg1", "2026-03-01")
            .expect("valid")
            .properties;
        assert_eq!(
            p.machines.scopes[1],
            format!("/subscriptions/{SUB}/resourceGroups/rg2")
        );
    }

    #[test]
    fn each_capture_has_its_own_file() {
        let t = json!({"storageLocation": {"filePath": "/var/captures/alerts/web.cap"}});
        let vm = format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
        );
        let c = capture_for(&t, &vm, "t-vm1-20261203T000000Z").expect("valid");
        assert_eq!(
            c.parameters.storage_location.file_path.as_deref(),
            Some("/var/captures/alerts/t-vm1-20261203T000000Z.cap")
        );
    }
}
