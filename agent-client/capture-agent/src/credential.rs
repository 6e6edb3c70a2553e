//! The agent's credential, kept in the state folder (0600) so that a restarted agent needs no
//! new enrollment token, and rotated when a third of its life is left.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub machine_id: String,
    pub credential: String,
    pub obtained_at: DateTime<Utc>,
    pub expires_on: DateTime<Utc>,
}

pub struct CredentialFile {
    path: PathBuf,
}

impl CredentialFile {
    pub fn new(state_dir: &Path) -> CredentialFile {
        CredentialFile {
            path: state_dir.join("credential.json"),
        }
    }

    /// The stored credential of `machine_id`, if any and not expired.
    pub fn load(&self, machine_id: &str) -> Option<Stored> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let s: Stored = serde_json::from_str(&text).ok()?;
        (s.machine_id.eq_ignore_ascii_case(machine_id) && s.expires_on > Utc::now()).then_some(s)
    }

    /// Writes it atomically, readable by the agent's user only.
    pub fn save(&self, s: &Stored) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(serde_json::to_string(s).unwrap_or_default().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

impl Stored {
    /// Whether it is time to rotate: less than a third of its life is left.
    pub fn due(&self) -> bool {
        let life = self.expires_on - self.obtained_at;
        self.expires_on - Utc::now() < life / 3
    }
}
