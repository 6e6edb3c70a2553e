//! Events of a capture's upload to its storage account: verified, or given up by the agent.
//! Only a `Pending` upload changes, so that retried reports and replicas agree.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::states::{CaptureStatus, UploadState};
use crate::db::models::CaptureRow;
use crate::db::schema::packet_captures;

/// The blob was checked (size and MD5): `Pending` → `Uploaded`; `files` are where the capture
/// now is (the blob, and the local file if it is kept).
pub async fn verified(
    conn: &mut AsyncPgConnection,
    capture: &CaptureRow,
    files: &[String],
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    diesel::update(pending(capture))
        .set((
            packet_captures::upload_state.eq(UploadState::Uploaded),
            packet_captures::files.eq(serde_json::json!(files)),
            packet_captures::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    super::settle(conn, Some(capture.id), now).await
}

/// The agent gave up uploading: `Pending` → `Failed`, and the capture shows `Error` with
/// `StorageFailed` (after any earlier error), naming the file kept on the machine.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    capture: &CaptureRow,
    reason: &str,
    local_path: &str,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let mut text = format!("The capture could not be uploaded to the storage account: {reason}");
    if !local_path.is_empty() {
        text.push_str(&format!(
            " The capture file is kept on the machine at {local_path}."
        ));
    }
    // An earlier error (a capture that failed) keeps its message first.
    if let Some(earlier) = capture.error_message.as_deref().filter(|m| !m.is_empty()) {
        text = format!("{earlier} {text}");
    }
    let files: Vec<&str> = Some(local_path)
        .filter(|p| !p.is_empty())
        .into_iter()
        .collect();
    let mut errors: Vec<String> =
        serde_json::from_value(capture.errors.clone()).unwrap_or_default();
    if !errors.iter().any(|e| e == "StorageFailed") {
        errors.push("StorageFailed".into());
    }
    diesel::update(pending(capture))
        .set((
            packet_captures::upload_state.eq(UploadState::Failed),
            packet_captures::status.eq(CaptureStatus::Error),
            packet_captures::errors.eq(serde_json::json!(errors)),
            packet_captures::error_message.eq(&text),
            packet_captures::files.eq(serde_json::json!(files)),
            packet_captures::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    super::settle(conn, Some(capture.id), now).await
}

fn pending(
    capture: &CaptureRow,
) -> diesel::dsl::Filter<
    diesel::dsl::Find<packet_captures::table, uuid::Uuid>,
    diesel::dsl::Eq<packet_captures::upload_state, UploadState>,
> {
    packet_captures::table
        .find(capture.id)
        .filter(packet_captures::upload_state.eq(UploadState::Pending))
}
