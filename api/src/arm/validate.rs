//! Validation of a packet capture PUT body against the ARM specification.
//!
//! The body is read as JSON values, not deserialized directly, so that every rejection names the
//! JSON path of the field in error and property names match case-insensitively, as in ARM.

use std::net::IpAddr;

use agent_protocol::filter::{self, Field, FilterValue, Kind, ValueError};
use serde_json::{Map, Value};

use super::ids::{ResourceId, check_id_parts};
use super::models::{
    PacketCaptureFilter, PacketCaptureMachineScope, PacketCaptureParameters, PacketCaptureSettings,
    PacketCaptureStorageLocation,
};
use crate::error::{ApiError, ErrorCode};
use crate::limits::{self, shown};

pub const DEFAULT_TOTAL_BYTES: u64 = 1_073_741_824;
pub const DEFAULT_TIME_LIMIT: u32 = 18_000;
pub const MAX_U32: u64 = 4_294_967_295;
/// The folder Linux capture files must be in.
pub const CAPTURE_FOLDER: &str = "/var/captures";
/// `captureSettings` defaults and bounds (ARM's).
pub const DEFAULT_FILE_COUNT: u64 = 10;
pub const MAX_FILE_COUNT: u64 = 10_000;
pub const DEFAULT_FILE_SIZE: u64 = 104_857_600;
pub const DEFAULT_SESSION_LIMIT: u32 = 86_400;
pub const MAX_SESSION_LIMIT: u32 = 604_800;
/// The largest snap length (libpcap's): a file must hold one record of it.
pub const MAX_SNAPLEN: u64 = 262_144;

type Result<T> = std::result::Result<T, ApiError>;

/// A body that is not the expected JSON shape (400 `InvalidRequestFormat`).
pub(crate) fn format_error(target: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidRequestFormat, target, message)
}

/// A value the rules refuse (400 `InvalidParameter`).
pub(crate) fn invalid(target: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidParameter, target, message)
}

/// Case-insensitive property lookup; `null` counts as absent.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

pub(crate) fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format_error(path, format!("'{path}' must be a JSON object.")))
}

fn string(obj: &Map<String, Value>, name: &str, path: &str) -> Result<Option<String>> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format_error(path, format!("'{path}' must be a string."))),
    }
}

fn integer(obj: &Map<String, Value>, name: &str, path: &str, max: u64) -> Result<Option<u64>> {
    let Some(v) = field(obj, name) else {
        return Ok(None);
    };
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64)
                .map(|f| f as u64)
        }),
        // ARM accepts numbers sent as strings.
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= max => Ok(Some(n)),
        Some(_) => Err(invalid(
            path,
            format!("'{path}' must be an integer from 0 to {max}."),
        )),
        None if matches!(v, Value::Number(_)) => Err(invalid(
            path,
            format!("'{path}' must be an integer from 0 to {max}."),
        )),
        None => Err(format_error(
            path,
            format!("'{path}' must be an integer from 0 to {max}."),
        )),
    }
}

/// The capture's parameters with defaults filled in, and what the server derives from them.
#[derive(Debug, Clone)]
pub struct ValidCapture {
    pub parameters: PacketCaptureParameters,
    /// Lower-cased resource id of the machine that runs the capture.
    pub machine_key: String,
    pub target: ResourceId,
    /// The effective time limit (0 means the maximum).
    pub time_limit_seconds: u32,
}

/// Validates a `PUT packetCaptures/{name}` body.
pub fn capture_body(body: &Value) -> Result<ValidCapture> {
    let root = object(body, "body")?;
    let props_v = field(root, "properties").ok_or_else(|| {
        format_error(
            "properties",
            "The request body must have a 'properties' object.",
        )
    })?;
    let props = object(props_v, "properties")?;
    let target_type = target_type(props)?;
    let (target_s, target) = target(props, &target_type)?;
    let scope = scope(props, &target_type, &target_s)?;
    let limits = limits(props)?;
    let continuous = match field(props, "continuousCapture") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(format_error(
                "properties.continuousCapture",
                "'properties.continuousCapture' must be true, false or null.",
            ));
        }
    };
    let storage_location = storage_location(props, continuous)?;
    let filters = filters(props)?;
    let capture_settings = capture_settings(props, continuous, &limits)?;
    let machine_key = crate::arm::ids::key(&target_s);
    // A continuous capture's session lasts `sessionTimeLimitInSeconds`.
    let time_limit_seconds = match &capture_settings {
        Some(s) => s
            .session_time_limit_in_seconds
            .unwrap_or(DEFAULT_SESSION_LIMIT),
        None if limits.time_limit == 0 => DEFAULT_TIME_LIMIT,
        None => limits.time_limit,
    };
    Ok(ValidCapture {
        parameters: PacketCaptureParameters {
            target: target_s,
            scope,
            target_type: Some(target_type),
            bytes_to_capture_per_packet: Some(limits.bytes_per_packet),
            total_bytes_per_session: Some(limits.total_bytes),
            time_limit_in_seconds: Some(limits.time_limit),
            storage_location,
            filters: Some(filters),
            continuous_capture: continuous,
            capture_settings,
        },
        machine_key,
        target,
        time_limit_seconds,
    })
}

/// The first api-version with continuous capture (`continuousCapture`, `captureSettings`,
/// `localPath`).
pub const CONTINUOUS_CAPTURE_API_VERSION: &str = "2023-11-01";

/// Refuses what the request's api-version does not have: continuous capture before
/// [`CONTINUOUS_CAPTURE_API_VERSION`] (api-versions are dates, so they compare as text).
pub fn for_api_version(valid: &ValidCapture, api_version: &str) -> Result<()> {
    if valid.parameters.continuous_capture.is_some() && api_version < CONTINUOUS_CAPTURE_API_VERSION
    {
        return Err(invalid(
            "properties.continuousCapture",
            format!(
                "'continuousCapture' needs api-version {CONTINUOUS_CAPTURE_API_VERSION} or later; this request uses {api_version}."
            ),
        ));
    }
    Ok(())
}

/// `targetType`, normalised: `AzureVM` (the default) or `AzureVMSS`.
fn target_type(props: &Map<String, Value>) -> Result<String> {
    match string(props, "targetType", "properties.targetType")? {
        None => Ok("AzureVM".to_string()),
        Some(t) if t.eq_ignore_ascii_case("AzureVM") => Ok("AzureVM".to_string()),
        Some(t) if t.eq_ignore_ascii_case("AzureVMSS") => Ok("AzureVMSS".to_string()),
        Some(t) => Err(invalid(
            "properties.targetType",
            format!(
                "Unknown targetType '{}'. Supported values: 'AzureVM', 'AzureVMSS'.",
                shown(&t)
            ),
        )),
    }
}

/// `target`: the id of a VM (or a scale set for `AzureVMSS`), as given and parsed.
fn target(props: &Map<String, Value>, target_type: &str) -> Result<(String, ResourceId)> {
    let target_s = string(props, "target", "properties.target")?.ok_or_else(|| {
        invalid(
            "properties.target",
            "'properties.target' is required: the resource id of the target virtual machine.",
        )
    })?;
    let vm = target_type == "AzureVM";
    let target = ResourceId::parse(&target_s).filter(|id| {
        if vm {
            id.is_type("Microsoft.Compute", &["virtualMachines"])
        } else {
            id.is_type("Microsoft.Compute", &["virtualMachineScaleSets"])
        }
    });
    let Some(target) = target else {
        let form = if vm {
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}/providers/Microsoft.Compute/virtualMachines/{vmName}"
        } else {
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmssName}"
        };
        return Err(invalid(
            "properties.target",
            format!(
                "Target '{}' is not a valid {target_type} resource id; expected {form}.",
                shown(&target_s)
            ),
        ));
    };
    check_id_parts(&target_s, &target, "properties.target")?;
    Ok((target_s, target))
}

/// `scope`: the instances of a scale set to capture on (all by default); not for a VM.
fn scope(
    props: &Map<String, Value>,
    target_type: &str,
    target_s: &str,
) -> Result<Option<PacketCaptureMachineScope>> {
    match field(props, "scope") {
        None if target_type == "AzureVMSS" => Ok(Some(PacketCaptureMachineScope {
            include: vec![],
            exclude: vec![],
        })),
        None => Ok(None),
        Some(_) if target_type == "AzureVM" => Err(invalid(
            "properties.scope",
            "'properties.scope' is only valid for targetType 'AzureVMSS'.",
        )),
        Some(v) => {
            let o = object(v, "properties.scope")?;
            Ok(Some(PacketCaptureMachineScope {
                include: instance_list(o, "include", target_s)?,
                exclude: instance_list(o, "exclude", target_s)?,
            }))
        }
    }
}

/// The size and time limits of a session, with their defaults.
struct Limits {
    bytes_per_packet: u64,
    total_bytes: u64,
    time_limit: u32,
}

fn limits(props: &Map<String, Value>) -> Result<Limits> {
    let bytes_per_packet = integer(
        props,
        "bytesToCapturePerPacket",
        "properties.bytesToCapturePerPacket",
        MAX_U32,
    )?
    .unwrap_or(0);
    let total_bytes = integer(
        props,
        "totalBytesPerSession",
        "properties.totalBytesPerSession",
        MAX_U32,
    )?
    .unwrap_or(DEFAULT_TOTAL_BYTES);
    let time_limit = integer(
        props,
        "timeLimitInSeconds",
        "properties.timeLimitInSeconds",
        DEFAULT_TIME_LIMIT as u64,
    )?
    .map(|t| t as u32)
    .unwrap_or(DEFAULT_TIME_LIMIT);
    Ok(Limits {
        bytes_per_packet,
        total_bytes,
        time_limit,
    })
}

fn filters(props: &Map<String, Value>) -> Result<Vec<PacketCaptureFilter>> {
    match field(props, "filters") {
        None => Ok(vec![]),
        Some(Value::Array(items)) if items.len() > limits::MAX_FILTERS => Err(invalid(
            "properties.filters",
            format!(
                "'properties.filters' has {} filters; a packet capture may have at most {}.",
                items.len(),
                limits::MAX_FILTERS
            ),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, f)| filter(f, &format!("properties.filters[{i}]")))
            .collect(),
        Some(_) => Err(format_error(
            "properties.filters",
            "'properties.filters' must be an array of filters.",
        )),
    }
}

/// `captureSettings` (continuous capture's files), with their defaults, and how the session's
/// limits combine with them (README "Continuous capture"):
/// - the settings apply only with `continuousCapture` (true or false), which fills in their
///   defaults when they are absent;
/// - a file must hold at least one whole record (24 + 16 + the snap length; whole packets:
///   262,144 bytes);
/// - the session lasts `sessionTimeLimitInSeconds` (0 = the maximum); `timeLimitInSeconds` may
///   only repeat it, or stay at its default (18000, which the SDKs always send) or 0;
/// - a ring (`true`) does not stop on bytes: `totalBytesPerSession` must stay at its default;
///   without a ring (`false`) it still ends the session.
fn capture_settings(
    props: &Map<String, Value>,
    continuous: Option<bool>,
    limits: &Limits,
) -> Result<Option<PacketCaptureSettings>> {
    const P: &str = "properties.captureSettings";
    let Some(ring) = continuous else {
        if field(props, "captureSettings").is_some() {
            return Err(invalid(
                P,
                "'captureSettings' applies only to a continuous capture: set 'continuousCapture' (true for a ring of files, false to stop after the last file), or leave 'captureSettings' out.",
            ));
        }
        return Ok(None);
    };
    let empty = Map::new();
    let o = match field(props, "captureSettings") {
        None => &empty,
        Some(v) => object(v, P)?,
    };
    let file_count = integer(o, "fileCount", &format!("{P}.fileCount"), MAX_FILE_COUNT)?
        .unwrap_or(DEFAULT_FILE_COUNT);
    if file_count == 0 {
        return Err(invalid(
            &format!("{P}.fileCount"),
            format!("'{P}.fileCount' must be between 1 and {MAX_FILE_COUNT}."),
        ));
    }
    let file_size = integer(
        o,
        "fileSizeInBytes",
        &format!("{P}.fileSizeInBytes"),
        MAX_U32,
    )?
    .unwrap_or(DEFAULT_FILE_SIZE);
    let snaplen = match limits.bytes_per_packet {
        0 => MAX_SNAPLEN,
        n => n.min(MAX_SNAPLEN),
    };
    let smallest = 24 + 16 + snaplen;
    if file_size < smallest {
        return Err(invalid(
            &format!("{P}.fileSizeInBytes"),
            format!(
                "'{P}.fileSizeInBytes' ({file_size}) cannot hold one packet of {snaplen} bytes ({}): give at least {smallest}, or lower 'properties.bytesToCapturePerPacket'.",
                if limits.bytes_per_packet == 0 {
                    "whole packets, bytesToCapturePerPacket 0"
                } else {
                    "bytesToCapturePerPacket"
                }
            ),
        ));
    }
    let session = match integer(
        o,
        "sessionTimeLimitInSeconds",
        &format!("{P}.sessionTimeLimitInSeconds"),
        MAX_SESSION_LIMIT as u64,
    )? {
        None => DEFAULT_SESSION_LIMIT,
        Some(0) => MAX_SESSION_LIMIT,
        Some(n) => n as u32,
    };
    let time_limit = limits.time_limit;
    if time_limit != 0 && time_limit != DEFAULT_TIME_LIMIT && time_limit != session {
        return Err(invalid(
            "properties.timeLimitInSeconds",
            format!(
                "In a continuous capture the session lasts '{P}.sessionTimeLimitInSeconds' ({session} s); 'properties.timeLimitInSeconds' ({time_limit}) contradicts it: set '{P}.sessionTimeLimitInSeconds' to {time_limit}, or leave 'timeLimitInSeconds' out."
            ),
        ));
    }
    if ring && limits.total_bytes != DEFAULT_TOTAL_BYTES {
        return Err(invalid(
            "properties.totalBytesPerSession",
            format!(
                "A ring of files ('continuousCapture': true) does not stop on bytes: it keeps the newest {file_count} files of {file_size} bytes. Leave 'totalBytesPerSession' out, or set 'continuousCapture' to false to stop after {} bytes.",
                limits.total_bytes
            ),
        ));
    }
    Ok(Some(PacketCaptureSettings {
        file_count: Some(file_count as u32),
        file_size_in_bytes: Some(file_size),
        session_time_limit_in_seconds: Some(session),
    }))
}

fn instance_list(o: &Map<String, Value>, name: &str, vmss: &str) -> Result<Vec<String>> {
    let path = format!("properties.scope.{name}");
    match field(o, name) {
        None => Ok(vec![]),
        Some(Value::Array(items)) if items.len() > limits::MAX_SCOPE_INSTANCES => Err(invalid(
            &path,
            format!(
                "'{path}' has {} instances; it may have at most {} (the instances of the largest scale set).",
                items.len(),
                limits::MAX_SCOPE_INSTANCES
            ),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let p = format!("{path}[{i}]");
                let s = v
                    .as_str()
                    .ok_or_else(|| format_error(&p, format!("'{p}' must be a string.")))?;
                // An instance id alone ("0") or the full instance resource id.
                if !s.is_empty()
                    && s.len() <= limits::MAX_COMPUTE_NAME_CHARS
                    && s.chars().all(|c| c.is_ascii_digit())
                {
                    return Ok(format!("{vmss}/virtualMachines/{s}"));
                }
                match ResourceId::parse(s) {
                    Some(id)
                        if id.is_type(
                            "Microsoft.Compute",
                            &["virtualMachineScaleSets", "virtualMachines"],
                        ) && crate::arm::ids::key(s)
                            .starts_with(&crate::arm::ids::key(&format!("{vmss}/"))) =>
                    {
                        check_id_parts(s, &id, &p)?;
                        Ok(s.to_string())
                    }
                    _ => Err(invalid(
                        &p,
                        format!(
                            "'{}' is not an instance of the scale set '{vmss}'.",
                            shown(s)
                        ),
                    )),
                }
            })
            .collect(),
        Some(_) => Err(format_error(&path, format!("'{path}' must be an array."))),
    }
}

/// `storageId`: a storage account resource id, when given.
fn storage_id(o: &Map<String, Value>) -> Result<Option<String>> {
    let storage_id = string(o, "storageId", "properties.storageLocation.storageId")?;
    if let Some(id) = &storage_id {
        let parsed =
            ResourceId::parse(id).filter(|r| r.is_type("Microsoft.Storage", &["storageAccounts"]));
        let Some(parsed) = parsed else {
            return Err(invalid(
                "properties.storageLocation.storageId",
                format!(
                    "'{}' is not a storage account resource id; expected /subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroup}}/providers/Microsoft.Storage/storageAccounts/{{accountName}}.",
                    shown(id)
                ),
            ));
        };
        check_id_parts(id, &parsed, "properties.storageLocation.storageId")?;
    }
    Ok(storage_id)
}

fn storage_location(
    props: &Map<String, Value>,
    continuous: Option<bool>,
) -> Result<PacketCaptureStorageLocation> {
    const P: &str = "properties.storageLocation";
    let v = field(props, "storageLocation").ok_or_else(|| {
        invalid(
            P,
            "'properties.storageLocation' is required: give storageId, filePath or both.",
        )
    })?;
    let o = object(v, P)?;
    let storage_id = storage_id(o)?;
    let file_path = string(o, "filePath", "properties.storageLocation.filePath")?;
    let local_path = string(o, "localPath", "properties.storageLocation.localPath")?;
    if continuous.is_some() && file_path.is_some() {
        return Err(invalid(
            "properties.storageLocation.filePath",
            "'filePath' is invalid when 'continuousCapture' is given (true or false): use 'localPath'.",
        ));
    }
    if continuous.is_none() && local_path.is_some() {
        return Err(invalid(
            "properties.storageLocation.localPath",
            "'localPath' is valid only when 'continuousCapture' is given (true or false): use 'filePath'.",
        ));
    }
    let (path_name, path) = if continuous.is_some() {
        ("localPath", &local_path)
    } else {
        ("filePath", &file_path)
    };
    if storage_id.is_none() && path.is_none() {
        return Err(invalid(
            P,
            format!(
                "Either 'storageId' or '{path_name}' is required in 'properties.storageLocation'."
            ),
        ));
    }
    if let Some(p) = path {
        capture_path(p, &format!("{P}.{path_name}"))?;
    }
    Ok(PacketCaptureStorageLocation {
        storage_id,
        // Set by the server when the capture is created; a client's value is ignored.
        storage_path: None,
        file_path,
        local_path,
    })
}

/// A Linux capture file path: under `/var/captures`, ending in `.cap`, without `..`.
pub fn capture_path(p: &str, target: &str) -> Result<()> {
    let under = p
        .strip_prefix(CAPTURE_FOLDER)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1);
    let ok = under
        && p.ends_with(".cap")
        && p.len() > CAPTURE_FOLDER.len() + 5
        && !p.chars().any(char::is_control)
        && !p.contains('\\')
        && !p.split('/').any(|seg| seg == ".." || seg == ".")
        && !p.contains("//")
        && p.len() <= limits::MAX_FILE_PATH_BYTES;
    if ok {
        Ok(())
    } else {
        Err(invalid(
            target,
            format!(
                "'{}' is not a valid capture file path: on Linux it must start with '{CAPTURE_FOLDER}/', end in '.cap', be at most {} bytes long, and contain no '.' or '..' segments and no control characters.",
                shown(p),
                limits::MAX_FILE_PATH_BYTES
            ),
        ))
    }
}

fn filter(v: &Value, path: &str) -> Result<PacketCaptureFilter> {
    let o = object(v, path)?;
    let protocol = match string(o, "protocol", &format!("{path}.protocol"))? {
        None => "Any".to_string(),
        Some(p) => ["TCP", "UDP", "Any"]
            .into_iter()
            .find(|c| c.eq_ignore_ascii_case(&p))
            .map(str::to_string)
            .ok_or_else(|| {
                invalid(
                    &format!("{path}.protocol"),
                    format!(
                        "Unknown protocol '{}'. Supported values: 'TCP', 'UDP', 'Any'.",
                        shown(&p)
                    ),
                )
            })?,
    };
    let mut f = PacketCaptureFilter {
        protocol: Some(protocol),
        local_ip_address: None,
        remote_ip_address: None,
        local_port: None,
        remote_port: None,
    };
    for field in Field::ALL {
        let name = field.name();
        let p = format!("{path}.{name}");
        let Some(value) = string(o, name, &p)? else {
            continue;
        };
        let len = value.chars().count();
        if len > limits::MAX_FILTER_VALUE_CHARS {
            return Err(invalid(
                &p,
                format!(
                    "'{p}' is {len} characters long; a filter value may have at most {}.",
                    limits::MAX_FILTER_VALUE_CHARS
                ),
            ));
        }
        let value = value.trim().to_string();
        if value.is_empty() {
            continue;
        }
        match field.kind() {
            Kind::Address => {
                ip_value(&value, &p)?;
            }
            Kind::Port => {
                port_value(&value, &p)?;
            }
        }
        match field {
            Field::LocalIpAddress => f.local_ip_address = Some(value),
            Field::RemoteIpAddress => f.remote_ip_address = Some(value),
            Field::LocalPort => f.local_port = Some(value),
            Field::RemotePort => f.remote_port = Some(value),
        }
    }
    Ok(f)
}

/// An IP address filter value, parsed with the agents' grammar ([`filter::parse_addresses`]): the
/// API accepts exactly what an agent compiles.
pub fn ip_value(s: &str, target: &str) -> Result<FilterValue<IpAddr>> {
    filter::parse_addresses(s).map_err(|e| filter_value_error(s, target, Kind::Address, e))
}

/// A port filter value, parsed with the agents' grammar ([`filter::parse_ports`]).
pub fn port_value(s: &str, target: &str) -> Result<FilterValue<u16>> {
    filter::parse_ports(s).map_err(|e| filter_value_error(s, target, Kind::Port, e))
}

/// The rejection of a filter value: names the value, the field and the accepted forms.
fn filter_value_error(s: &str, target: &str, kind: Kind, e: ValueError) -> ApiError {
    let field = target.rsplit('.').next().unwrap_or(target);
    invalid(
        target,
        format!(
            "'{s}' is not a valid {kind} filter for '{field}' ({e}): {}.",
            kind.forms()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> &'static str {
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
    }

    fn target_of(body: Value) -> String {
        match capture_body(&body) {
            Err(ApiError::Arm { target, .. }) => target.unwrap_or_default(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let v = capture_body(&json!({"properties": {"target": vm(), "storageLocation": {"filePath": "/var/captures/a.cap"}}})).unwrap();
        let p = v.parameters;
        assert_eq!(p.bytes_to_capture_per_packet, Some(0));
        assert_eq!(p.total_bytes_per_session, Some(DEFAULT_TOTAL_BYTES));
        assert_eq!(p.time_limit_in_seconds, Some(DEFAULT_TIME_LIMIT));
        assert_eq!(p.target_type.as_deref(), Some("AzureVM"));
        assert_eq!(p.filters, Some(vec![]));
    }

    #[test]
    fn rejections_name_the_field() {
        let base = |props: Value| json!({"properties": props});
        assert_eq!(target_of(json!({})), "properties");
        assert_eq!(
            target_of(base(
                json!({"storageLocation": {"filePath": "/var/captures/a.cap"}})
            )),
            "properties.target"
        );
        assert_eq!(
            target_of(base(
                json!({"target": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/foo/bar", "storageLocation": {"filePath": "/var/captures/a.cap"}})
            )),
            "properties.target"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "targetType": "AzureFoo", "storageLocation": {"filePath": "/var/captures/a.cap"}})
            )),
            "properties.targetType"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "storageLocation": {"filePath": "/tmp/a.cap"}})
            )),
            "properties.storageLocation.filePath"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "storageLocation": {"filePath": "/var/captures/../etc/a.cap"}})
            )),
            "properties.storageLocation.filePath"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "storageLocation": {"filePath": "/var/captures/a.pcap"}})
            )),
            "properties.storageLocation.filePath"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "continuousCapture": true, "storageLocation": {"filePath": "/var/captures/a.cap"}})
            )),
            "properties.storageLocation.filePath"
        );
        assert_eq!(
            target_of(base(json!({"target": vm(), "storageLocation": {}}))),
            "properties.storageLocation"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "timeLimitInSeconds": 18001, "storageLocation": {"filePath": "/var/captures/a.cap"}})
            )),
            "properties.timeLimitInSeconds"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "bytesToCapturePerPacket": -1, "storageLocation": {"filePath": "/var/captures/a.cap"}})
            )),
            "properties.bytesToCapturePerPacket"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "totalBytesPerSession": "lots", "storageLocation": {"filePath": "/var/captures/a.cap"}})
            )),
            "properties.totalBytesPerSession"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "storageLocation": {"filePath": "/var/captures/a.cap"}, "filters": [{"protocol": "ICMP"}]})
            )),
            "properties.filters[0].protocol"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "storageLocation": {"filePath": "/var/captures/a.cap"}, "filters": [{}, {"localPort": "70000"}]})
            )),
            "properties.filters[1].localPort"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "storageLocation": {"filePath": "/var/captures/a.cap"}, "filters": [{"remoteIPAddress": "10.0.0.1-10.0.0.5;10.0.0.9"}]})
            )),
            "properties.filters[0].remoteIPAddress"
        );
        assert_eq!(
            target_of(base(
                json!({"target": vm(), "storageLocation": {"storageId": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"}})
            )),
            "properties.storageLocation.storageId"
        );
    }

    #[test]
    fn filter_value_forms() {
        assert_eq!(port_value("80", "t").unwrap(), FilterValue::Single(80));
        assert_eq!(
            port_value("80-85", "t").unwrap(),
            FilterValue::Range(80, 85)
        );
        assert_eq!(
            port_value("80;443;", "t").unwrap(),
            FilterValue::List(vec![80, 443])
        );
        assert!(port_value("85-80", "t").is_err());
        assert!(port_value("+80", "t").is_err());
        assert!(ip_value("10.0.0.1-::1", "t").is_err());
        assert!(
            matches!(ip_value("::1;fe80::1", "t").unwrap(), FilterValue::List(v) if v.len() == 2)
        );
        assert!(matches!(
            ip_value("10.0.0.1 - 10.0.0.9", "t").unwrap(),
            FilterValue::Range(..)
        ));
    }

    /// What the API accepts is exactly what an agent compiles, on every field, and what the API
    /// stores for the agent compiles too.
    #[test]
    fn api_and_agent_agree_on_filter_values() {
        use agent_protocol::CaptureFilter;
        use agent_protocol::filter::compile;
        let values = [
            // Accepted.
            "10.0.0.4",
            " 10.0.0.4 ",
            "10.0.0.4;",
            "::1",
            "127.0.0.1;127.0.0.5",
            "127.0.0.1;127.0.0.5;",
            "10.0.0.4;fe80::1",
            "127.0.0.1-127.0.0.255",
            "10.0.0.1 - 10.0.0.9",
            "10.0.0.7-10.0.0.7",
            "fe80::-fe80::ffff",
            "80",
            "0",
            "65535",
            "80;",
            "80;443",
            "80; 443;",
            "80-85",
            "80-80",
            "",
            "  ",
            // Rejected.
            ";",
            "10.0.0.300",
            "10.0.0.0/24",
            "10.0.0.5-10.0.0.1",
            "10.0.0.1-::1",
            "10.0.0.1-10.0.0.5;10.0.0.9",
            "10.0.0.9;10.0.0.1-10.0.0.5",
            "10.0.0.1-10.0.0.5;",
            "::1-::5;::7",
            "10.0.0.1-10.0.0.5;10.0.1.1-10.0.1.5",
            "10.0.0.1-10.0.0.5-10.0.0.9",
            "10.0.0.1;;10.0.0.2",
            ";10.0.0.1",
            "10.0.0.1;;",
            "70000",
            "+1",
            "-1",
            "9-3",
            "80-85;443",
            "80-85;",
            "80-85;90-95",
            "80-85-90",
            "80;;443",
            "http",
        ];
        let agent_filter = |name: &str, value: Option<String>| CaptureFilter {
            local_ip_address: value.clone().filter(|_| name == "localIPAddress"),
            remote_ip_address: value.clone().filter(|_| name == "remoteIPAddress"),
            local_port: value.clone().filter(|_| name == "localPort"),
            remote_port: value.filter(|_| name == "remotePort"),
            ..CaptureFilter::default()
        };
        for name in [
            "localIPAddress",
            "remoteIPAddress",
            "localPort",
            "remotePort",
        ] {
            for value in values {
                let api = filter(&json!({ name: value }), "f");
                let agent = compile(&[agent_filter(name, Some(value.to_string()))]);
                assert_eq!(
                    api.is_ok(),
                    agent.is_ok(),
                    "{name} {value:?}: API {api:?}, agent {agent:?}"
                );
                if let Ok(f) = api {
                    let stored = [
                        f.local_ip_address,
                        f.remote_ip_address,
                        f.local_port,
                        f.remote_port,
                    ]
                    .into_iter()
                    .flatten()
                    .next();
                    assert_eq!(compile(&[agent_filter(name, stored)]), agent);
                }
            }
        }
    }

    #[test]
    fn filter_rejections_name_value_field_and_forms() {
        let Err(ApiError::Arm {
            message, target, ..
        }) = filter(
            &json!({"remoteIPAddress": "10.0.0.1-10.0.0.5;10.0.0.9"}),
            "properties.filters[0]",
        )
        else {
            panic!("expected a rejection");
        };
        assert_eq!(
            target.as_deref(),
            Some("properties.filters[0].remoteIPAddress")
        );
        for part in [
            "'10.0.0.1-10.0.0.5;10.0.0.9'",
            "'remoteIPAddress'",
            "mixing ranges with multiple entries is not supported",
            "a range \"10.0.0.1-10.0.0.255\"",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }

    #[test]
    fn bounds_name_the_field() {
        let file = json!({"filePath": "/var/captures/a.cap"});
        let with_filters = |n: usize| json!({"properties": {"target": vm(), "storageLocation": file, "filters": vec![json!({}); n]}});
        assert!(capture_body(&with_filters(limits::MAX_FILTERS)).is_ok());
        assert_eq!(
            target_of(with_filters(limits::MAX_FILTERS + 1)),
            "properties.filters"
        );
        let long = "1;".repeat(limits::MAX_FILTER_VALUE_CHARS / 2) + "1";
        assert_eq!(
            target_of(
                json!({"properties": {"target": vm(), "storageLocation": file, "filters": [{"remotePort": long}]}})
            ),
            "properties.filters[0].remotePort"
        );
        let sub = "00000000-0000-0000-0000-000000000001";
        let vm_named = |name: &str| {
            format!(
                "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
            )
        };
        for bad in [
            vm_named(&"v".repeat(8000)),
            vm_named("v\u{0}m"),
            vm_named("v m"),
        ] {
            assert_eq!(
                target_of(json!({"properties": {"target": bad, "storageLocation": file}})),
                "properties.target"
            );
        }
        assert_eq!(
            target_of(
                json!({"properties": {"target": vm(), "storageLocation": {"filePath": "/var/captures/a\u{1}.cap"}}})
            ),
            "properties.storageLocation.filePath"
        );
        let vmss = format!(
            "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss"
        );
        let instances = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        let scoped = |include: Vec<String>| json!({"properties": {"target": vmss, "targetType": "AzureVMSS", "scope": {"include": include}, "storageLocation": file}});
        assert!(capture_body(&scoped(instances(limits::MAX_SCOPE_INSTANCES))).is_ok());
        assert_eq!(
            target_of(scoped(instances(limits::MAX_SCOPE_INSTANCES + 1))),
            "properties.scope.include"
        );
        assert_eq!(
            target_of(scoped(vec![format!("{vmss}/virtualMachines/1\u{0}")])),
            "properties.scope.include[0]"
        );
    }

    #[test]
    fn case_insensitive_properties_and_enums() {
        let v = capture_body(&json!({"Properties": {"TARGET": vm(), "storagelocation": {"FilePath": "/var/captures/a.cap"}, "filters": [{"protocol": "tcp"}]}})).unwrap();
        assert_eq!(
            v.parameters.filters.unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
    }
}
