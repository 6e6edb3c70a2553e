//! The built-in token issuer, shaped like Microsoft Entra ID's v2 endpoints so that the Azure
//! clients can sign in against the server itself: the OpenID discovery document, the JWKS, the
//! `client_credentials` token endpoint, and the instance discovery MSAL asks for.
//!
//! Errors here are OAuth errors (`{"error", "error_description"}`), as the clients expect.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{mint, principals, sessions, users};
use crate::error::ApiResult;
use crate::state::AppState;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

fn base(state: &AppState, req: &HttpRequest) -> String {
    state.base_url(req)
}

fn tenant_ok(state: &AppState, tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case(&state.auth.config.tenant)
        || tenant.eq_ignore_ascii_case("organizations")
        || tenant.eq_ignore_ascii_case("common")
}

fn unknown_tenant(tenant: &str) -> HttpResponse {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        &format!("Tenant '{tenant}' not found on this server."),
    )
}

/// OpenID Connect discovery document of the built-in issuer.
#[utoipa::path(tag = "Identity", params(("tenant" = String, Path)), responses((status = 200, description = "Discovery document")))]
#[get("/{tenant}/v2.0/.well-known/openid-configuration")]
pub async fn discovery(
    req: HttpRequest,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
) -> HttpResponse {
    let tenant = tenant.into_inner();
    if !tenant_ok(&state, &tenant) {
        return unknown_tenant(&tenant);
    }
    let b = base(&state, &req);
    HttpResponse::Ok().json(discovery_document(&state, &b))
}

/// The discovery document of the built-in issuer, for the server's base URL `b`.
fn discovery_document(state: &AppState, b: &str) -> serde_json::Value {
    let t = &state.auth.config.tenant;
    json!({
        "issuer": state.auth.config.issuer,
        "token_endpoint": format!("{b}/{t}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{b}/{t}/oauth2/v2.0/authorize"),
        "end_session_endpoint": format!("{b}/{t}/oauth2/v2.0/logout"),
        "revocation_endpoint": format!("{b}/{t}/oauth2/v2.0/revoke"),
        "jwks_uri": format!("{b}/{t}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [crate::auth::keys::ALG],
        "scopes_supported": ["openid", "profile", "offline_access", "https://management.azure.com/user_impersonation", "https://management.azure.com/.default"],
        "claims_supported": ["iss", "aud", "sub", "oid", "tid", "name", "preferred_username", "nonce", "iat", "nbf", "exp"],
        "console_client_id": sessions::CONSOLE_CLIENT_ID,
        "tenant_region_scope": null,
    })
}

/// The built-in issuer's discovery document at the server's root (the same as under the
/// tenant).
#[utoipa::path(tag = "Identity", responses((status = 200, description = "Discovery document")))]
#[get("/.well-known/openid-configuration")]
pub async fn root_discovery(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let b = base(&state, &req);
    HttpResponse::Ok().json(discovery_document(&state, &b))
}

/// The issuer's public signing keys.
#[utoipa::path(tag = "Identity", params(("tenant" = String, Path)), responses((status = 200, description = "JWKS")))]
#[get("/{tenant}/discovery/v2.0/keys")]
pub async fn jwks(state: web::Data<AppState>, tenant: web::Path<String>) -> HttpResponse {
    let tenant = tenant.into_inner();
    if !tenant_ok(&state, &tenant) {
        return unknown_tenant(&tenant);
    }
    let keys = match state.conn().await {
        Ok(mut conn) => crate::auth::keys::public_keys(&mut conn).await,
        Err(e) => Err(e),
    };
    match keys {
        Ok(keys) => HttpResponse::Ok().json(json!({ "keys": keys })),
        Err(_) => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The keys cannot be read now.",
        ),
    }
}

/// MSAL's instance discovery: this server is its own authority.
#[utoipa::path(tag = "Identity", responses((status = 200, description = "Instance metadata")))]
#[get("/common/discovery/instance")]
pub async fn instance_discovery(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let b = base(&state, &req);
    let host = req.connection_info().host().to_string();
    HttpResponse::Ok().json(json!({
        "tenant_discovery_endpoint": format!("{b}/{}/v2.0/.well-known/openid-configuration", state.auth.config.tenant),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }))
}

/// ARM's cloud metadata, so that `az cloud register --endpoint-resource-manager <this server>`
/// discovers the rest (the sign-in endpoint is this server too).
#[utoipa::path(tag = "Identity", params(("api-version" = Option<String>, Query)), responses((status = 200, description = "Cloud endpoints")))]
#[get("/metadata/endpoints")]
pub async fn cloud_metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let b = base(&state, &req);
    HttpResponse::Ok().json(json!({
        "name": "capture",
        "portal": b,
        "resourceManager": format!("{b}/"),
        "authentication": {
            "loginEndpoint": b,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": state.auth.config.tenant,
            "identityProvider": "AAD",
        },
        "suffixes": {},
    }))
}

#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    code: Option<String>,
    code_verifier: Option<String>,
    redirect_uri: Option<String>,
    refresh_token: Option<String>,
}

/// The audience a requested scope names (`https://management.azure.com/.default`,
/// `https://management.core.windows.net//.default`).
fn audience_of(scope: &str) -> Option<String> {
    scope
        .split_whitespace()
        .find_map(|s| s.strip_suffix(".default"))
        .map(|resource| {
            // "https://management.core.windows.net//" names the resource with its slash.
            let r = resource.strip_suffix('/').unwrap_or(resource);
            if r.ends_with('/') {
                r.to_string()
            } else {
                r.trim_end_matches('/').to_string()
            }
        })
}

/// OAuth 2.0 token endpoint: the `client_credentials` grant for service principals, and for
/// people signed in at the authorization endpoint the `authorization_code` grant (PKCE S256:
/// code, code_verifier, redirect_uri, client_id) and the `refresh_token` grant (rotating
/// refresh tokens: each works once).
#[utoipa::path(
    tag = "Identity",
    params(("tenant" = String, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
                 description = "grant_type=client_credentials (client_id, client_secret, scope), authorization_code (code, code_verifier, redirect_uri, client_id) or refresh_token (refresh_token, client_id)"),
    responses((status = 200, description = "An access token"), (status = 400, description = "OAuth error"), (status = 401, description = "invalid_client"))
)]
#[post("/{tenant}/oauth2/v2.0/token")]
pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
    form: web::Bytes,
) -> HttpResponse {
    let tenant = tenant.into_inner();
    if !tenant_ok(&state, &tenant) {
        return unknown_tenant(&tenant);
    }
    if let Some(wait) = req
        .peer_addr()
        .and_then(|a| state.auth.throttle_sign_in(a.ip()))
    {
        return too_many_requests(wait);
    }
    let Ok(form) = serde_urlencoded_form(&form) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The body must be application/x-www-form-urlencoded.",
        );
    };
    match form.grant_type.as_deref() {
        Some("authorization_code") => return user_tokens(code_grant(&state, &form).await),
        Some("refresh_token") => return user_tokens(refresh_grant(&state, &form).await),
        _ => {}
    }
    let basic = basic_credentials(&req);
    let grant = match client_credentials_grant(form, basic, &state.auth.config.audiences) {
        Ok(grant) => grant,
        Err(refusal) => return refusal.response(),
    };
    token_response(issue(&state, &grant).await)
}

/// Tokens for a signed-in user, or why not.
type UserGrant = Result<UserTokens, Refusal>;

/// What the token endpoint answers a user's client.
struct UserTokens {
    access_token: String,
    id_token: Option<String>,
    refresh_token: String,
    scope: String,
    expires_in: u64,
    refresh_token_expires_in: i64,
}

fn user_tokens(grant: ApiResult<UserGrant>) -> HttpResponse {
    match grant {
        Ok(Ok(t)) => {
            let mut body = json!({
                "token_type": "Bearer",
                "scope": t.scope,
                "expires_in": t.expires_in,
                "ext_expires_in": t.expires_in,
                "access_token": t.access_token,
                "refresh_token": t.refresh_token,
                "refresh_token_expires_in": t.refresh_token_expires_in,
            });
            if let Some(id) = t.id_token {
                body["id_token"] = json!(id);
            }
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .insert_header(("Pragma", "no-cache"))
                .json(body)
        }
        Ok(Err(refusal)) => refusal.response(),
        Err(e) => {
            tracing::error!(error = %e, "token request failed");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The token cannot be issued now.",
            )
        }
    }
}

/// The console's client id of a request, or why it is refused.
fn public_client(form: &TokenRequest) -> Result<(), Refusal> {
    match form.client_id.as_deref() {
        Some(c) if c.eq_ignore_ascii_case(sessions::CONSOLE_CLIENT_ID) => Ok(()),
        Some(_) => Err(Refusal::new(
            "invalid_client",
            "This client may not sign people in here.",
        )),
        None => Err(Refusal::new("invalid_request", "client_id is required.")),
    }
}

/// Mints a user's access token (and ID token when `openid` was asked for).
async fn mint_for_user(
    state: &AppState,
    conn: &mut diesel_async::AsyncPgConnection,
    user_id: uuid::Uuid,
    scope: &str,
    nonce: Option<&str>,
    refresh_token: String,
    session_ends: chrono::DateTime<chrono::Utc>,
) -> ApiResult<UserGrant> {
    let Some(user) = users::by_id(conn, user_id).await? else {
        return Ok(Err(Refusal::new(
            "invalid_grant",
            "The user no longer exists.",
        )));
    };
    let Some(audience) =
        crate::routes::signin::accepted_audience(scope, &state.auth.config.audiences)
    else {
        return Ok(Err(Refusal::new(
            "invalid_scope",
            "Tokens for this scope are not issued here.",
        )));
    };
    let signer = state.auth.signer(conn, &state.secrets).await?;
    let issuer = sessions::Issuer {
        issuer: &state.auth.config.issuer,
        tenant: &state.auth.config.tenant,
        signer: &signer,
        ttl: state.auth.config.token_ttl,
    };
    let access_token = issuer.access_token(&user, sessions::CONSOLE_CLIENT_ID, &audience)?;
    let id_token = if scope.split_whitespace().any(|s| s == "openid") {
        Some(issuer.id_token(&user, sessions::CONSOLE_CLIENT_ID, nonce)?)
    } else {
        None
    };
    let mut granted = format!("{audience}/{}", sessions::USER_SCOPE);
    for s in ["openid", "profile", "offline_access"] {
        if scope.split_whitespace().any(|x| x == s) {
            granted.push(' ');
            granted.push_str(s);
        }
    }
    Ok(Ok(UserTokens {
        access_token,
        id_token,
        refresh_token,
        scope: granted,
        expires_in: state.auth.config.token_ttl.as_secs(),
        refresh_token_expires_in: (session_ends - chrono::Utc::now()).num_seconds().max(0),
    }))
}

/// `grant_type=authorization_code`: a code of the authorization endpoint, with the PKCE
/// verifier, the same redirect URI and the console's client id.
async fn code_grant(state: &AppState, form: &TokenRequest) -> ApiResult<UserGrant> {
    if let Err(r) = public_client(form) {
        return Ok(Err(r));
    }
    let (Some(code), Some(verifier), Some(redirect_uri)) = (
        form.code.as_deref(),
        form.code_verifier.as_deref(),
        form.redirect_uri.as_deref(),
    ) else {
        return Ok(Err(Refusal::new(
            "invalid_request",
            "code, code_verifier and redirect_uri are required.",
        )));
    };
    let mut conn = state.conn().await?;
    let grant = match sessions::redeem_code(
        &mut conn,
        code,
        sessions::CONSOLE_CLIENT_ID,
        redirect_uri,
        verifier,
    )
    .await?
    {
        Ok(g) => g,
        Err(sessions::InvalidGrant(why)) => return Ok(Err(Refusal::new("invalid_grant", why))),
    };
    let (refresh, ends) =
        sessions::start_session(&mut conn, grant.user_id, &grant.client_id, &grant.scope).await?;
    mint_for_user(
        state,
        &mut conn,
        grant.user_id,
        &grant.scope,
        grant.nonce.as_deref(),
        refresh,
        ends,
    )
    .await
}

/// `grant_type=refresh_token`: the next refresh token of the session, with fresh tokens.
async fn refresh_grant(state: &AppState, form: &TokenRequest) -> ApiResult<UserGrant> {
    if let Err(r) = public_client(form) {
        return Ok(Err(r));
    }
    let Some(presented) = form.refresh_token.as_deref() else {
        return Ok(Err(Refusal::new(
            "invalid_request",
            "refresh_token is required.",
        )));
    };
    let mut conn = state.conn().await?;
    let rotated = match sessions::rotate(&mut conn, presented, sessions::CONSOLE_CLIENT_ID).await? {
        Ok(r) => r,
        Err(sessions::InvalidGrant(why)) => return Ok(Err(Refusal::new("invalid_grant", why))),
    };
    mint_for_user(
        state,
        &mut conn,
        rotated.user_id,
        &rotated.scope,
        None,
        rotated.refresh_token,
        rotated.session_ends,
    )
    .await
}

/// The answer to a client that asks for tokens too often.
fn too_many_requests(wait: Duration) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header(("Retry-After", wait.as_secs().max(1).to_string()))
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"error": "temporarily_unavailable", "error_description": "Too many token requests from this address; retry later."}))
}

/// A well-formed `client_credentials` request for a token this server issues.
struct Grant {
    client_id: String,
    secret: String,
    audience: String,
}

/// Why a token request is refused (400 Bad Request), as an OAuth error.
struct Refusal {
    error: &'static str,
    description: String,
}

impl Refusal {
    fn new(error: &'static str, description: impl Into<String>) -> Refusal {
        Refusal {
            error,
            description: description.into(),
        }
    }

    fn response(&self) -> HttpResponse {
        let status = if self.error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        oauth_error(status, self.error, &self.description)
    }
}

/// Checks a token request's grant type, client credentials and scope. `basic` holds the
/// credentials of `client_secret_basic` (an Authorization: Basic header), used when the form
/// has no client id.
fn client_credentials_grant(
    mut form: TokenRequest,
    basic: Option<(String, String)>,
    audiences: &[String],
) -> Result<Grant, Refusal> {
    if form.client_id.is_none()
        && let Some((id, secret)) = basic
    {
        form.client_id = Some(id);
        form.client_secret = Some(secret);
    }
    if form.grant_type.as_deref() != Some("client_credentials") {
        return Err(Refusal::new(
            "unsupported_grant_type",
            "Supported grants: client_credentials, authorization_code (with PKCE) and refresh_token.",
        ));
    }
    let (Some(client_id), Some(secret)) = (form.client_id, form.client_secret) else {
        return Err(Refusal::new(
            "invalid_request",
            "client_id and client_secret are required.",
        ));
    };
    let Some(audience) = form.scope.as_deref().and_then(audience_of) else {
        return Err(Refusal::new(
            "invalid_scope",
            "The scope must be a resource's '/.default', e.g. https://management.azure.com/.default.",
        ));
    };
    if !audiences.iter().any(|a| a == &audience) {
        return Err(Refusal::new(
            "invalid_scope",
            format!("Tokens for '{audience}' are not issued here."),
        ));
    }
    Ok(Grant {
        client_id,
        secret,
        audience,
    })
}

/// Authenticates the service principal and mints its token (with the token's lifetime);
/// `None` when the client id or secret is wrong.
async fn issue(state: &AppState, grant: &Grant) -> ApiResult<Option<(String, Duration)>> {
    let mut conn = state.conn().await?;
    let sp = principals::authenticate(&mut conn, &grant.client_id, &grant.secret).await?;
    let Some(sp) = sp else {
        return Ok(None);
    };
    let signer = state.auth.signer(&mut conn, &state.secrets).await?;
    let ttl = state.auth.config.token_ttl;
    let access_token = mint(
        &state.auth.config.issuer,
        &state.auth.config.tenant,
        &signer,
        &sp.object_id.to_string(),
        Some(&sp.client_id.to_string()),
        &grant.audience,
        ttl,
    )?;
    Ok(Some((access_token, ttl)))
}

/// The token endpoint's answer once the request is well-formed.
fn token_response(issued: ApiResult<Option<(String, Duration)>>) -> HttpResponse {
    match issued {
        Ok(Some((access_token, ttl))) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(json!({
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
                "ext_expires_in": ttl.as_secs(),
                "access_token": access_token,
            })),
        Ok(None) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client id or secret is wrong.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "token request failed");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The token cannot be issued now.",
            )
        }
    }
}

fn serde_urlencoded_form(body: &[u8]) -> Result<TokenRequest, ()> {
    let mut t = TokenRequest {
        grant_type: None,
        client_id: None,
        client_secret: None,
        scope: None,
        code: None,
        code_verifier: None,
        redirect_uri: None,
        refresh_token: None,
    };
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "grant_type" => t.grant_type = v,
            "client_id" => t.client_id = v,
            "client_secret" => t.client_secret = v,
            "scope" => t.scope = v,
            "code" => t.code = v,
            "code_verifier" => t.code_verifier = v,
            "redirect_uri" => t.redirect_uri = v,
            "refresh_token" => t.refresh_token = v,
            _ => {}
        }
    }
    Ok(t)
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    use base64::Engine;
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, value) = h.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::{audience_of, client_credentials_grant, serde_urlencoded_form};

    fn audiences() -> Vec<String> {
        vec!["https://management.azure.com".to_string()]
    }

    fn refusal(body: &str, basic: Option<(String, String)>) -> (&'static str, String) {
        let form = serde_urlencoded_form(body.as_bytes()).unwrap();
        let refused = client_credentials_grant(form, basic, &audiences())
            .err()
            .unwrap();
        (refused.error, refused.description)
    }

    #[test]
    fn grants_are_checked_in_order() {
        let scope = "scope=https%3A%2F%2Fmanagement.azure.com%2F.default";
        assert_eq!(
            refusal("grant_type=password&client_id=a&client_secret=b", None).0,
            "unsupported_grant_type"
        );
        assert_eq!(
            refusal(
                &format!("grant_type=client_credentials&client_id=a&{scope}"),
                None
            )
            .1,
            "client_id and client_secret are required."
        );
        assert_eq!(
            refusal(
                "grant_type=client_credentials&client_id=a&client_secret=b&scope=openid",
                None
            )
            .0,
            "invalid_scope"
        );
        assert_eq!(
            refusal(
                "grant_type=client_credentials&client_id=a&client_secret=b&scope=https%3A%2F%2Fother%2F.default",
                None
            )
            .1,
            "Tokens for 'https://other' are not issued here."
        );
        let basic = Some(("id".to_string(), "secret".to_string()));
        let form =
            serde_urlencoded_form(format!("grant_type=client_credentials&{scope}").as_bytes())
                .unwrap();
        let grant = client_credentials_grant(form, basic, &audiences())
            .ok()
            .unwrap();
        assert_eq!(
            (
                grant.client_id.as_str(),
                grant.secret.as_str(),
                grant.audience.as_str()
            ),
            ("id", "secret", "https://management.azure.com")
        );
    }

    #[test]
    fn scopes_name_their_audience() {
        assert_eq!(
            audience_of("https://management.azure.com/.default").as_deref(),
            Some("https://management.azure.com")
        );
        assert_eq!(
            audience_of("https://management.core.windows.net//.default").as_deref(),
            Some("https://management.core.windows.net/")
        );
        assert_eq!(audience_of("openid"), None);
    }
}
