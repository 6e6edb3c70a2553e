//! The real `capture-agent` binary, capturing on `lo` into a captures root of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct RealAgent {
    pub machine_id: String,
    pub captures_root: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl RealAgent {
    /// Starts an agent for `machine_id` against `server_url` (extra flags in `extra`).
    pub fn start(server_url: &str, machine_id: &str, extra: &[&str]) -> RealAgent {
        let dir = crate::scratch().join(format!("capture-agent-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("agent dir");
        let captures_root = dir.join("captures");
        let mut args: Vec<String> = vec![
            "run".into(),
            "--server".into(),
            server_url.into(),
            "--machine-id".into(),
            machine_id.into(),
            "--location".into(),
            "eastus".into(),
            "--captures-root".into(),
            captures_root.display().to_string(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--buffer-size".into(),
            (8 * 1024 * 1024).to_string(),
            "--report-seconds".into(),
            "0.5".into(),
        ];
        if !extra.iter().any(|a| a.starts_with("--enrollment-token"))
            && let Some(c) = crate::credentials::for_url(server_url)
        {
            args.extend(["--enrollment-token".to_string(), c.enrollment_token]);
        }
        if !extra.contains(&"--interface") {
            args.extend(["--interface".to_string(), "lo".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut agent = RealAgent {
            machine_id: machine_id.to_string(),
            captures_root,
            log: dir.join("agent.log"),
            child: None,
            args,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=KILL")
            .arg(crate::bin("capture-agent"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = crate::spawn_child(cmd).expect("spawn capture-agent");
        self.child = Some(child);
    }

    /// The file an ARM path `/var/captures/...` names on this agent's machine.
    pub fn file(&self, arm_path: &str) -> PathBuf {
        let rel = arm_path
            .strip_prefix("/var/captures/")
            .expect("ARM capture path");
        std::fs::canonicalize(&self.captures_root)
            .unwrap_or_else(|_| self.captures_root.clone())
            .join(rel)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        matches!(c.wait(), Ok(s) if s.success())
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The agent's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.log.with_file_name("state")
    }

    /// The agent's process id (0 when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        self.kill();
    }
}
