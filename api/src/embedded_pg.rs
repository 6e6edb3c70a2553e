//! The embedded default database: a PostgreSQL cluster in the data folder, run from the
//! system's PostgreSQL binaries, reachable only through a Unix socket in that folder.
//!
//! PostgreSQL refuses to run as root; when the server runs as root the cluster runs as the
//! `postgres` user (through `setpriv`), and owns its folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::error::StartupError;

/// A running embedded cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// Started by this process (not found running): stop it when done.
    pub started_here: bool,
}

const PORT: u16 = 5432;

impl EmbeddedPostgres {
    /// Initialises the cluster on first use, then starts it (or reuses one left running by a
    /// server process that was killed).
    pub async fn start(data_dir: &Path) -> Result<Self, StartupError> {
        let pg = Self::prepare(data_dir)?;
        if !pg.pgdata.join("PG_VERSION").exists() {
            pg.initdb().await?;
        }
        if pg.is_running().await {
            tracing::info!("reusing the embedded PostgreSQL cluster that is already running");
            return Ok(pg);
        }
        pg.launch().await?;
        tracing::info!(socket = %pg.socket_dir.display(), "embedded PostgreSQL started");
        Ok(EmbeddedPostgres {
            started_here: true,
            ..pg
        })
    }

    /// The cluster's folder in `data_dir`, created and given to the user PostgreSQL runs as
    /// (`postgres` when we are root); nothing is started yet.
    fn prepare(data_dir: &Path) -> Result<Self, StartupError> {
        let bin_dir = find_bin_dir()?;
        let root = absolute(&data_dir.join("postgres"))?;
        std::fs::create_dir_all(&root)
            .map_err(|e| StartupError(format!("cannot create {}: {e}", root.display())))?;
        let run_as = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        if run_as.is_some() {
            allow_traversal(data_dir)?;
        }
        restrict(&root, run_as)?;
        Ok(EmbeddedPostgres {
            bin_dir,
            pgdata: root.join("data"),
            socket_dir: root,
            run_as,
            started_here: false,
        })
    }

    /// Creates the cluster (trusting local connections: only its owner can reach the socket).
    async fn initdb(&self) -> Result<(), StartupError> {
        tracing::info!(pgdata = %self.pgdata.display(), "initialising the embedded PostgreSQL cluster");
        self.run(
            "initdb",
            &[
                "-D".as_ref(),
                self.pgdata.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )
        .await
    }

    /// Whether the cluster is running already.
    async fn is_running(&self) -> bool {
        self.run(
            "pg_ctl",
            &["status".as_ref(), "-D".as_ref(), self.pgdata.as_os_str()],
        )
        .await
        .is_ok()
    }

    /// Starts the cluster on its Unix socket only, logging to `postgres.log`, and waits until
    /// it accepts connections.
    async fn launch(&self) -> Result<(), StartupError> {
        let opts = format!(
            "-k '{}' -p {PORT} -c listen_addresses=''",
            self.socket_dir.display()
        );
        let log = self.socket_dir.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                self.pgdata.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
            ],
        )
        .await
    }

    /// Connection string (Unix socket; no TCP port is opened).
    pub fn database_url(&self) -> String {
        format!(
            "host='{}' port={PORT} user=postgres dbname=postgres",
            self.socket_dir.display()
        )
    }

    /// Stops the cluster (fast shutdown: sessions are ended, data is flushed).
    pub async fn stop(&self) {
        let r = self
            .run(
                "pg_ctl",
                &[
                    "stop".as_ref(),
                    "-m".as_ref(),
                    "fast".as_ref(),
                    "-D".as_ref(),
                    self.pgdata.as_os_str(),
                ],
            )
            .await;
        match r {
            Ok(()) => tracing::info!("embedded PostgreSQL stopped"),
            Err(e) => tracing::warn!(error = %e, "could not stop the embedded PostgreSQL"),
        }
    }

    async fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), StartupError> {
        let exe = self.bin_dir.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(&self.socket_dir);
        let out = cmd
            .output()
            .await
            .map_err(|e| StartupError(format!("cannot run {}: {e}", exe.display())))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(StartupError(format!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf, StartupError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| StartupError(format!("cannot resolve {}: {e}", p.display())))
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb`, else the folder of `initdb` on PATH.
fn find_bin_dir() -> Result<PathBuf, StartupError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .ok_or_else(|| {
            StartupError(
                "no PostgreSQL server binaries found (install the postgresql package, or pass --database-url)"
                    .to_string(),
            )
        })
}

fn is_root() -> bool {
    // SAFETY-free: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), StartupError> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| StartupError(format!("cannot read /etc/passwd: {e}")))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "postgres")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| {
            StartupError(
                "running as root, but there is no 'postgres' user to run the embedded PostgreSQL as"
                    .to_string(),
            )
        })
}

/// PostgreSQL runs as another user than ours: it must be able to pass through the data folder
/// (only `x`, not read: it sees nothing but its own folder inside).
fn allow_traversal(data_dir: &Path) -> Result<(), StartupError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(data_dir)
        .map_err(|e| StartupError(format!("cannot read {}: {e}", data_dir.display())))?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode | 0o011)).map_err(
            |e| {
                StartupError(format!(
                    "cannot set permissions of {}: {e}",
                    data_dir.display()
                ))
            },
        )?;
    }
    Ok(())
}

/// The cluster folder belongs to the user PostgreSQL runs as, and to nobody else.
fn restrict(root: &Path, run_as: Option<(u32, u32)>) -> Result<(), StartupError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(root, Some(uid), Some(gid))
            .map_err(|e| StartupError(format!("cannot chown {}: {e}", root.display())))?;
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StartupError(format!("cannot set permissions of {}: {e}", root.display())))
}
