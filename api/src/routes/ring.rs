//! The ring of a continuous capture in its storage account: the blobs of files that left the
//! ring are deleted by the server with its own credentials (the agents' SAS can only create and
//! write their own blob).

use chrono::Utc;
use diesel_async::AsyncConnection;
use uuid::Uuid;

use crate::db::file_set::FileState;
use crate::db::models::CaptureRow;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;

/// Deletes the blobs of a continuous capture's files that left its ring, then forgets them.
/// A blob that cannot be deleted now is tried again after the next report.
pub async fn delete_discarded(
    state: &AppState,
    capture_id: Uuid,
    machine_key: &str,
) -> ApiResult<()> {
    let mut conn = state.conn().await?;
    let Some(c) = CaptureRow::find_of_machine(&mut conn, capture_id, machine_key).await? else {
        return Ok(());
    };
    let discarded: Vec<u32> = c
        .file_set()
        .iter()
        .filter(|f| f.state == FileState::Discarded)
        .map(|f| f.index)
        .collect();
    let Some(account_id) = c.storage_account_id else {
        return Ok(());
    };
    if discarded.is_empty() {
        return Ok(());
    }
    let Some(account) = crate::storage::accounts::by_ids(&mut conn, &[account_id])
        .await?
        .pop()
    else {
        return Ok(());
    };
    drop(conn);
    for index in discarded {
        let Some(blob) = c.file_blob(index) else {
            continue;
        };
        if let Err(e) = state.storage.delete_blob(&account, &blob).await {
            tracing::warn!(capture = %c.id, file = index, error = %e, "cannot delete the blob of a file that left the ring; will retry");
            continue;
        }
        state.metrics.ring_blobs_deleted.inc();
        let mut conn = state.conn().await?;
        conn.transaction::<_, ApiError, _>(async |conn| {
            if let Some(c) = CaptureRow::lock_of_machine(conn, c.id, machine_key).await? {
                lifecycle::files::blob_deleted(conn, &c, index, Utc::now()).await?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}
