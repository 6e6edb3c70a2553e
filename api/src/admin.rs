//! Administrative commands run from the command line against the server's database (the
//! embedded cluster of the data folder, or `--database-url`).

use std::io::Read;
use std::sync::Arc;

use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::config::{
    AgentTokensCommand, AgentsCommand, DatabaseArgs, RoleAssignmentsCommand,
    ServicePrincipalsCommand, SignInLinkArgs, SigningKeysCommand, StorageAccountAddArgs,
    StorageAccountsCommand, TokenArgs, UsersCommand,
};
use crate::embedded_pg::EmbeddedPostgres;
use crate::error::StartupError;
use crate::storage::StorageError;
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
        if let Err(e) = crate::db::diagnose::check(&url).await {
            return Err(StartupError(e.message));
        }
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
    if let KeySource::Value(v) = &key
        && base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v).is_err()
    {
        return Err(StartupError(format!(
            "the key given for {} is not valid base64: give the account key as Azure shows it (az storage account keys list), or Azurite's well-known development key",
            args.id
        )));
    }
    let mut admin = AdminDb::open(&args.database).await?;
    // Registered only once the account took the key (unless --offline): the container is
    // created inside the transaction that registers it.
    let result = admin
        .conn
        .transaction::<_, Refused, _>(async |conn| {
            let row = registry
                .add(conn, &args.id, &endpoint, args.premium, &key)
                .await
                .map_err(|e| Refused(StartupError(e.arm_parts().2)))?;
            if !args.offline {
                registry
                    .ensure_container(&row)
                    .await
                    .map_err(|e| Refused(account_check_failed(&args.id, &endpoint, &e)))?;
            }
            Ok(row)
        })
        .await;
    admin.close().await;
    let row = result.map_err(|Refused(e)| e)?;
    println!("registered {} ({})", row.resource_id, row.blob_endpoint);
    Ok(())
}

/// A registration rolled back, and why.
struct Refused(StartupError);

impl From<diesel::result::Error> for Refused {
    fn from(e: diesel::result::Error) -> Self {
        Refused(StartupError(format!("the database failed: {e}")))
    }
}

/// Why `storage-accounts add` registered nothing, and what to do.
fn account_check_failed(id: &str, endpoint: &str, e: &StorageError) -> StartupError {
    let why = match e {
        StorageError::Refused {
            status: 403, code, ..
        } => format!(
            "the account refused the key (HTTP 403 {code}): check the account key and the account name in --id"
        ),
        StorageError::Refused { status, code, .. } => format!(
            "the account answered HTTP {status} {code} when creating the container '{}'",
            crate::storage::CONTAINER
        ),
        StorageError::Unreachable { reason, .. } => {
            format!("the blob endpoint {endpoint} is unreachable ({reason}): check --blob-endpoint")
        }
        StorageError::KeyUnavailable { reason, .. } => format!("the key cannot be read: {reason}"),
        StorageError::Crypto(m) => m.clone(),
    };
    StartupError(format!(
        "{id} was not registered: {why}. Give --offline to register it without checking."
    ))
}

fn secrets_of(db: &DatabaseArgs) -> Result<SecretsKey, StartupError> {
    SecretsKey::load_or_create(&db.secrets_key_path())
}

fn api_failed(e: crate::error::ApiError) -> StartupError {
    StartupError(e.arm_parts().2)
}

/// Wakes every replica's waiters on `key` (role assignment caches, a revoked agent's poll).
async fn notify(conn: &mut AsyncPgConnection, key: &str) {
    if let Err(e) = crate::notify::send(conn, key).await {
        eprintln!(
            "capture-api: the servers could not be told at once ({e}); they catch up within a minute"
        );
    }
}

/// Runs `f` on a connection to the database of `db`, then closes it.
async fn with_db<T, F>(db: &DatabaseArgs, f: F) -> Result<T, StartupError>
where
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StartupError>,
{
    let mut admin = AdminDb::open(db).await?;
    let result = f(&mut admin.conn).await;
    admin.close().await;
    result
}

pub async fn service_principals(cmd: ServicePrincipalsCommand) -> Result<(), StartupError> {
    use crate::auth::principals;
    match cmd {
        ServicePrincipalsCommand::Create { name, database } => {
            let (sp, secret) = with_db(&database, async |c| {
                principals::create(c, &name).await.map_err(failed)
            })
            .await?;
            println!(
                "{}",
                serde_json::json!({
                    "displayName": sp.display_name,
                    "clientId": sp.client_id,
                    "objectId": sp.object_id,
                    "clientSecret": secret,
                })
            );
            eprintln!(
                "The secret is shown only now. Give the principal a role with `capture-api role-assignments create --assignee {}`.",
                sp.object_id
            );
        }
        ServicePrincipalsCommand::List(database) => {
            for sp in with_db(&database, async |c| {
                principals::list(c).await.map_err(failed)
            })
            .await?
            {
                println!(
                    "{}\tclient id {}\tobject id {}",
                    sp.display_name, sp.client_id, sp.object_id
                );
            }
        }
        ServicePrincipalsCommand::Delete { id, database } => {
            let deleted = with_db(&database, async |c| {
                let d = principals::delete(c, id).await.map_err(failed)?;
                notify(c, crate::auth::rbac::RBAC_KEY).await;
                Ok(d)
            })
            .await?;
            if !deleted {
                return Err(StartupError(format!("no service principal {id}")));
            }
            println!("deleted {id}");
        }
    }
    Ok(())
}

pub async fn role_assignments(cmd: RoleAssignmentsCommand) -> Result<(), StartupError> {
    use crate::auth::rbac::{self, Role};
    match cmd {
        RoleAssignmentsCommand::Create {
            assignee,
            user,
            role,
            scope,
            database,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                StartupError(format!(
                    "unknown role '{role}' (Owner, Contributor, Network Contributor, Reader)"
                ))
            })?;
            if !rbac::valid_scope(&scope) {
                return Err(StartupError(format!(
                    "'{scope}' is not a scope (/, /subscriptions/{{s}}, /subscriptions/{{s}}/resourceGroups/{{rg}} or a resource id)"
                )));
            }
            let a = with_db(&database, async |c| {
                let assignee = assignee_of(c, assignee.as_deref(), user.as_deref()).await?;
                let a = rbac::create(c, &assignee, role, &scope)
                    .await
                    .map_err(failed)?;
                notify(c, rbac::RBAC_KEY).await;
                Ok(a)
            })
            .await?;
            println!("{}\t{}\t{}\t{}", a.id, a.principal_id, a.role, a.scope);
        }
        RoleAssignmentsCommand::List {
            assignee,
            user,
            database,
        } => {
            let list = with_db(&database, async |c| {
                let assignee = match (&assignee, &user) {
                    (None, None) => None,
                    _ => Some(assignee_of(c, assignee.as_deref(), user.as_deref()).await?),
                };
                rbac::list(c, assignee.as_deref()).await.map_err(failed)
            })
            .await?;
            for a in list {
                println!("{}\t{}\t{}\t{}", a.id, a.principal_id, a.role, a.scope);
            }
        }
        RoleAssignmentsCommand::Delete { id, database } => {
            let deleted = with_db(&database, async |c| {
                let d = rbac::delete(c, id).await.map_err(failed)?;
                notify(c, rbac::RBAC_KEY).await;
                Ok(d)
            })
            .await?;
            if !deleted {
                return Err(StartupError(format!("no role assignment {id}")));
            }
            println!("deleted {id}");
        }
    }
    Ok(())
}

/// The principal id an assignment names: `--assignee` as given, or the object id of the user
/// `--user`.
async fn assignee_of(
    conn: &mut AsyncPgConnection,
    assignee: Option<&str>,
    user: Option<&str>,
) -> Result<String, StartupError> {
    match (assignee, user) {
        (Some(a), _) => Ok(a.to_string()),
        (None, Some(name)) => crate::auth::users::find(conn, name)
            .await
            .map_err(failed)?
            .map(|u| u.id.to_string())
            .ok_or_else(|| StartupError(format!("no user '{name}'"))),
        (None, None) => Err(StartupError("give --assignee or --user".into())),
    }
}

/// A password from standard input: its first line.
fn read_password() -> Result<String, StartupError> {
    let mut s = String::new();
    std::io::stdin()
        .take(crate::auth::users::MAX_PASSWORD_BYTES as u64 + 2)
        .read_to_string(&mut s)
        .map_err(|e| StartupError(format!("cannot read the password from standard input: {e}")))?;
    let line = s.lines().next().unwrap_or("").to_string();
    crate::auth::users::check_password(&line).map_err(StartupError)?;
    Ok(line)
}

pub async fn users(cmd: UsersCommand) -> Result<(), StartupError> {
    use crate::auth::users;
    match cmd {
        UsersCommand::Create {
            name,
            no_password,
            database,
        } => {
            users::check_name(&name).map_err(StartupError)?;
            let password = if no_password {
                None
            } else {
                Some(read_password()?)
            };
            let user = with_db(&database, async |c| {
                if users::find(c, &name).await.map_err(failed)?.is_some() {
                    return Err(StartupError(format!("a user '{name}' exists already")));
                }
                users::create(c, &name, password.as_deref())
                    .await
                    .map_err(failed)
            })
            .await?;
            println!(
                "{}",
                serde_json::json!({"name": user.name, "objectId": user.id})
            );
            eprintln!(
                "Give the user a role with `capture-api role-assignments create --user {} --role … --scope …`.",
                user.name
            );
        }
        UsersCommand::List(database) => {
            for u in with_db(&database, async |c| users::list(c).await.map_err(failed)).await? {
                println!(
                    "{}\tobject id {}\t{}",
                    u.name,
                    u.id,
                    if u.password_hash.is_some() {
                        "password"
                    } else {
                        "no password (sign-in links only)"
                    }
                );
            }
        }
        UsersCommand::Delete { name, database } => {
            let deleted = with_db(&database, async |c| {
                let d = users::delete(c, &name).await.map_err(failed)?;
                notify(c, crate::auth::rbac::RBAC_KEY).await;
                Ok(d)
            })
            .await?;
            if !deleted {
                return Err(StartupError(format!("no user '{name}'")));
            }
            println!("deleted {name}");
        }
        UsersCommand::SetPassword { name, database } => {
            let password = read_password()?;
            if !with_db(&database, async |c| {
                users::set_password(c, &name, Some(&password))
                    .await
                    .map_err(failed)
            })
            .await?
            {
                return Err(StartupError(format!("no user '{name}'")));
            }
            println!("the password of {name} is set; their sessions are ended");
        }
    }
    Ok(())
}

pub async fn sign_in_link(args: SignInLinkArgs) -> Result<(), StartupError> {
    let token = with_db(&args.database, async |c| {
        let user = crate::auth::users::find(c, &args.user)
            .await
            .map_err(failed)?
            .ok_or_else(|| StartupError(format!("no user '{}'", args.user)))?;
        crate::auth::users::create_sign_in_link(c, user.id)
            .await
            .map_err(failed)
    })
    .await?;
    println!("{}", crate::auth::users::sign_in_url(&args.url, &token));
    eprintln!(
        "A one-time link for {}, valid {} minutes.",
        args.user,
        crate::auth::users::SIGN_IN_LINK_TTL.as_secs() / 60
    );
    Ok(())
}

/// Longest lifetime of a token from `capture-api token` (tokens cannot be revoked).
const MAX_TOKEN_TTL_SECONDS: u64 = 24 * 3600;

pub async fn token(args: TokenArgs) -> Result<(), StartupError> {
    if args.ttl == 0 || args.ttl > MAX_TOKEN_TTL_SECONDS {
        return Err(StartupError(format!(
            "--ttl must be between 1 and {MAX_TOKEN_TTL_SECONDS} seconds"
        )));
    }
    let secrets = secrets_of(&args.database)?;
    let (issuer, tenant) = (args.issuer.issuer(), args.issuer.tenant_id.clone());
    let token = with_db(&args.database, async |c| {
        let sp = crate::auth::principals::find(c, &args.principal)
            .await
            .map_err(failed)?;
        let (object_id, app_id) = match &sp {
            Some(sp) => (sp.object_id.to_string(), Some(sp.client_id.to_string())),
            None => (args.principal.trim().to_lowercase(), None),
        };
        let signer = crate::auth::keys::current(c, &secrets)
            .await
            .map_err(api_failed)?;
        crate::auth::mint(
            &issuer,
            &tenant,
            &signer,
            &object_id,
            app_id.as_deref(),
            &args.audience,
            std::time::Duration::from_secs(args.ttl),
        )
        .map_err(api_failed)
    })
    .await?;
    println!("{token}");
    Ok(())
}

pub async fn agent_tokens(cmd: AgentTokensCommand) -> Result<(), StartupError> {
    use crate::auth::agents;
    match cmd {
        AgentTokensCommand::Create {
            scope,
            ttl,
            reusable,
            database,
        } => {
            let (id, token) = with_db(&database, async |c| {
                agents::create_token(c, &scope, std::time::Duration::from_secs(ttl), reusable)
                    .await
                    .map_err(api_failed)
            })
            .await?;
            println!("{token}");
            eprintln!(
                "enrollment token {id} for machines under {scope}, {} (shown only now)",
                if reusable { "reusable" } else { "one-time" }
            );
        }
        AgentTokensCommand::List(database) => {
            for t in with_db(&database, async |c| {
                agents::list_tokens(c).await.map_err(failed)
            })
            .await?
            {
                println!(
                    "{}\t{}\t{}\texpires {}\tuses {}{}",
                    t.id,
                    t.scope,
                    if t.reusable { "reusable" } else { "one-time" },
                    t.expires_at,
                    t.uses,
                    if t.revoked_at.is_some() {
                        "\trevoked"
                    } else {
                        ""
                    }
                );
            }
        }
        AgentTokensCommand::Revoke { id, database } => {
            if !with_db(&database, async |c| {
                agents::revoke_token(c, id).await.map_err(failed)
            })
            .await?
            {
                return Err(StartupError(format!("no enrollment token {id}")));
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

pub async fn agents(cmd: AgentsCommand) -> Result<(), StartupError> {
    match cmd {
        AgentsCommand::Revoke {
            machine_id,
            database,
        } => {
            let key = crate::arm::ids::key(&machine_id);
            let revoked = with_db(&database, async |c| {
                let r = crate::auth::agents::revoke_machine(c, &key)
                    .await
                    .map_err(failed)?;
                // Wakes the agent's long poll, which then finds its credential gone.
                notify(c, &key).await;
                Ok(r)
            })
            .await?;
            if !revoked {
                return Err(StartupError(format!(
                    "no machine '{machine_id}' is registered"
                )));
            }
            println!("revoked the agent of {machine_id}");
        }
        AgentsCommand::ReEnroll {
            machine_id,
            database,
        } => {
            let key = crate::arm::ids::key(&machine_id);
            if !with_db(&database, async |c| {
                crate::auth::agents::allow_enrollment(c, &key)
                    .await
                    .map_err(failed)
            })
            .await?
            {
                return Err(StartupError(format!(
                    "no machine '{machine_id}' is registered"
                )));
            }
            println!("{machine_id} may enroll again with a new enrollment token");
        }
    }
    Ok(())
}

pub async fn signing_keys(cmd: SigningKeysCommand) -> Result<(), StartupError> {
    match cmd {
        SigningKeysCommand::Rotate(database) => {
            let secrets = secrets_of(&database)?;
            let kid = with_db(&database, async |c| {
                crate::auth::keys::rotate(c, &secrets)
                    .await
                    .map_err(api_failed)
            })
            .await?;
            println!("{kid}");
        }
        SigningKeysCommand::List(database) => {
            for k in with_db(&database, async |c| {
                crate::auth::keys::public_keys(c).await.map_err(api_failed)
            })
            .await?
            {
                println!(
                    "{}\t{}",
                    k["kid"].as_str().unwrap_or(""),
                    k["alg"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
