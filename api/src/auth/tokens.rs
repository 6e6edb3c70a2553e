//! Bearer token validation: signature, `exp`/`nbf` (small leeway), `iss`, `aud`.
//!
//! Trusted issuers: the built-in issuer (its keys in the database), OpenID issuers
//! (`--oidc-issuer`: discovery document, then JWKS), a JWKS file (`--jwks-file` with
//! `--jwks-issuer`), and, for development only, an HS256 secret. Each issuer allows only its
//! algorithms (RS256/ES256; HS256 only for the development secret): `alg: none` and algorithm
//! confusion never verify. An unknown `kid` refreshes that issuer's keys, at most every
//! [`REFRESH_INTERVAL`]. Validated tokens are remembered until they expire, so a request with a
//! known token costs a hash lookup.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;

use super::{AuthConfig, Principal};
use crate::db::DbPool;

/// Shortest time between two key refreshes of one issuer.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;
const CACHE_LIMIT: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidToken(pub String);

fn invalid(m: impl Into<String>) -> InvalidToken {
    InvalidToken(m.into())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    BuiltIn,
    Oidc,
    File,
    DevSecret,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    refreshed: Option<Instant>,
}

pub struct Validator {
    pool: DbPool,
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Keys>>,
    cache: Mutex<HashMap<String, (Principal, i64)>>,
}

#[derive(Deserialize)]
struct Claims {
    exp: i64,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    /// Delegated (user) tokens carry scopes; app-only tokens do not.
    #[serde(default)]
    scp: Option<String>,
}

#[derive(Deserialize)]
struct Unverified {
    #[serde(default)]
    iss: Option<String>,
}

fn key_of(jwk: &Jwk) -> Option<(String, (DecodingKey, Algorithm))> {
    let kid = jwk.common.key_id.clone()?;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, (key, alg)))
}

/// The `iss` claim of a token, read before its signature is checked (to choose the key).
fn unverified_issuer(token: &str) -> Result<String, InvalidToken> {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<Unverified>(&p).ok())
        .ok_or_else(|| invalid("The token is malformed."))?
        .iss
        .ok_or_else(|| invalid("The token has no issuer."))
}

/// The algorithms an issuer of `kind` may sign with.
fn allowed_algorithms(kind: Kind) -> &'static [Algorithm] {
    match kind {
        Kind::BuiltIn => &[Algorithm::ES256],
        Kind::Oidc | Kind::File => &[Algorithm::RS256, Algorithm::ES256],
        Kind::DevSecret => &[Algorithm::HS256],
    }
}

/// What a token of issuer `iss` signed with `alg` must satisfy: `exp`/`nbf` with leeway, `iss`
/// and one of the accepted audiences.
fn validation(config: &AuthConfig, iss: &str, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_audience(&config.audiences);
    validation.set_issuer(&[iss]);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation
}

/// Why a token failed verification, in words for the client.
fn decode_error(config: &AuthConfig, e: &jsonwebtoken::errors::Error) -> InvalidToken {
    use jsonwebtoken::errors::ErrorKind as K;
    invalid(match e.kind() {
        K::ExpiredSignature => "The token has expired.".to_string(),
        K::ImmatureSignature => "The token is not valid yet (nbf).".to_string(),
        K::InvalidAudience => format!(
            "The token's audience is not accepted (expected one of {}).",
            config.audiences.join(", ")
        ),
        K::InvalidIssuer => "The token's issuer is not accepted.".to_string(),
        K::InvalidSignature => "The token's signature is invalid.".to_string(),
        K::MissingRequiredClaim(c) => format!("The token has no '{c}' claim."),
        _ => "The token is invalid.".to_string(),
    })
}

/// The principal a verified token's claims name.
fn principal_of(claims: Claims) -> Result<Principal, InvalidToken> {
    let id = claims
        .oid
        .or(claims.sub)
        .ok_or_else(|| invalid("The token names no principal (oid or sub)."))?
        .to_lowercase();
    // The application's own roles apply only to app-only tokens: a user signing in through
    // an application does not inherit what the application was granted.
    let app_id = if claims.scp.is_none() {
        claims.appid.or(claims.azp).map(|a| a.to_lowercase())
    } else {
        None
    };
    Ok(Principal {
        id,
        app_id,
        unrestricted: false,
    })
}

impl Validator {
    pub fn new(pool: DbPool) -> Validator {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Validator {
            pool,
            http,
            keys: Mutex::default(),
            cache: Mutex::default(),
        }
    }

    fn kind(config: &AuthConfig, iss: &str) -> Option<Kind> {
        if iss == config.issuer {
            Some(Kind::BuiltIn)
        } else if config.oidc_issuers.iter().any(|i| i == iss) {
            Some(Kind::Oidc)
        } else if config.jwks_file.as_ref().is_some_and(|(_, i)| i == iss) {
            Some(Kind::File)
        } else if config.dev_hs256.as_ref().is_some_and(|(_, i)| i == iss) {
            Some(Kind::DevSecret)
        } else {
            None
        }
    }

    /// The principal a token speaks for, or why it is refused.
    pub async fn validate(
        &self,
        config: &AuthConfig,
        token: &str,
    ) -> Result<Principal, InvalidToken> {
        let now = chrono::Utc::now().timestamp();
        if let Some(principal) = self.cached(token, now) {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("The token is malformed or its algorithm is not supported."))?;
        let iss = unverified_issuer(token)?;
        let kind = Self::kind(config, &iss)
            .ok_or_else(|| invalid(format!("The token's issuer '{iss}' is not trusted.")))?;
        if !allowed_algorithms(kind).contains(&header.alg) {
            return Err(invalid(format!(
                "The token's algorithm {:?} is not accepted from this issuer.",
                header.alg
            )));
        }
        let key = self.decoding_key(config, kind, &iss, &header).await?;
        let validation = validation(config, &iss, header.alg);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| decode_error(config, &e))?
            .claims;
        let exp = claims.exp;
        let principal = principal_of(claims)?;
        self.remember(token, &principal, exp, now);
        Ok(principal)
    }

    /// The principal of a token validated before, while it has not expired.
    fn cached(&self, token: &str, now: i64) -> Option<Principal> {
        match self.lock_cache().get(token) {
            Some((p, exp)) if *exp + LEEWAY_SECONDS as i64 > now => Some(p.clone()),
            _ => None,
        }
    }

    /// Remembers a validated token until it expires; a full cache first drops expired tokens,
    /// then everything.
    fn remember(&self, token: &str, principal: &Principal, exp: i64, now: i64) {
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (_, exp)| *exp > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), (principal.clone(), exp));
    }

    /// The key that must have signed a token of issuer `iss` (of `kind`) with `header`.
    async fn decoding_key(
        &self,
        config: &AuthConfig,
        kind: Kind,
        iss: &str,
        header: &Header,
    ) -> Result<DecodingKey, InvalidToken> {
        if kind == Kind::DevSecret {
            return config
                .dev_hs256
                .as_ref()
                .map(|(secret, _)| DecodingKey::from_secret(secret))
                .ok_or_else(|| invalid("No development secret is configured."));
        }
        let kid = header
            .kid
            .clone()
            .ok_or_else(|| invalid("The token has no key id (kid)."))?;
        let (key, key_alg) = self.key(config, kind, iss, &kid).await?;
        if key_alg != header.alg {
            return Err(invalid("The token's algorithm does not match its key."));
        }
        Ok(key)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, i64)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `kid` of issuer `iss`, refreshing that issuer's keys when it is unknown.
    async fn key(
        &self,
        config: &AuthConfig,
        kind: Kind,
        iss: &str,
        kid: &str,
    ) -> Result<(DecodingKey, Algorithm), InvalidToken> {
        let due = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let entry = keys.get(iss);
            if let Some(found) = entry.and_then(|k| k.by_kid.get(kid)) {
                return Ok(found.clone());
            }
            entry
                .and_then(|k| k.refreshed)
                .is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL)
        };
        if due {
            // Claim the refresh before fetching: concurrent misses do not fetch again.
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(iss.to_string())
                .or_default()
                .refreshed = Some(Instant::now());
            let fetched = self.fetch(config, kind, iss).await;
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let entry = keys.entry(iss.to_string()).or_default();
            match fetched {
                Ok(set) => entry.by_kid = set.keys.iter().filter_map(key_of).collect(),
                Err(e) => tracing::warn!(issuer = %iss, error = %e, "cannot refresh signing keys"),
            }
            if let Some(found) = entry.by_kid.get(kid) {
                return Ok(found.clone());
            }
        }
        Err(invalid(format!(
            "The token's signing key '{kid}' is not known."
        )))
    }

    async fn fetch(&self, config: &AuthConfig, kind: Kind, iss: &str) -> Result<JwkSet, String> {
        let parse = |v: serde_json::Value| {
            serde_json::from_value::<JwkSet>(v).map_err(|e| format!("not a JWKS: {e}"))
        };
        match kind {
            Kind::BuiltIn => {
                let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
                let keys = super::keys::public_keys(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                parse(serde_json::json!({ "keys": keys }))
            }
            Kind::File => {
                let (path, _) = config
                    .jwks_file
                    .as_ref()
                    .ok_or_else(|| "no JWKS file".to_string())?;
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                parse(serde_json::from_str(&text).map_err(|e| e.to_string())?)
            }
            Kind::Oidc => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    iss.trim_end_matches('/')
                );
                let doc: serde_json::Value = self.get_json(&discovery).await?;
                let jwks_uri = doc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| "the discovery document has no jwks_uri".to_string())?;
                parse(self.get_json(jwks_uri).await?)
            }
            Kind::DevSecret => Err("a development secret has no key set".into()),
        }
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("{url}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_with(payload: serde_json::Value) -> String {
        let part = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            part(&serde_json::json!({"alg": "ES256"})),
            part(&payload)
        )
    }

    #[test]
    fn the_issuer_is_read_before_verification() {
        let token = token_with(serde_json::json!({"iss": "https://issuer"}));
        assert_eq!(unverified_issuer(&token).unwrap(), "https://issuer");
        let no_iss = token_with(serde_json::json!({"sub": "x"}));
        assert_eq!(
            unverified_issuer(&no_iss).unwrap_err().0,
            "The token has no issuer."
        );
        assert_eq!(
            unverified_issuer("garbage").unwrap_err().0,
            "The token is malformed."
        );
    }

    #[test]
    fn app_roles_apply_to_app_only_tokens() {
        let claims = |v: serde_json::Value| serde_json::from_value::<Claims>(v).unwrap();
        let app = principal_of(claims(
            serde_json::json!({"exp": 1, "oid": "OID", "appid": "APP"}),
        ))
        .unwrap();
        assert_eq!(
            (app.id.as_str(), app.app_id.as_deref()),
            ("oid", Some("app"))
        );
        let user = principal_of(claims(
            serde_json::json!({"exp": 1, "sub": "S", "azp": "APP", "scp": "user_impersonation"}),
        ))
        .unwrap();
        assert_eq!((user.id.as_str(), user.app_id), ("s", None));
        assert!(principal_of(claims(serde_json::json!({"exp": 1}))).is_err());
    }

    #[test]
    fn each_issuer_kind_has_its_algorithms() {
        assert_eq!(allowed_algorithms(Kind::BuiltIn), &[Algorithm::ES256]);
        assert!(!allowed_algorithms(Kind::Oidc).contains(&Algorithm::HS256));
        assert_eq!(allowed_algorithms(Kind::DevSecret), &[Algorithm::HS256]);
    }
}
