//! The embedded default database: a PostgreSQL cluster in the data folder, run from the
//! system's PostgreSQL binaries, reachable only through a Unix socket in that folder.
//!
//! PostgreSQL refuses to run as root; when the server runs as root the cluster runs as the
//! `postgres` user (through `setpriv`), and owns its folder.
//!
//! The postmaster is a child of the process that starts it (in its own process group, so that a
//! Ctrl-C reaches only the server, which then stops the cluster). The server supervises it
//! ([`EmbeddedPostgres::supervise`]): when it exits, the server logs why (exit status and the end
//! of `postgres.log`) and restarts it with a capped exponential backoff; meanwhile `/readyz`
//! answers 503 (see [`Metrics::embedded_db_restarting`]). A cluster found running (left by a
//! server process that was killed) is used but never supervised: this process did not start it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::StartupError;
use crate::metrics::Metrics;

/// An embedded cluster, running (started here, or found running).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster: Arc<Cluster>,
    /// Started by this process (not found running): stop it when done.
    pub started_here: bool,
    /// The task restarting the postmaster when it exits (see [`EmbeddedPostgres::supervise`]).
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// Where the cluster lives and how its programs run; the postmaster this process started.
#[derive(Debug)]
struct Cluster {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// The postmaster, a child of this process, while this process owns it.
    postmaster: Mutex<Option<Child>>,
}

const PORT: u16 = 5432;

/// How long the first start may take before the server gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the supervisor looks at the postmaster, and start-up at its pid file.
const POLL: Duration = Duration::from_millis(100);
/// The supervisor's first wait before a restart, doubled after each failed attempt up to
/// [`MAX_RESTART_DELAY`]. (A restart fails until the killed postmaster's backends have exited.)
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(200);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);
/// How long a fast shutdown may take before an immediate one.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of the end of `postgres.log` goes to our log when the postmaster exits.
const LOG_TAIL_BYTES: u64 = 2048;

impl EmbeddedPostgres {
    /// Initialises the cluster on first use, then starts it (or reuses one left running by a
    /// server process that was killed).
    pub async fn start(data_dir: &Path) -> Result<Self, StartupError> {
        let cluster = Cluster::prepare(data_dir)?;
        if !cluster.pgdata.join("PG_VERSION").exists() {
            cluster.initdb().await?;
        }
        let started_here = if cluster.is_running().await {
            tracing::info!("reusing the embedded PostgreSQL cluster that is already running");
            false
        } else {
            cluster.launch(Some(START_TIMEOUT)).await?;
            tracing::info!(socket = %cluster.socket_dir.display(), "embedded PostgreSQL started");
            true
        };
        Ok(EmbeddedPostgres {
            cluster: Arc::new(cluster),
            started_here,
            supervisor: Mutex::new(None),
        })
    }

    /// Connection string (Unix socket; no TCP port is opened).
    pub fn database_url(&self) -> String {
        format!(
            "host='{}' port={PORT} user=postgres dbname=postgres",
            self.cluster.socket_dir.display()
        )
    }

    /// Restarts the postmaster whenever it exits, until `shutdown` turns true (or its sender
    /// is dropped); counts restarts and flags the outage in `metrics`. Only a cluster this
    /// process started is supervised. [`EmbeddedPostgres::stop`] waits for the supervisor.
    pub fn supervise(&self, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) {
        if !self.started_here {
            tracing::info!(
                "the embedded PostgreSQL was already running (not started by this process): it is not supervised"
            );
            return;
        }
        let cluster = self.cluster.clone();
        let task = tokio::spawn(async move { cluster.supervise(&metrics, shutdown).await });
        if let Some(previous) = lock(&self.supervisor).replace(task) {
            previous.abort();
        }
    }

    /// Stops the cluster (fast shutdown: sessions are ended, data is flushed), after the
    /// supervisor has ended (it ends on the shutdown signal and restarts nothing after it).
    pub async fn stop(&self) {
        let supervisor = lock(&self.supervisor).take();
        if let Some(mut task) = supervisor
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            tracing::warn!("the embedded PostgreSQL supervisor did not end; aborting it");
            task.abort();
            let _ = task.await;
        }
        let postmaster = lock(&self.cluster.postmaster).take();
        match postmaster {
            Some(child) => stop_child(child).await,
            // Ours, but it had exited and was not running again yet.
            None if self.started_here => {
                tracing::info!("the embedded PostgreSQL was not running");
            }
            // Not our child (found running): through its pid file.
            None => match self.cluster.pg_ctl_stop().await {
                Ok(()) => tracing::info!("embedded PostgreSQL stopped"),
                Err(e) => tracing::warn!(error = %e, "could not stop the embedded PostgreSQL"),
            },
        }
    }
}

impl Cluster {
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
        if let Some((uid, gid)) = run_as {
            allow_traversal(data_dir)?;
            reachable_by(&root, uid, gid, data_dir)?;
        }
        restrict(&root, run_as)?;
        Ok(Cluster {
            bin_dir,
            pgdata: root.join("data"),
            socket_dir: root,
            run_as,
            postmaster: Mutex::new(None),
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

    async fn pg_ctl_stop(&self) -> Result<(), StartupError> {
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-D".as_ref(),
                self.pgdata.as_os_str(),
            ],
        )
        .await
    }

    fn log_path(&self) -> PathBuf {
        self.socket_dir.join("postgres.log")
    }

    /// Starts the postmaster as our child, on its Unix socket only, appending its output to
    /// `postgres.log`, and waits until it accepts connections (at most `timeout`, if given).
    async fn launch(&self, timeout: Option<Duration>) -> Result<(), StartupError> {
        let log = self.open_log()?;
        let log_err = log
            .try_clone()
            .map_err(|e| StartupError(format!("cannot open the PostgreSQL log: {e}")))?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&self.pgdata)
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-p", &PORT.to_string(), "-c", "listen_addresses="])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .current_dir(&self.socket_dir)
            // Signals for the server's process group (Ctrl-C) are not for the cluster: the
            // server stops it itself.
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            StartupError(format!(
                "cannot run {}: {e}",
                self.bin_dir.join("postgres").display()
            ))
        })?;
        let pid = child.id().unwrap_or_default();
        *lock(&self.postmaster) = Some(child);
        self.wait_ready(pid, timeout).await
    }

    /// `postgres.log`, opened for appending (and given to the user PostgreSQL runs as).
    fn open_log(&self) -> Result<std::fs::File, StartupError> {
        let path = self.log_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StartupError(format!("cannot open {}: {e}", path.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| StartupError(format!("cannot chown {}: {e}", path.display())))?;
        }
        Ok(file)
    }

    /// Waits until the postmaster `pid` says `ready` in its pid file (as `pg_ctl start -w`
    /// does); fails when it exits first, or after `timeout`.
    async fn wait_ready(&self, pid: u32, timeout: Option<Duration>) -> Result<(), StartupError> {
        let started = Instant::now();
        let mut next_note = Duration::from_secs(60);
        loop {
            if let Some(status) = self.exited() {
                return Err(StartupError(format!(
                    "PostgreSQL exited while starting ({status}); the end of {}:\n{}",
                    self.log_path().display(),
                    self.log_tail()
                )));
            }
            if self.says_ready(pid) {
                return Ok(());
            }
            let waited = started.elapsed();
            if timeout.is_some_and(|t| waited > t) {
                return Err(StartupError(format!(
                    "PostgreSQL did not accept connections within {} s; see {}",
                    waited.as_secs(),
                    self.log_path().display()
                )));
            }
            if waited > next_note {
                tracing::warn!(
                    seconds = waited.as_secs(),
                    "the embedded PostgreSQL is still starting (recovering?)"
                );
                next_note += Duration::from_secs(60);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether `postmaster.pid` is `pid`'s and its status line says `ready`.
    fn says_ready(&self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(self.pgdata.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().collect();
        lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
            && lines.get(7).map(|l| l.trim()) == Some("ready")
    }

    /// How our postmaster exited, if it did (it is reaped then); `None` while it runs, or
    /// when there is none.
    fn exited(&self) -> Option<String> {
        let mut slot = lock(&self.postmaster);
        let child = slot.as_mut()?;
        let status = match child.try_wait() {
            Ok(None) => return None,
            Ok(Some(status)) => status.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        };
        *slot = None;
        Some(status)
    }

    /// The last lines of `postgres.log`.
    fn log_tail(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(self.log_path()) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
            .and_then(|_| f.read_to_end(&mut buf))
            .is_err()
        {
            return String::new();
        }
        let text = String::from_utf8_lossy(&buf);
        // Whole lines only.
        let text = match (len > LOG_TAIL_BYTES, text.find('\n')) {
            (true, Some(i)) => &text[i + 1..],
            _ => &text[..],
        };
        text.trim_end().to_string()
    }

    /// The supervisor: waits for the postmaster to exit, then restarts it (see the module
    /// documentation); returns on shutdown.
    async fn supervise(&self, metrics: &Metrics, mut shutdown: watch::Receiver<bool>) {
        loop {
            let status = tokio::select! {
                status = self.wait_exit() => status,
                () = shutdown_requested(&mut shutdown) => return,
            };
            if *shutdown.borrow() {
                return;
            }
            metrics.embedded_db_restarting.set(1);
            tracing::error!(
                status = %status,
                log_tail = %self.log_tail(),
                "the embedded PostgreSQL exited; restarting it"
            );
            let down_since = Instant::now();
            let mut delay = FIRST_RESTART_DELAY;
            for attempt in 1u32.. {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown_requested(&mut shutdown) => return,
                }
                let result = tokio::select! {
                    result = self.launch(None) => result,
                    () = shutdown_requested(&mut shutdown) => return,
                };
                match result {
                    Ok(()) => {
                        metrics.embedded_db_restarts.inc();
                        metrics.embedded_db_restarting.set(0);
                        tracing::warn!(
                            attempt,
                            down_ms = down_since.elapsed().as_millis() as u64,
                            "the embedded PostgreSQL was restarted"
                        );
                        break;
                    }
                    Err(e) => {
                        delay = (delay * 2).min(MAX_RESTART_DELAY);
                        tracing::error!(
                            attempt,
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "cannot restart the embedded PostgreSQL; retrying"
                        );
                    }
                }
            }
        }
    }

    /// Returns how the postmaster exited, once it has.
    async fn wait_exit(&self) -> String {
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A command running `program` from the PostgreSQL binaries, as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin_dir.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        }
    }

    async fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), StartupError> {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(&self.socket_dir);
        let out = cmd.output().await.map_err(|e| {
            StartupError(format!(
                "cannot run {}: {e}",
                self.bin_dir.join(program).display()
            ))
        })?;
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

/// Returns once shutdown is asked for (or nobody can ask any more).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Fast shutdown of our postmaster (SIGINT, as `pg_ctl stop -m fast`), then immediate
/// shutdown (SIGQUIT) if it takes longer than [`STOP_TIMEOUT`].
async fn stop_child(mut child: Child) {
    match child.try_wait() {
        Ok(Some(status)) => {
            tracing::info!(%status, "the embedded PostgreSQL had already exited");
            return;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot wait for the embedded PostgreSQL"),
    }
    let Some(pid) = child.id() else {
        return;
    };
    signal(pid, libc::SIGINT);
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(Ok(_)) => tracing::info!("embedded PostgreSQL stopped"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot wait for the embedded PostgreSQL"),
        Err(_) => {
            tracing::warn!(
                "the embedded PostgreSQL did not stop within {} s; immediate shutdown",
                STOP_TIMEOUT.as_secs()
            );
            signal(pid, libc::SIGQUIT);
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

/// Sends `sig` to our child `pid`.
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY-free: kill has no memory preconditions; `pid` is our unreaped child.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid, sig) };
    if r != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot signal the embedded PostgreSQL"
        );
    }
}

/// A poisoned lock still holds a usable value here (a child handle or a task handle).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

/// Every folder above `root` lets the user `uid` (group `gid`) pass: else initdb fails with a
/// bare "Permission denied", so say which folder stops it and what to do.
fn reachable_by(root: &Path, uid: u32, gid: u32, data_dir: &Path) -> Result<(), StartupError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for folder in root.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(folder) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let passes = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !passes {
            return Err(StartupError(format!(
                "the embedded PostgreSQL runs as the user 'postgres', which cannot enter {} (mode {:o}): \
                 give a --data-dir that it can reach (e.g. --data-dir /var/lib/capture-api), or let it \
                 pass with `chmod o+x {}` (the data folder now is {})",
                folder.display(),
                mode & 0o7777,
                folder.display(),
                data_dir.display()
            )));
        }
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
