//! Service principals of the built-in issuer: a client (application) id, an object id, and a
//! secret shown once and stored only as a slow hash.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::secrets::{random_secret, slow_hash, verify_slow_hash};
use crate::db::schema::service_principals;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = service_principals)]
pub struct ServicePrincipal {
    pub client_id: Uuid,
    pub object_id: Uuid,
    pub display_name: String,
    pub secret_hash: String,
}

/// A new principal and its secret (the only time the secret exists in clear).
pub async fn create(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> QueryResult<(ServicePrincipal, String)> {
    let secret = random_secret();
    let sp = ServicePrincipal {
        client_id: Uuid::new_v4(),
        object_id: Uuid::new_v4(),
        display_name: name.to_string(),
        secret_hash: slow_hash(&secret),
    };
    diesel::insert_into(service_principals::table)
        .values((
            service_principals::client_id.eq(sp.client_id),
            service_principals::object_id.eq(sp.object_id),
            service_principals::display_name.eq(&sp.display_name),
            service_principals::secret_hash.eq(&sp.secret_hash),
        ))
        .execute(conn)
        .await?;
    Ok((sp, secret))
}

/// By client id or object id.
pub async fn find(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<Option<ServicePrincipal>> {
    let Ok(id) = id.trim().parse::<Uuid>() else {
        return Ok(None);
    };
    service_principals::table
        .filter(
            service_principals::client_id
                .eq(id)
                .or(service_principals::object_id.eq(id)),
        )
        .select(ServicePrincipal::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<ServicePrincipal>> {
    service_principals::table
        .order(service_principals::created_at)
        .select(ServicePrincipal::as_select())
        .load(conn)
        .await
}

/// Deletes a principal and its role assignments (its tokens then open nothing).
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let found: Option<(Uuid, Uuid)> = service_principals::table
        .filter(
            service_principals::client_id
                .eq(id)
                .or(service_principals::object_id.eq(id)),
        )
        .select((service_principals::client_id, service_principals::object_id))
        .first(conn)
        .await
        .optional()?;
    if let Some((client, object)) = found {
        use crate::db::schema::role_assignments;
        diesel::delete(role_assignments::table.filter(
            role_assignments::principal_id.eq_any([client.to_string(), object.to_string()]),
        ))
        .execute(conn)
        .await?;
    }
    let n = diesel::delete(
        service_principals::table.filter(
            service_principals::client_id
                .eq(id)
                .or(service_principals::object_id.eq(id)),
        ),
    )
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// The principal whose client id and secret these are (the slow hash runs off the async
/// threads).
pub async fn authenticate(
    conn: &mut AsyncPgConnection,
    client_id: &str,
    secret: &str,
) -> QueryResult<Option<ServicePrincipal>> {
    let Ok(client) = client_id.trim().parse::<Uuid>() else {
        return Ok(None);
    };
    let sp: Option<ServicePrincipal> = service_principals::table
        .find(client)
        .select(ServicePrincipal::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(sp) = sp else {
        return Ok(None);
    };
    // One slow hash at a time: a flood of token requests cannot take every core.
    static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _permit = HASHING.acquire().await.ok();
    let (secret, hash) = (secret.to_string(), sp.secret_hash.clone());
    let ok = tokio::task::spawn_blocking(move || verify_slow_hash(&secret, &hash))
        .await
        .unwrap_or(false);
    Ok(ok.then_some(sp))
}
