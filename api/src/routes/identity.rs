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

use crate::auth::{mint, principals};
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
    let t = &state.auth.config.tenant;
    HttpResponse::Ok().json(json!({
        "issuer": state.auth.config.issuer,
        "token_endpoint": format!("{b}/{t}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{b}/{t}/oauth2/v2.0/authorize"),
        "jwks_uri": format!("{b}/{t}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [crate::auth::keys::ALG],
        "scopes_supported": ["https://management.azure.com/.default"],
        "tenant_region_scope": null,
    }))
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

/// OAuth 2.0 token endpoint: the `client_credentials` grant for service principals.
#[utoipa::path(
    tag = "Identity",
    params(("tenant" = String, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
                 description = "grant_type=client_credentials, client_id, client_secret, scope"),
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
    let basic = basic_credentials(&req);
    let grant = match client_credentials_grant(form, basic, &state.auth.config.audiences) {
        Ok(grant) => grant,
        Err(refusal) => return refusal.response(),
    };
    token_response(issue(&state, &grant).await)
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
        oauth_error(StatusCode::BAD_REQUEST, self.error, &self.description)
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
            "Only the client_credentials grant is supported.",
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
    };
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "grant_type" => t.grant_type = v,
            "client_id" => t.client_id = v,
            "client_secret" => t.client_secret = v,
            "scope" => t.scope = v,
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
