//! Sessions of people signed in through the built-in issuer: authorization codes (PKCE S256),
//! rotating refresh tokens, the tokens minted for users, and the throttling of failed sign-ins.
//!
//! - A code is single use (deleted when redeemed), valid [`CODE_TTL`], bound to the client, the
//!   redirect URI and the PKCE challenge.
//! - A sign-in starts a refresh token *family* that ends [`SESSION_TTL`] after the sign-in
//!   (fixed, not sliding). Each refresh token works once and is replaced by a new one of the
//!   family; presenting one that was already exchanged revokes the whole family (it was stolen
//!   or replayed). Sign-out revokes the family.
//! - Only SHA-256 hashes of codes and refresh tokens are stored.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use super::keys::Signer;
use super::secrets::{fast_hash, random_secret};
use super::users::User;
use crate::db::schema::{authorization_codes, refresh_tokens, sign_in_failures};
use crate::error::{ApiError, ApiResult};

/// The console's client id at the built-in issuer: a public client (no secret), whose redirect
/// URIs are this server's own origin.
pub const CONSOLE_CLIENT_ID: &str = "00000000-0000-0000-0000-000000c0501e";
/// Lifetime of an authorization code.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// Lifetime of a session (a refresh token family), from the sign-in: a working day.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins allowed per user name, and per client address, in [`FAILURE_WINDOW`].
pub const MAX_FAILURES: i64 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The scope delegated tokens carry (`scp`).
pub const USER_SCOPE: &str = "user_impersonation";
/// Longest code, refresh token, verifier or challenge accepted.
pub const MAX_TOKEN_CHARS: usize = 256;

fn at(d: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::seconds(d.as_secs() as i64)
}

/// The S256 challenge of a PKCE verifier.
pub fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Whether a PKCE verifier has RFC 7636's shape: 43-128 characters of `A-Z a-z 0-9 - . _ ~`.
pub fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether a code challenge has the shape of an S256 challenge (43 base64url characters).
pub fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Constant-time equality of two strings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What an authorization code was issued for.
pub struct CodeGrant {
    pub user_id: Uuid,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub nonce: Option<String>,
}

/// A new authorization code (shown only to the redirect).
pub async fn create_code(conn: &mut AsyncPgConnection, grant: &CodeGrant) -> QueryResult<String> {
    let code = random_secret();
    diesel::delete(
        authorization_codes::table.filter(authorization_codes::expires_at.lt(diesel::dsl::now)),
    )
    .execute(conn)
    .await?;
    diesel::insert_into(authorization_codes::table)
        .values((
            authorization_codes::code_hash.eq(fast_hash(&code)),
            authorization_codes::user_id.eq(grant.user_id),
            authorization_codes::client_id.eq(&grant.client_id),
            authorization_codes::redirect_uri.eq(&grant.redirect_uri),
            authorization_codes::code_challenge.eq(&grant.code_challenge),
            authorization_codes::scope.eq(&grant.scope),
            authorization_codes::nonce.eq(&grant.nonce),
            authorization_codes::expires_at.eq(at(CODE_TTL)),
        ))
        .execute(conn)
        .await?;
    Ok(code)
}

/// Why a code or refresh token is refused (an OAuth `invalid_grant`).
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidGrant(pub &'static str);

/// Redeems a code (it is gone afterwards, whatever the outcome): the grant, once the client,
/// redirect URI and verifier match.
pub async fn redeem_code(
    conn: &mut AsyncPgConnection,
    code: &str,
    client_id: &str,
    redirect_uri: &str,
    verifier: &str,
) -> QueryResult<Result<CodeGrant, InvalidGrant>> {
    if code.is_empty() || code.len() > MAX_TOKEN_CHARS {
        return Ok(Err(InvalidGrant("The authorization code is not valid.")));
    }
    type Row = (
        Uuid,
        String,
        String,
        String,
        String,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
    );
    let row: Option<Row> = diesel::delete(
        authorization_codes::table.filter(authorization_codes::code_hash.eq(fast_hash(code))),
    )
    .returning((
        authorization_codes::user_id,
        authorization_codes::client_id,
        authorization_codes::redirect_uri,
        authorization_codes::code_challenge,
        authorization_codes::scope,
        authorization_codes::nonce,
        authorization_codes::expires_at,
    ))
    .get_result(conn)
    .await
    .optional()?;
    let Some((user_id, code_client, code_redirect, challenge, scope, nonce, expires)) = row else {
        return Ok(Err(InvalidGrant(
            "The authorization code is not valid (unknown, expired or already used).",
        )));
    };
    if expires < chrono::Utc::now() {
        return Ok(Err(InvalidGrant("The authorization code has expired.")));
    }
    if code_client != client_id {
        return Ok(Err(InvalidGrant(
            "The authorization code was issued to another client.",
        )));
    }
    if code_redirect != redirect_uri {
        return Ok(Err(InvalidGrant(
            "The redirect_uri differs from the one of the authorization request.",
        )));
    }
    if !valid_verifier(verifier) || !same(&s256(verifier), &challenge) {
        return Ok(Err(InvalidGrant(
            "The code_verifier does not match the code_challenge.",
        )));
    }
    Ok(Ok(CodeGrant {
        user_id,
        client_id: code_client,
        redirect_uri: code_redirect,
        code_challenge: challenge,
        scope,
        nonce,
    }))
}

/// A session's next refresh token.
async fn insert_refresh(
    conn: &mut AsyncPgConnection,
    family: Uuid,
    user: Uuid,
    client_id: &str,
    scope: &str,
    expires: chrono::DateTime<chrono::Utc>,
) -> QueryResult<String> {
    let token = random_secret();
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(fast_hash(&token)),
            refresh_tokens::family_id.eq(family),
            refresh_tokens::user_id.eq(user),
            refresh_tokens::client_id.eq(client_id),
            refresh_tokens::scope.eq(scope),
            refresh_tokens::expires_at.eq(expires),
        ))
        .execute(conn)
        .await?;
    Ok(token)
}

/// A new session (refresh token family) for a user: its first refresh token and its end.
pub async fn start_session(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    client_id: &str,
    scope: &str,
) -> QueryResult<(String, chrono::DateTime<chrono::Utc>)> {
    // Ended sessions are of no use: they go with each new one.
    diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.lt(diesel::dsl::now)))
        .execute(conn)
        .await?;
    let ends = at(SESSION_TTL);
    let token = insert_refresh(conn, Uuid::new_v4(), user, client_id, scope, ends).await?;
    Ok((token, ends))
}

/// A refresh token exchanged for its successor: the user, the scope, the new token and the
/// session's end.
pub struct Rotated {
    pub user_id: Uuid,
    pub scope: String,
    pub refresh_token: String,
    pub session_ends: chrono::DateTime<chrono::Utc>,
}

/// Exchanges a refresh token (once) for the next one of its session. A token exchanged before
/// revokes its whole session.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    token: &str,
    client_id: &str,
) -> QueryResult<Result<Rotated, InvalidGrant>> {
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Ok(Err(InvalidGrant("The refresh token is not valid.")));
    }
    let hash = fast_hash(token);
    let claimed: Option<(Uuid, Uuid, String, String, chrono::DateTime<chrono::Utc>)> =
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::token_hash.eq(&hash))
                .filter(refresh_tokens::used_at.is_null())
                .filter(refresh_tokens::revoked_at.is_null())
                .filter(refresh_tokens::expires_at.gt(diesel::dsl::now)),
        )
        .set(refresh_tokens::used_at.eq(diesel::dsl::now))
        .returning((
            refresh_tokens::family_id,
            refresh_tokens::user_id,
            refresh_tokens::client_id,
            refresh_tokens::scope,
            refresh_tokens::expires_at,
        ))
        .get_result(conn)
        .await
        .optional()?;
    let Some((family, user, token_client, scope, ends)) = claimed else {
        // Replayed (already exchanged): the session is no longer trusted.
        let replayed: Option<Uuid> = refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(&hash))
            .filter(refresh_tokens::used_at.is_not_null())
            .select(refresh_tokens::family_id)
            .first(conn)
            .await
            .optional()?;
        if let Some(family) = replayed {
            revoke_family(conn, family).await?;
            tracing::warn!(session = %family, "a refresh token was used twice: its session is revoked");
        }
        return Ok(Err(InvalidGrant(
            "The refresh token is not valid (unknown, expired, revoked or already used).",
        )));
    };
    if token_client != client_id {
        revoke_family(conn, family).await?;
        return Ok(Err(InvalidGrant(
            "The refresh token was issued to another client.",
        )));
    }
    let next = insert_refresh(conn, family, user, &token_client, &scope, ends).await?;
    Ok(Ok(Rotated {
        user_id: user,
        scope,
        refresh_token: next,
        session_ends: ends,
    }))
}

async fn revoke_family(conn: &mut AsyncPgConnection, family: Uuid) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
}

/// Sign-out: revokes the session of a refresh token (any token of it, used or not). Whether
/// there was one.
pub async fn revoke(conn: &mut AsyncPgConnection, token: &str) -> QueryResult<bool> {
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Ok(false);
    }
    let family: Option<Uuid> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(fast_hash(token)))
        .select(refresh_tokens::family_id)
        .first(conn)
        .await
        .optional()?;
    match family {
        Some(f) => Ok(revoke_family(conn, f).await? > 0),
        None => Ok(false),
    }
}

/// Throttling keys of a sign-in attempt: the user name and the client address.
pub fn failure_keys(name: &str, client: Option<std::net::IpAddr>) -> Vec<String> {
    let mut keys = vec![format!(
        "user:{}",
        name.trim()
            .to_lowercase()
            .chars()
            .take(super::users::MAX_NAME_CHARS)
            .collect::<String>()
    )];
    if let Some(ip) = client {
        keys.push(format!("address:{ip}"));
    }
    keys
}

/// How long until the oldest of the last [`MAX_FAILURES`] failures of `key` leaves the window,
/// when there are that many in it.
async fn wait_of(
    conn: &mut AsyncPgConnection,
    key: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> QueryResult<Option<Duration>> {
    let times: Vec<chrono::DateTime<chrono::Utc>> = sign_in_failures::table
        .filter(sign_in_failures::key.eq(key))
        .filter(sign_in_failures::failed_at.gt(since))
        .order(sign_in_failures::failed_at.desc())
        .limit(MAX_FAILURES)
        .select(sign_in_failures::failed_at)
        .load(conn)
        .await?;
    Ok(match times.last() {
        Some(oldest) if times.len() as i64 >= MAX_FAILURES => Some(Duration::from_secs(
            (*oldest - since).num_seconds().max(1) as u64,
        )),
        _ => None,
    })
}

/// Starts a password sign-in under the throttling `keys`: refused with the wait when one of
/// them had [`MAX_FAILURES`] failures in [`FAILURE_WINDOW`]; else the attempt is recorded as a
/// failure at once (the ids of its rows), which [`attempt_succeeded`] takes back. Checked and
/// recorded under a lock per key, so that concurrent guesses cannot all pass the check.
pub async fn begin_attempt(
    conn: &mut AsyncPgConnection,
    keys: &[String],
) -> QueryResult<Result<Vec<i64>, Duration>> {
    use diesel_async::AsyncConnection;
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let since = chrono::Utc::now() - chrono::Duration::seconds(FAILURE_WINDOW.as_secs() as i64);
        for key in &keys {
            diesel::sql_query("SELECT pg_advisory_xact_lock(7345002, hashtext($1))")
                .bind::<diesel::sql_types::Text, _>(key)
                .execute(conn)
                .await?;
        }
        let mut wait: Option<Duration> = None;
        for key in &keys {
            if let Some(w) = wait_of(conn, key, since).await? {
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        if let Some(w) = wait {
            return Ok(Err(w));
        }
        diesel::delete(sign_in_failures::table.filter(sign_in_failures::failed_at.lt(since)))
            .execute(conn)
            .await?;
        let rows: Vec<_> = keys.iter().map(|k| sign_in_failures::key.eq(k)).collect();
        let ids: Vec<i64> = diesel::insert_into(sign_in_failures::table)
            .values(&rows)
            .returning(sign_in_failures::id)
            .get_results(conn)
            .await?;
        Ok(Ok(ids))
    })
    .await
}

/// A sign-in begun with [`begin_attempt`] succeeded: its rows go, and so do the user's earlier
/// failures (the address's stay).
pub async fn attempt_succeeded(
    conn: &mut AsyncPgConnection,
    name: &str,
    ids: &[i64],
) -> QueryResult<()> {
    let keys = failure_keys(name, None);
    diesel::delete(
        sign_in_failures::table.filter(
            sign_in_failures::id
                .eq_any(ids)
                .or(sign_in_failures::key.eq_any(keys)),
        ),
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    sub: String,
    oid: String,
    name: &'a str,
    preferred_username: &'a str,
    azp: &'a str,
    scp: &'a str,
    tid: &'a str,
    idtyp: &'a str,
    ver: &'a str,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    sub: String,
    oid: String,
    name: &'a str,
    preferred_username: &'a str,
    tid: &'a str,
    ver: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

/// Where the built-in issuer's user tokens come from and what they are for.
pub struct Issuer<'a> {
    pub issuer: &'a str,
    pub tenant: &'a str,
    pub signer: &'a Signer,
    pub ttl: Duration,
}

fn sign<T: Serialize>(signer: &Signer, claims: &T) -> ApiResult<String> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &signer.key)
        .map(super::tokens::with_low_s)
        .map_err(|e| ApiError::internal(format!("cannot sign a token: {e}")))
}

impl Issuer<'_> {
    /// A delegated access token for `user` (its object id as `oid` and `sub`, its name), for
    /// `audience`, through `client_id`.
    pub fn access_token(&self, user: &User, client_id: &str, audience: &str) -> ApiResult<String> {
        let now = chrono::Utc::now().timestamp();
        sign(
            self.signer,
            &AccessClaims {
                aud: audience,
                iss: self.issuer,
                iat: now,
                nbf: now,
                exp: now + self.ttl.as_secs() as i64,
                sub: user.id.to_string(),
                oid: user.id.to_string(),
                name: &user.name,
                preferred_username: &user.name,
                azp: client_id,
                scp: USER_SCOPE,
                tid: self.tenant,
                idtyp: "user",
                ver: "2.0",
            },
        )
    }

    /// An OpenID Connect ID token for `user`, for the client.
    pub fn id_token(&self, user: &User, client_id: &str, nonce: Option<&str>) -> ApiResult<String> {
        let now = chrono::Utc::now().timestamp();
        sign(
            self.signer,
            &IdClaims {
                aud: client_id,
                iss: self.issuer,
                iat: now,
                nbf: now,
                exp: now + self.ttl.as_secs() as i64,
                sub: user.id.to_string(),
                oid: user.id.to_string(),
                name: &user.name,
                preferred_username: &user.name,
                tid: self.tenant,
                ver: "2.0",
                nonce,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(valid_verifier(verifier));
        assert!(valid_challenge(&s256(verifier)));
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(50))));
        assert!(!valid_challenge("plain-challenge"));
    }

    #[test]
    fn comparisons_need_equal_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn failures_count_per_name_and_address() {
        let keys = failure_keys(" Alice ", Some("127.0.0.2".parse().unwrap()));
        assert_eq!(
            keys,
            vec!["user:alice".to_string(), "address:127.0.0.2".to_string()]
        );
        assert_eq!(failure_keys(&"x".repeat(500), None)[0].len(), 5 + 64);
    }
}
