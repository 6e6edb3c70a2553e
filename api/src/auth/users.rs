//! People who sign in through the built-in issuer: a name, an object id (the `oid`/`sub` of
//! their tokens, which role assignments name) and a password stored only as a slow hash (the
//! hashing of service principal secrets), or none (sign-in links only).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::secrets::{fast_hash, random_secret, slow_hash, verify_slow_hash};
use crate::db::schema::{refresh_tokens, role_assignments, sign_in_links, users};

/// Longest user name.
pub const MAX_NAME_CHARS: usize = 64;
/// Shortest and longest password (bytes of UTF-8 for the longest).
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Lifetime of a one-time sign-in link.
pub const SIGN_IN_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// The user of the embedded default's demo (Owner of the demo subscription, no password).
pub const DEMO_USER: &str = "demo";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub password_hash: Option<String>,
}

/// Why a name cannot be a user's: 1-64 letters, digits and `._-@`.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(format!("a user name has 1 to {MAX_NAME_CHARS} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err("a user name holds only letters, digits and . _ - @".into());
    }
    Ok(())
}

/// Why a password cannot be used: 8 characters at least, 1024 bytes at most, no control
/// characters.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("a password has at most {MAX_PASSWORD_BYTES} bytes"));
    }
    if password.chars().any(char::is_control) {
        return Err("a password holds no control characters".into());
    }
    Ok(())
}

fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Hashes off the async threads, one at a time (a flood of sign-ins cannot take every core).
async fn hash_blocking(password: Option<&str>) -> Option<String> {
    let password = password?.to_string();
    tokio::task::spawn_blocking(move || slow_hash(&password))
        .await
        .ok()
}

/// A new user; `password` None: no usable password.
pub async fn create(
    conn: &mut AsyncPgConnection,
    name: &str,
    password: Option<&str>,
) -> QueryResult<User> {
    let user = User {
        id: Uuid::new_v4(),
        name: name.trim().to_string(),
        password_hash: hash_blocking(password).await,
    };
    diesel::insert_into(users::table)
        .values((
            users::id.eq(user.id),
            users::name.eq(&user.name),
            users::name_key.eq(key(&user.name)),
            users::password_hash.eq(&user.password_hash),
        ))
        .execute(conn)
        .await?;
    Ok(user)
}

pub async fn find(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::name_key.eq(key(name)))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn by_id(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<User>> {
    users::table
        .order(users::name_key)
        .select(User::as_select())
        .load(conn)
        .await
}

/// Deletes a user, their role assignments and sessions; false when there is no such user.
pub async fn delete(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<bool> {
    let Some(user) = find(conn, name).await? else {
        return Ok(false);
    };
    diesel::delete(
        role_assignments::table.filter(role_assignments::principal_id.eq(user.id.to_string())),
    )
    .execute(conn)
    .await?;
    // Codes, refresh tokens and links go with the row (ON DELETE CASCADE).
    diesel::delete(users::table.find(user.id))
        .execute(conn)
        .await?;
    Ok(true)
}

/// Sets (or, with None, removes) a user's password and ends their sessions; false when there
/// is no such user.
pub async fn set_password(
    conn: &mut AsyncPgConnection,
    name: &str,
    password: Option<&str>,
) -> QueryResult<bool> {
    let Some(user) = find(conn, name).await? else {
        return Ok(false);
    };
    let hash = hash_blocking(password).await;
    diesel::update(users::table.find(user.id))
        .set(users::password_hash.eq(hash))
        .execute(conn)
        .await?;
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user.id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(true)
}

/// The user a sign-in names, if any (names longer than a name can be are nobody's).
pub async fn candidate(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<Option<User>> {
    if name.chars().count() <= MAX_NAME_CHARS {
        find(conn, name).await
    } else {
        Ok(None)
    }
}

/// `user` if `password` is theirs; no database connection is held meanwhile. Hashes run one at
/// a time, off the async threads, and no user costs the same hash as a wrong password.
pub async fn verify(user: Option<User>, password: &str) -> Option<User> {
    static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _permit = HASHING.acquire().await.ok();
    // A hash that no password matches, computed as long as a real one.
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || {
        let decoy = DECOY.get_or_init(|| slow_hash(&random_secret()));
        match stored {
            Some(hash) => verify_slow_hash(&password, &hash),
            None => {
                let _ = verify_slow_hash(&password, decoy);
                false
            }
        }
    })
    .await
    .unwrap_or(false);
    if ok { user } else { None }
}

/// The console's address that signs `token` in: `{base}/?signin={token}`.
pub fn sign_in_url(base: &str, token: &str) -> String {
    format!("{}/?signin={token}", base.trim_end_matches('/'))
}

/// A new one-time sign-in link token for a user (shown only now; valid [`SIGN_IN_LINK_TTL`]).
pub async fn create_sign_in_link(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<String> {
    let token = random_secret();
    // Expired links are of no use: they go with each new one.
    diesel::delete(sign_in_links::table.filter(sign_in_links::expires_at.lt(diesel::dsl::now)))
        .execute(conn)
        .await?;
    diesel::insert_into(sign_in_links::table)
        .values((
            sign_in_links::token_hash.eq(fast_hash(&token)),
            sign_in_links::user_id.eq(user),
            sign_in_links::expires_at
                .eq(chrono::Utc::now()
                    + chrono::Duration::seconds(SIGN_IN_LINK_TTL.as_secs() as i64)),
        ))
        .execute(conn)
        .await?;
    Ok(token)
}

/// Redeems a sign-in link token: its user, once; None when unknown, used or expired.
pub async fn redeem_sign_in_link(
    conn: &mut AsyncPgConnection,
    token: &str,
) -> QueryResult<Option<User>> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let user: Option<Uuid> = diesel::update(
        sign_in_links::table
            .filter(sign_in_links::token_hash.eq(fast_hash(token)))
            .filter(sign_in_links::used_at.is_null())
            .filter(sign_in_links::expires_at.gt(diesel::dsl::now)),
    )
    .set(sign_in_links::used_at.eq(diesel::dsl::now))
    .returning(sign_in_links::user_id)
    .get_result(conn)
    .await
    .optional()?;
    match user {
        Some(id) => by_id(conn, id).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords_are_bounded() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("a.b-c_d@example").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_name("with space").is_err());
        assert!(check_name("nul\0").is_err());
        assert!(check_password("correct horse").is_ok());
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(1025)).is_err());
        assert!(check_password("tab\there!").is_err());
    }
}
