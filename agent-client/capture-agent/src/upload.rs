//! Uploads a finished capture file to its blob with the SAS the server gave, in blocks, so that
//! memory stays bounded whatever the file's size; retries for a bounded period, renewing the
//! SAS when it expires; removes the local copy only after the server has checked the blob.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{ClientOptions, RequestContent, RetryOptions};
use azure_storage_blob::models::{
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions, BlockLookupList,
};
use azure_storage_blob::{BlobClient, BlobClientOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use tokio::sync::watch;
use uuid::Uuid;

use agent_protocol::{AgentClient, ClientError, UploadResult, UploadTarget};

/// The storage API version the agent speaks (Azurite accepts up to 2025-11-05).
const STORAGE_VERSION: &str = "2025-11-05";
/// A SAS closer than this to its expiry is renewed before use.
const SAS_MARGIN: Duration = Duration::from_secs(120);

/// One capture file to upload.
pub struct Upload {
    pub capture_id: Uuid,
    /// One file of a continuous capture (uploaded to its own blob, `?file=N`).
    pub file_index: Option<u32>,
    pub file: PathBuf,
    /// The file is the capture's local copy too ("both"): keep it.
    pub keep_local: bool,
    pub target: Option<UploadTarget>,
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub block_size: usize,
    /// Blocks staged at once (memory: about this many blocks).
    pub concurrency: usize,
    /// How long to keep trying before the capture is reported StorageFailed.
    pub retry_period: Duration,
    /// Uploads at once (each holds up to `concurrency` blocks): a continuous capture finishing
    /// many files quickly queues them here instead of growing memory.
    pub uploads_at_once: Arc<tokio::sync::Semaphore>,
}

/// Files uploaded at the same time by one agent.
pub const UPLOADS_AT_ONCE: usize = 2;

/// Why one attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// The SAS was refused (expired or revoked): renew it.
    Auth(String),
    /// The container or the staged blocks are gone (storage lost them, or someone deleted the
    /// container): get a new SAS (the server recreates the container) and start over.
    Restart(String),
    Other(String),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Auth(m) | AttemptError::Restart(m) | AttemptError::Other(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Describes a storage error without its URL (which carries the SAS).
fn describe(e: &azure_core::Error) -> AttemptError {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let m = format!(
                "storage answered HTTP {} {}",
                u16::from(*status),
                error_code.as_deref().unwrap_or("")
            );
            match (u16::from(*status), error_code.as_deref()) {
                (403, _) => AttemptError::Auth(m),
                (404, _) | (400, Some("InvalidBlockList")) => AttemptError::Restart(m),
                _ => AttemptError::Other(m),
            }
        }
        kind => AttemptError::Other(format!("storage unreachable ({kind:?})")),
    }
}

fn block_id(i: u64) -> Vec<u8> {
    format!("capture-block-{i:010}").into_bytes()
}

fn client_for(sas_url: &str) -> Result<BlobClient, AttemptError> {
    let url = url::Url::parse(sas_url).map_err(|e| AttemptError::Other(format!("SAS URL: {e}")))?;
    let options = BlobClientOptions {
        version: STORAGE_VERSION.to_string(),
        client_options: ClientOptions {
            // Our own loop retries, for a bounded period.
            retry: RetryOptions::none(),
            ..Default::default()
        },
    };
    BlobClient::new(url, None, Some(options)).map_err(|e| describe(&e))
}

/// Progress of one upload, kept across attempts: blocks already staged are not sent again.
struct Progress {
    staged: u64,
    md5: Md5,
    size: u64,
}

pub async fn run(
    client: AgentClient,
    agent_id: watch::Receiver<Uuid>,
    settings: Arc<UploadSettings>,
    mut job: Upload,
) {
    let id = job.capture_id;
    let index = job.file_index;
    // Waits for its turn; the semaphore is never closed.
    let Ok(_turn) = settings.uploads_at_once.clone().acquire_owned().await else {
        return;
    };
    // The retry period runs from the last progress: a slow upload that keeps moving is not cut.
    let mut deadline = tokio::time::Instant::now() + settings.retry_period;
    let local_path = job.file.display().to_string();
    let size = match std::fs::metadata(&job.file) {
        Ok(m) => m.len(),
        // A continuous capture's file deleted by its ring before its upload: nothing to send.
        Err(e) if index.is_some() && e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(capture = %id, file = %local_path, "left the ring before its upload");
            return;
        }
        Err(e) => {
            let result = UploadResult::Failed {
                message: format!("the capture file cannot be read: {e}."),
                local_path,
            };
            deliver(&client, &agent_id, id, index, &result).await;
            return;
        }
    };
    let mut progress = Progress {
        staged: 0,
        md5: Md5::new(),
        size,
    };
    let block = settings.block_size.max(64 * 1024) as u64;
    let blocks = size.div_ceil(block);
    let mut attempt = 0u32;
    let mut last_error = String::new();
    loop {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(capture = %id, error = %last_error, "upload gave up");
            let result = UploadResult::Failed {
                message: format!(
                    "no upload succeeded within {} s (last error: {last_error}).",
                    settings.retry_period.as_secs()
                ),
                local_path,
            };
            deliver(&client, &agent_id, id, index, &result).await;
            return;
        }
        if index.is_some() && !job.file.exists() {
            tracing::info!(capture = %id, file = %local_path, "left the ring during its upload");
            return;
        }
        if attempt > 0 {
            let wait = crate::agent::backoff(attempt - 1)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            tokio::time::sleep(wait).await;
        }
        attempt += 1;
        // A SAS that is missing or about to expire is renewed first.
        let fresh = job.target.as_ref().is_some_and(|t| {
            t.expires_on - chrono::Utc::now()
                > chrono::Duration::from_std(SAS_MARGIN).unwrap_or_default()
        });
        if !fresh {
            let agent = *agent_id.borrow();
            match client.upload_sas(agent, id, index).await {
                Ok(t) => job.target = Some(t),
                Err(ClientError::Server { code, message, .. })
                    if code == "StorageAccountRemoved" =>
                {
                    let result = UploadResult::Failed {
                        message,
                        local_path,
                    };
                    deliver(&client, &agent_id, id, index, &result).await;
                    return;
                }
                Err(ClientError::Server { status, code, .. }) if status == 404 || status == 409 => {
                    // Deleted, or no longer uploading: keep the file and stop.
                    tracing::warn!(capture = %id, %code, file = %local_path, "upload no longer wanted; file kept");
                    return;
                }
                Err(e) => {
                    last_error = format!("no upload credential: {e}");
                    continue;
                }
            }
        }
        let Some(target) = job.target.clone() else {
            continue;
        };
        let staged_before = progress.staged;
        let attempt_result = attempt_upload(
            &target.blob_url,
            &job.file,
            block,
            blocks,
            settings.concurrency,
            &mut progress,
        )
        .await;
        if progress.staged > staged_before {
            deadline = tokio::time::Instant::now() + settings.retry_period;
        }
        match attempt_result {
            Ok(()) => {}
            Err(AttemptError::Auth(m)) => {
                last_error = m;
                job.target = None;
                continue;
            }
            Err(AttemptError::Restart(m)) => {
                tracing::info!(capture = %id, error = %m, "upload starts over");
                last_error = m;
                job.target = None;
                progress = Progress {
                    staged: 0,
                    md5: Md5::new(),
                    size,
                };
                continue;
            }
            Err(AttemptError::Other(m)) => {
                tracing::info!(capture = %id, error = %m, "upload attempt failed; retrying");
                last_error = m;
                continue;
            }
        }
        let content_md5 = STANDARD.encode(progress.md5.clone().finalize());
        let result = UploadResult::Uploaded { size, content_md5 };
        let agent = *agent_id.borrow();
        match client.upload_result(agent, id, index, &result).await {
            Ok(()) => {
                tracing::info!(capture = %id, bytes = size, "uploaded and verified");
                if !job.keep_local
                    && let Err(e) = std::fs::remove_file(&job.file)
                {
                    tracing::warn!(capture = %id, error = %e, "cannot remove the uploaded file");
                }
                return;
            }
            Err(ClientError::Server {
                status: 409,
                code,
                message,
            }) if code == "UploadMismatch" => {
                // Start again from the first block.
                last_error = message;
                progress = Progress {
                    staged: 0,
                    md5: Md5::new(),
                    size,
                };
            }
            Err(ClientError::Server { status, code, .. }) if status == 404 || status == 409 => {
                tracing::warn!(capture = %id, %code, file = %local_path, "upload no longer wanted; file kept");
                return;
            }
            Err(e) => last_error = format!("the server could not check the upload: {e}"),
        }
    }
}

/// Stages the blocks not staged yet, then commits the list with the file's MD5.
async fn attempt_upload(
    sas_url: &str,
    file: &std::path::Path,
    block: u64,
    blocks: u64,
    concurrency: usize,
    p: &mut Progress,
) -> Result<(), AttemptError> {
    let blob = client_for(sas_url)?.block_blob_client();
    let f = std::fs::File::open(file)
        .map_err(|e| AttemptError::Other(format!("cannot read {}: {e}", file.display())))?;
    // Up to `concurrency` blocks in flight, each block in memory once. Blocks are read (and the
    // file's MD5 advanced) in order as the stream asks for the next one; each staged block hands
    // back the MD5 state after it, so the staged prefix and its MD5 move on together.
    let blob = &blob;
    let size = p.size;
    let mut read_md5 = p.md5.clone();
    let mut results = futures_util::stream::iter(p.staged..blocks)
        .map(|i| {
            let offset = i * block;
            let len = block.min(size - offset) as usize;
            let mut data = vec![0u8; len];
            let read = f.read_exact_at(&mut data, offset);
            if read.is_ok() {
                read_md5.update(&data);
            }
            let md5_after = read_md5.clone();
            async move {
                read.map_err(|e| AttemptError::Other(format!("cannot read the file: {e}")))?;
                let options = BlockBlobClientStageBlockOptions {
                    transactional_content_md5: Some(Md5::digest(&data).to_vec()),
                    ..Default::default()
                };
                blob.stage_block(
                    &block_id(i),
                    len as u64,
                    RequestContent::from(data),
                    Some(options),
                )
                .await
                .map_err(|e| describe(&e))?;
                Ok::<_, AttemptError>(md5_after)
            }
        })
        .buffered(concurrency.max(1));
    while let Some(staged) = results.next().await {
        p.md5 = staged?;
        p.staged += 1;
    }
    drop(results);
    let list = BlockLookupList {
        latest: Some((0..blocks).map(block_id).collect()),
        ..Default::default()
    };
    let content: RequestContent<BlockLookupList, _> = list
        .try_into()
        .map_err(|e: azure_core::Error| describe(&e))?;
    let options = BlockBlobClientCommitBlockListOptions {
        blob_content_md5: Some(p.md5.clone().finalize().to_vec()),
        blob_content_type: Some("application/vnd.tcpdump.pcap".to_string()),
        ..Default::default()
    };
    blob.commit_block_list(content, Some(options))
        .await
        .map_err(|e| describe(&e))?;
    Ok(())
}

/// Delivers a final upload result, retrying while the server is unreachable.
async fn deliver(
    client: &AgentClient,
    agent_id: &watch::Receiver<Uuid>,
    id: Uuid,
    index: Option<u32>,
    result: &UploadResult,
) {
    let mut attempt = 0;
    loop {
        let agent = *agent_id.borrow();
        match client.upload_result(agent, id, index, result).await {
            Ok(()) => return,
            Err(ClientError::Server { status, .. }) if status == 404 || status == 409 => return,
            Err(e) => {
                tracing::warn!(capture = %id, error = %e, "cannot report the upload; retrying");
                tokio::time::sleep(crate::agent::backoff(attempt)).await;
                attempt = (attempt + 1).min(10);
            }
        }
    }
}

/// Reports an upload that cannot happen at all.
pub async fn give_up(
    client: AgentClient,
    agent_id: watch::Receiver<Uuid>,
    capture_id: Uuid,
    message: String,
) {
    let result = UploadResult::Failed {
        message,
        local_path: String::new(),
    };
    deliver(&client, &agent_id, capture_id, None, &result).await;
}
