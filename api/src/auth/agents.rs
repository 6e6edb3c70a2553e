//! Agent identities: enrollment tokens (`capture-api agent-tokens`), redeemed once (or, if
//! reusable, until they expire or are revoked) for a credential bound to one machine, which
//! must lie inside the token's scope. Credentials expire and are rotated by the agent; revoking
//! a machine (`capture-api agents revoke`) ends its access at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::rbac::{covers, scope_key, valid_scope};
use super::secrets::{fast_hash, random_secret};
use crate::db::schema::{agent_tokens, machines};
use crate::error::{ApiError, ApiResult, ErrorCode};

/// Prefix of enrollment tokens: `cet_<id>.<secret>`.
pub const ENROLLMENT_PREFIX: &str = "cet_";
/// Prefix of agent credentials: `cac_<secret>`.
pub const CREDENTIAL_PREFIX: &str = "cac_";
/// How long the previous credential keeps working after a rotation.
const ROTATION_GRACE: Duration = Duration::from_secs(600);

pub(crate) fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::AgentNotAuthorized, message.into())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = agent_tokens)]
pub struct AgentToken {
    pub id: Uuid,
    pub secret_hash: String,
    pub scope: String,
    pub scope_key: String,
    pub reusable: bool,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub uses: i32,
}

/// A new enrollment token (shown once).
pub async fn create_token(
    conn: &mut AsyncPgConnection,
    scope: &str,
    ttl: Duration,
    reusable: bool,
) -> ApiResult<(Uuid, String)> {
    if !valid_scope(scope) {
        return Err(ApiError::new(
            ErrorCode::InvalidScope,
            format!(
                "'{scope}' is not a scope (/, /subscriptions/{{s}} or /subscriptions/{{s}}/resourceGroups/{{rg}})."
            ),
        ));
    }
    let id = Uuid::new_v4();
    let secret = random_secret();
    diesel::insert_into(agent_tokens::table)
        .values((
            agent_tokens::id.eq(id),
            agent_tokens::secret_hash.eq(fast_hash(&secret)),
            agent_tokens::scope.eq(scope),
            agent_tokens::scope_key.eq(scope_key(scope)),
            agent_tokens::reusable.eq(reusable),
            agent_tokens::expires_at.eq(Utc::now() + ttl),
        ))
        .execute(conn)
        .await?;
    Ok((id, format!("{ENROLLMENT_PREFIX}{}.{secret}", id.simple())))
}

pub async fn list_tokens(conn: &mut AsyncPgConnection) -> QueryResult<Vec<AgentToken>> {
    agent_tokens::table
        .order(agent_tokens::created_at)
        .select(AgentToken::as_select())
        .load(conn)
        .await
}

pub async fn revoke_token(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    Ok(diesel::update(agent_tokens::table.find(id))
        .set(agent_tokens::revoked_at.eq(Utc::now()))
        .execute(conn)
        .await?
        > 0)
}

/// Whether the bearer of a registration is worth reading the body for: an enrollment token that
/// can still be redeemed, or some machine's current credential (401 otherwise). Which machine it
/// may register is decided once the body names it ([`redeem`], or the credential's own machine).
pub async fn check_registration_bearer(
    conn: &mut AsyncPgConnection,
    bearer: &AgentBearer,
) -> ApiResult<()> {
    match bearer.0.as_deref() {
        None => Ok(()),
        Some(t) if t.starts_with(ENROLLMENT_PREFIX) => {
            usable_token(conn, t, false).await.map(|_| ())
        }
        Some(t) if t.starts_with(CREDENTIAL_PREFIX) => {
            let known: bool = diesel::select(diesel::dsl::exists(
                machines::table.filter(credential_matches(t)),
            ))
            .get_result(conn)
            .await?;
            if known {
                Ok(())
            } else {
                Err(unauthorized(
                    "The credential is not a machine's, or it expired or was revoked.",
                ))
            }
        }
        Some(_) => Err(unauthorized(
            "Register with an enrollment token (cet_...) or the machine's credential (cac_...).",
        )),
    }
}

/// The enrollment token `token` (`cet_<id>.<secret>`), if it can enroll now: not revoked,
/// expired or used up, and its secret matches; else 401. `lock` holds it until the transaction
/// ends (a redemption counts a use).
async fn usable_token(
    conn: &mut AsyncPgConnection,
    token: &str,
    lock: bool,
) -> ApiResult<AgentToken> {
    let refused = || unauthorized("The enrollment token is invalid, expired, revoked or used.");
    let (id, secret) = token
        .strip_prefix(ENROLLMENT_PREFIX)
        .and_then(|t| t.split_once('.'))
        .ok_or_else(refused)?;
    let id: Uuid = id.parse().map_err(|_| refused())?;
    let query = agent_tokens::table.find(id).select(AgentToken::as_select());
    let t: AgentToken = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    }
    .ok_or_else(refused)?;
    let fresh = t.revoked_at.is_none()
        && t.expires_at > Utc::now()
        && (t.reusable || t.uses == 0)
        && t.secret_hash == fast_hash(secret);
    if !fresh {
        return Err(refused());
    }
    Ok(t)
}

/// Redeems an enrollment token for `machine_key` (inside the caller's transaction).
pub async fn redeem(conn: &mut AsyncPgConnection, token: &str, machine_key: &str) -> ApiResult<()> {
    let t = usable_token(conn, token, true).await?;
    // A revoked machine stays revoked until an administrator allows it to enroll again
    // (`capture-api agents re-enroll`).
    let revoked: bool = diesel::select(diesel::dsl::exists(
        machines::table
            .filter(machines::resource_key.eq(machine_key))
            .filter(machines::revoked_at.is_not_null()),
    ))
    .get_result(conn)
    .await?;
    if revoked {
        return Err(ApiError::new(
            ErrorCode::AgentRevoked,
            "This machine's agent was revoked; an administrator must allow it to enroll again.",
        ));
    }
    if !covers(&t.scope_key, machine_key) {
        return Err(ApiError::new(
            ErrorCode::MachineOutsideTokenScope,
            format!(
                "The enrollment token is for machines under '{}'; this machine is not.",
                t.scope
            ),
        ));
    }
    diesel::update(agent_tokens::table.find(t.id))
        .set(agent_tokens::uses.eq(agent_tokens::uses + 1))
        .execute(conn)
        .await?;
    Ok(())
}

/// A fresh credential for the machine; the previous one (if any) keeps working for
/// [`ROTATION_GRACE`].
pub async fn issue_credential(
    conn: &mut AsyncPgConnection,
    machine_key: &str,
    ttl: Duration,
) -> ApiResult<(String, DateTime<Utc>)> {
    let credential = format!("{CREDENTIAL_PREFIX}{}", random_secret());
    let expires = Utc::now() + ttl;
    diesel::update(machines::table.find(machine_key))
        .set((
            machines::previous_credential_hash.eq(machines::credential_hash),
            machines::previous_credential_until.eq(Utc::now() + ROTATION_GRACE),
            machines::credential_hash.eq(fast_hash(&credential)),
            machines::credential_expires_at.eq(expires),
        ))
        .execute(conn)
        .await?;
    Ok((credential, expires))
}

/// Rotates the credential of `agent_id`'s machine, only if `current` is its current credential
/// (not the previous one) and the machine is not revoked: one statement, so a revocation cannot
/// slip in between.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    agent_id: Uuid,
    current: &str,
    ttl: Duration,
) -> ApiResult<Option<(String, String, DateTime<Utc>)>> {
    let credential = format!("{CREDENTIAL_PREFIX}{}", random_secret());
    let expires = Utc::now() + ttl;
    let machine: Option<String> = diesel::update(
        machines::table
            .filter(machines::agent_id.eq(agent_id))
            .filter(machines::credential_hash.eq(fast_hash(current)))
            .filter(machines::credential_expires_at.gt(Utc::now()))
            .filter(machines::revoked_at.is_null()),
    )
    .set((
        machines::previous_credential_hash.eq(machines::credential_hash),
        machines::previous_credential_until.eq(Utc::now() + ROTATION_GRACE),
        machines::credential_hash.eq(fast_hash(&credential)),
        machines::credential_expires_at.eq(expires),
    ))
    .returning(machines::resource_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(machine.map(|m| (m, credential, expires)))
}

/// Lets a revoked machine enroll again (with a new enrollment token).
pub async fn allow_enrollment(
    conn: &mut AsyncPgConnection,
    machine_key: &str,
) -> QueryResult<bool> {
    let n = diesel::update(machines::table.find(machine_key))
        .set(machines::revoked_at.eq(None::<DateTime<Utc>>))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Whether `credential` is the current (or, just after a rotation, the previous) credential of
/// the machine, which is not revoked. Used as a filter on `machines`.
pub fn credential_matches(
    credential: &str,
) -> Box<dyn BoxableExpression<machines::table, diesel::pg::Pg, SqlType = diesel::sql_types::Bool>>
{
    let h = fast_hash(credential);
    let now = Utc::now();
    Box::new(
        machines::revoked_at.is_null().and(
            machines::credential_hash
                .eq(h.clone())
                .and(machines::credential_expires_at.gt(now))
                .or(machines::previous_credential_hash
                    .eq(h)
                    .and(machines::previous_credential_until.gt(now)))
                .assume_not_null(),
        ),
    )
}

/// Revokes a machine's agent: its credential stops working at once.
pub async fn revoke_machine(conn: &mut AsyncPgConnection, machine_key: &str) -> QueryResult<bool> {
    let n = diesel::update(machines::table.find(machine_key))
        .set((
            machines::revoked_at.eq(Some(Utc::now())),
            machines::credential_hash.eq(None::<String>),
            machines::previous_credential_hash.eq(None::<String>),
        ))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// The bearer credential of an agent request (`None` when authentication is disabled).
pub struct AgentBearer(pub Option<String>);

impl actix_web::FromRequest for AgentBearer {
    type Error = ApiError;
    type Future = std::future::Ready<Result<AgentBearer, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let enabled = req
            .app_data::<actix_web::web::Data<super::Auth>>()
            .is_none_or(|a| a.config.enabled);
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        std::future::ready(match (enabled, bearer) {
            // Authentication disabled: no credential is checked (nor kept).
            (false, _) => Ok(AgentBearer(None)),
            (true, Some(b)) => Ok(AgentBearer(Some(b))),
            (true, None) => Err(unauthorized(
                "Agent requests need 'Authorization: Bearer <credential or enrollment token>'.",
            )),
        })
    }
}
