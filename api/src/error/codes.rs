//! The one table of ARM error codes: each code's wire string and HTTP status.
//!
//! The wire string of a variant is its name. Codes that only ever travel inside a body (an
//! operation's `error.code`, stored as text in `operations.error_code`) are listed too, so that
//! [`ErrorCode::from_code`] knows them; their status is the one the operation's result monitor
//! answers with (`OperationFailed`'s).

use std::fmt;
use std::str::FromStr;

use actix_web::http::StatusCode;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident => $status:ident, )*) => {
        /// An ARM error code (`error.code`), with its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code as it appears on the wire and in the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                }
            }

            /// The HTTP status of a response carrying this code.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$name => StatusCode::$status,)*
                }
            }

            /// The code named `code` (exact casing), e.g. one read from `operations.error_code`.
            pub fn from_code(code: &str) -> Option<ErrorCode> {
                match code {
                    $(stringify!($name) => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    // 400
    /// A 4xx produced outside the handlers that has no code of its own (the envelope keeps its status).
    BadRequest => BAD_REQUEST,
    /// The request body is missing or is not JSON (or not the agent protocol message expected).
    InvalidRequestContent => BAD_REQUEST,
    /// A field of the body has the wrong shape or type.
    InvalidRequestFormat => BAD_REQUEST,
    /// A field of the body has an invalid value.
    InvalidParameter => BAD_REQUEST,
    /// The `api-version` query parameter is missing.
    MissingApiVersionParameter => BAD_REQUEST,
    /// The `api-version` query parameter names a version this API does not serve.
    InvalidApiVersionParameter => BAD_REQUEST,
    /// The subscription id of the path is not a GUID.
    InvalidSubscriptionId => BAD_REQUEST,
    /// The resource group name of the path is invalid.
    InvalidResourceGroupName => BAD_REQUEST,
    /// A resource name of the path is invalid.
    InvalidResourceName => BAD_REQUEST,
    /// More tags than a resource may have.
    InvalidTagsCount => BAD_REQUEST,
    /// A tag name or value is too long or otherwise invalid.
    InvalidTagNameOrValue => BAD_REQUEST,
    /// A network watcher was created without a location.
    LocationRequired => BAD_REQUEST,
    /// A location that is not a region name (letters, digits and spaces, at most 64).
    LocationNotAvailableForResourceType => BAD_REQUEST,
    /// A network watcher's location cannot change.
    InvalidResourceLocation => BAD_REQUEST,
    /// The region already has its network watcher in this subscription.
    NetworkWatcherCountLimitReached => BAD_REQUEST,
    /// A capture names a storage account that is not registered.
    StorageAccountNotFound => BAD_REQUEST,
    /// A capture names a premium storage account.
    PremiumStorageAccountNotSupported => BAD_REQUEST,
    /// A storage account id is not a storage account's ARM id.
    InvalidStorageId => BAD_REQUEST,
    /// A download of a scale set capture (one file per instance).
    DownloadNotSupportedForScaleSet => BAD_REQUEST,
    /// An enrollment token scope that is not `/`, a subscription or a resource group.
    InvalidScope => BAD_REQUEST,
    /// Credential rotation asked of a server without agent authentication.
    AuthenticationDisabled => BAD_REQUEST,
    /// A file upload from an agent ended before its Content-Length.
    IncompleteBody => BAD_REQUEST,
    /// The result of a failed long-running operation.
    OperationFailed => BAD_REQUEST,
    /// The result of a canceled long-running operation; also stored as an operation's error.
    OperationCanceled => BAD_REQUEST,
    /// A capture trigger's webhook delivery that is not the alert payload it reads (Alertmanager
    /// webhook version 4, or Azure Monitor's common alert schema).
    InvalidAlertPayload => BAD_REQUEST,

    // Operation errors: stored in operations.error_code and answered inside an operation's body.
    /// A capture's target has no registered agent (stored operation error).
    MachineNotRegistered => BAD_REQUEST,
    /// The target's agent did not start the capture in time (stored operation error).
    CaptureStartTimeout => BAD_REQUEST,
    /// A capture failed for a reason internal to the agent (capture error sent by agents).
    InternalError => BAD_REQUEST,
    /// The agent stopped while the capture ran (capture error).
    AgentStopped => BAD_REQUEST,
    /// Capturing failed on the machine (capture error sent by agents).
    CaptureFailed => BAD_REQUEST,
    /// The local capture file could not be written (capture error sent by agents).
    LocalFileFailed => BAD_REQUEST,
    /// The capture file could not be stored in the storage account (capture error).
    StorageFailed => BAD_REQUEST,

    // 401 (with a `WWW-Authenticate: Bearer` challenge)
    /// A management request without a usable `Authorization: Bearer` header.
    AuthenticationFailed => UNAUTHORIZED,
    /// A management request whose access token is invalid or expired.
    InvalidAuthenticationToken => UNAUTHORIZED,
    /// An agent request without a valid credential or enrollment token.
    AgentNotAuthorized => UNAUTHORIZED,
    /// A capture trigger's webhook delivery without its secret, or with another one.
    InvalidWebhookSecret => UNAUTHORIZED,

    // 403
    /// The caller has no role assignment allowing the action at the scope.
    AuthorizationFailed => FORBIDDEN,
    /// The machine's agent was revoked.
    AgentRevoked => FORBIDDEN,
    /// An enrollment token used by a machine outside its scope.
    MachineOutsideTokenScope => FORBIDDEN,

    // 404
    /// An ARM resource (or operation) that does not exist.
    ResourceNotFound => NOT_FOUND,
    /// No route matches the path and method.
    NotFound => NOT_FOUND,
    /// An agent that is not (or no longer) registered.
    AgentNotRegistered => NOT_FOUND,
    /// An agent reports on a capture that is not assigned to it.
    CaptureNotAssigned => NOT_FOUND,
    /// An agent sends a file nobody asked for.
    TransferNotFound => NOT_FOUND,

    // 405
    /// The path exists but not with this method.
    MethodNotAllowed => METHOD_NOT_ALLOWED,

    // 409
    /// The resource changed under the request (e.g. deleted while being created); retry.
    Conflict => CONFLICT,
    /// The resource is being deleted or another operation holds it.
    AnotherOperationInProgress => CONFLICT,
    /// A capture PUT with other parameters than the existing capture's.
    PacketCaptureParametersConflict => CONFLICT,
    /// An agent uploads a capture that has no upload pending.
    NoUploadPending => CONFLICT,
    /// The storage account of a pending upload was removed.
    StorageAccountRemoved => CONFLICT,
    /// An agent's upload result does not match the capture.
    UploadMismatch => CONFLICT,
    /// A file transfer was canceled by the downloader.
    TransferCanceled => CONFLICT,
    /// A capture has no file to download (yet).
    CaptureFileNotAvailable => CONFLICT,
    /// The agent holding a capture's file is not connected.
    CaptureAgentUnavailable => CONFLICT,

    // 408
    /// A management request's body, or any request's head, did not arrive in time.
    RequestTimeout => REQUEST_TIMEOUT,

    // 411
    /// An agent file upload without Content-Length.
    LengthRequired => LENGTH_REQUIRED,

    // 412
    /// An `If-Match` / `If-None-Match` precondition does not hold.
    PreconditionFailed => PRECONDITION_FAILED,

    // 413
    /// The request body is larger than the limit.
    RequestEntityTooLarge => PAYLOAD_TOO_LARGE,

    // 415
    /// The request body has a content type the route does not take.
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE,

    // 429 (with `Retry-After`)
    /// The principal sent too many requests.
    TooManyRequests => TOO_MANY_REQUESTS,

    // 500
    /// An unexpected failure; the detail is in the server's log only.
    InternalServerError => INTERNAL_SERVER_ERROR,
    /// A storage account key cannot be read or unsealed on the server.
    StorageAccountKeyUnavailable => INTERNAL_SERVER_ERROR,

    // 502
    /// A storage account cannot be reached.
    StorageAccountUnreachable => BAD_GATEWAY,
    /// A storage account answered a request with an error.
    StorageRequestFailed => BAD_GATEWAY,

    // 503 (with `Retry-After`)
    /// The database (or the server) is unavailable for now.
    ServiceUnavailable => SERVICE_UNAVAILABLE,

    // 504
    /// An agent did not start sending a file in time.
    AgentTimeout => GATEWAY_TIMEOUT,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code '{0}'")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::from_code(s).ok_or_else(|| UnknownErrorCode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.as_str()), Some(code));
            assert_eq!(code.to_string().parse::<ErrorCode>(), Ok(code));
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(ErrorCode::from_code("NoSuchCode"), None);
        assert_eq!(ErrorCode::from_code("resourcenotfound"), None);
    }

    #[test]
    fn wire_strings_and_statuses() {
        assert_eq!(ErrorCode::ResourceNotFound.as_str(), "ResourceNotFound");
        assert_eq!(ErrorCode::ResourceNotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ErrorCode::AuthorizationFailed.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ErrorCode::TooManyRequests.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ErrorCode::AgentTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(ErrorCode::OperationFailed.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn stored_operation_codes_are_known() {
        // Written by the sweeper, by the capture settle statements and by agents' reports.
        for code in [
            "AgentStopped",
            "MachineNotRegistered",
            "CaptureStartTimeout",
            "OperationCanceled",
            "InternalError",
            "CaptureFailed",
            "LocalFileFailed",
            "StorageFailed",
        ] {
            assert!(ErrorCode::from_code(code).is_some(), "{code}");
        }
    }
}
