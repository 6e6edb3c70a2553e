//! The database: connection pool, embedded migrations, schema and row models.

pub mod captures;
pub mod diagnose;
pub mod file_set;
pub mod machines;
pub mod models;
pub mod schema;
pub mod states;
pub mod triggers;
pub mod watchers;

use std::time::Duration;

use crate::error::StartupError;
use diesel::Connection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = Object<AsyncPgConnection>;

/// Builds the pool. Connections are made lazily: a database that is down at start or later
/// makes requests fail with 503 until it is back, without a restart.
pub fn pool(database_url: &str, max_size: usize) -> Result<DbPool, StartupError> {
    // Fast recycling: no test query on every checkout. A connection that broke is marked so by
    // the failing query and is dropped instead of being reused.
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StartupError(format!("cannot build the database pool: {e}")))
}

/// Applies the embedded migrations (under an advisory lock, so replicas starting together
/// do not race).
pub async fn migrate(database_url: &str) -> Result<Vec<String>, StartupError> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| StartupError(format!("cannot connect to the database: {e}")))?;
        use diesel::RunQueryDsl;
        diesel::sql_query("SELECT pg_advisory_lock(7345001)")
            .execute(&mut conn)
            .map_err(|e| StartupError(format!("cannot lock for migrations: {e}")))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>())
            .map_err(|e| StartupError(format!("migration failed: {e}")));
        let _ = diesel::sql_query("SELECT pg_advisory_unlock(7345001)").execute(&mut conn);
        applied
    })
    .await
    .map_err(|e| StartupError(format!("migration task failed: {e}")))?
}
