//! One throwaway PostgreSQL cluster per test process, started from the system's binaries (as
//! the `postgres` user when the tests run as root), and a database per test cloned from a
//! template that `capture-api migrate` prepared.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    /// The postmaster; it dies with the test process (parent-death signal).
    _postgres: std::process::Child,
}

const TEMPLATE: &str = "capture_template";

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn as_postgres(program: PathBuf) -> Command {
    if crate::is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--pdeathsig=KILL",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Cluster {
    pub fn get() -> &'static Cluster {
        CLUSTER.get_or_init(|| {
            // Started from a thread that lives as long as the process, so that the parent-death
            // signal only fires when the test process ends.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let cluster = start();
                tx.send(cluster).expect("send cluster");
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("cluster thread")
        })
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

fn start() -> Cluster {
    let dir = crate::scratch().join("postgres");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cluster dir");
    if crate::is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(st.success());
    }
    let data = dir.join("data");
    let out = as_postgres(pg_bin("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null())
        .output()
        .expect("initdb");
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = crate::free_port();
    let log = std::fs::File::create(dir.join("postgres.log")).expect("log");
    if crate::is_root() {
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.join("postgres.log"))
            .status();
    }
    let postgres = as_postgres(pg_bin("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=400",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("postgres");
    let cluster = Cluster {
        port,
        dir,
        _postgres: postgres,
    };
    // Wait until it accepts connections, then prepare the migrated template.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
                        .await
                        .expect("create template");
                    break;
                }
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "postgres did not start: {e}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    let out = Command::new(crate::bin("capture-api"))
        .args(["migrate", "--database-url", &cluster.url(TEMPLATE)])
        .output()
        .expect("capture-api migrate");
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster
}

/// A database of its own for one test, cloned from the migrated template.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let cluster = Cluster::get();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) =
            tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .await
            .expect("create database");
        TestDb {
            url: cluster.url(&name),
            name,
        }
    }

    /// A direct connection, for assertions on the stored state.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }
}
