//! ARM resource ids and names: parsing, validation and case-insensitive keys.

use crate::error::{ApiError, ErrorCode};
use crate::limits::{self, shown};

/// ARM identity is case-insensitive: every lookup key is the lower-cased form.
pub fn key(s: &str) -> String {
    s.to_lowercase()
}

/// Region names compare without case and spaces ("East US" = "eastus").
pub fn location_key(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A parsed resource id `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}]*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub subscription: String,
    pub resource_group: String,
    pub namespace: String,
    /// (type, name) pairs, outermost first.
    pub types: Vec<(String, String)>,
}

impl ResourceId {
    pub fn parse(id: &str) -> Option<ResourceId> {
        let rest = id.strip_prefix('/')?;
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.len() < 8 || !segs.len().is_multiple_of(2) || segs.iter().any(|s| s.is_empty()) {
            return None;
        }
        if !segs[0].eq_ignore_ascii_case("subscriptions")
            || !segs[2].eq_ignore_ascii_case("resourceGroups")
            || !segs[4].eq_ignore_ascii_case("providers")
        {
            return None;
        }
        let types = segs[6..]
            .chunks(2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect();
        Some(ResourceId {
            subscription: segs[1].to_string(),
            resource_group: segs[3].to_string(),
            namespace: segs[5].to_string(),
            types,
        })
    }

    /// Whether this is `{namespace}/{type}` with exactly one level (e.g. a VM).
    pub fn is_type(&self, namespace: &str, type_path: &[&str]) -> bool {
        self.namespace.eq_ignore_ascii_case(namespace)
            && self.types.len() == type_path.len()
            && self
                .types
                .iter()
                .zip(type_path)
                .all(|((t, _), want)| t.eq_ignore_ascii_case(want))
    }

    /// The name of the innermost resource.
    pub fn name(&self) -> &str {
        self.types.last().map(|(_, n)| n.as_str()).unwrap_or("")
    }
}

/// Subscription ids are GUIDs.
pub fn validate_subscription(sub: &str) -> Result<(), ApiError> {
    if uuid::Uuid::parse_str(sub).is_ok() && sub.len() == 36 {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidSubscriptionId,
            format!(
                "The provided subscription identifier '{}' is malformed or invalid.",
                shown(sub)
            ),
        ))
    }
}

/// Resource group names: 1-90 letters, digits, `_-.()`, not ending in `.`.
fn is_resource_group(rg: &str) -> bool {
    !rg.is_empty()
        && rg.chars().count() <= limits::MAX_RESOURCE_GROUP_CHARS
        && !rg.ends_with('.')
        && rg
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'))
}

/// Resource group names: 1-90 letters, digits, `_-.()`, not ending in `.`.
pub fn validate_resource_group(rg: &str) -> Result<(), ApiError> {
    if is_resource_group(rg) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidResourceGroupName,
            format!(
                "Resource group name '{}' is invalid: it must be 1-{} letters, digits, underscores, hyphens, periods or parentheses, and must not end in a period.",
                shown(rg),
                limits::MAX_RESOURCE_GROUP_CHARS
            ),
        ))
    }
}

/// An ARM resource name of 1 to `max` characters: ASCII letters, digits, `_.-`, starting with a
/// letter or digit and ending with a letter, digit or underscore.
fn is_name(name: &str, max: usize) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && bytes
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Whether `name` is a valid Microsoft.Network resource name (see [`validate_resource_name`]).
pub fn is_resource_name(name: &str) -> bool {
    is_name(name, limits::MAX_NETWORK_NAME_CHARS)
}

/// Microsoft.Network resource names: 1-80 characters, letters, digits, `_.-`, starting with a
/// letter or digit and ending with a letter, digit or underscore.
pub fn validate_resource_name(name: &str, what: &str) -> Result<(), ApiError> {
    if is_resource_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidResourceName,
            format!(
                "Resource name '{}' of the {what} is invalid. The name can be up to {} characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'.",
                shown(name),
                limits::MAX_NETWORK_NAME_CHARS
            ),
        ))
    }
}

/// Whether `name` is a valid virtual machine, scale set or instance name: 1-64 characters of
/// the same shape as Microsoft.Network names.
pub fn is_compute_name(name: &str) -> bool {
    is_name(name, limits::MAX_COMPUTE_NAME_CHARS)
}

/// Storage account names: 3-24 letters and digits (ids are case-insensitive).
fn is_storage_account_name(name: &str) -> bool {
    (limits::MIN_STORAGE_ACCOUNT_CHARS..=limits::MAX_STORAGE_ACCOUNT_CHARS).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Checks the parts of a resource id given in a body at `target` (whose types the caller has
/// checked): its length, subscription, resource group and names. 400 `InvalidParameter` naming
/// the part in error and its rule.
pub fn check_id_parts(raw: &str, id: &ResourceId, target: &str) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::invalid(ErrorCode::InvalidParameter, target, message);
    if raw.chars().count() > limits::MAX_RESOURCE_ID_CHARS {
        return Err(invalid(format!(
            "'{target}' is longer than {} characters: no valid resource id is.",
            limits::MAX_RESOURCE_ID_CHARS
        )));
    }
    if validate_subscription(&id.subscription).is_err() {
        return Err(invalid(format!(
            "'{target}' names the subscription '{}', which is not a subscription id (a GUID).",
            shown(&id.subscription)
        )));
    }
    if !is_resource_group(&id.resource_group) {
        return Err(invalid(format!(
            "'{target}' names the resource group '{}', which is not a valid name: 1-{} letters, digits, underscores, hyphens, periods or parentheses, not ending in a period.",
            shown(&id.resource_group),
            limits::MAX_RESOURCE_GROUP_CHARS
        )));
    }
    for (kind, name) in &id.types {
        let (ok, rule) = if kind.eq_ignore_ascii_case("storageAccounts") {
            (
                is_storage_account_name(name),
                format!(
                    "{}-{} letters and digits",
                    limits::MIN_STORAGE_ACCOUNT_CHARS,
                    limits::MAX_STORAGE_ACCOUNT_CHARS
                ),
            )
        } else {
            (
                is_compute_name(name),
                format!(
                    "1-{} letters, digits, '-', '_' or '.', starting with a letter or digit and ending with a letter, digit or '_'",
                    limits::MAX_COMPUTE_NAME_CHARS
                ),
            )
        };
        if !ok {
            return Err(invalid(format!(
                "'{target}' names the {kind} '{}', which is not a valid name: {rule}.",
                shown(name)
            )));
        }
    }
    Ok(())
}

/// A region name as given (trimmed): 1-64 ASCII letters, digits and spaces, like `eastus` or
/// `East US 2`. Anything else is no region (400 `code` with `target`).
pub fn validate_location(
    location: &str,
    code: ErrorCode,
    target: &str,
) -> Result<String, ApiError> {
    let trimmed = location.trim_matches(' ');
    let ok = !trimmed.is_empty()
        && trimmed.len() <= limits::MAX_LOCATION_CHARS
        && trimmed
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b' ');
    if ok {
        Ok(trimmed.to_string())
    } else {
        Err(ApiError::invalid(
            code,
            target,
            format!(
                "The location '{}' is not a region name: a region name is 1-{} letters, digits and spaces, like 'eastus' or 'East US 2'.",
                shown(location).escape_default(),
                limits::MAX_LOCATION_CHARS
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_ids_case_insensitively() {
        let id = ResourceId::parse(
            "/SUBSCRIPTIONS/s/resourcegroups/RG/providers/Microsoft.Compute/virtualMachines/vm1",
        );
        let id = id.unwrap_or_else(|| panic!("parse"));
        assert!(id.is_type("microsoft.compute", &["virtualmachines"]));
        assert_eq!(id.resource_group, "RG");
        assert_eq!(id.name(), "vm1");
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "subscriptions/s/resourceGroups/rg/providers/a/b/c",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
            "/subscriptions/s/resourceGroups//providers/Microsoft.Compute/virtualMachines/vm",
            "/subscriptions/s/foo/rg/providers/Microsoft.Compute/virtualMachines/vm",
        ] {
            assert!(ResourceId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_resource_name("pc-1.a_", "capture").is_ok());
        assert!(validate_resource_name("-pc", "capture").is_err());
        assert!(validate_resource_name("pc.", "capture").is_err());
        assert!(validate_resource_name(&"a".repeat(81), "capture").is_err());
        assert!(validate_resource_group("rg(1)").is_ok());
        assert!(validate_resource_group("rg.").is_err());
        assert_eq!(location_key("East US"), "eastus");
        assert!(!is_resource_name("a\u{0}b"));
        assert!(is_compute_name(&"v".repeat(64)));
        assert!(!is_compute_name(&"v".repeat(65)));
    }

    #[test]
    fn locations() {
        let code = ErrorCode::LocationNotAvailableForResourceType;
        for ok in [
            "eastus",
            "East US 2",
            " westeurope ",
            "usgovvirginia",
            "local",
        ] {
            assert_eq!(validate_location(ok, code, "location").unwrap(), ok.trim());
        }
        for bad in [
            "",
            "  ",
            "east\u{14}us",
            "east\u{0}us",
            "east-us",
            "east\tus",
            "é",
        ] {
            assert!(validate_location(bad, code, "location").is_err(), "{bad:?}");
        }
        assert!(validate_location(&"a".repeat(65), code, "location").is_err());
    }

    #[test]
    fn id_parts() {
        let sub = "00000000-0000-0000-0000-000000000001";
        let check = |raw: &str| {
            let id = ResourceId::parse(raw).unwrap_or_else(|| panic!("parse {raw}"));
            check_id_parts(raw, &id, "t")
        };
        let vm = |name: &str| {
            format!(
                "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
            )
        };
        assert!(check(&vm("vm-1")).is_ok());
        assert!(check(&vm(&"v".repeat(8000))).is_err());
        assert!(check(&vm("v\u{0}m")).is_err());
        assert!(check(&vm(&"v".repeat(65))).is_err());
        assert!(
            check(
                "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
            )
            .is_err()
        );
        assert!(check(&format!("/subscriptions/{sub}/resourceGroups/r\u{0}g/providers/Microsoft.Compute/virtualMachines/v")).is_err());
        assert!(check(&format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/captures1")).is_ok());
        assert!(check(&format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s")).is_err());
        assert!(check(&format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines/12")).is_ok());
    }
}
