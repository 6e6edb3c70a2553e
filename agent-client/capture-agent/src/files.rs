//! The files of the captures this agent ran (kept across restarts in the state folder), and
//! sending one of them to the server when a caller downloads it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use uuid::Uuid;

use agent_protocol::{AgentClient, TransferRequest};

/// Capture id → the file it wrote, appended to `files.tsv` as each capture starts.
pub struct FileRecord {
    path: PathBuf,
    files: HashMap<Uuid, PathBuf>,
}

impl FileRecord {
    pub fn open(path: &Path) -> FileRecord {
        let files = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (id, file) = l.split_once('\t')?;
                Some((id.parse().ok()?, PathBuf::from(file)))
            })
            .collect();
        FileRecord {
            path: path.to_path_buf(),
            files,
        }
    }

    pub fn insert(&mut self, capture: Uuid, file: &Path) {
        self.files.insert(capture, file.to_path_buf());
        use std::os::unix::fs::OpenOptionsExt;
        let written = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{capture}\t{}", file.display()));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot record the capture's file");
        }
    }

    pub fn get(&self, capture: Uuid) -> Option<PathBuf> {
        self.files.get(&capture).cloned()
    }
}

/// Sends `file` (the file capture `t.capture_id` wrote) for transfer `t`, or declines.
pub async fn send(
    client: AgentClient,
    agent_id: watch::Receiver<Uuid>,
    t: TransferRequest,
    file: Option<PathBuf>,
    captures_root: PathBuf,
) {
    let agent = *agent_id.borrow();
    let opened = match file {
        None => Err(format!(
            "this agent did not run capture {} (or lost its record of it)",
            t.capture_id
        )),
        Some(path) => open_under(&captures_root, &path).await,
    };
    let result = match opened {
        Ok((file, size)) => {
            tracing::info!(capture = %t.capture_id, bytes = size, "sending the capture file");
            // Exactly `size` bytes: a running capture's file is sent as it was when asked for.
            let stream = futures_util::stream::unfold((file, size), |(mut f, left)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf = vec![0u8; left.min(256 * 1024) as usize];
                match f.read_exact(&mut buf).await {
                    Ok(n) => Some((Ok::<_, std::io::Error>(buf), (f, left - n as u64))),
                    Err(e) => Some((Err(e), (f, 0))),
                }
            });
            client
                .send_transfer(
                    agent,
                    t.transfer_id,
                    size,
                    reqwest::Body::wrap_stream(stream),
                )
                .await
        }
        Err(reason) => {
            tracing::info!(capture = %t.capture_id, %reason, "declining a file transfer");
            client.fail_transfer(agent, t.transfer_id, &reason).await
        }
    };
    if let Err(e) = result {
        tracing::warn!(capture = %t.capture_id, error = %e, "file transfer failed");
    }
}

/// Opens a recorded file, refusing anything that does not resolve under the captures root.
async fn open_under(root: &Path, path: &Path) -> Result<(tokio::fs::File, u64), String> {
    let root = tokio::fs::canonicalize(root)
        .await
        .map_err(|e| format!("captures root: {e}"))?;
    let real = match tokio::fs::canonicalize(path).await {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "the file is no longer on the machine (uploaded to storage and removed, or deleted)"
                    .into(),
            );
        }
        Err(e) => return Err(format!("the file cannot be read: {e}")),
    };
    if !real.starts_with(&root) {
        return Err("the file is not under the agent's captures root".into());
    }
    // No link is followed when opening what was checked.
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&real)
        .await
        .map_err(|e| format!("the file cannot be read: {e}"))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("the file cannot be read: {e}"))?
        .len();
    Ok((file, size))
}
