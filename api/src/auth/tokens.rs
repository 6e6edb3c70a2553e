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

/// A key refresh claimed by one request. If that request goes away before the keys arrive
/// (its connection ended), the claim is given back: otherwise the issuer's new keys would stay
/// unknown, and their tokens refused, until [`REFRESH_INTERVAL`] passes.
struct RefreshClaim<'a> {
    keys: &'a Mutex<HashMap<String, Keys>>,
    iss: &'a str,
    /// The time of the refresh before this one, while the claim may still be given back.
    previous: Option<Option<Instant>>,
}

impl<'a> RefreshClaim<'a> {
    fn take(keys: &'a Mutex<HashMap<String, Keys>>, iss: &'a str) -> RefreshClaim<'a> {
        let mut map = keys.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(iss.to_string()).or_default();
        let previous = entry.refreshed.replace(Instant::now());
        RefreshClaim {
            keys,
            iss,
            previous: Some(previous),
        }
    }

    /// The fetch ended (with keys or not): the claim stands.
    fn keep(&mut self) {
        self.previous = None;
    }
}

impl Drop for RefreshClaim<'_> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take()
            && let Some(k) = self
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(self.iss)
        {
            k.refreshed = previous;
        }
    }
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

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// ⌊n / 2⌋: the largest low `s`.
const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// The `s` half of an ES256 token's signature (`r ‖ s`, 64 bytes, canonical base64url).
fn es256_s(token: &str) -> Option<[u8; 32]> {
    let sig = URL_SAFE_NO_PAD.decode(token.rsplit('.').next()?).ok()?;
    sig.get(32..64)?.try_into().ok().filter(|_| sig.len() == 64)
}

/// Whether an ES256 token's signature has a low `s` (s ≤ n/2). (r, s) and (r, n − s) both verify:
/// accepting only the low one keeps a token one string (and the built-in issuer mints only
/// those, see [`with_low_s`]).
pub(crate) fn has_low_s(token: &str) -> bool {
    // Equal-length big-endian numbers compare as byte strings.
    es256_s(token).is_some_and(|s| s <= P256_HALF_ORDER)
}

/// An ES256 token with its signature's `s` replaced by n − s when it is high: the same
/// signature, in the one form [`has_low_s`] accepts.
pub(crate) fn with_low_s(token: String) -> String {
    let Some(s) = es256_s(&token).filter(|s| *s > P256_HALF_ORDER) else {
        return token;
    };
    let mut low = [0u8; 32];
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let d = u16::from(P256_ORDER[i]).wrapping_sub(u16::from(s[i]) + borrow);
        low[i] = (d & 0xff) as u8;
        borrow = u16::from(d > 0xff);
    }
    let Some((signed, sig)) = token.rsplit_once('.') else {
        return token;
    };
    let Ok(mut sig) = URL_SAFE_NO_PAD.decode(sig) else {
        return token;
    };
    sig[32..].copy_from_slice(&low);
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
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
        // Built-in tokens are minted with a low s; other issuers' ES256 signers (most do not
        // normalise s) are taken as RFC 7518 defines them.
        if kind == Kind::BuiltIn && !has_low_s(token) {
            return Err(invalid(
                "The token's signature is invalid (not the canonical low-s ES256 form).",
            ));
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
            let mut claim = RefreshClaim::take(&self.keys, iss);
            let fetched = self.fetch(config, kind, iss).await;
            claim.keep();
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
    fn es256_signatures_are_normalised_to_a_low_s() {
        let token_with_s = |s: [u8; 32]| {
            let mut sig = vec![7u8; 32];
            sig.extend_from_slice(&s);
            format!("h.p.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        let mut high = P256_HALF_ORDER;
        high[31] += 1;
        assert!(has_low_s(&token_with_s(P256_HALF_ORDER)));
        assert!(!has_low_s(&token_with_s(high)));
        assert!(!has_low_s("h.p.c2hvcnQ"));
        // n − (⌊n/2⌋ + 1) = ⌊n/2⌋ (n is odd).
        assert_eq!(
            with_low_s(token_with_s(high)),
            token_with_s(P256_HALF_ORDER)
        );
        let mut one = [0u8; 32];
        one[31] = 1;
        let mut n_minus_one = P256_ORDER;
        n_minus_one[31] -= 1;
        assert_eq!(with_low_s(token_with_s(n_minus_one)), token_with_s(one));
        let low = token_with_s(one);
        assert_eq!(with_low_s(low.clone()), low);
    }

    /// A validator trusting a JWKS file with the tests' RSA key, and a token of that key.
    fn file_issuer() -> (Validator, AuthConfig, String) {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let iss = "https://issuer.test.invalid/";
        let jwk: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join("rsa-test-key.jwk.json")).unwrap(),
        )
        .unwrap();
        let jwks = std::env::temp_dir().join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
        let config = AuthConfig {
            enabled: true,
            tenant: "t".into(),
            issuer: "https://builtin.test.invalid/".into(),
            audiences: vec!["https://management.azure.com".into()],
            token_ttl: Duration::from_secs(3600),
            oidc_issuers: vec![],
            jwks_file: Some((jwks, iss.into())),
            dev_hs256: None,
            rate_per_second: 0.0,
            rate_burst: 0.0,
            agent_credential_ttl: Duration::from_secs(3600),
        };
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"iss": iss, "aud": "https://management.azure.com",
            "oid": "o", "iat": now, "nbf": now, "exp": now + 600});
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-test-1".into());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(fixtures.join("rsa-test-key.pem")).unwrap(),
        )
        .unwrap();
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        // Never connected: the file issuer's keys need no database.
        let pool = crate::db::pool("postgres://nobody@127.0.0.1:1/none", 1).unwrap();
        (Validator::new(pool), config, token)
    }

    #[tokio::test]
    async fn a_key_refresh_given_up_midway_is_done_by_the_next_request() {
        use futures_util::FutureExt;
        let (validator, config, token) = file_issuer();
        // The first request goes away while the keys are being read (its client left).
        let first = validator.validate(&config, &token).now_or_never();
        assert!(first.is_none(), "the keys were read at once");
        let principal = validator.validate(&config, &token).await.unwrap();
        assert_eq!(principal.id, "o");
    }

    #[test]
    fn each_issuer_kind_has_its_algorithms() {
        assert_eq!(allowed_algorithms(Kind::BuiltIn), &[Algorithm::ES256]);
        assert!(!allowed_algorithms(Kind::Oidc).contains(&Algorithm::HS256));
        assert_eq!(allowed_algorithms(Kind::DevSecret), &[Algorithm::HS256]);
    }
}
