//! Sign-in of people at the built-in issuer: the OAuth 2.0 authorization endpoint (code flow with
//! PKCE S256, for the console's public client) with its HTML sign-in form, one-time sign-in
//! links, sign-out (revocation of a session's refresh tokens), and the console's configuration.
//!
//! The page needs no JavaScript: a plain form under a strict Content-Security-Policy. The form
//! carries a CSRF token sealed with the server's secrets key and bound to a short-lived
//! `SameSite=Strict`, `HttpOnly` cookie. Redirect URIs are this server's own origin only (the
//! console lives at `/`), so the endpoint is never an open redirect.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::auth::sessions::{self, CONSOLE_CLIENT_ID, CodeGrant};
use crate::auth::users::{self, User};
use crate::state::AppState;

/// The CSP of the sign-in page: no script at all, the stylesheet of this server, the form
/// posting only here, never in a frame.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The cookie the form's CSRF token is bound to.
const CSRF_COOKIE: &str = "capture_signin_csrf";
/// How long a sign-in form may be left open.
const FORM_TTL: Duration = Duration::from_secs(15 * 60);
/// Largest sign-in form body.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Bounds of the authorization request's parameters.
const MAX_REDIRECT_URI_CHARS: usize = 2048;
const MAX_STATE_CHARS: usize = 1024;
const MAX_SCOPE_CHARS: usize = 1024;
const MAX_NONCE_CHARS: usize = 256;

const STYLESHEET: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f3f4f6;color:#111827;margin:0}
main{max-width:24rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.2)}
h1{font-size:1.4rem;margin:0 0 1.5rem}
label{display:block;font-weight:600;margin:1rem 0 .3rem}
input[type=text],input[type=password]{box-sizing:border-box;width:100%;padding:.55rem;font-size:1rem;border:1px solid #6b7280;border-radius:.3rem}
input:focus,button:focus{outline:3px solid #2563eb;outline-offset:2px}
button{margin-top:1.5rem;width:100%;padding:.65rem;font-size:1rem;font-weight:600;color:#fff;background:#1d4ed8;border:0;border-radius:.3rem;cursor:pointer}
.error{color:#991b1b;background:#fee2e2;border:1px solid #991b1b;border-radius:.3rem;padding:.6rem;margin:0 0 1rem}
.note{color:#374151;font-size:.9rem}
";

/// The sign-in page's stylesheet (the page allows no inline style).
#[utoipa::path(tag = "Identity", params(("tenant" = String, Path)), responses((status = 200, description = "The sign-in page's stylesheet", content_type = "text/css")))]
#[get("/{tenant}/oauth2/v2.0/signin.css")]
pub async fn stylesheet(_tenant: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(STYLESHEET)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML page with the sign-in page's headers.
fn page(status: StatusCode) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::build(status);
    r.content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", PAGE_CSP))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-store"));
    r
}

fn html(title: &str, main: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<link rel=\"stylesheet\" href=\"signin.css\">\n</head>\n<body>\n<main>\n{main}\n</main>\n</body>\n</html>\n",
        title = escape(title)
    )
}

/// A page that only says what is wrong (no form: the request cannot go on).
fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    let body = html(
        "Sign-in failed",
        &format!(
            "<h1>Sign-in failed</h1>\n<p class=\"error\" role=\"alert\">{}</p>",
            escape(message)
        ),
    );
    page(status).body(body)
}

/// The sign-in form's post (for the OpenAPI document; the handler reads the form itself).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SignInForm {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: String,
    code_challenge_method: String,
    nonce: Option<String>,
    /// The form's CSRF token (bound to the form's cookie).
    csrf: String,
    username: String,
    password: String,
}

/// A sign-out or revocation request (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RevokeForm {
    /// The refresh token whose session ends (`refresh_token` is accepted too).
    token: Option<String>,
    refresh_token: Option<String>,
    token_type_hint: Option<String>,
    client_id: Option<String>,
}

/// An authorization request, as given (query of the GET, hidden fields of the POST).
#[derive(Debug, Default, Clone)]
pub struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    nonce: Option<String>,
    login_hint: Option<String>,
    signin: Option<String>,
}

/// The sign-in form's own fields.
#[derive(Default)]
struct FormFields {
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn parse(body: &[u8]) -> (AuthorizeParams, FormFields) {
    let mut p = AuthorizeParams::default();
    let mut f = FormFields::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "response_type" => p.response_type = v,
            "client_id" => p.client_id = v,
            "redirect_uri" => p.redirect_uri = v,
            "scope" => p.scope = v,
            "state" => p.state = v,
            "code_challenge" => p.code_challenge = v,
            "code_challenge_method" => p.code_challenge_method = v,
            "nonce" => p.nonce = v,
            "login_hint" => p.login_hint = v,
            "signin" => p.signin = v,
            "csrf" => f.csrf = v,
            "username" => f.username = v,
            "password" => f.password = v,
            _ => {}
        }
    }
    (p, f)
}

/// A checked authorization request.
struct Request {
    redirect: url::Url,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    scope: String,
    nonce: Option<String>,
}

/// Why an authorization request is refused: shown on a page (the client or redirect URI cannot
/// be trusted), or sent back to the redirect URI as an OAuth error.
enum Refused {
    Page(String),
    Redirect {
        redirect: Box<url::Url>,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

impl Refused {
    fn response(self) -> HttpResponse {
        match self {
            Refused::Page(m) => error_page(StatusCode::BAD_REQUEST, &m),
            Refused::Redirect {
                mut redirect,
                state,
                error,
                description,
            } => {
                {
                    let mut q = redirect.query_pairs_mut();
                    q.append_pair("error", error)
                        .append_pair("error_description", &description);
                    if let Some(s) = &state {
                        q.append_pair("state", s);
                    }
                }
                found(redirect.as_str())
            }
        }
    }
}

fn found(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("Location", location))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .finish()
}

/// Whether `uri` is a URL of this server's origin (`base`: scheme, host and port), without
/// credentials or fragment.
pub fn same_origin(uri: &str, base: &str) -> Option<url::Url> {
    let u = url::Url::parse(uri).ok()?;
    let b = url::Url::parse(base).ok()?;
    (u.scheme() == b.scheme()
        && u.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && u.port_or_known_default() == b.port_or_known_default()
        && u.username().is_empty()
        && u.password().is_none()
        && u.fragment().is_none())
    .then_some(u)
}

/// The audience a request's scope asks for: the resource of a `{resource}/.default` or
/// `{resource}/user_impersonation` scope, else Azure Resource Manager's.
pub fn audience_of(scope: &str) -> String {
    scope
        .split_whitespace()
        .find_map(|s| {
            s.strip_suffix("/.default")
                .or_else(|| s.strip_suffix("/user_impersonation"))
        })
        .map(|r| r.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "https://management.azure.com".to_string())
}

/// The audience of `scope`, if this server accepts tokens for it (with or without its slash).
pub fn accepted_audience(scope: &str, audiences: &[String]) -> Option<String> {
    let a = audience_of(scope);
    audiences
        .iter()
        .find(|x| x.trim_end_matches('/') == a)
        .map(|_| a)
}

fn too_long(v: &Option<String>, max: usize) -> bool {
    v.as_ref().is_some_and(|s| s.chars().count() > max)
}

/// Checks an authorization request in the order of RFC 6749 § 4.1.2.1: the client and redirect
/// URI first (refused on a page), then the rest (refused to the redirect URI).
fn check(state: &AppState, req: &HttpRequest, p: &AuthorizeParams) -> Result<Request, Refused> {
    let client = p.client_id.as_deref().unwrap_or("");
    if !client.eq_ignore_ascii_case(CONSOLE_CLIENT_ID) {
        return Err(Refused::Page(format!(
            "The application (client_id) is not known here. The console's client id is {CONSOLE_CLIENT_ID}."
        )));
    }
    let Some(redirect_uri) = p.redirect_uri.clone().filter(|r| !r.is_empty()) else {
        return Err(Refused::Page("The request has no redirect_uri.".into()));
    };
    if redirect_uri.chars().count() > MAX_REDIRECT_URI_CHARS {
        return Err(Refused::Page("The redirect_uri is too long.".into()));
    }
    let Some(redirect) = same_origin(&redirect_uri, &state.base_url(req)) else {
        return Err(Refused::Page(
            "The redirect_uri is not an address of this server: sign-in returns only to this server's own pages.".into(),
        ));
    };
    let refuse = |error: &'static str, description: &str| Refused::Redirect {
        redirect: Box::new(redirect.clone()),
        state: p
            .state
            .clone()
            .filter(|s| s.chars().count() <= MAX_STATE_CHARS),
        error,
        description: description.to_string(),
    };
    if p.response_type.as_deref() != Some("code") {
        return Err(refuse(
            "unsupported_response_type",
            "Only response_type=code is supported.",
        ));
    }
    if too_long(&p.state, MAX_STATE_CHARS)
        || too_long(&p.scope, MAX_SCOPE_CHARS)
        || too_long(&p.nonce, MAX_NONCE_CHARS)
        || too_long(&p.login_hint, users::MAX_NAME_CHARS)
    {
        return Err(refuse(
            "invalid_request",
            "A parameter is too long (state 1024, scope 1024, nonce 256, login_hint 64 characters).",
        ));
    }
    match p.code_challenge_method.as_deref() {
        Some("S256") => {}
        Some(_) => {
            return Err(refuse(
                "invalid_request",
                "Only code_challenge_method=S256 is supported (plain is refused).",
            ));
        }
        None => {
            return Err(refuse(
                "invalid_request",
                "PKCE is required: code_challenge with code_challenge_method=S256.",
            ));
        }
    }
    let challenge = p.code_challenge.clone().unwrap_or_default();
    if !sessions::valid_challenge(&challenge) {
        return Err(refuse(
            "invalid_request",
            "The code_challenge must be the base64url SHA-256 of the verifier (43 characters).",
        ));
    }
    let scope = p.scope.clone().unwrap_or_default();
    if accepted_audience(&scope, &state.auth.config.audiences).is_none() {
        return Err(refuse(
            "invalid_scope",
            &format!("Tokens for '{}' are not issued here.", audience_of(&scope)),
        ));
    }
    Ok(Request {
        redirect,
        redirect_uri,
        state: p.state.clone(),
        challenge,
        scope,
        nonce: p.nonce.clone().filter(|n| !n.is_empty()),
    })
}

/// A fresh CSRF pair: the cookie's value and the form's sealed token that names it.
fn new_csrf(state: &AppState) -> Option<(String, String)> {
    let nonce = crate::auth::secrets::random_secret();
    let expires = chrono::Utc::now().timestamp() + FORM_TTL.as_secs() as i64;
    let mut plain = expires.to_be_bytes().to_vec();
    plain.extend_from_slice(nonce.as_bytes());
    let sealed = state.secrets.seal(&plain, "signin-csrf").ok()?;
    Some((nonce, URL_SAFE_NO_PAD.encode(sealed)))
}

/// Whether the form's CSRF token is one this server sealed, not expired, for this cookie.
fn csrf_ok(state: &AppState, req: &HttpRequest, token: Option<&str>) -> bool {
    let (Some(token), Some(cookie)) = (token, cookie(req, CSRF_COOKIE)) else {
        return false;
    };
    if token.len() > 512 {
        return false;
    }
    let Some(plain) = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|s| state.secrets.open(&s, "signin-csrf").ok())
    else {
        return false;
    };
    if plain.len() < 8 {
        return false;
    }
    let (expires, nonce) = plain.split_at(8);
    let expires = i64::from_be_bytes(expires.try_into().unwrap_or([0; 8]));
    expires > chrono::Utc::now().timestamp() && nonce == cookie.as_bytes()
}

/// A cookie of the request, by name.
fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn csrf_cookie(req: &HttpRequest, value: &str, max_age: u64) -> String {
    let secure = if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{CSRF_COOKIE}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        req.path()
    )
}

/// The sign-in form for a checked request, with a message if any.
fn form_page(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    p: &AuthorizeParams,
    username: &str,
    message: Option<&str>,
) -> HttpResponse {
    let Some((cookie_value, token)) = new_csrf(state) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The sign-in form cannot be shown now.",
        );
    };
    let hidden = |name: &str, value: &Option<String>| match value {
        Some(v) => format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape(v)
        ),
        None => String::new(),
    };
    let mut fields = String::new();
    for (name, value) in [
        ("response_type", &p.response_type),
        ("client_id", &p.client_id),
        ("redirect_uri", &p.redirect_uri),
        ("scope", &p.scope),
        ("state", &p.state),
        ("code_challenge", &p.code_challenge),
        ("code_challenge_method", &p.code_challenge_method),
        ("nonce", &p.nonce),
    ] {
        fields.push_str(&hidden(name, value));
    }
    fields.push_str(&hidden("csrf", &Some(token)));
    let alert = match message {
        Some(m) => format!(
            "<p class=\"error\" role=\"alert\" id=\"signin-error\">{}</p>\n",
            escape(m)
        ),
        None => String::new(),
    };
    let described = if message.is_some() {
        " aria-describedby=\"signin-error\""
    } else {
        ""
    };
    let main = format!(
        "<h1>Sign in to the packet capture service</h1>\n{alert}<form method=\"post\" action=\"{action}\">\n{fields}<label for=\"username\">User name</label>\n<input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"{max_name}\" required value=\"{username}\"{described}>\n<label for=\"password\">Password</label>\n<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" maxlength=\"{max_password}\" required{described}>\n<button type=\"submit\">Sign in</button>\n</form>\n<p class=\"note\">Administrators create accounts with <code>capture-api users create</code>.</p>",
        action = escape(req.path()),
        username = escape(username),
        max_name = users::MAX_NAME_CHARS,
        max_password = users::MAX_PASSWORD_BYTES,
    );
    let body = html("Sign in", &main);
    page(status)
        .insert_header((
            "Set-Cookie",
            csrf_cookie(req, &cookie_value, FORM_TTL.as_secs()),
        ))
        .body(body)
}

fn tenant_ok(state: &AppState, tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case(&state.auth.config.tenant)
        || tenant.eq_ignore_ascii_case("organizations")
        || tenant.eq_ignore_ascii_case("common")
}

fn unavailable() -> HttpResponse {
    let mut r = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Signing in is not possible right now. Try again in a moment.",
    );
    r.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static("5"),
    );
    r
}

/// Issues the code of a signed-in user and sends the browser back to the client.
async fn issue_code(state: &AppState, user: &User, r: Request) -> HttpResponse {
    let grant = CodeGrant {
        user_id: user.id,
        client_id: CONSOLE_CLIENT_ID.to_string(),
        redirect_uri: r.redirect_uri,
        code_challenge: r.challenge,
        scope: r.scope,
        nonce: r.nonce,
    };
    let code = match state.conn().await {
        Ok(mut conn) => sessions::create_code(&mut conn, &grant).await,
        Err(_) => return unavailable(),
    };
    let Ok(code) = code else {
        return unavailable();
    };
    let mut redirect = r.redirect;
    {
        let mut q = redirect.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = &r.state {
            q.append_pair("state", s);
        }
    }
    tracing::info!(user = %user.id, "signed in");
    found(redirect.as_str())
}

/// OAuth 2.0 authorization endpoint (code flow, PKCE S256 required) of the built-in issuer, for
/// the console's public client. Shows the sign-in form; with `signin` (a one-time sign-in link
/// token) it signs in at once and redirects with the code.
#[utoipa::path(
    tag = "Identity",
    params(
        ("tenant" = String, Path),
        ("response_type" = String, Query, description = "code"),
        ("client_id" = String, Query, description = "The console's client id, 00000000-0000-0000-0000-000000c0501e"),
        ("redirect_uri" = String, Query, description = "A URL of this server's origin"),
        ("scope" = Option<String>, Query, description = "e.g. openid profile offline_access https://management.azure.com/user_impersonation"),
        ("state" = Option<String>, Query),
        ("code_challenge" = String, Query, description = "base64url SHA-256 of the verifier"),
        ("code_challenge_method" = String, Query, description = "S256"),
        ("nonce" = Option<String>, Query),
        ("login_hint" = Option<String>, Query, description = "Prefills the user name"),
        ("signin" = Option<String>, Query, description = "A one-time sign-in link token: no form"),
    ),
    responses(
        (status = 200, description = "The sign-in form (HTML)", content_type = "text/html"),
        (status = 302, description = "Back to redirect_uri with code and state (or error)"),
        (status = 400, description = "The client or redirect URI is not valid (HTML)"),
        (status = 401, description = "The sign-in link is not valid: the form, with the reason (HTML)"),
    )
)]
#[get("/{tenant}/oauth2/v2.0/authorize")]
pub async fn authorize(
    req: HttpRequest,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
) -> HttpResponse {
    if !tenant_ok(&state, &tenant) {
        return error_page(StatusCode::NOT_FOUND, "This tenant is not known here.");
    }
    if !state.auth.config.enabled {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Authentication is disabled on this server (--auth-disabled): there is nothing to sign in to.",
        );
    }
    let (p, _) = parse(req.query_string().as_bytes());
    let r = match check(&state, &req, &p) {
        Ok(r) => r,
        Err(refused) => return refused.response(),
    };
    if let Some(link) = p.signin.as_deref().filter(|l| !l.is_empty()) {
        let user = match state.conn().await {
            Ok(mut conn) => users::redeem_sign_in_link(&mut conn, link).await,
            Err(_) => return unavailable(),
        };
        return match user {
            Ok(Some(user)) => issue_code(&state, &user, r).await,
            Ok(None) => form_page(
                &state,
                &req,
                StatusCode::UNAUTHORIZED,
                &p,
                "",
                Some(
                    "This sign-in link is not valid: it was used already or it expired. Sign in with your user name and password, or ask for a new link (capture-api sign-in-link --user NAME).",
                ),
            ),
            Err(_) => unavailable(),
        };
    }
    let hint = p.login_hint.clone().unwrap_or_default();
    form_page(&state, &req, StatusCode::OK, &p, &hint, None)
}

/// The sign-in form's submission: a CSRF token, a user name and a password.
#[utoipa::path(
    tag = "Identity",
    params(("tenant" = String, Path)),
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded",
                 description = "The authorization request's parameters, csrf, username, password"),
    responses(
        (status = 302, description = "Back to redirect_uri with code and state"),
        (status = 400, description = "The form expired or was not sent from the sign-in page (HTML)"),
        (status = 401, description = "Wrong user name or password: the form again (HTML)"),
        (status = 429, description = "Too many failed sign-ins (HTML, Retry-After)"),
    )
)]
#[post("/{tenant}/oauth2/v2.0/authorize")]
pub async fn authorize_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if !tenant_ok(&state, &tenant) {
        return error_page(StatusCode::NOT_FOUND, "This tenant is not known here.");
    }
    if body.len() > MAX_FORM_BYTES {
        return error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
    }
    if !state.auth.config.enabled {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Authentication is disabled on this server (--auth-disabled): there is nothing to sign in to.",
        );
    }
    // Each post may cost a slow hash: a client cannot queue up unlimited work.
    if let Some(wait) = req
        .peer_addr()
        .and_then(|a| state.auth.throttle_sign_in(a.ip()))
    {
        return throttled_page(wait);
    }
    let (p, f) = parse(&body);
    let r = match check(&state, &req, &p) {
        Ok(r) => r,
        Err(refused) => return refused.response(),
    };
    let username = f.username.clone().unwrap_or_default();
    let shown_name: String = username.chars().take(users::MAX_NAME_CHARS).collect();
    if !csrf_ok(&state, &req, f.csrf.as_deref()) {
        return form_page(
            &state,
            &req,
            StatusCode::BAD_REQUEST,
            &p,
            &shown_name,
            Some("The sign-in form expired or did not come from this page. Please sign in again."),
        );
    }
    let password = f.password.unwrap_or_default();
    if password.len() > users::MAX_PASSWORD_BYTES || username.is_empty() || password.is_empty() {
        return form_page(
            &state,
            &req,
            StatusCode::UNAUTHORIZED,
            &p,
            &shown_name,
            Some("The user name or password is incorrect."),
        );
    }
    let Ok(mut conn) = state.conn().await else {
        return unavailable();
    };
    let keys = sessions::failure_keys(&username, req.peer_addr().map(|a| a.ip()));
    let attempt = match sessions::begin_attempt(&mut conn, &keys).await {
        Ok(Ok(ids)) => ids,
        Ok(Err(wait)) => return throttled_page(wait),
        Err(_) => return unavailable(),
    };
    let candidate = match users::candidate(&mut conn, &username).await {
        Ok(u) => u,
        Err(_) => return unavailable(),
    };
    // No connection is held while the slow hash waits for its turn.
    drop(conn);
    let Some(user) = users::verify(candidate, &password).await else {
        // The attempt stays recorded as a failure.
        tracing::info!("a sign-in failed (wrong user name or password)");
        return form_page(
            &state,
            &req,
            StatusCode::UNAUTHORIZED,
            &p,
            &shown_name,
            Some("The user name or password is incorrect."),
        );
    };
    let Ok(mut conn) = state.conn().await else {
        return unavailable();
    };
    if sessions::attempt_succeeded(&mut conn, &username, &attempt)
        .await
        .is_err()
    {
        return unavailable();
    }
    drop(conn);
    let mut resp = issue_code(&state, &user, r).await;
    // The form is used: its cookie goes.
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&csrf_cookie(&req, "", 0)) {
        resp.headers_mut()
            .append(actix_web::http::header::SET_COOKIE, v);
    }
    resp
}

fn throttled_page(wait: Duration) -> HttpResponse {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    let body = html(
        "Too many failed sign-ins",
        &format!(
            "<h1>Too many failed sign-ins</h1>\n<p class=\"error\" role=\"alert\">Too many failed sign-ins for this user or from this address. Try again in {minutes} minute{}.</p>",
            if minutes == 1 { "" } else { "s" }
        ),
    );
    page(StatusCode::TOO_MANY_REQUESTS)
        .insert_header(("Retry-After", wait.as_secs().max(1).to_string()))
        .body(body)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

/// Revokes the session of the refresh token in a form (`token` or `refresh_token`).
async fn revoke_form(state: &AppState, tenant: &str, body: &[u8]) -> HttpResponse {
    if !tenant_ok(state, tenant) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            &format!("Tenant '{tenant}' not found on this server."),
        );
    }
    if body.len() > MAX_FORM_BYTES {
        return oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "The request is too large.",
        );
    }
    let token = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "token" || k == "refresh_token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The refresh token to revoke (token or refresh_token) is missing.",
        );
    };
    let cannot = || {
        oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The session cannot be revoked now.",
        )
    };
    let Ok(mut conn) = state.conn().await else {
        return cannot();
    };
    match sessions::revoke(&mut conn, &token).await {
        // As RFC 7009 asks: the same answer whether the token was known or not.
        Ok(_) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(json!({})),
        Err(_) => cannot(),
    }
}

/// Sign-out: revokes the session (every refresh token of its family) of `refresh_token`.
/// Access tokens already issued stay valid until they expire (at most the token lifetime).
#[utoipa::path(
    tag = "Identity",
    params(("tenant" = String, Path)),
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded",
                 description = "refresh_token (or token), client_id"),
    responses((status = 200, description = "Signed out (also for an unknown token)"), (status = 400, description = "OAuth error"))
)]
#[post("/{tenant}/oauth2/v2.0/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    tenant: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    revoke_form(&state, &tenant, &body).await
}

/// OAuth 2.0 token revocation (RFC 7009) of a refresh token: revokes its whole session.
#[utoipa::path(
    tag = "Identity",
    params(("tenant" = String, Path)),
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded",
                 description = "token, token_type_hint=refresh_token, client_id"),
    responses((status = 200, description = "Revoked (also for an unknown token)"), (status = 400, description = "OAuth error"))
)]
#[post("/{tenant}/oauth2/v2.0/revoke")]
pub async fn revoke(
    state: web::Data<AppState>,
    tenant: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    revoke_form(&state, &tenant, &body).await
}

/// What the console needs to sign people in: the authority, its client id, the scopes and
/// endpoints. With `--console-client-id` the authority is the first `--oidc-issuer`; otherwise
/// it is this server's built-in issuer.
#[utoipa::path(tag = "Identity", responses((status = 200, description = "The console's sign-in settings")))]
#[get("/console/config.json")]
pub async fn console_config(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let b = state.base_url(&req);
    let config = &state.auth.config;
    let resource = config
        .audiences
        .iter()
        .find(|a| a.trim_end_matches('/') == "https://management.azure.com")
        .or(config.audiences.first())
        .map(|a| a.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "https://management.azure.com".into());
    let scopes = [
        "openid".to_string(),
        "profile".to_string(),
        "offline_access".to_string(),
        format!("{resource}/user_impersonation"),
    ];
    let body = if !config.enabled {
        json!({"mode": "none", "authDisabled": true, "redirectUri": format!("{b}/")})
    } else if let (Some(client), Some(issuer)) =
        (state.auth.console_client_id(), config.oidc_issuers.first())
    {
        json!({
            "mode": "external",
            "authDisabled": false,
            "authority": issuer,
            "issuer": issuer,
            "discoveryUrl": format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/')),
            "clientId": client,
            "scopes": scopes,
            "redirectUri": format!("{b}/"),
        })
    } else {
        let t = &config.tenant;
        json!({
            "mode": "builtIn",
            "authDisabled": false,
            "authority": format!("{b}/{t}/v2.0"),
            "issuer": config.issuer,
            "discoveryUrl": format!("{b}/{t}/v2.0/.well-known/openid-configuration"),
            "clientId": CONSOLE_CLIENT_ID,
            "scopes": scopes,
            "redirectUri": format!("{b}/"),
            "authorizationEndpoint": format!("{b}/{t}/oauth2/v2.0/authorize"),
            "tokenEndpoint": format!("{b}/{t}/oauth2/v2.0/token"),
            "endSessionEndpoint": format!("{b}/{t}/oauth2/v2.0/logout"),
            "revocationEndpoint": format!("{b}/{t}/oauth2/v2.0/revoke"),
            "signInLinkParameter": "signin",
            "sessionSeconds": sessions::SESSION_TTL.as_secs(),
        })
    };
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-cache"))
        .json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_origin_is_a_redirect() {
        let base = "http://127.0.0.1:8480";
        assert!(same_origin("http://127.0.0.1:8480/", base).is_some());
        assert!(same_origin("http://127.0.0.1:8480/console/cb?x=1", base).is_some());
        assert!(same_origin("http://127.0.0.1:8481/", base).is_none());
        assert!(same_origin("https://127.0.0.1:8480/", base).is_none());
        assert!(same_origin("http://evil.example/", base).is_none());
        assert!(same_origin("http://127.0.0.1:8480@evil.example/", base).is_none());
        assert!(same_origin("http://user@127.0.0.1:8480/", base).is_none());
        assert!(same_origin("http://127.0.0.1:8480/#x", base).is_none());
        assert!(same_origin("//evil.example/", base).is_none());
        assert!(same_origin("/relative", base).is_none());
        assert!(same_origin("https://h.example/", "https://H.example:443").is_some());
    }

    #[test]
    fn scopes_name_their_audience() {
        let audiences = vec!["https://management.azure.com/".to_string()];
        assert_eq!(
            accepted_audience(
                "openid https://management.azure.com/user_impersonation",
                &audiences
            )
            .as_deref(),
            Some("https://management.azure.com")
        );
        assert_eq!(
            accepted_audience("openid offline_access", &audiences).as_deref(),
            Some("https://management.azure.com")
        );
        assert_eq!(
            accepted_audience("https://other/.default", &audiences),
            None
        );
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let (p, f) = parse(b"client_id=c&state=a%26b&password=p%3D&unknown=1");
        assert_eq!(p.state.as_deref(), Some("a&b"));
        assert_eq!(f.password.as_deref(), Some("p="));
        assert_eq!(p.client_id.as_deref(), Some("c"));
    }
}
