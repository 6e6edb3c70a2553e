//! Events: a caller stops a capture, deletes a capture, or deletes a network watcher.
//!
//! A running capture is asked to stop (`desired_running = false`): it becomes `Stopped` when its
//! agent reports so ([`super::agent::report`]), or after the stop grace ([`super::deadlines`]).
//! A capture that never started is `Stopped` at once, and its create `Canceled`. A deleted
//! capture is removed by [`super::settle`] once it no longer runs; its files are never deleted.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Nullable, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::states::{CaptureStatus, OperationKind};
use crate::db::models::{CaptureRow, WatcherRow};

/// The `SET` of a stop request: running captures are told to stop; those that never started
/// stop now, and their create is canceled. `$1` is the time.
const STOP_REQUEST_SET: &str = "desired_running = false, updated_at = $1,
    stop_requested_at = coalesce(stop_requested_at, $1),
    stop_requested_reason = coalesce(stop_requested_reason, 'StoppedByUser'),
    stop_reason = CASE WHEN status = 'NotStarted' THEN 'StoppedByUser' ELSE stop_reason END,
    stopped_at = CASE WHEN status = 'NotStarted' THEN $1 ELSE stopped_at END,
    provisioning_state = CASE WHEN status = 'NotStarted' AND provisioning_state = 'Updating'
                              THEN 'Canceled' ELSE provisioning_state END,
    status = CASE WHEN status = 'NotStarted' THEN 'Stopped' ELSE status END";

/// Asks a capture (and, for a scale set, each instance) to stop.
async fn request_stop(
    conn: &mut AsyncPgConnection,
    capture: Uuid,
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(format!(
        "UPDATE packet_captures SET {STOP_REQUEST_SET}
         WHERE (id = $2 OR parent_id = $2) AND status IN ('NotStarted', 'Running')"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<SqlUuid, _>(capture)
    .execute(conn)
    .await
}

/// Marks captures (all of a watcher, or one capture with its instances) as being deleted, and
/// asks them to stop.
async fn mark_deleting(
    conn: &mut AsyncPgConnection,
    watcher: Option<Uuid>,
    capture: Option<Uuid>,
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(format!(
        "UPDATE packet_captures SET deleting = true,
             {STOP_REQUEST_SET}
         WHERE ($2::uuid IS NOT NULL AND watcher_id = $2)
            OR ($3::uuid IS NOT NULL AND (id = $3 OR parent_id = $3))"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<SqlUuid>, _>(watcher)
    .bind::<Nullable<SqlUuid>, _>(capture)
    .execute(conn)
    .await
}

/// Who asks, and until when the operation may run.
pub struct Request<'a> {
    pub principal: &'a str,
    pub deadline: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Stops `capture` (locked by the caller). `None`: nothing runs any more (it was not active,
/// or never started and is now stopped); `Some`: the `StopCapture` operation that completes
/// when the agent stopped it.
pub async fn stop(
    conn: &mut AsyncPgConnection,
    watcher: &WatcherRow,
    capture: &CaptureRow,
    request: Request<'_>,
) -> diesel::QueryResult<Option<Uuid>> {
    if !capture.status.is_active() {
        return Ok(None);
    }
    request_stop(conn, capture.id, request.now).await?;
    if capture.status == CaptureStatus::NotStarted {
        super::settle(conn, Some(capture.id), request.now).await?;
        return Ok(None);
    }
    let op = super::operations::start(
        conn,
        watcher,
        OperationKind::StopCapture,
        &capture.resource_id,
        Some(capture.id),
        request.deadline,
        request.principal,
    )
    .await?;
    Ok(Some(op))
}

/// Deletes `capture` (locked by the caller): the `DeleteCapture` operation completes once the
/// capture no longer runs and is removed.
pub async fn delete_capture(
    conn: &mut AsyncPgConnection,
    watcher: &WatcherRow,
    capture: &CaptureRow,
    request: Request<'_>,
) -> diesel::QueryResult<Uuid> {
    mark_deleting(conn, None, Some(capture.id), request.now).await?;
    let op = super::operations::start(
        conn,
        watcher,
        OperationKind::DeleteCapture,
        &capture.resource_id,
        Some(capture.id),
        request.deadline,
        request.principal,
    )
    .await?;
    super::settle(conn, Some(capture.id), request.now).await?;
    Ok(op)
}

/// Deletes `watcher` (locked by the caller) and all its captures: the `DeleteWatcher`
/// operation completes once none of them runs and the watcher is removed.
pub async fn delete_watcher(
    conn: &mut AsyncPgConnection,
    watcher: &WatcherRow,
    request: Request<'_>,
) -> diesel::QueryResult<Uuid> {
    use crate::db::schema::network_watchers;
    use diesel::{ExpressionMethods, QueryDsl};
    diesel::update(network_watchers::table.find(watcher.id))
        .set(network_watchers::provisioning_state.eq(super::ProvisioningState::Deleting))
        .execute(conn)
        .await?;
    mark_deleting(conn, Some(watcher.id), None, request.now).await?;
    let op = super::operations::start(
        conn,
        watcher,
        OperationKind::DeleteWatcher,
        &watcher.resource_id(),
        None,
        request.deadline,
        request.principal,
    )
    .await?;
    super::settle(conn, None, request.now).await?;
    Ok(op)
}
