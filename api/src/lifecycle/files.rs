//! Events of a continuous capture's files: the agent reported them, one was uploaded (or its
//! upload given up), a discarded file's blob was deleted; and the capture's upload as a whole,
//! settled once the capture ended and no file is left to upload.
//!
//! ```text
//!  file:  Writing ──► Complete                        (no storage account)
//!            └──────► Uploading ──► Uploaded | UploadFailed
//!  a file leaving the ring: removed; with a blob (Uploading, Uploaded) ──► Discarded, removed
//!  once the server deleted the blob
//! ```
//! The capture's upload (`Pending`) settles when the capture is no longer active and no file is
//! `Writing` or `Uploading`: `Uploaded`, or `Failed` with `Error`/`StorageFailed` if a file's
//! upload failed.

use agent_protocol::CaptureFile;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::states::UploadState;
use crate::db::file_set::{FileState, StoredFile};
use crate::db::models::CaptureRow;
use crate::db::schema::packet_captures;

/// The agent's list of kept files merged into the stored one (pure). Files below the reported
/// window left the ring: dropped, or `Discarded` when they may have a blob.
pub fn merge(stored: &[StoredFile], reported: &[CaptureFile], storage: bool) -> Vec<StoredFile> {
    let Some(oldest_kept) = reported.iter().map(|f| f.index).min() else {
        return stored.to_vec();
    };
    let mut out: Vec<StoredFile> = stored
        .iter()
        .filter(|s| !reported.iter().any(|r| r.index == s.index))
        .filter_map(|s| {
            if s.index >= oldest_kept || s.state == FileState::Discarded {
                return Some(s.clone());
            }
            match s.state {
                FileState::Uploading | FileState::Uploaded if storage => Some(StoredFile {
                    state: FileState::Discarded,
                    ..s.clone()
                }),
                _ => None,
            }
        })
        .collect();
    for r in reported {
        let before = stored.iter().find(|s| s.index == r.index);
        // A file never goes back: an upload may be checked before the report that the file
        // is complete arrives, and a report may be older than the upload.
        let state = match (before.map(|s| s.state), r.complete) {
            (Some(s), _) if s != FileState::Writing => s,
            (_, false) => FileState::Writing,
            (_, true) if storage => FileState::Uploading,
            (_, true) => FileState::Complete,
        };
        out.push(StoredFile {
            index: r.index,
            size: r.size,
            packets: r.packets,
            first_packet_time: r.first_packet_time,
            last_packet_time: r.last_packet_time,
            state,
            message: before.and_then(|s| s.message.clone()),
        });
    }
    out.sort_by_key(|f| f.index);
    out
}

async fn write(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    files: &[StoredFile],
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    diesel::update(packet_captures::table.find(id))
        .set((
            packet_captures::file_set.eq(serde_json::json!(files)),
            packet_captures::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The agent reported its kept files (`c` locked, as read before this report's transitions).
pub async fn reported(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    files: &[CaptureFile],
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let merged = merge(&c.file_set(), files, c.storage_account_id.is_some());
    write(conn, c.id, &merged, now).await?;
    settle_upload(conn, c.id, now).await
}

/// Moves file `index` from `from` to `to` (with `message`); false when it is not in `from`.
async fn move_file(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    index: u32,
    from: &[FileState],
    to: FileState,
    message: Option<&str>,
    now: DateTime<Utc>,
) -> diesel::QueryResult<bool> {
    let mut files = c.file_set();
    let Some(f) = files
        .iter_mut()
        .find(|f| f.index == index && from.contains(&f.state))
    else {
        return Ok(false);
    };
    f.state = to;
    f.message = message.map(str::to_string);
    write(conn, c.id, &files, now).await?;
    settle_upload(conn, c.id, now).await?;
    Ok(true)
}

/// Whether file `index` may be uploaded now: any file still in the ring that was not given up.
/// The agent uploads only files it finished, whose report may not have arrived yet (`Writing`,
/// or not even listed when newer than every reported file).
pub fn uploadable(c: &CaptureRow, index: u32) -> bool {
    let files = c.file_set();
    match files.iter().find(|f| f.index == index) {
        Some(f) => matches!(
            f.state,
            FileState::Writing | FileState::Uploading | FileState::Uploaded
        ),
        // Newer than any reported file (its report was lost); older ones left the ring.
        None => files.iter().all(|f| f.index < index),
    }
}

/// File `index` was uploaded and checked: → `Uploaded` (added when its report never came).
pub async fn upload_verified(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    index: u32,
    size: u64,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    if c.file_set().iter().all(|f| f.index != index) {
        let mut files = c.file_set();
        files.push(StoredFile {
            index,
            size,
            packets: 0,
            first_packet_time: None,
            last_packet_time: None,
            state: FileState::Uploaded,
            message: None,
        });
        files.sort_by_key(|f| f.index);
        write(conn, c.id, &files, now).await?;
        return settle_upload(conn, c.id, now).await;
    }
    let from = [FileState::Uploading, FileState::Writing];
    move_file(conn, c, index, &from, FileState::Uploaded, None, now).await?;
    Ok(())
}

/// The agent gave up uploading file `index`: → `UploadFailed` (the file stays on the machine).
pub async fn upload_failed(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    index: u32,
    reason: &str,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let from = [FileState::Uploading, FileState::Writing];
    move_file(
        conn,
        c,
        index,
        &from,
        FileState::UploadFailed,
        Some(reason),
        now,
    )
    .await?;
    Ok(())
}

/// The blob of a discarded file was deleted: the file is forgotten.
pub async fn blob_deleted(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    index: u32,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let files: Vec<StoredFile> = c
        .file_set()
        .into_iter()
        .filter(|f| !(f.index == index && f.state == FileState::Discarded))
        .collect();
    write(conn, c.id, &files, now).await
}

/// Settles a continuous capture's upload once it ended and no file is left to upload.
pub async fn settle_upload(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let c: CaptureRow = packet_captures::table
        .find(id)
        .select(CaptureRow::as_select())
        .first(conn)
        .await?;
    if c.upload_state != Some(UploadState::Pending) || c.status.is_active() {
        return Ok(());
    }
    let files = c.file_set();
    if files.is_empty()
        || files
            .iter()
            .any(|f| matches!(f.state, FileState::Writing | FileState::Uploading))
    {
        return Ok(());
    }
    let failed: Vec<&StoredFile> = files
        .iter()
        .filter(|f| f.state == FileState::UploadFailed)
        .collect();
    if failed.is_empty() {
        diesel::update(packet_captures::table.find(id))
            .set(packet_captures::upload_state.eq(UploadState::Uploaded))
            .execute(conn)
            .await?;
        return super::settle(conn, Some(id), now).await;
    }
    let numbers: Vec<String> = failed.iter().map(|f| f.index.to_string()).collect();
    let reason = failed
        .iter()
        .find_map(|f| f.message.clone())
        .unwrap_or_default();
    let mut reason = format!(
        "file {} of the capture could not be uploaded ({reason}); {} kept on the machine",
        numbers.join(", "),
        if failed.len() == 1 {
            "it is"
        } else {
            "they are"
        }
    );
    let p: Option<crate::arm::models::PacketCaptureParameters> =
        serde_json::from_value(c.parameters.clone()).ok();
    if let Some(local) = p.and_then(|p| p.storage_location.local_path) {
        let paths: Vec<String> = failed
            .iter()
            .map(|f| agent_protocol::file_name(&local, f.index))
            .collect();
        reason.push_str(&format!(" at {}", paths.join(", ")));
    }
    super::upload::failed(conn, &c, &reason, "", now).await?;
    // The capture's locations stay as its agent reported them.
    diesel::update(packet_captures::table.find(id))
        .set(packet_captures::files.eq(&c.files))
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(index: u32, complete: bool) -> CaptureFile {
        CaptureFile {
            index,
            size: 100,
            packets: 1,
            first_packet_time: None,
            last_packet_time: None,
            complete,
        }
    }

    fn states(files: &[StoredFile]) -> Vec<(u32, FileState)> {
        files.iter().map(|f| (f.index, f.state)).collect()
    }

    #[test]
    fn files_move_through_their_states() {
        use FileState::*;
        let s = merge(&[], &[reported(1, true), reported(2, false)], true);
        assert_eq!(states(&s), vec![(1, Uploading), (2, Writing)]);
        let mut s = merge(&s, &[reported(1, true), reported(2, true)], true);
        assert_eq!(states(&s), vec![(1, Uploading), (2, Uploading)]);
        s[0].state = Uploaded;
        // A late report does not take a file back.
        let s = merge(&s, &[reported(1, false), reported(2, true)], true);
        assert_eq!(states(&s), vec![(1, Uploaded), (2, Uploading)]);
        // The ring moved on: file 1 (uploaded) is discarded, its blob to delete.
        let s = merge(&s, &[reported(2, true), reported(3, false)], true);
        assert_eq!(
            states(&s),
            vec![(1, Discarded), (2, Uploading), (3, Writing)]
        );
        // Without storage a file leaving the ring is simply gone.
        let s = merge(&[], &[reported(1, true), reported(2, false)], false);
        assert_eq!(states(&s), vec![(1, Complete), (2, Writing)]);
        let s = merge(&s, &[reported(2, true), reported(3, false)], false);
        assert_eq!(states(&s), vec![(2, Complete), (3, Writing)]);
        // An empty report changes nothing.
        assert_eq!(merge(&s, &[], false), s);
    }
}
