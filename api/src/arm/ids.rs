//! ARM resource ids and names: parsing, validation and case-insensitive keys.

use crate::error::{ApiError, ErrorCode};

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
            format!("The provided subscription identifier '{sub}' is malformed or invalid."),
        ))
    }
}

/// Resource group names: 1-90 characters of letters, digits, `_-.()`, not ending in `.`.
pub fn validate_resource_group(rg: &str) -> Result<(), ApiError> {
    let ok = !rg.is_empty()
        && rg.chars().count() <= 90
        && !rg.ends_with('.')
        && rg
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidResourceGroupName,
            format!(
                "Resource group name '{rg}' is invalid: it must be 1-90 letters, digits, underscores, hyphens, periods or parentheses, and must not end in a period."
            ),
        ))
    }
}

/// Microsoft.Network resource names: 1-80 characters, letters, digits, `_.-`, starting with a
/// letter or digit and ending with a letter, digit or underscore.
pub fn validate_resource_name(name: &str, what: &str) -> Result<(), ApiError> {
    let chars: Vec<char> = name.chars().collect();
    let ok = !chars.is_empty()
        && chars.len() <= 80
        && chars[0].is_ascii_alphanumeric()
        && chars
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        && chars
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidResourceName,
            format!(
                "Resource name '{name}' of the {what} is invalid. The name can be up to 80 characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'."
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
    }
}
