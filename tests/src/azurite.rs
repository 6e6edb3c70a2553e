//! A real Azurite blob service (from `tests/azurite`, installed by the test command), on
//! 127.0.0.1 with a data folder of its own; strict API version checking.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Azurite's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Accept any storage API version: for the Azure CLI, whose storage client speaks a newer
    /// one than Azurite knows (the agent and the server still speak theirs).
    any_api_version: bool,
}

impl Azurite {
    pub fn start() -> Azurite {
        Self::launch(false)
    }

    /// An Azurite that [`Azurite::list_blobs`] can read with the Azure CLI.
    pub fn start_for_cli() -> Azurite {
        Self::launch(true)
    }

    fn launch(any_api_version: bool) -> Azurite {
        let dir = crate::scratch().join(format!("azurite-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("azurite dir");
        let mut a = Azurite {
            port: crate::free_port(),
            dir,
            child: None,
            any_api_version,
        };
        // A free port may be taken by another test's process before Azurite binds it: then it
        // exits, and it starts again on another port.
        for _ in 0..5 {
            if a.spawn() {
                return a;
            }
            a.port = crate::free_port();
        }
        panic!("azurite did not start on 5 ports; its log:\n{}", a.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("azurite.log")).unwrap_or_default()
    }

    /// Starts Azurite on `self.port`: true once it says it listens there, false when it exited
    /// first (the port was taken).
    fn spawn(&mut self) -> bool {
        let bin = crate::workspace_root().join("tests/azurite/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: run the test command (it installs Azurite with npm)",
            bin.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("azurite.log"))
            .expect("azurite log");
        let from = self.log().len();
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=KILL")
            .arg(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self.dir.join("data"))
            .arg("--disableTelemetry")
            .args(self.any_api_version.then_some("--skipApiVersionCheck"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let mut child = crate::spawn_child(cmd).expect("spawn azurite");
        // Its own word that it listens on this port (a connection could reach another process).
        let listening = format!("successfully listens on http://127.0.0.1:{}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .log()
                .get(from..)
                .is_some_and(|l| l.contains(&listening))
            {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "azurite did not start; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The blob endpoint of the development account.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Stops it at once (SIGKILL); its data stays for [`Azurite::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..20 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "azurite did not start again on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Azurite {
    /// The names of the blobs in `container`, listed by the unchanged Azure CLI (the az venv of
    /// `scripts/test`) with the account key (an Azurite from [`Azurite::start_for_cli`]).
    pub fn list_blobs(&self, container: &str) -> Vec<String> {
        let az = crate::workspace_root().join("tests/python/.az-venv/bin/az");
        let config = crate::scratch().join(format!("az-blobs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&config).expect("az config dir");
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={};",
            self.endpoint()
        );
        let out = std::process::Command::new(&az)
            .args([
                "storage",
                "blob",
                "list",
                "--container-name",
                container,
                "--query",
                "[].name",
                "--output",
                "tsv",
                "--only-show-errors",
            ])
            .env("AZURE_CONFIG_DIR", &config)
            .env("AZURE_STORAGE_CONNECTION_STRING", &connection)
            .env("AZURE_CORE_COLLECT_TELEMETRY", "false")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", az.display()));
        let _ = std::fs::remove_dir_all(&config);
        assert!(
            out.status.success(),
            "az storage blob list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        names
    }
}
