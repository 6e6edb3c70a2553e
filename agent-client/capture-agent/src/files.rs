//! The files of the captures this agent ran (kept across restarts in the state folder), and
//! sending one of them to the server when a caller downloads it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use uuid::Uuid;

use agent_protocol::{AgentClient, TransferRequest};

/// Capture id → the file it wrote (a continuous capture: the path its numbered files are named
/// after), appended to `files.tsv` as each capture starts: `id<TAB>path[<TAB>continuous]`.
pub struct FileRecord {
    path: PathBuf,
    files: HashMap<Uuid, (PathBuf, bool)>,
}

const CONTINUOUS: &str = "continuous";

impl FileRecord {
    pub fn open(path: &Path) -> FileRecord {
        let files = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let id = cols.next()?.parse().ok()?;
                let file = PathBuf::from(cols.next()?);
                Some((id, (file, cols.next() == Some(CONTINUOUS))))
            })
            .collect();
        FileRecord {
            path: path.to_path_buf(),
            files,
        }
    }

    pub fn insert(&mut self, capture: Uuid, file: &Path, continuous: bool) {
        self.files.insert(capture, (file.to_path_buf(), continuous));
        use std::os::unix::fs::OpenOptionsExt;
        let written = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| {
                if continuous {
                    writeln!(f, "{capture}\t{}\t{CONTINUOUS}", file.display())
                } else {
                    writeln!(f, "{capture}\t{}", file.display())
                }
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot record the capture's file");
        }
    }

    /// The capture's file (or base path) and whether it is continuous.
    pub fn get(&self, capture: Uuid) -> Option<(PathBuf, bool)> {
        self.files.get(&capture).cloned()
    }
}

/// Sends what transfer `t` asks for, or declines: the capture's file; for a continuous capture
/// (`file` recorded with `continuous`), file `t.file`, or without one every kept file merged into
/// one pcap (the files are consecutive parts of one capture: their records follow one another in
/// time order, so the merge keeps the first header and appends the others' records).
pub async fn send(
    client: AgentClient,
    agent_id: watch::Receiver<Uuid>,
    t: TransferRequest,
    file: Option<(PathBuf, bool)>,
    captures_root: PathBuf,
) {
    let agent = *agent_id.borrow();
    let parts: Result<Vec<PathBuf>, String> = match (file, t.file) {
        (None, _) => Err(format!(
            "this agent did not run capture {} (or lost its record of it)",
            t.capture_id
        )),
        (Some((path, false)), None) => Ok(vec![path]),
        (Some((_, false)), Some(i)) => Err(format!(
            "capture {} is not a continuous capture: it has no file {i}",
            t.capture_id
        )),
        (Some((base, true)), Some(i)) => Ok(vec![crate::paths::numbered(&base, i)]),
        (Some((base, true)), None) => {
            let kept: Vec<PathBuf> = crate::paths::numbered_on_disk(&base)
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            if kept.is_empty() {
                Err("no file of the capture is on the machine any more (uploaded to storage and removed, or deleted)".into())
            } else {
                Ok(kept)
            }
        }
    };
    let mut opened = vec![];
    let mut failure = None;
    for path in parts.unwrap_or_else(|e| {
        failure = Some(e);
        vec![]
    }) {
        match open_under(&captures_root, &path).await {
            Ok(f) => opened.push(f),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let result = match failure {
        None => {
            // Every file is open: a ring deleting one meanwhile does not change what is sent.
            // The first file whole, then each other file without its 24-byte header.
            let mut size = 0;
            let mut sources = vec![];
            for (n, (f, len)) in opened.into_iter().enumerate() {
                let skip = if n == 0 { 0 } else { HEADER.min(len) };
                size += len - skip;
                sources.push((f, skip, len - skip));
            }
            tracing::info!(capture = %t.capture_id, bytes = size, files = sources.len(), "sending the capture file");
            let stream = futures_util::stream::unfold(
                (sources.into_iter(), None::<(tokio::fs::File, u64)>),
                |(mut rest, mut current)| async move {
                    loop {
                        if current.as_ref().is_none_or(|(_, left)| *left == 0) {
                            let (mut f, skip, left) = rest.next()?;
                            if skip > 0 {
                                let mut header = vec![0u8; skip as usize];
                                if let Err(e) = f.read_exact(&mut header).await {
                                    return Some((Err(e), (rest, None)));
                                }
                            }
                            current = Some((f, left));
                            continue;
                        }
                        let (mut f, left) = current.take()?;
                        let mut buf = vec![0u8; left.min(256 * 1024) as usize];
                        return match f.read_exact(&mut buf).await {
                            Ok(n) => Some((
                                Ok::<_, std::io::Error>(buf),
                                (rest, Some((f, left - n as u64))),
                            )),
                            Err(e) => Some((Err(e), (rest, None))),
                        };
                    }
                },
            );
            client
                .send_transfer(
                    agent,
                    t.transfer_id,
                    size,
                    reqwest::Body::wrap_stream(stream),
                )
                .await
        }
        Some(reason) => {
            tracing::info!(capture = %t.capture_id, %reason, "declining a file transfer");
            client.fail_transfer(agent, t.transfer_id, &reason).await
        }
    };
    if let Err(e) = result {
        tracing::warn!(capture = %t.capture_id, error = %e, "file transfer failed");
    }
}

/// Bytes of a pcap file header.
const HEADER: u64 = crate::writer::HEADER_BYTES;

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
