//! Administrative commands run from the command line against the server's database (the
//! embedded cluster of the data folder, or `--database-url`).

use std::io::Read;
use std::sync::Arc;

use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::config::{DatabaseArgs, StorageAccountAddArgs, StorageAccountsCommand};
use crate::embedded_pg::EmbeddedPostgres;
use crate::error::StartupError;
use crate::storage::accounts::{self, KeySource, Registry};
use crate::storage::secrets::SecretsKey;

/// A database connection for one command; stops the embedded cluster afterwards if it started
/// it (a running server's cluster is left alone).
pub struct AdminDb {
    pub conn: AsyncPgConnection,
    embedded: Option<EmbeddedPostgres>,
}

impl AdminDb {
    pub async fn open(db: &DatabaseArgs) -> Result<AdminDb, StartupError> {
        let embedded = match db.external_url() {
            Some(_) => None,
            None => Some(EmbeddedPostgres::start(&db.data_dir).await?),
        };
        let url = db
            .external_url()
            .or_else(|| embedded.as_ref().map(|pg| pg.database_url()))
            .unwrap_or_default();
        crate::db::migrate(&url).await?;
        let conn = AsyncPgConnection::establish(&url)
            .await
            .map_err(|e| StartupError(format!("cannot connect to the database: {e}")))?;
        Ok(AdminDb { conn, embedded })
    }

    pub async fn close(self) {
        drop(self.conn);
        if let Some(pg) = self.embedded.filter(|pg| pg.started_here) {
            pg.stop().await;
        }
    }
}

fn failed(e: impl std::fmt::Display) -> StartupError {
    StartupError(e.to_string())
}

pub async fn storage_accounts(cmd: StorageAccountsCommand) -> Result<(), StartupError> {
    match cmd {
        StorageAccountsCommand::Add(args) => add(args).await,
        StorageAccountsCommand::List(db) => {
            let mut admin = AdminDb::open(&db).await?;
            let rows = accounts::list(&mut admin.conn).await.map_err(failed);
            admin.close().await;
            for a in rows? {
                let key = if a.key_sealed.is_some() {
                    "stored sealed".to_string()
                } else if let Some(f) = &a.key_file {
                    format!("file {f}")
                } else {
                    format!("variable {}", a.key_env.unwrap_or_default())
                };
                println!(
                    "{}\t{}\t{}key: {key}",
                    a.resource_id,
                    a.blob_endpoint,
                    if a.premium { "premium\t" } else { "" }
                );
            }
            Ok(())
        }
        StorageAccountsCommand::Remove { id, database } => {
            let mut admin = AdminDb::open(&database).await?;
            let removed = accounts::remove(&mut admin.conn, &id).await.map_err(failed);
            admin.close().await;
            if removed? {
                println!("removed {id}");
                Ok(())
            } else {
                Err(StartupError(format!(
                    "no storage account '{id}' is registered"
                )))
            }
        }
    }
}

async fn add(args: StorageAccountAddArgs) -> Result<(), StartupError> {
    let key = if args.key_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| StartupError(format!("cannot read the key from standard input: {e}")))?;
        KeySource::Value(s.trim().to_string())
    } else if let Some(f) = args.key_file {
        KeySource::File(f)
    } else if let Some(v) = args.key_env {
        KeySource::Env(v)
    } else {
        return Err(StartupError(
            "give --key-stdin, --key-file or --key-env".into(),
        ));
    };
    let name = crate::arm::ids::ResourceId::parse(&args.id)
        .map(|r| r.name().to_lowercase())
        .unwrap_or_default();
    let endpoint = args
        .blob_endpoint
        .unwrap_or_else(|| format!("https://{name}.blob.core.windows.net"));
    let secrets = Arc::new(SecretsKey::load_or_create(
        &args.database.secrets_key_path(),
    )?);
    let registry = Registry::new(
        secrets,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    );
    let mut admin = AdminDb::open(&args.database).await?;
    let result = registry
        .add(&mut admin.conn, &args.id, &endpoint, args.premium, &key)
        .await;
    admin.close().await;
    let row = result.map_err(|e| StartupError(e.arm_parts().2))?;
    if !args.offline {
        registry.ensure_container(&row).await.map_err(|e| {
            StartupError(format!(
                "registered, but the container '{}' could not be created: {e}",
                crate::storage::CONTAINER
            ))
        })?;
    }
    println!("registered {} ({})", row.resource_id, row.blob_endpoint);
    Ok(())
}
