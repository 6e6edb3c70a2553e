//! Every bound on what a caller controls, in one place, and the means to hold to them: a
//! management request's body is read while holding one of a few permits, at most
//! [`MAX_ARM_BODY_BYTES`] of it, and parsed into at most [`MAX_JSON_VALUES`] JSON values; lists
//! take a permit too and page by bytes as well as by items.
//!
//! Where Azure documents a bound it is Azure's (named in each constant's comment); elsewhere the
//! bound is this server's, chosen well above what a real client sends. README.md ("Limits")
//! lists them all.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// Filters per packet capture. Azure documents no bound; every filter becomes a clause of the
/// agent's capture program, and real captures use a handful.
pub const MAX_FILTERS: usize = 100;
/// Characters of one filter value (`localIPAddress`, `remoteIPAddress`, `localPort`,
/// `remotePort`): room for a list of a dozen IPv6 addresses or a hundred ports.
pub const MAX_FILTER_VALUE_CHARS: usize = 512;
/// Instances in each of `scope.include` and `scope.exclude`: Azure's largest scale set has
/// 1,000 instances.
pub const MAX_SCOPE_INSTANCES: usize = 1000;
/// Characters of a resource id given in a body (`target`, `storageId`, scope instances, an
/// agent's `machineId`), before its parts are checked; with valid parts an id is shorter.
pub const MAX_RESOURCE_ID_CHARS: usize = 512;
/// Microsoft.Network resource names (watchers, captures): Azure's 1-80 characters.
pub const MAX_NETWORK_NAME_CHARS: usize = 80;
/// Microsoft.Compute virtual machine and scale set names: Azure's 1-64 (Linux).
pub const MAX_COMPUTE_NAME_CHARS: usize = 64;
/// Resource group names: Azure's 1-90 characters.
pub const MAX_RESOURCE_GROUP_CHARS: usize = 90;
/// Storage account names: Azure's 3-24 letters and digits.
pub const MIN_STORAGE_ACCOUNT_CHARS: usize = 3;
pub const MAX_STORAGE_ACCOUNT_CHARS: usize = 24;
/// Region names (`eastus`, `East US 2`): letters, digits and spaces, at most this many.
pub const MAX_LOCATION_CHARS: usize = 64;
/// Bytes of a capture file path (`filePath`, `localPath`): Linux's PATH_MAX.
pub const MAX_FILE_PATH_BYTES: usize = 4096;
/// Tags per resource, and characters of a tag name and value: Azure's 50, 512 and 256.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_NAME_CHARS: usize = 512;
pub const MAX_TAG_VALUE_CHARS: usize = 256;
/// Characters of a `$skiptoken` (this server's tokens are resource keys, under 250).
pub const MAX_SKIPTOKEN_CHARS: usize = 512;
/// Characters of an agent's `hostname`, `os`, `agentVersion` and of each interface name.
pub const MAX_AGENT_TEXT_CHARS: usize = 256;
/// Interfaces an agent may list at registration.
pub const MAX_AGENT_INTERFACES: usize = 256;
/// Captures an agent may report running at registration: Azure's 10,000 parallel packet
/// capture sessions per region and subscription.
pub const MAX_RUNNING_CAPTURES: usize = 10_000;

/// Bytes of a management request's body (those taken as [`JsonBody`]: capture and watcher
/// PUTs). A maximal valid capture (1,000 instances in each scope list, 100 filters of 4 maximal
/// values) is about 935 KB. Over it: 413 `RequestEntityTooLarge`, before the body is read.
pub const MAX_ARM_BODY_BYTES: usize = 1024 * 1024;
/// JSON values (objects, arrays, strings, numbers, booleans, nulls) in a management request's
/// body; a maximal valid capture has about 2,700. Over it: 400 naming the array (or object)
/// that holds too many, before the rest is parsed.
pub const MAX_JSON_VALUES: usize = 4096;
/// Bytes of stored resources in one list page (besides `--page-size` items): a page ends early
/// with a `nextLink` when the next item would pass it (a page always has at least one item).
pub const MAX_LIST_PAGE_BYTES: usize = 1024 * 1024;

/// Management requests with a body being read, parsed or processed at once, per process.
pub const MAX_CONCURRENT_BODIES: usize = 4;
/// List requests being answered at once, per process.
pub const MAX_CONCURRENT_LISTS: usize = 4;
/// How long a body or list request waits for its turn before 503 `ServiceUnavailable` (with
/// Retry-After).
pub const HEAVY_WAIT: Duration = Duration::from_secs(10);
/// How long a management request's body may take to arrive once its turn came; then 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

static BODIES: Semaphore = Semaphore::const_new(MAX_CONCURRENT_BODIES);
static LISTS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_LISTS);

/// What a heavy request does, for its permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heavy {
    /// Reads and parses a request body.
    Body,
    /// Answers a list.
    List,
}

/// A heavy request's turn: held until the response is built.
pub struct Permit {
    _held: SemaphorePermit<'static>,
}

/// Waits (at most [`HEAVY_WAIT`]) for a turn of `kind`; 503 with Retry-After when none came.
pub async fn admit(kind: Heavy) -> ApiResult<Permit> {
    let (semaphore, what, max) = match kind {
        Heavy::Body => (&BODIES, "requests with a body", MAX_CONCURRENT_BODIES),
        Heavy::List => (&LISTS, "list requests", MAX_CONCURRENT_LISTS),
    };
    match tokio::time::timeout(HEAVY_WAIT, semaphore.acquire()).await {
        Ok(Ok(permit)) => Ok(Permit { _held: permit }),
        _ => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!(
                "The server is busy: it answers at most {max} {what} at once and none finished within {} s. Retry after the Retry-After seconds.",
                HEAVY_WAIT.as_secs()
            ),
        )),
    }
}

fn too_large() -> ApiError {
    ApiError::invalid(
        ErrorCode::RequestEntityTooLarge,
        "body",
        format!(
            "The request body is larger than the {} KiB limit of a management request (a maximal valid packet capture is about 935 KB).",
            MAX_ARM_BODY_BYTES / 1024
        ),
    )
}

/// The JSON body of a management request: read once a [`Heavy::Body`] turn came (the permit is
/// held as long as this value lives), at most [`MAX_ARM_BODY_BYTES`], and parsed with
/// [`parse_json`]. A body declared larger than the limit is refused before it is read.
pub struct JsonBody {
    pub value: Value,
    _permit: Permit,
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<JsonBody>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared = declared_length(req);
        let payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > MAX_ARM_BODY_BYTES as u64) {
                return Err(too_large());
            }
            let permit = admit(Heavy::Body).await?;
            let bytes =
                read_limited(payload, MAX_ARM_BODY_BYTES, too_large, "request body").await?;
            let value = json_value(&bytes)?;
            Ok(JsonBody {
                value,
                _permit: permit,
            })
        })
    }
}

/// The `Content-Length` a request declares, if any.
pub fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// A body of at most `max` bytes (else `too_large`), arrived within [`BODY_READ_TIMEOUT`];
/// `what` names it in messages ("request body").
pub async fn read_limited(
    mut payload: Payload,
    max: usize,
    too_large: fn() -> ApiError,
    what: &str,
) -> ApiResult<web::Bytes> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::invalid(
                    ErrorCode::InvalidRequestContent,
                    "body",
                    format!("The {what} could not be read: {e}"),
                )
            })?;
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "The {what} did not arrive within {} s.",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
        })?
}

/// Why [`parse_json`] refused a body.
#[derive(Debug)]
pub enum JsonError {
    /// Not JSON.
    Syntax(serde_json::Error),
    /// More than the allowed number of values; `target` is the JSON path of the array (else the
    /// object) holding the value past the bound.
    TooManyValues { target: String },
}

/// One step of a JSON path.
enum Step {
    Key(String),
    Index(usize),
}

/// The shared state of one bounded parse.
struct Budget {
    left: Cell<usize>,
    path: RefCell<Vec<Step>>,
    overflow: RefCell<Option<String>>,
}

/// Keys longer than this are cut in an error's `target`.
const TARGET_KEY_CHARS: usize = 64;

impl Budget {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => {
                let path = self.path.borrow();
                // The deepest array holds the value past the bound (else its object).
                let end = path
                    .iter()
                    .rposition(|s| matches!(s, Step::Index(_)))
                    .unwrap_or(path.len().saturating_sub(1));
                let mut target = String::new();
                for step in &path[..end] {
                    match step {
                        Step::Key(k) => {
                            if !target.is_empty() {
                                target.push('.');
                            }
                            target.extend(k.chars().take(TARGET_KEY_CHARS));
                        }
                        Step::Index(i) => {
                            let _ = write!(target, "[{i}]");
                        }
                    }
                }
                if target.is_empty() {
                    target.push_str("body");
                }
                self.overflow.borrow_mut().get_or_insert(target);
                Err(E::custom("too many JSON values"))
            }
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Bounded<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.take::<E>()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.take::<E>()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.take::<E>()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.take::<E>()?;
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.take::<E>()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.take::<E>()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.take::<E>()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.take::<A::Error>()?;
        let mut items = Vec::new();
        loop {
            self.0.path.borrow_mut().push(Step::Index(items.len()));
            let item = seq.next_element_seed(self)?;
            self.0.path.borrow_mut().pop();
            match item {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.take::<A::Error>()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.0.path.borrow_mut().push(Step::Key(key.clone()));
            let value = map.next_value_seed(self)?;
            self.0.path.borrow_mut().pop();
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// Parses `bytes` as one JSON value holding at most `max_values` values: a body past the bound
/// costs no more memory than one within it.
pub fn parse_json(bytes: &[u8], max_values: usize) -> Result<Value, JsonError> {
    let budget = Budget {
        left: Cell::new(max_values),
        path: RefCell::new(Vec::new()),
        overflow: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Bounded(&budget)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, budget.overflow.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(target)) => Err(JsonError::TooManyValues { target }),
        (Err(e), None) => Err(JsonError::Syntax(e)),
    }
}

/// A management request's JSON body as a value: 400 `InvalidRequestContent` for an empty body
/// or one that is not JSON; 400 `InvalidParameter` naming the array that holds too many items
/// for one of more than [`MAX_JSON_VALUES`] values, before it costs more memory.
pub fn json_value(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            "The request body is required.",
        ));
    }
    parse_json(body, MAX_JSON_VALUES).map_err(|e| match e {
        JsonError::Syntax(e) => ApiError::invalid(
            ErrorCode::InvalidRequestContent,
            "body",
            format!("The request content was invalid and could not be deserialized: {e}"),
        ),
        JsonError::TooManyValues { target } => ApiError::invalid(
            ErrorCode::InvalidParameter,
            &target,
            format!(
                "'{target}' holds too many items: a request body may hold at most {MAX_JSON_VALUES} JSON values (a packet capture at most {MAX_FILTERS} filters and {MAX_SCOPE_INSTANCES} instances in each scope list; a resource at most {MAX_TAGS} tags)."
            ),
        ),
    })
}

/// Characters of a caller's value echoed in an error message.
const SHOWN_CHARS: usize = 100;

/// `s` as echoed in an error message: at most [`SHOWN_CHARS`] characters, the rest cut.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Checks a caller's text field: at most `max_chars` characters and no control characters
/// (U+0000-U+001F, U+007F-U+009F), which no valid value holds and PostgreSQL refuses (NUL).
/// The error is 400 `code` with `target`.
pub fn check_text(value: &str, max_chars: usize, code: ErrorCode, target: &str) -> ApiResult<()> {
    let len = value.chars().count();
    if len > max_chars {
        return Err(ApiError::invalid(
            code,
            target,
            format!("'{target}' is {len} characters long; it may have at most {max_chars}."),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ApiError::invalid(
            code,
            target,
            format!(
                "'{target}' holds the control character U+{:04X}; control characters are not allowed.",
                c as u32
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_parse_keeps_values_and_names_the_long_array() {
        let ok = parse_json(br#"{"a": [1, "x", null, true, 1.5, {"b": []}]}"#, 64).unwrap();
        assert_eq!(
            ok,
            serde_json::json!({"a": [1, "x", null, true, 1.5, {"b": []}]})
        );
        let many = format!(
            r#"{{"properties": {{"target": "t", "filters": [{}]}}}}"#,
            vec![r#"{"protocol": "TCP"}"#; 5000].join(",")
        );
        match parse_json(many.as_bytes(), MAX_JSON_VALUES) {
            Err(JsonError::TooManyValues { target }) => assert_eq!(target, "properties.filters"),
            other => panic!("{other:?}"),
        }
        let tags = format!(
            r#"{{"tags": {{{}}}}}"#,
            (0..5000)
                .map(|i| format!(r#""k{i}": "v""#))
                .collect::<Vec<_>>()
                .join(",")
        );
        match parse_json(tags.as_bytes(), MAX_JSON_VALUES) {
            Err(JsonError::TooManyValues { target }) => assert_eq!(target, "tags"),
            other => panic!("{other:?}"),
        }
        match parse_json(b"[1,2,3]", 2) {
            Err(JsonError::TooManyValues { target }) => assert_eq!(target, "body"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_json(b"{not json", 10),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            parse_json(b"{} {}", 10),
            Err(JsonError::Syntax(_))
        ));
    }

    #[test]
    fn text_checks() {
        let code = ErrorCode::InvalidParameter;
        assert!(check_text("eastus", 8, code, "t").is_ok());
        assert!(check_text("a\u{0}b", 8, code, "t").is_err());
        assert!(check_text("a\u{85}b", 8, code, "t").is_err());
        assert!(check_text(&"é".repeat(9), 8, code, "t").is_err());
        assert!(check_text(&"é".repeat(8), 8, code, "t").is_ok());
        assert_eq!(shown(&"a".repeat(100)), "a".repeat(100));
        assert_eq!(shown(&"a".repeat(101)), format!("{}…", "a".repeat(100)));
    }
}
