//! Errors, and their one mapping to ARM error responses.
//!
//! Every handler returns [`ApiError`]; its [`ResponseError`] impl is the only place that turns
//! an error into an HTTP status and a `{"error": {"code", "message", "target"}}` body.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Error that stops the process at start-up (configuration, database, TLS files).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// ARM error response body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": {"code": "ResourceNotFound", "message": "The Resource 'Microsoft.Network/networkWatchers/nw1/packetCaptures/pc1' under resource group 'rg1' was not found.", "target": null, "details": []}}))]
pub struct CloudError {
    pub error: CloudErrorBody,
}

/// ARM error details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CloudErrorBody {
    /// An identifier for the error, stable for programs.
    pub code: String,
    /// A message for people.
    pub message: String,
    /// The JSON path of the field in error, when there is one.
    pub target: Option<String>,
    /// More errors (always empty here).
    #[schema(no_recursion)]
    pub details: Vec<CloudErrorBody>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An error with its ARM code and status, decided where it happened.
    #[error("{code}: {message}")]
    Arm {
        status: StatusCode,
        code: &'static str,
        message: String,
        target: Option<String>,
    },
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("database pool error: {0}")]
    Pool(#[from] PoolError),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// 401 with a `WWW-Authenticate: Bearer` challenge.
    #[error("{code}: {message}")]
    Unauthorized { code: &'static str, message: String },
    /// 429 with `Retry-After`.
    #[error("throttled for {retry_after_seconds} s")]
    Throttled { retry_after_seconds: u64 },
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Arm {
            status,
            code,
            message: message.into(),
            target: None,
        }
    }

    /// 400 with the JSON path of the field in error as `target`.
    pub fn invalid(code: &'static str, target: &str, message: impl Into<String>) -> Self {
        ApiError::Arm {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            target: Some(target.to_string()),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// "The Resource 'Microsoft.Network/networkWatchers/nw1' under resource group 'rg1' was not found."
    pub fn resource_not_found(resource_type_and_name: &str, resource_group: &str) -> Self {
        Self::not_found(format!(
            "The Resource '{resource_type_and_name}' under resource group '{resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ))
    }

    /// Whether the database is unreachable (as opposed to a query being wrong).
    fn database_unavailable(&self) -> bool {
        match self {
            ApiError::Pool(_) => true,
            ApiError::Database(e) => matches!(
                e,
                DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
                    | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
                    | DieselError::BrokenTransactionManager
            ),
            ApiError::Arm { .. }
            | ApiError::Storage(_)
            | ApiError::Unauthorized { .. }
            | ApiError::Throttled { .. } => false,
        }
    }

    pub fn arm_parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            ApiError::Arm {
                status,
                code,
                message,
                target,
            } => (*status, code, message.clone(), target.clone()),
            ApiError::Unauthorized { code, message } => {
                (StatusCode::UNAUTHORIZED, code, message.clone(), None)
            }
            ApiError::Throttled {
                retry_after_seconds,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "The request was throttled: too many requests from this principal. Retry after {retry_after_seconds} s."
                ),
                None,
            ),
            ApiError::Storage(e) => {
                use crate::storage::StorageError as S;
                let (status, code) = match e {
                    S::Crypto(_) | S::KeyUnavailable { .. } => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "StorageAccountKeyUnavailable",
                    ),
                    S::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "StorageAccountUnreachable"),
                    S::Refused { .. } => (StatusCode::BAD_GATEWAY, "StorageRequestFailed"),
                };
                // The reason may name server configuration (a key file): it goes to the log only.
                let message = match e {
                    S::KeyUnavailable { account, .. } => format!(
                        "The key of storage account '{account}' is unavailable on the server; the server's log has the reason."
                    ),
                    S::Crypto(_) => "A key sealed with the server's secrets key could not be opened (is --secrets-key-file the one this database was set up with?); the server's log has the reason.".to_string(),
                    _ => e.to_string(),
                };
                (status, code, message, None)
            }
            _ if self.database_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The database is unavailable. Retry the request later.".to_string(),
                None,
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "An internal error occurred. The request id identifies it in the server's log."
                    .to_string(),
                None,
            ),
        }
    }
}

/// How long clients should wait before retrying after a 503 or 429.
pub const RETRY_AFTER_UNAVAILABLE_SECONDS: u32 = 5;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.arm_parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, message, target) = self.arm_parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(code, %message, "request rejected");
        }
        let mut resp = HttpResponse::build(status);
        // Never a Retry-After on a 4xx other than 429: the Azure SDKs retry any error carrying one.
        if let ApiError::Throttled {
            retry_after_seconds,
        } = self
        {
            resp.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds)));
        } else if status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            resp.insert_header((
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_UNAVAILABLE_SECONDS),
            ));
        }
        if status == StatusCode::UNAUTHORIZED {
            let description = message.replace(['"', '\\'], "'");
            let challenge = format!(
                "Bearer realm=\"capture-api\", error=\"invalid_token\", error_description=\"{description}\""
            );
            let v = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static(
                "Bearer realm=\"capture-api\", error=\"invalid_token\"",
            ));
            resp.insert_header((header::WWW_AUTHENTICATE, v));
        }
        resp.json(CloudError {
            error: CloudErrorBody {
                code: code.to_string(),
                message,
                target,
                details: vec![],
            },
        })
    }
}
