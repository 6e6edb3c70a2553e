//! Command line and configuration: one typed struct per command. Every flag can also be
//! given as a `CAPTURE_API_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "capture-api",
    version,
    about = "ARM-compatible packet capture API server"
)]
pub struct Cli {
    /// Log format on standard error: `text` (coloured only on a terminal, and never with
    /// NO_COLOR set) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CAPTURE_API_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print the OpenAPI document to stdout.
    Openapi,
    /// Manage the storage accounts captures can be uploaded to.
    #[command(subcommand)]
    StorageAccounts(StorageAccountsCommand),
    /// Manage the service principals of the built-in token issuer.
    #[command(subcommand)]
    ServicePrincipals(ServicePrincipalsCommand),
    /// Manage role assignments (who may do what, where).
    #[command(subcommand)]
    RoleAssignments(RoleAssignmentsCommand),
    /// Print a token of the built-in issuer for a principal (for scripts and curl).
    Token(TokenArgs),
    /// Manage agent enrollment tokens.
    #[command(subcommand)]
    AgentTokens(AgentTokensCommand),
    /// Manage registered agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Manage the built-in issuer's signing keys.
    #[command(subcommand)]
    SigningKeys(SigningKeysCommand),
    /// Manage the people who sign in to the console through the built-in issuer.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Print a one-time sign-in link for a user (valid 15 minutes).
    SignInLink(SignInLinkArgs),
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input (one line), stored only as a
    /// slow hash. Prints the user's name and object id as JSON.
    Create {
        #[arg(long)]
        name: String,
        /// No password: the user signs in only with links of `capture-api sign-in-link`.
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    List(DatabaseArgs),
    /// Delete a user with their role assignments and sessions.
    Delete {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set a user's password (read from standard input, one line); ends the user's sessions.
    SetPassword {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SignInLinkArgs {
    /// The user the link signs in.
    #[arg(long)]
    pub user: String,
    /// The server's address as the browser reaches it.
    #[arg(
        long,
        env = "CAPTURE_API_PUBLIC_URL",
        default_value = "http://127.0.0.1:8480"
    )]
    pub url: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum ServicePrincipalsCommand {
    /// Create a principal; prints its client id, object id and secret (shown only once) as JSON.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    List(DatabaseArgs),
    /// Delete a principal (by client id or object id).
    Delete {
        #[arg(long)]
        id: uuid::Uuid,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleAssignmentsCommand {
    /// Assign a role (Owner, Contributor, Network Contributor, Reader) at a scope: `/`,
    /// `/subscriptions/{s}`, `/subscriptions/{s}/resourceGroups/{rg}` or a resource id.
    Create {
        /// Object id or application (client) id of the principal.
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        assignee: Option<String>,
        /// A user of the built-in issuer, by name (instead of --assignee).
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        role: String,
        #[arg(long)]
        scope: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    List {
        #[arg(long, conflicts_with = "user")]
        assignee: Option<String>,
        /// A user of the built-in issuer, by name.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    Delete {
        #[arg(long)]
        id: uuid::Uuid,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Client id or object id of a service principal (or any object id).
    #[arg(long)]
    pub principal: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    #[arg(long, default_value = "https://management.azure.com")]
    pub audience: String,
    #[command(flatten)]
    pub issuer: IssuerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentTokensCommand {
    /// Create an enrollment token for machines under a scope; prints it (shown only once).
    Create {
        #[arg(long)]
        scope: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Usable by many agents until it expires (default: once).
        #[arg(long)]
        reusable: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    List(DatabaseArgs),
    Revoke {
        #[arg(long)]
        id: uuid::Uuid,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Revoke a machine's agent: its credential stops working at once, and enrollment tokens no
    /// longer enroll the machine.
    Revoke {
        #[arg(long)]
        machine_id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Allow a revoked machine to enroll again (with an enrollment token).
    ReEnroll {
        #[arg(long)]
        machine_id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeysCommand {
    /// Add a signing key; tokens are signed with it from now on (in every replica within
    /// seconds), and tokens of the older keys stay valid until they expire.
    Rotate(DatabaseArgs),
    List(DatabaseArgs),
}

#[derive(Debug, Subcommand)]
pub enum StorageAccountsCommand {
    /// Register a storage account (or replace its registration), create its
    /// `network-watcher-logs` container and so check its key.
    Add(StorageAccountAddArgs),
    /// List the registered accounts (never their keys).
    List(DatabaseArgs),
    /// Remove an account: captures naming it can no longer upload.
    Remove {
        /// ARM resource id of the account.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Args)]
#[group(id = "key", required = true, multiple = false, args = ["key_stdin", "key_file", "key_env"])]
pub struct StorageAccountAddArgs {
    /// ARM resource id:
    /// /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}
    #[arg(long)]
    pub id: String,
    /// Blob service endpoint (default https://{name}.blob.core.windows.net; Azurite:
    /// http://127.0.0.1:10000/devstoreaccount1).
    #[arg(long)]
    pub blob_endpoint: Option<String>,
    /// Read the account key from standard input and store it sealed with the secrets key.
    #[arg(long)]
    pub key_stdin: bool,
    /// A file holding the account key, read by the server whenever it signs (not stored).
    #[arg(long)]
    pub key_file: Option<String>,
    /// An environment variable of the server holding the account key (not stored).
    #[arg(long)]
    pub key_env: Option<String>,
    /// A premium account: captures naming it are refused, as in Azure.
    #[arg(long)]
    pub premium: bool,
    /// Do not contact the account (no container creation, no key check).
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (also read from DATABASE_URL). Absent: the server runs its own PostgreSQL
    /// cluster in the data folder, from the system's PostgreSQL binaries.
    #[arg(long, env = "CAPTURE_API_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Data folder (the embedded PostgreSQL cluster lives in DATA_DIR/postgres).
    #[arg(long, env = "CAPTURE_API_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Key sealing storage account keys at rest (default DATA_DIR/secrets.key, created on first
    /// use). Replicas sharing a database must share it.
    #[arg(long, env = "CAPTURE_API_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The external database URL: the flag or CAPTURE_API_DATABASE_URL, else DATABASE_URL.
    pub fn external_url(&self) -> Option<String> {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .filter(|u| !u.is_empty())
    }

    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secrets.key"))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, env = "CAPTURE_API_LISTEN", default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Base URL for absolute monitor URLs (default: the request's scheme and host).
    #[arg(long, env = "CAPTURE_API_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, env = "CAPTURE_API_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CAPTURE_API_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Region of the network watchers created automatically for agents that give none (a
    /// region name: 1-64 letters, digits and spaces).
    #[arg(long, env = "CAPTURE_API_LOCATION", default_value = "local", value_parser = region_name)]
    pub location: String,
    /// How long a capture's create operation waits for the target's agent to start it.
    #[arg(long, env = "CAPTURE_API_AGENT_WAIT_SECONDS", default_value_t = 60)]
    pub agent_wait_seconds: u64,
    /// An agent that has not polled for this long is lost; its running captures end in Error.
    #[arg(long, env = "CAPTURE_API_AGENT_LOST_SECONDS", default_value_t = 30)]
    pub agent_lost_seconds: u64,
    /// How long a running capture may take to acknowledge a stop before the server records it
    /// as stopped anyway (also the grace past the time limit).
    #[arg(long, env = "CAPTURE_API_STOP_GRACE_SECONDS", default_value_t = 10)]
    pub stop_grace_seconds: u64,
    /// Items per page of list results.
    #[arg(long, env = "CAPTURE_API_PAGE_SIZE", default_value_t = 100)]
    pub page_size: i64,
    /// Database connections per server process.
    #[arg(long, env = "CAPTURE_API_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// Lifetime in seconds of the SAS an agent gets to upload a capture (renewed on request).
    #[arg(long, env = "CAPTURE_API_UPLOAD_SAS_SECONDS", default_value_t = 3600)]
    pub upload_sas_seconds: u64,
    /// Lifetime in seconds of the read-only SAS URL `download` hands out.
    #[arg(long, env = "CAPTURE_API_DOWNLOAD_SAS_SECONDS", default_value_t = 900)]
    pub download_sas_seconds: u64,
    #[command(flatten)]
    pub issuer: IssuerArgs,
    /// Turn authentication and authorization off (local development only): every request is
    /// allowed, and agents register without enrollment tokens.
    #[arg(long, env = "CAPTURE_API_AUTH_DISABLED")]
    pub auth_disabled: bool,
    /// Accepted token audiences (default: the Azure Resource Manager ones).
    #[arg(
        long = "audience",
        env = "CAPTURE_API_AUDIENCES",
        value_delimiter = ','
    )]
    pub audiences: Vec<String>,
    /// Trusted OpenID issuer (repeatable): its discovery document and JWKS are fetched, and
    /// fetched again for an unknown key id (at most every 5 s).
    #[arg(
        long = "oidc-issuer",
        env = "CAPTURE_API_OIDC_ISSUERS",
        value_delimiter = ','
    )]
    pub oidc_issuers: Vec<String>,
    /// The console's client id at the first --oidc-issuer: the console then signs people in
    /// there (authorization code flow with PKCE) instead of at the built-in issuer.
    #[arg(long, env = "CAPTURE_API_CONSOLE_CLIENT_ID", requires = "oidc_issuers")]
    pub console_client_id: Option<String>,
    /// A JWKS file of trusted keys (re-read for an unknown key id), for tokens of --jwks-issuer.
    #[arg(long, env = "CAPTURE_API_JWKS_FILE", requires = "jwks_issuer")]
    pub jwks_file: Option<PathBuf>,
    #[arg(long, env = "CAPTURE_API_JWKS_ISSUER", requires = "jwks_file")]
    pub jwks_issuer: Option<String>,
    /// Development only: accept HS256 tokens of --dev-hs256-issuer signed with this file's bytes.
    #[arg(
        long,
        env = "CAPTURE_API_DEV_HS256_SECRET_FILE",
        requires = "dev_hs256_issuer"
    )]
    pub dev_hs256_secret_file: Option<PathBuf>,
    #[arg(
        long,
        env = "CAPTURE_API_DEV_HS256_ISSUER",
        requires = "dev_hs256_secret_file"
    )]
    pub dev_hs256_issuer: Option<String>,
    /// Requests per second allowed per principal (0 = no limit); then 429 with Retry-After.
    #[arg(
        long,
        env = "CAPTURE_API_RATE_LIMIT_PER_SECOND",
        default_value_t = 100.0
    )]
    pub rate_limit_per_second: f64,
    /// Requests a principal may make at once above the rate.
    #[arg(long, env = "CAPTURE_API_RATE_LIMIT_BURST", default_value_t = 200.0)]
    pub rate_limit_burst: f64,
    /// Lifetime of an agent's credential (the agent rotates it before it expires).
    #[arg(long, env = "CAPTURE_API_AGENT_CREDENTIAL_SECONDS", default_value_t = 7 * 24 * 3600)]
    pub agent_credential_seconds: u64,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "CAPTURE_API_WORKERS")]
    pub workers: Option<usize>,
}

/// The built-in token issuer's identity (shared by `serve` and `token`).
#[derive(Debug, Clone, Args)]
pub struct IssuerArgs {
    /// Tenant id of the built-in issuer (its endpoints live under /{tenant}/).
    #[arg(long, env = "CAPTURE_API_TENANT_ID", default_value = DEFAULT_TENANT)]
    pub tenant_id: String,
    /// `iss` of the built-in issuer's tokens (default: https://sts.capture.invalid/{tenant}/).
    #[arg(long, env = "CAPTURE_API_ISSUER")]
    pub issuer: Option<String>,
    /// Lifetime of the tokens the built-in issuer hands out.
    #[arg(long, env = "CAPTURE_API_TOKEN_TTL_SECONDS", default_value_t = 3600)]
    pub token_ttl_seconds: u64,
}

pub const DEFAULT_TENANT: &str = "00000000-0000-0000-0000-00000000ca9e";

impl IssuerArgs {
    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("https://sts.capture.invalid/{}/", self.tenant_id))
    }
}

/// Audiences accepted by default: the resource ids of Azure Resource Manager.
pub const DEFAULT_AUDIENCES: [&str; 4] = [
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net",
    "https://management.core.windows.net/",
];

/// The authentication settings of a server (used by the `auth` module).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Off only with `--auth-disabled` (local development).
    pub enabled: bool,
    pub tenant: String,
    /// `iss` of the built-in issuer's tokens.
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Lifetime of tokens the built-in issuer hands out.
    pub token_ttl: Duration,
    pub oidc_issuers: Vec<String>,
    /// A JWKS file and the issuer whose keys it holds.
    pub jwks_file: Option<(PathBuf, String)>,
    /// Development only: an HS256 secret and the issuer it stands for.
    pub dev_hs256: Option<(Vec<u8>, String)>,
    /// Requests per second and burst per principal; 0 = unlimited.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    pub agent_credential_ttl: Duration,
}

impl ServeArgs {
    /// The authentication settings.
    pub fn auth_config(&self) -> Result<AuthConfig, crate::error::StartupError> {
        let dev_hs256 = match (&self.dev_hs256_secret_file, &self.dev_hs256_issuer) {
            (Some(f), Some(i)) => {
                let secret = std::fs::read(f)
                    .map_err(|e| crate::error::StartupError(format!("{}: {e}", f.display())))?;
                if secret.len() < 32 {
                    return Err(crate::error::StartupError(format!(
                        "{}: an HS256 secret needs at least 32 bytes",
                        f.display()
                    )));
                }
                tracing::warn!("HS256 development tokens are accepted: never in production");
                Some((secret, i.clone()))
            }
            _ => None,
        };
        for issuer in &self.oidc_issuers {
            check_issuer_url(issuer)?;
        }
        let audiences = if self.audiences.is_empty() {
            DEFAULT_AUDIENCES.map(String::from).to_vec()
        } else {
            self.audiences.clone()
        };
        Ok(AuthConfig {
            enabled: !self.auth_disabled,
            tenant: self.issuer.tenant_id.clone(),
            issuer: self.issuer.issuer(),
            audiences,
            token_ttl: Duration::from_secs(self.issuer.token_ttl_seconds.max(60)),
            oidc_issuers: self.oidc_issuers.clone(),
            jwks_file: self.jwks_file.clone().zip(self.jwks_issuer.clone()),
            dev_hs256,
            rate_per_second: self.rate_limit_per_second,
            rate_burst: self.rate_limit_burst,
            agent_credential_ttl: Duration::from_secs(self.agent_credential_seconds.max(10)),
        })
    }
}

/// An `--oidc-issuer` is an https URL, or http on a loopback host (a provider on this machine):
/// its keys decide who may call the API, so they never cross a network unprotected.
fn check_issuer_url(issuer: &str) -> Result<(), crate::error::StartupError> {
    let refuse = |why: &str| {
        Err(crate::error::StartupError(format!(
            "--oidc-issuer {issuer}: {why}; give the provider's issuer URL with https:// (http:// only for a provider on this machine: 127.0.0.1, ::1 or localhost)"
        )))
    };
    let Ok(url) = url::Url::parse(issuer) else {
        return refuse("not a URL");
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        "http" => refuse("http:// is accepted only for a loopback host"),
        _ => refuse("not an https:// URL"),
    }
}

/// Timing settings the handlers and the background tasks share.
#[derive(Debug, Clone)]
pub struct Timing {
    pub agent_wait: Duration,
    pub agent_lost: Duration,
    pub stop_grace: Duration,
}

impl Timing {
    /// Longest wait granted to an agent's long poll: well inside the lost bound.
    pub fn max_poll(&self) -> Duration {
        (self.agent_lost / 2).clamp(Duration::from_millis(200), Duration::from_secs(25))
    }
}

impl ServeArgs {
    pub fn timing(&self) -> Timing {
        Timing {
            agent_wait: Duration::from_secs(self.agent_wait_seconds),
            agent_lost: Duration::from_secs(self.agent_lost_seconds.max(1)),
            stop_grace: Duration::from_secs(self.stop_grace_seconds),
        }
    }
}

/// A `--location`: a region name as the API accepts it.
fn region_name(s: &str) -> Result<String, String> {
    crate::arm::ids::validate_location(s, crate::error::ErrorCode::InvalidParameter, "--location")
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::check_issuer_url;

    #[test]
    fn an_issuer_is_https_or_a_loopback_http() {
        for ok in [
            "https://login.microsoftonline.com/t/v2.0",
            "http://127.0.0.1:5556/dex",
            "http://[::1]:8080",
            "http://localhost:9000/realms/x",
        ] {
            assert!(check_issuer_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.5:8080",
            "ftp://127.0.0.1",
            "login.example.com",
            "https://",
        ] {
            let e = check_issuer_url(bad).err().map(|e| e.0).unwrap_or_default();
            assert!(e.contains("--oidc-issuer") && e.contains(bad), "{bad}: {e}");
        }
    }
}
