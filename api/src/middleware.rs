//! The one request middleware: ARM path casing, request ids and tracing spans, metrics, and the
//! guarantee that every error response is an ARM JSON error body.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{StatusCode, Uri};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};
use tracing::Instrument;

use crate::error::{CloudError, CloudErrorBody, ErrorCode, INTERNAL_MESSAGE};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

const REQUEST_ID: &str = "x-ms-request-id";
const CLIENT_REQUEST_ID: &str = "x-ms-client-request-id";
const CORRELATION_ID: &str = "x-ms-correlation-request-id";

/// ARM matches the literal segments of a path without case (`resourcegroups`, `PROVIDERS`, …).
/// Rewrites them to the casing our routes use, leaving names untouched.
pub fn canonical_path(path: &str) -> Option<String> {
    const LITERALS: &[&str] = &[
        "subscriptions",
        "resourceGroups",
        "providers",
        "Microsoft.Network",
        "Microsoft.Compute",
        "Microsoft.Storage",
        "Microsoft.Authorization",
        "networkWatchers",
        "packetCaptures",
        "captureTriggers",
        "rotateSecret",
        "virtualMachines",
        "virtualMachineScaleSets",
        "storageAccounts",
        "permissions",
        "locations",
        "operations",
        "operationResults",
        "queryStatus",
        "stop",
    ];
    let segs: Vec<&str> = path.split('/').collect();
    // segs[0] is "" (leading slash).
    if segs.len() < 2 || !segs[1].eq_ignore_ascii_case("subscriptions") {
        return None;
    }
    let literal_positions: &[usize] =
        if segs.len() > 3 && segs[3].eq_ignore_ascii_case("resourceGroups") {
            &[1, 3, 5, 6, 7, 9, 11]
        } else {
            &[1, 3, 4, 5, 7]
        };
    let mut out: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
    let mut changed = false;
    for &i in literal_positions {
        if let Some(seg) = out.get_mut(i)
            && let Some(canon) = LITERALS.iter().find(|l| l.eq_ignore_ascii_case(seg))
            && seg != canon
        {
            *seg = canon.to_string();
            changed = true;
        }
    }
    changed.then(|| out.join("/"))
}

fn header(req: &ServiceRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_string)
}

/// The code of an error response produced outside the handlers; the response keeps its own
/// status (e.g. a 411 from actix answers `BadRequest`, a 502 `InternalServerError`).
fn error_code(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::BAD_REQUEST => ErrorCode::InvalidRequestContent,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::RequestEntityTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
        s if s.is_server_error() => ErrorCode::InternalServerError,
        _ => ErrorCode::BadRequest,
    }
}

fn error_message(status: StatusCode, original: &str) -> String {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "The request body is larger than the {} MB limit.",
            MAX_BODY_BYTES / (1024 * 1024)
        ),
        // A server error's own words may tell how the server is built: they go to the log only.
        StatusCode::SERVICE_UNAVAILABLE => {
            "The service is unavailable. Retry the request later.".to_string()
        }
        s if s.is_server_error() => INTERNAL_MESSAGE.to_string(),
        StatusCode::NOT_FOUND if original.is_empty() => {
            "No resource or operation matches this path and method.".to_string()
        }
        _ if original.is_empty() => status.canonical_reason().unwrap_or("Error").to_string(),
        _ => original.to_string(),
    }
}

pub async fn arm_envelope(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    canonicalize(&mut req);
    let ids = RequestIds::of(&req);
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let span = request_span(&req, &ids);
    let started = std::time::Instant::now();
    let res = next
        .call(req)
        .instrument(span.clone())
        .await?
        .map_into_boxed_body();
    let status = res.status();
    span.record("status", status.as_u16());
    let _enter = span.enter();
    let mut res = if is_foreign_error(status, res.headers()) {
        arm_error(res)
    } else {
        res
    };
    ids.set_headers(res.headers_mut());
    tracing::info!(
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request done"
    );
    if let Some(m) = metrics {
        count(&m, status);
    }
    Ok(res)
}

/// Rewrites the request's path to the casing of our routes (see [`canonical_path`]).
fn canonicalize(req: &mut ServiceRequest) {
    if let Some(path) = canonical_path(req.path()) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
    }
}

/// The ids a request is known by: ours (new for each request), the client's, and the
/// correlation id (the client's, else ours).
struct RequestIds {
    request_id: String,
    client_request_id: Option<String>,
    correlation_id: String,
}

impl RequestIds {
    fn of(req: &ServiceRequest) -> RequestIds {
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = header(req, CLIENT_REQUEST_ID);
        let correlation_id = header(req, CORRELATION_ID).unwrap_or_else(|| request_id.clone());
        RequestIds {
            request_id,
            client_request_id,
            correlation_id,
        }
    }

    /// Echoes the ids in the response headers.
    fn set_headers(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        set(REQUEST_ID, &self.request_id);
        set(CORRELATION_ID, &self.correlation_id);
        if let Some(id) = &self.client_request_id {
            set(CLIENT_REQUEST_ID, id);
        }
    }
}

/// The tracing span of one request; its `status` is recorded when the response is known.
fn request_span(req: &ServiceRequest, ids: &RequestIds) -> tracing::Span {
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.path(),
        request_id = %ids.request_id,
        client_request_id = ids.client_request_id.as_deref().unwrap_or(""),
        correlation_id = %ids.correlation_id,
        status = tracing::field::Empty,
    )
}

/// An error response that is not JSON: produced outside our handlers (routing, extractors,
/// payload limits). HTML is ours too: the sign-in pages (`routes::signin`) show their errors.
fn is_foreign_error(status: StatusCode, headers: &HeaderMap) -> bool {
    let is_own = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    (status.is_client_error() || status.is_server_error()) && !is_own
}

/// A foreign error response re-shaped as an ARM error body, keeping its status and message.
fn arm_error(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let (http_req, original) = res.into_parts();
    let original = original
        .into_body()
        .try_into_bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), error = %original.trim(), "request failed");
    }
    ServiceResponse::new(http_req, cloud_error_response(status, original.trim()))
}

/// The ARM error response of `status` for an error whose own message is `original`.
fn cloud_error_response(status: StatusCode, original: &str) -> HttpResponse {
    let body = CloudError {
        error: CloudErrorBody {
            code: error_code(status).as_str().to_string(),
            message: error_message(status, original),
            target: None,
            details: vec![],
        },
    };
    let mut builder = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        builder.insert_header(("Retry-After", "5"));
    }
    builder.json(body)
}

/// Counts a request, and its response when it is an error.
fn count(metrics: &Metrics, status: StatusCode) {
    metrics.requests.inc();
    if status.is_client_error() {
        metrics.responses_4xx.inc();
    } else if status.is_server_error() {
        metrics.responses_5xx.inc();
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

    use super::{canonical_path, error_message, is_foreign_error};

    #[test]
    fn foreign_server_errors_keep_their_words_to_the_log() {
        let internal = "Requested application data is not configured correctly.";
        let m = error_message(StatusCode::INTERNAL_SERVER_ERROR, internal);
        assert_eq!(m, crate::error::INTERNAL_MESSAGE);
        let m = error_message(StatusCode::SERVICE_UNAVAILABLE, internal);
        assert!(!m.contains(internal), "{m}");
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, "Query deserialize error"),
            "Query deserialize error"
        );
    }

    #[test]
    fn only_non_json_errors_are_foreign() {
        let mut json = HeaderMap::new();
        json.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let text = HeaderMap::new();
        assert!(is_foreign_error(StatusCode::NOT_FOUND, &text));
        assert!(is_foreign_error(StatusCode::BAD_GATEWAY, &text));
        assert!(!is_foreign_error(StatusCode::NOT_FOUND, &json));
        assert!(!is_foreign_error(StatusCode::OK, &text));
    }

    #[test]
    fn canonicalizes_literals_only() {
        assert_eq!(
            canonical_path("/SUBSCRIPTIONS/s/resourcegroups/RG/PROVIDERS/microsoft.network/NetworkWatchers/stop/packetcaptures/pc/STOP").as_deref(),
            Some("/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/networkWatchers/stop/packetCaptures/pc/stop")
        );
        assert_eq!(
            canonical_path(
                "/subscriptions/s/providers/microsoft.network/LOCATIONS/eastus/OperationResults/x"
            )
            .as_deref(),
            Some(
                "/subscriptions/s/providers/Microsoft.Network/locations/eastus/operationResults/x"
            )
        );
        assert_eq!(
            canonical_path("/subscriptions/s/resourcegroups/rg/providers/Microsoft.Network/networkWatchers/nw/capturetriggers/t/ROTATESECRET").as_deref(),
            Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkWatchers/nw/captureTriggers/t/rotateSecret")
        );
        assert_eq!(canonical_path("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(canonical_path("/healthz"), None);
    }
}
