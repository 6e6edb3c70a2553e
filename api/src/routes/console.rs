//! The web console: static files embedded in the binary (`api/console/`), served at `/` (the
//! page) and `/console/…` (its modules and style sheet), on the API's origin.
//!
//! The page is public (it holds no data); everything it shows comes from the public API, called
//! with the signed-in user's bearer token. Every response carries a strict Content-Security-Policy
//! (no inline script or style, no eval, no framing), `nosniff` and `no-referrer`. Assets are
//! validated by a strong ETag (a hash of their bytes); the page names its script and style sheet
//! with that hash in the query, and such versioned URLs are cached for a year.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};

use crate::state::AppState;

/// The console's Content-Security-Policy: only this origin's scripts, styles and connections.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file: its name under `/console/`, media type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// The same, gzip-compressed at build time (`api/build.rs`).
    gzip: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// One of `api/console/`'s files, with its gzip from the build (`api/build.rs`).
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../console/", $name)),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/console/", $name, ".gz")),
        }
    };
}

/// The files under `/console/` (the page itself, `index.html`, is served at `/`).
const ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("model.js", JS),
    asset!("list.js", JS),
    asset!("actions.js", JS),
    asset!("add.js", JS),
    asset!("details.js", JS),
    asset!("api.js", JS),
    asset!("auth.js", JS),
    asset!("validate.js", JS),
    asset!("pcap.js", JS),
    asset!("ui.js", JS),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

const INDEX_HTML: &str = include_str!("../../console/index.html");

/// The first 16 hex digits of the SHA-256 of `bytes`.
fn hash(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Each asset's hash, in the order of [`ASSETS`].
static HASHES: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| hash(a.bytes)).collect());

/// The page, with `{{v:NAME}}` replaced by the hash of asset NAME, and its hash.
static INDEX: LazyLock<(String, String)> = LazyLock::new(|| {
    let mut html = INDEX_HTML.to_string();
    for (asset, h) in ASSETS.iter().zip(HASHES.iter()) {
        html = html.replace(&format!("{{{{v:{}}}}}", asset.name), h);
    }
    let h = hash(html.as_bytes());
    (html, h)
});

/// The console's Content-Security-Policy on this server: with an external OpenID provider for
/// the console (`--oidc-issuer` and `--console-client-id`), its origin may be fetched too (its
/// discovery document and token endpoint).
fn content_security_policy(req: &HttpRequest) -> String {
    let external = req.app_data::<web::Data<AppState>>().and_then(|s| {
        s.auth.console_client_id()?;
        let issuer = url::Url::parse(s.auth.config.oidc_issuers.first()?).ok()?;
        matches!(issuer.scheme(), "https" | "http")
            .then(|| issuer.origin().ascii_serialization())
            .filter(|o| o != "null" && !o.contains(|c: char| c.is_whitespace() || c == ';'))
    });
    match external {
        Some(origin) => CONTENT_SECURITY_POLICY.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' {origin}"),
        ),
        None => CONTENT_SECURITY_POLICY.to_string(),
    }
}

/// The security headers of every console response.
fn secured(req: &HttpRequest, mut b: HttpResponseBuilder) -> HttpResponseBuilder {
    b.insert_header((
        header::CONTENT_SECURITY_POLICY,
        content_security_policy(req),
    ))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "no-referrer"))
    .insert_header((header::X_FRAME_OPTIONS, "DENY"))
    .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
    .insert_header(("Cross-Origin-Resource-Policy", "same-origin"));
    b
}

/// Whether the request's `If-None-Match` holds `etag`.
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == etag || t == "*" || t.strip_prefix("W/") == Some(etag))
}

/// Whether the request's `Accept-Encoding` takes gzip (a `q` of 0 refuses it).
fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
}

/// A file's response: 304 when the client has it, else the bytes; `cache` is its Cache-Control.
/// With `gzip` (the same bytes compressed), a client that accepts gzip gets those, as their own
/// representation (ETag `"HASH-gz"`).
fn respond(
    req: &HttpRequest,
    content_type: &'static str,
    (body, gzip): (&'static [u8], Option<&'static [u8]>),
    hash: &str,
    cache: &'static str,
) -> HttpResponse {
    let compressed = gzip.filter(|_| accepts_gzip(req));
    let etag = match compressed {
        Some(_) => format!("\"{hash}-gz\""),
        None => format!("\"{hash}\""),
    };
    let unchanged = not_modified(req, &etag);
    let mut b = if unchanged {
        secured(req, HttpResponse::NotModified())
    } else {
        let mut b = secured(req, HttpResponse::Ok());
        b.insert_header((header::CONTENT_TYPE, content_type));
        b
    };
    b.insert_header((header::CACHE_CONTROL, cache));
    if gzip.is_some() {
        b.insert_header((header::VARY, "Accept-Encoding"));
    }
    if compressed.is_some() && !unchanged {
        b.insert_header((header::CONTENT_ENCODING, "gzip"));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        b.insert_header((header::ETAG, v));
    }
    if unchanged || req.method() == actix_web::http::Method::HEAD {
        b.finish()
    } else {
        b.body(compressed.unwrap_or(body))
    }
}

/// `GET /`: the console's page (also where sign-in links and the authorization redirect land).
async fn index(req: HttpRequest) -> HttpResponse {
    let (html, h) = &*INDEX;
    // Revalidated at each load, so that a new server version's page is seen at once.
    respond(
        &req,
        "text/html; charset=utf-8",
        (html.as_bytes(), None),
        h,
        "no-cache",
    )
}

/// `GET /console/{name}`: the asset `i` of [`ASSETS`]; immutable when asked for by its hash.
async fn asset(req: HttpRequest, i: usize) -> HttpResponse {
    let (Some(a), Some(h)) = (ASSETS.get(i), HASHES.get(i)) else {
        return HttpResponse::NotFound().finish();
    };
    let versioned = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "v" && v == h.as_str());
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    respond(&req, a.content_type, (a.bytes, Some(a.gzip)), h, cache)
}

/// Registers `/` and each asset's own path (exact paths: other `/console/…` routes, such as the
/// sign-in configuration, belong to their own modules).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(index))
            .route(web::head().to(index)),
    );
    for (i, a) in ASSETS.iter().enumerate() {
        let get = move |req: HttpRequest| asset(req, i);
        let head = move |req: HttpRequest| asset(req, i);
        cfg.service(
            web::resource(format!("/console/{}", a.name))
                .route(web::get().to(get))
                .route(web::head().to(head)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_module_by_its_hash() {
        let (html, _) = &*INDEX;
        assert!(!html.contains("{{v:"), "an unknown asset in index.html");
        for (a, h) in ASSETS.iter().zip(HASHES.iter()) {
            if a.name == "app.js" || a.name == "app.css" {
                assert!(
                    html.contains(&format!("/console/{}?v={h}", a.name)),
                    "{}",
                    a.name
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let (html, _) = &*INDEX;
        assert!(!html.contains("<script>"));
        assert!(!html.contains("style="));
        assert!(!html.contains("<style"));
        let inline_handler = html
            .split(|c: char| c.is_whitespace())
            .any(|w| w.starts_with("on") && w.contains('='));
        assert!(!inline_handler, "no inline event handlers");
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        let with = |v: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((header::ACCEPT_ENCODING, v))
                .to_http_request();
            accepts_gzip(&req)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("identity"));
        assert!(!with("br, zstd"));
        assert!(!accepts_gzip(
            &actix_web::test::TestRequest::default().to_http_request()
        ));
    }

    #[test]
    fn every_file_has_a_smaller_gzip() {
        // What the compressed bytes hold is checked by the browser test, which runs the console
        // from them.
        for a in ASSETS {
            assert!(a.gzip.starts_with(&[0x1f, 0x8b, 8]), "{}", a.name);
            assert!(a.gzip.len() < a.bytes.len(), "{}", a.name);
        }
    }

    #[test]
    fn first_load_is_small() {
        let total: usize = INDEX.0.len() + ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>();
        assert!(total < 300 * 1024, "{total} bytes");
    }
}
