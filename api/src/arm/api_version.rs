//! The `api-version` query parameter, required on every ARM request.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload};

use crate::error::{ApiError, ErrorCode};

/// Microsoft.Network api-versions accepted: every stable version from 2022-01-01 to 2026-03-01
/// (the packetCaptures shape is the same across them).
pub const NETWORK_API_VERSIONS: &[&str] = &[
    "2022-01-01",
    "2022-05-01",
    "2022-07-01",
    "2022-09-01",
    "2022-11-01",
    "2023-02-01",
    "2023-04-01",
    "2023-05-01",
    "2023-06-01",
    "2023-09-01",
    "2023-11-01",
    "2024-01-01",
    "2024-03-01",
    "2024-05-01",
    "2024-07-01",
    "2024-10-01",
    "2025-01-01",
    "2025-03-01",
    "2025-05-01",
    "2025-07-01",
    "2025-09-01",
    "2025-10-01",
    "2026-01-01",
    "2026-03-01",
];

/// The newest supported version, used in the monitor URLs we hand out when in doubt.
pub const LATEST: &str = "2026-03-01";

fn query_api_version(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.into_owned())
}

fn missing() -> ApiError {
    ApiError::new(
        ErrorCode::MissingApiVersionParameter,
        "The api-version query parameter (?api-version=) is required for all requests.",
    )
}

/// A validated Microsoft.Network api-version.
#[derive(Debug, Clone)]
pub struct NetworkApiVersion(pub String);

impl FromRequest for NetworkApiVersion {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match query_api_version(req) {
            None => Err(missing()),
            Some(v) if NETWORK_API_VERSIONS.contains(&v.as_str()) => Ok(NetworkApiVersion(v)),
            Some(v) => Err(ApiError::new(
                ErrorCode::InvalidApiVersionParameter,
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    NETWORK_API_VERSIONS.join(",")
                ),
            )),
        })
    }
}

/// Any well-formed api-version (`YYYY-MM-DD` with an optional `-preview` suffix), for the
/// resource providers this server only mirrors (Microsoft.Compute, subscriptions).
#[derive(Debug, Clone)]
pub struct AnyApiVersion(pub String);

impl FromRequest for AnyApiVersion {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match query_api_version(req) {
            None => Err(missing()),
            Some(v) if well_formed(&v) => Ok(AnyApiVersion(v)),
            Some(v) => Err(ApiError::new(
                ErrorCode::InvalidApiVersionParameter,
                format!("The api-version '{v}' is invalid: expected the form YYYY-MM-DD."),
            )),
        })
    }
}

fn well_formed(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #[test]
    fn well_formed_versions() {
        assert!(super::well_formed("2026-04-01"));
        assert!(super::well_formed("2022-12-01-preview"));
        assert!(!super::well_formed("2022-1-01"));
        assert!(!super::well_formed("latest"));
    }
}
