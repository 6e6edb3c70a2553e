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
}

impl Azurite {
    pub fn start() -> Azurite {
        let dir = crate::scratch().join(format!("azurite-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("azurite dir");
        let mut a = Azurite {
            port: crate::free_port(),
            dir,
            child: None,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
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
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=KILL")
            .arg(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self.dir.join("data"))
            .arg("--disableTelemetry")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(crate::spawn_child(cmd).expect("spawn azurite"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "azurite did not start; its log:\n{}",
                std::fs::read_to_string(self.dir.join("azurite.log")).unwrap_or_default()
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
        self.spawn();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
