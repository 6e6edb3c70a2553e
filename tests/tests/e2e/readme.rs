//! The README's quick start and "Using it", run as a reader would: the server as the quick start
//! starts it (the embedded default, in `./data`), then every block of "Using it" in order, as
//! one `bash` script. A README whose commands no longer work fails here.
//!
//! Only what must differ on a shared test machine is replaced: the port (a free one instead of
//! 8480), the binaries (the ones this test run built, instead of `cargo run`/`cargo build`,
//! which would wait for the build lock that `cargo test` holds), and the agent's and
//! Alertmanager's folders under `/tmp` (a folder of this test instead), and Alertmanager's port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fenced `bash`/`sh` blocks of the README from the heading `from` up to the heading `to`.
fn blocks(readme: &str, from: &str, to: &str) -> Vec<String> {
    let start = readme
        .find(from)
        .unwrap_or_else(|| panic!("README has no '{from}'"));
    let end = readme[start..].find(to).map_or(readme.len(), |e| start + e);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[start..end].lines() {
        match &mut current {
            None if line.starts_with("```bash") || line.starts_with("```sh") => {
                current = Some(String::new())
            }
            Some(block) if line.starts_with("```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder the `postgres` user can enter (the embedded cluster runs as that user).
fn folder() -> Folder {
    use std::os::unix::fs::PermissionsExt;
    let dir = e2e_tests::scratch().join(format!("readme-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Folder(dir)
}

fn substituted(text: &str, port: u16, dir: &Path) -> String {
    let bin = |name: &str| e2e_tests::bin(name).display().to_string();
    text.replace("cargo run -q -p capture-api --", &bin("capture-api"))
        .replace("cargo run -p capture-api --", &bin("capture-api"))
        .replace("cargo build -q -p capture-agent", "true")
        .replace("target/debug/capture-agent", &bin("capture-agent"))
        .replace("127.0.0.1:8480", &format!("127.0.0.1:{port}"))
        .replace(
            "/tmp/capture-agent",
            &dir.join("agent-state").display().to_string(),
        )
        .replace("/tmp/captures", &dir.join("captures").display().to_string())
        .replace(
            "/tmp/alertmanager",
            &dir.join("alertmanager").display().to_string(),
        )
        .replace(
            "127.0.0.1:9093",
            &format!("127.0.0.1:{}", alertmanager_port()),
        )
}

/// The port of the README's Alertmanager in this test (instead of 9093).
fn alertmanager_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(e2e_tests::free_port)
}

#[tokio::test]
async fn the_readme_quick_start_and_using_it_run_as_a_script() {
    if !e2e_tests::is_root() {
        eprintln!("skipped: the agent of the README captures as root");
        return;
    }
    let readme = std::fs::read_to_string(e2e_tests::workspace_root().join("README.md")).unwrap();
    let dir = folder();
    let port = e2e_tests::free_port();

    // The quick start's first command: the server, in the folder the reader is in.
    let quick_start = blocks(&readme, "## Quick start", "## Using it");
    let serve = quick_start
        .first()
        .and_then(|b| b.lines().next())
        .map(|l| l.split('#').next().unwrap_or(l).trim().to_string())
        .unwrap();
    assert!(
        serve.ends_with("serve"),
        "the quick start starts with the server: {serve}"
    );
    let log = std::fs::File::create(dir.0.join("server.log")).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "exec {} --listen 127.0.0.1:{port}",
            substituted(&serve, port, &dir.0)
        ))
        .current_dir(&dir.0)
        .stdout(Stdio::piped())
        .stderr(log);
    let mut server = e2e_tests::spawn_child(cmd).unwrap();
    let stdout = server.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains("listening on") => break,
            _ if started.elapsed() > Duration::from_secs(60) => {
                let _ = server.kill();
                panic!(
                    "the quick start's server did not start: {}",
                    std::fs::read_to_string(dir.0.join("server.log")).unwrap_or_default()
                );
            }
            _ => {}
        }
    }

    // "Using it", up to the storage accounts, as one script.
    let using = blocks(&readme, "## Using it", "### Storage accounts");
    assert!(using.len() >= 3, "{using:?}");
    let script = format!(
        "set -euo pipefail\n{}",
        substituted(&using.join("\n"), port, &dir.0)
    );
    std::fs::write(dir.0.join("using-it.sh"), &script).unwrap();
    let output = dir.0.join("using-it.out");
    let mut run = Command::new("bash")
        .arg(dir.0.join("using-it.sh"))
        .current_dir(&dir.0)
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::from(
            std::fs::File::options().append(true).open(&output).unwrap(),
        ))
        .spawn()
        .unwrap();
    let status = e2e_tests::wait_exit(&mut run, Duration::from_secs(240));
    let said = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = e2e_tests::wait_exit(&mut server, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the README's commands failed ({status:?}):\n{said}\nscript:\n{script}"
    );

    // The file it downloaded holds the packets it sent.
    let file = e2e_tests::pcapfile::read(&dir.0.join("pc1.cap"));
    let tags = file.tags();
    for i in 1..=10 {
        assert!(
            tags.iter().any(|t| t.trim() == format!("packet {i}")),
            "packet {i} missing: {tags:?}"
        );
    }
    // The capture the README's alert started holds the packets sent while it fired.
    let alerts = dir.0.join("captures/alerts");
    let started: Vec<_> = std::fs::read_dir(&alerts)
        .unwrap_or_else(|e| panic!("{}: {e}", alerts.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("slow-web-vm1-"))
        })
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    let tags = e2e_tests::pcapfile::read(&started[0]).tags();
    for i in 1..=10 {
        assert!(
            tags.iter().any(|t| t.trim() == format!("alert packet {i}")),
            "alert packet {i} missing: {tags:?}"
        );
    }
}
