//! Test harness: a throwaway PostgreSQL cluster per test process (per-test databases cloned from
//! a migrated template), the real `capture-api` binary on a random port, HTTP helpers, and a
//! scripted agent built on the `agent-protocol` library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod alertmanager;
pub mod azurite;
pub mod credentials;
pub mod http;
pub mod netns;
pub mod pcapfile;
pub mod postgres;
pub mod real_agent;
pub mod server;
pub mod traffic;

pub use agent::ScriptedAgent;
pub use http::Api;
pub use postgres::TestDb;
pub use server::{ServerOptions, TestServer};

/// `target/debug` (or wherever this test binary was built).
pub fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/e2e-xxxx -> target/debug
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary, which the test command builds before the tests run.
pub fn bin(name: &str) -> std::path::PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// The one folder where this test process keeps everything it makes (the PostgreSQL cluster,
/// server logs, agents' folders, keys): `TMPDIR/capture-e2e-<pid>`. The folders of earlier test
/// processes that are no longer running are removed when it is first made, so a run leaves at
/// most its own folder behind (kept for reading the logs of a failed test).
pub fn scratch() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static SCRATCH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    SCRATCH
        .get_or_init(|| {
            let tmp = std::env::temp_dir();
            remove_stale_scratch(&tmp);
            let dir = tmp.join(format!("capture-e2e-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("scratch folder");
            // The embedded clusters of some tests run as the postgres user, under this folder.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .expect("scratch folder mode");
            dir
        })
        .clone()
}

/// Removes the scratch folders in `tmp` of test processes that no longer run.
pub fn remove_stale_scratch(tmp: &std::path::Path) {
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let pid = name
            .strip_prefix("capture-e2e-")
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A port that is free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits for `child` to exit within `limit`; kills it and answers `None` otherwise.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The workspace root.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A fresh subscription id, so that tests sharing a database never see each other.
pub fn new_subscription() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn vm_id(subscription: &str, rg: &str, vm: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}"
    )
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Spawns a child process from one thread that lives as long as the test process, so that the
/// children's parent-death signal (`setpriv --pdeathsig`) fires only when the tests end, not when
/// the (pooled, short-lived) thread that asked for them exits.
pub fn spawn_child(cmd: std::process::Command) -> std::io::Result<std::process::Child> {
    use std::sync::mpsc::{Sender, channel};
    use std::sync::{Mutex, OnceLock};
    type Request = (
        std::process::Command,
        Sender<std::io::Result<std::process::Child>>,
    );
    static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (tx, rx) = channel();
    spawner
        .lock()
        .expect("spawner")
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_folders_of_ended_runs_are_removed() {
        let tmp = std::env::temp_dir().join(format!("scratch-test-{}", std::process::id()));
        let ended = tmp.join("capture-e2e-4294967294");
        let running = tmp.join(format!("capture-e2e-{}", std::process::id()));
        let other = tmp.join("capture-e2e-notapid");
        for d in [&ended, &running, &other] {
            std::fs::create_dir_all(d.join("logs")).unwrap();
        }
        super::remove_stale_scratch(&tmp);
        assert!(!ended.exists() && running.exists() && other.exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
