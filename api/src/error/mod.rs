//! Errors, and their one mapping to ARM error responses.
//!
//! Every handler returns [`ApiError`]; its [`ResponseError`] impl is the only place that turns
//! an error into an HTTP status and a `{"error": {"code", "message", "target"}}` body (`target`
//! and `details` only when they have something to say, as ARM writes them).

mod codes;

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use codes::{ErrorCode, UnknownErrorCode};

/// Error that stops the process at start-up (configuration, database, TLS files).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// ARM error response body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": {"code": "ResourceNotFound", "message": "The Resource 'Microsoft.Network/networkWatchers/nw1/packetCaptures/pc1' under resource group 'rg1' was not found."}}))]
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
    /// The JSON path of the field in error; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub target: Option<String>,
    /// More errors; absent when there are none (always, here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub details: Vec<CloudErrorBody>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An error with its ARM code; the status comes from the code's entry in [`ErrorCode`].
    /// A 401 (`WWW-Authenticate: Bearer` challenge) is one of these with a 401 code.
    #[error("{code}: {message}")]
    Arm {
        code: ErrorCode,
        message: String,
        target: Option<String>,
    },
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("database pool error: {0}")]
    Pool(#[from] PoolError),
    /// 429 `TooManyRequests` with `Retry-After`.
    #[error("throttled for {retry_after_seconds} s")]
    Throttled { retry_after_seconds: u64 },
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The message of every `InternalServerError`: the detail goes to the log only.
pub(crate) const INTERNAL_MESSAGE: &str =
    "An internal error occurred. The request id identifies it in the server's log.";

impl ApiError {
    /// An error with `code` (and its status from the table).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Arm {
            code,
            message: message.into(),
            target: None,
        }
    }

    /// An error about one field, with its JSON path as `target`.
    pub fn invalid(code: ErrorCode, target: &str, message: impl Into<String>) -> Self {
        ApiError::Arm {
            code,
            message: message.into(),
            target: Some(target.to_string()),
        }
    }

    /// 500 `InternalServerError`: logs `err`, answers the generic message (never the detail).
    pub fn internal(err: impl fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(ErrorCode::InternalServerError, INTERNAL_MESSAGE)
    }

    /// "The Resource 'Microsoft.Network/networkWatchers/nw1' under resource group 'rg1' was not found."
    pub fn resource_not_found(resource_type_and_name: &str, resource_group: &str) -> Self {
        Self::new(
            ErrorCode::ResourceNotFound,
            format!(
                "The Resource '{resource_type_and_name}' under resource group '{resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }

    /// Whether the database is unreachable (as opposed to a query being wrong).
    fn database_unavailable(&self) -> bool {
        match self {
            ApiError::Pool(_) => true,
            ApiError::Database(e) => match e {
                DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
                | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
                | DieselError::BrokenTransactionManager => true,
                // The server going away (57P01/57P02) or not up yet (57P03): diesel has no kind
                // for these, and gives no SQLSTATE, only PostgreSQL's message.
                DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
                    let m = info.message();
                    m.starts_with("terminating connection")
                        || m.starts_with("the database system is")
                }
                _ => false,
            },
            ApiError::Arm { .. } | ApiError::Throttled { .. } => false,
        }
    }

    /// The error as ARM answers it: status (from the table), code, message and target.
    pub fn arm_parts(&self) -> (StatusCode, ErrorCode, String, Option<String>) {
        let (code, message, target) = match self {
            ApiError::Arm {
                code,
                message,
                target,
            } => (*code, message.clone(), target.clone()),
            ApiError::Throttled {
                retry_after_seconds,
            } => (
                ErrorCode::TooManyRequests,
                format!(
                    "The request was throttled: too many requests from this principal. Retry after {retry_after_seconds} s."
                ),
                None,
            ),
            _ if self.database_unavailable() => (
                ErrorCode::ServiceUnavailable,
                "The database is unavailable. Retry the request later.".to_string(),
                None,
            ),
            _ => (
                ErrorCode::InternalServerError,
                INTERNAL_MESSAGE.to_string(),
                None,
            ),
        };
        (code.status(), code, message, target)
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
            tracing::info!(code = code.as_str(), %message, "request rejected");
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
                code: code.as_str().to_string(),
                message,
                target,
                details: vec![],
            },
        })
    }
}
