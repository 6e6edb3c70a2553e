//! Authentication and authorization of the management API (bearer JWTs, RBAC, throttling), the
//! built-in token issuer, and agent enrollment and credentials.

pub mod agents;
pub mod keys;
pub mod principals;
pub mod rbac;
pub mod secrets;
pub mod sessions;
pub mod tokens;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use serde::Serialize;

use crate::db::DbPool;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::metrics::Metrics;

pub use crate::config::{AuthConfig, DEFAULT_AUDIENCES};

/// Who is calling the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Object id (`oid`, else `sub`), lower case.
    pub id: String,
    /// Application id (`appid`/`azp`), lower case.
    pub app_id: Option<String>,
    /// Authentication is disabled: everything is allowed.
    pub unrestricted: bool,
}

impl Principal {
    fn anonymous() -> Principal {
        Principal {
            id: "anonymous".into(),
            app_id: None,
            unrestricted: true,
        }
    }
}

/// The shared authentication state of a server process.
pub struct Auth {
    pub config: AuthConfig,
    /// For the role assignments of callers.
    pool: DbPool,
    pub validator: tokens::Validator,
    pub rbac: rbac::Rbac,
    limiter: Mutex<HashMap<String, (f64, Instant)>>,
    signer: Mutex<Option<(Instant, keys::Signer)>>,
    /// `--console-client-id`: the console signs in at the first `--oidc-issuer` with this client.
    console_client_id: Option<String>,
}

impl Auth {
    pub fn new(config: AuthConfig, pool: DbPool) -> Auth {
        Auth {
            config,
            validator: tokens::Validator::new(pool.clone()),
            pool,
            rbac: rbac::Rbac::default(),
            limiter: Mutex::default(),
            signer: Mutex::default(),
            console_client_id: None,
        }
    }

    /// The console's client id at the external issuer (`--console-client-id`).
    pub fn with_console_client_id(mut self, client_id: Option<String>) -> Auth {
        self.console_client_id = client_id.filter(|c| !c.trim().is_empty());
        self
    }

    pub fn console_client_id(&self) -> Option<&str> {
        self.console_client_id.as_deref()
    }

    /// Takes a token from the principal's bucket; the wait before the next one when empty.
    fn throttle(&self, principal: &str) -> Option<Duration> {
        self.take(
            principal,
            self.config.rate_per_second,
            self.config.rate_burst,
        )
    }

    /// Token requests per client address: each may cost a slow hash, so a client cannot queue
    /// up unlimited work (10 per second, 30 at once).
    pub fn throttle_sign_in(&self, client: std::net::IpAddr) -> Option<Duration> {
        self.take(&format!("sign-in:{client}"), 10.0, 30.0)
    }

    fn take(&self, key: &str, rate: f64, burst: f64) -> Option<Duration> {
        let burst = burst.max(1.0);
        if rate <= 0.0 {
            return None;
        }
        let mut map = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        let now = Instant::now();
        let (tokens, at) = map.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + at.elapsed().as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }

    /// The key the built-in issuer signs with (re-read every few seconds, so a rotation made
    /// elsewhere is picked up).
    pub async fn signer(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        secrets: &crate::storage::secrets::SecretsKey,
    ) -> ApiResult<keys::Signer> {
        if let Some((at, s)) = &*self.signer.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < tokens::REFRESH_INTERVAL
        {
            return Ok(s.clone());
        }
        let s = keys::current(conn, secrets).await?;
        *self.signer.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), s.clone()));
        Ok(s)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    sub: &'a str,
    oid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    appid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    azp: Option<&'a str>,
    tid: &'a str,
    idtyp: &'a str,
    ver: &'a str,
}

/// A token of the built-in issuer `issuer` (of `tenant`) for `object_id` (and its application
/// id).
pub fn mint(
    issuer: &str,
    tenant: &str,
    signer: &keys::Signer,
    object_id: &str,
    app_id: Option<&str>,
    audience: &str,
    ttl: Duration,
) -> ApiResult<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        aud: audience,
        iss: issuer,
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs() as i64,
        sub: object_id,
        oid: object_id,
        appid: app_id,
        azp: app_id,
        tid: tenant,
        idtyp: "app",
        ver: "2.0",
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, &claims, &signer.key)
        .map(tokens::with_low_s)
        .map_err(|e| ApiError::internal(format!("cannot sign a token: {e}")))
}

/// Paths of the management API (everything else: health, docs, the issuer, the agent protocol,
/// has its own rules).
fn is_management(path: &str) -> bool {
    let decoded: String = if path.contains('%') {
        url::form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    } else {
        path.to_string()
    };
    decoded.len() >= 14
        && decoded
            .get(..14)
            .is_some_and(|p| p.eq_ignore_ascii_case("/subscriptions"))
}

/// Authenticates management requests and throttles them per principal; the principal is left in
/// the request for [`Caller`].
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    if !is_management(req.path()) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let Some(auth) = req.app_data::<web::Data<Auth>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    match check(&auth, &req).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            Ok(next.call(req).await?.map_into_left_body())
        }
        // An ordinary response, so that the ARM envelope adds the request ids and counts it.
        Err(e) => {
            if let Some(metrics) = &metrics {
                match &e {
                    ApiError::Throttled { .. } => metrics.throttled.inc(),
                    _ => metrics.auth_failures.inc(),
                }
            }
            Ok(req
                .into_response(actix_web::ResponseError::error_response(&e))
                .map_into_right_body())
        }
    }
}

/// The principal of a management request, or why it is refused (401, 429).
async fn check(auth: &Auth, req: &ServiceRequest) -> ApiResult<Principal> {
    let principal = if auth.config.enabled {
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let token = match header {
            None => {
                return Err(ApiError::new(
                    ErrorCode::AuthenticationFailed,
                    "Authentication failed. The 'Authorization' header is missing.",
                ));
            }
            Some(h) => match h.split_once(' ') {
                Some((scheme, t))
                    if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() =>
                {
                    t.trim().to_string()
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::AuthenticationFailed,
                        "Authentication failed. The 'Authorization' header must be 'Bearer <token>'.",
                    ));
                }
            },
        };
        auth.validator
            .validate(&auth.config, &token)
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidAuthenticationToken,
                    format!("The access token is invalid. {e}"),
                )
            })?
    } else {
        Principal::anonymous()
    };
    // Throttling is per principal: without authentication there is none to count.
    if !principal.unrestricted
        && let Some(wait) = auth.throttle(&principal.id)
    {
        return Err(ApiError::Throttled {
            retry_after_seconds: wait.as_secs().max(1),
        });
    }
    Ok(principal)
}

/// The authenticated caller of a management request.
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .map(Caller)
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::AuthenticationFailed, "Authentication failed.")
                }),
        )
    }
}

impl Caller {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The caller's assignments (none needed when authentication is disabled).
    async fn assignments(&self, auth: &Auth) -> ApiResult<rbac::Assignments> {
        // The hot path: no database connection when the assignments are cached.
        if let Some(a) = auth.rbac.cached(&self.0.id, self.0.app_id.as_deref()) {
            return Ok(a);
        }
        let mut conn = auth.pool.get().await?;
        Ok(auth
            .rbac
            .assignments(&mut conn, &self.0.id, self.0.app_id.as_deref())
            .await?)
    }

    /// 403 `AuthorizationFailed` unless the caller may do `action` on `scope`.
    pub async fn authorize(&self, auth: &Auth, action: &str, scope: &str) -> ApiResult<()> {
        if self.0.unrestricted {
            return Ok(());
        }
        if rbac::allowed(&self.assignments(auth).await?, action, scope) {
            return Ok(());
        }
        Err(self.denied(action, scope))
    }

    /// The actions of each role assigned to the caller at or above `scope` (everything when
    /// authentication is disabled).
    pub async fn permissions(
        &self,
        auth: &Auth,
        scope: &str,
    ) -> ApiResult<Vec<&'static [&'static str]>> {
        if self.0.unrestricted {
            return Ok(vec![rbac::Role::Owner.actions()]);
        }
        let key = rbac::scope_key(scope);
        Ok(self
            .assignments(auth)
            .await?
            .iter()
            .filter(|(s, _)| rbac::covers(s, &key))
            .map(|(_, role)| role.actions())
            .collect())
    }

    /// 403 `AuthorizationFailed`, worded as Azure words it.
    fn denied(&self, action: &str, scope: &str) -> ApiError {
        ApiError::new(
            ErrorCode::AuthorizationFailed,
            format!(
                "The client '{id}' with object id '{id}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                id = self.0.id
            ),
        )
    }

    /// The subscriptions the caller sees: those with an assignment of the caller at or under
    /// them (or at the root).
    pub async fn subscription_filter(
        &self,
        auth: &Auth,
    ) -> ApiResult<impl Fn(&str) -> bool + use<>> {
        let unrestricted = self.0.unrestricted;
        let assignments = if unrestricted {
            Arc::new(vec![])
        } else {
            self.assignments(auth).await?
        };
        Ok(move |sub: &str| {
            let key = rbac::scope_key(&format!("/subscriptions/{sub}"));
            unrestricted
                || assignments
                    .iter()
                    .any(|(s, _)| rbac::covers(s, &key) || rbac::covers(&key, s))
        })
    }

    /// The subscriptions the caller has an assignment at or under (they are listed even with no
    /// resources in them yet, as in Azure).
    pub async fn assigned_subscriptions(&self, auth: &Auth) -> ApiResult<Vec<String>> {
        if self.0.unrestricted {
            return Ok(vec![]);
        }
        Ok(self
            .assignments(auth)
            .await?
            .iter()
            .filter_map(|(scope, _)| {
                scope
                    .strip_prefix("/subscriptions/")
                    .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            })
            .collect())
    }

    /// The filter of a list at `scope` (a subscription or a resource group): whether the caller
    /// may do `action` on each item. As in ARM, a caller that may do `action` neither at (or
    /// above) the scope nor on anything below it is refused (403 `AuthorizationFailed`); one
    /// allowed only below it (e.g. Reader on one watcher of the listed resource group) gets
    /// what it may read.
    pub async fn list_filter(
        &self,
        auth: &Auth,
        action: &str,
        scope: &str,
    ) -> ApiResult<impl Fn(&str) -> bool + use<>> {
        if !self.0.unrestricted {
            let key = rbac::scope_key(scope);
            let reaches = self.assignments(auth).await?.iter().any(|(s, role)| {
                role.allows(action) && (rbac::covers(s, &key) || rbac::covers(&key, s))
            });
            if !reaches {
                return Err(self.denied(action, scope));
            }
        }
        self.filter(auth, action).await
    }

    /// A filter for lists: whether the caller may do `action` on each scope.
    pub async fn filter(
        &self,
        auth: &Auth,
        action: &str,
    ) -> ApiResult<impl Fn(&str) -> bool + use<>> {
        let unrestricted = self.0.unrestricted;
        let assignments = if unrestricted {
            Arc::new(vec![])
        } else {
            self.assignments(auth).await?
        };
        let action = action.to_string();
        Ok(move |scope: &str| unrestricted || rbac::allowed(&assignments, &action, scope))
    }
}

/// ARM actions checked by the handlers.
pub mod actions {
    pub const WATCHER_READ: &str = "Microsoft.Network/networkWatchers/read";
    pub const WATCHER_WRITE: &str = "Microsoft.Network/networkWatchers/write";
    pub const WATCHER_DELETE: &str = "Microsoft.Network/networkWatchers/delete";
    pub const CAPTURE_READ: &str = "Microsoft.Network/networkWatchers/packetCaptures/read";
    pub const CAPTURE_WRITE: &str = "Microsoft.Network/networkWatchers/packetCaptures/write";
    pub const CAPTURE_DELETE: &str = "Microsoft.Network/networkWatchers/packetCaptures/delete";
    pub const CAPTURE_STOP: &str = "Microsoft.Network/networkWatchers/packetCaptures/stop/action";
    pub const CAPTURE_QUERY_STATUS: &str =
        "Microsoft.Network/networkWatchers/packetCaptures/queryStatus/action";
    pub const VM_READ: &str = "Microsoft.Compute/virtualMachines/read";
    pub const SUBSCRIPTION_READ: &str = "Microsoft.Resources/subscriptions/read";
    pub const STORAGE_ACCOUNT_READ: &str = "Microsoft.Storage/storageAccounts/read";
}
