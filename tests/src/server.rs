//! The real `capture-api` binary, started on a random port.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// None = the embedded default (with `data_dir`).
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub agent_wait_seconds: u64,
    pub agent_lost_seconds: u64,
    pub stop_grace_seconds: u64,
    pub page_size: u64,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub extra: Vec<String>,
    /// Address to listen on (port 0 = any free port).
    pub listen: String,
    /// The key sealing storage account keys (shared with `storage-accounts add`).
    pub secrets_key_file: PathBuf,
    /// Created at the first start (unless --auth-disabled is in `extra`), kept across restarts.
    pub credentials: Option<crate::credentials::Credentials>,
}

impl ServerOptions {
    /// The database options of the command-line tools for this server.
    pub fn db_args(&self) -> Vec<String> {
        let mut a = vec![];
        if let Some(url) = &self.database_url {
            a.extend(["--database-url".to_string(), url.clone()]);
        }
        if let Some(dir) = &self.data_dir {
            a.extend(["--data-dir".to_string(), dir.display().to_string()]);
        }
        a.extend([
            "--secrets-key-file".to_string(),
            self.secrets_key_file.display().to_string(),
        ]);
        a
    }

    pub fn new(database_url: &str) -> Self {
        ServerOptions {
            database_url: Some(database_url.to_string()),
            data_dir: None,
            agent_wait_seconds: 10,
            agent_lost_seconds: 30,
            stop_grace_seconds: 5,
            page_size: 100,
            tls: None,
            extra: vec![],
            listen: "127.0.0.1:0".to_string(),
            // One per database: every server (replica) of a database shares it.
            secrets_key_file: crate::scratch().join(format!(
                "capture-secrets-{}.key",
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, database_url.as_bytes()).simple()
            )),
            credentials: None,
        }
    }
}

pub struct TestServer {
    pub url: String,
    pub options: ServerOptions,
    child: Option<Child>,
    pub log: PathBuf,
}

impl TestServer {
    pub async fn start(options: ServerOptions) -> TestServer {
        let opts = options.clone();
        tokio::task::spawn_blocking(move || Self::start_blocking(opts))
            .await
            .expect("start server")
    }

    fn start_blocking(options: ServerOptions) -> TestServer {
        let log =
            crate::scratch().join(format!("capture-api-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=KILL")
            .arg(crate::bin("capture-api"))
            .arg("serve");
        cmd.args(["--listen", &options.listen]);
        if let Some(url) = &options.database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(dir) = &options.data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        cmd.args([
            "--agent-wait-seconds",
            &options.agent_wait_seconds.to_string(),
        ])
        .args([
            "--agent-lost-seconds",
            &options.agent_lost_seconds.to_string(),
        ])
        .args([
            "--stop-grace-seconds",
            &options.stop_grace_seconds.to_string(),
        ])
        .args(["--page-size", &options.page_size.to_string()])
        .args(["--workers", "2"])
        .arg("--secrets-key-file")
        .arg(&options.secrets_key_file)
        .args(&options.extra);
        if let Some((cert, key)) = &options.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        cmd.env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = crate::spawn_child(cmd).expect("spawn capture-api");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout_copy = log.with_extension("stdout");
        std::thread::spawn(move || {
            let mut copy = std::fs::File::create(stdout_copy).ok();
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(f) = copy.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Some(url) = line.strip_prefix("capture-api listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "capture-api did not start; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let mut options = options;
        if !options.extra.iter().any(|a| a == "--auth-disabled") {
            let creds = options
                .credentials
                .clone()
                .unwrap_or_else(|| crate::credentials::create(&options.db_args()));
            crate::credentials::register(&url, &creds);
            options.credentials = Some(creds);
        }
        TestServer {
            url,
            options,
            child: Some(child),
            log,
        }
    }

    /// The credentials the harness made for this server (auth on).
    pub fn credentials(&self) -> &crate::credentials::Credentials {
        self.options
            .credentials
            .as_ref()
            .expect("this server runs with --auth-disabled")
    }

    /// Runs `capture-api ARGS` against this server's database.
    pub fn cli(&self, args: &[&str]) -> String {
        crate::credentials::cli(&self.options.db_args(), args)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the same server again (same options; a new port).
    pub async fn restart(&mut self) {
        self.kill();
        let fresh = TestServer::start(self.options.clone()).await;
        *self = fresh;
    }

    /// Starts the same server again on the same address (agents reconnect to it).
    pub async fn restart_same_address(&mut self) {
        self.kill();
        let mut options = self.options.clone();
        options.listen = self
            .url
            .rsplit("://")
            .next()
            .unwrap_or_default()
            .to_string();
        let fresh = TestServer::start(options).await;
        *self = fresh;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the server printed on standard output.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stdout")).unwrap_or_default()
    }

    /// Runs `capture-api storage-accounts ARGS` against this server's database; returns its
    /// exit success, stdout and stderr. `stdin` is given to the command.
    pub fn storage_accounts(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        use std::io::Write;
        let mut cmd = Command::new(crate::bin("capture-api"));
        cmd.arg("storage-accounts").args(args);
        if let Some(url) = &self.options.database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(dir) = &self.options.data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        cmd.arg("--secrets-key-file")
            .arg(&self.options.secrets_key_file)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("capture-api storage-accounts");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        let out = child.wait_with_output().expect("storage-accounts output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
