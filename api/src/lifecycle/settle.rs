//! Finishing what a transition allows: removing deleted captures and watchers once nothing of
//! theirs runs, and completing the operations waiting on them. Called after every event (for
//! the capture it touched) and by every sweep (for all).

use chrono::{DateTime, Utc};
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::models::CaptureRow;

/// `{capture}` is the filter on a capture id column: `= $2` for one capture (so that the
/// indexes are used), `IS NOT NULL` for all. `$1` is the time.
const CAPTURE_STATEMENTS: &[&str] = &[
    // A deleted capture goes once it no longer runs.
    "DELETE FROM packet_captures WHERE deleting AND status <> 'Running' AND id {capture}",
    // Create operations follow the capture's provisioning state.
    "UPDATE operations o SET finished_at = $1,
         status = CASE c.provisioning_state WHEN 'Succeeded' THEN 'Succeeded'
                  WHEN 'Canceled' THEN 'Canceled' ELSE 'Failed' END,
         error_code = CASE c.provisioning_state WHEN 'Succeeded' THEN NULL
                      WHEN 'Canceled' THEN 'OperationCanceled'
                      ELSE coalesce(c.errors->>0, 'InternalError') END,
         error_message = CASE c.provisioning_state WHEN 'Succeeded' THEN NULL
                         WHEN 'Canceled' THEN 'The capture was stopped or deleted before it started.'
                         ELSE coalesce(c.error_message, 'The capture failed.') END
     FROM packet_captures c
     WHERE o.kind = 'CreateCapture' AND o.status = 'InProgress' AND o.capture_id = c.id
       AND c.provisioning_state IN ('Succeeded', 'Failed', 'Canceled') AND o.capture_id {capture}",
    // A create whose capture was deleted before it started is canceled.
    "UPDATE operations o SET finished_at = $1, status = 'Canceled',
         error_code = 'OperationCanceled', error_message = 'The capture was deleted before it started.'
     WHERE o.kind = 'CreateCapture' AND o.status = 'InProgress' AND o.capture_id {capture}
       AND NOT EXISTS (SELECT 1 FROM packet_captures c WHERE c.id = o.capture_id)",
    // Stop and delete operations end when their capture no longer runs (or no longer exists).
    "UPDATE operations o SET finished_at = $1, status = 'Succeeded'
     WHERE o.kind IN ('StopCapture', 'DeleteCapture') AND o.status = 'InProgress'
       AND o.capture_id {capture}
       AND NOT EXISTS (SELECT 1 FROM packet_captures c WHERE c.id = o.capture_id
                       AND (c.status = 'Running' OR o.kind = 'DeleteCapture'))",
];

/// Settles `capture` (and its scale set parent), or everything (`None`).
pub async fn settle(
    conn: &mut AsyncPgConnection,
    capture: Option<Uuid>,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    // A scale set instance settles its parent, the ARM resource, too.
    let mut targets: Vec<Uuid> = capture.into_iter().collect();
    if let Some(id) = capture {
        targets.extend(CaptureRow::parent_of(conn, id).await?);
    } else {
        super::scale_sets::expand(conn, None, now).await?;
    }
    super::scale_sets::aggregate(conn, &targets, now).await?;
    for statement in CAPTURE_STATEMENTS {
        if capture.is_none() {
            diesel::sql_query(statement.replace("{capture}", "IS NOT NULL"))
                .bind::<Timestamptz, _>(now)
                .execute(conn)
                .await?;
        }
        for id in &targets {
            diesel::sql_query(statement.replace("{capture}", "= $2"))
                .bind::<Timestamptz, _>(now)
                .bind::<SqlUuid, _>(*id)
                .execute(conn)
                .await?;
        }
    }
    // A deleted watcher goes once none of its captures runs; then its delete succeeds.
    diesel::sql_query(
        "DELETE FROM network_watchers w
         WHERE provisioning_state = 'Deleting'
           AND NOT EXISTS (SELECT 1 FROM packet_captures c WHERE c.watcher_id = w.id AND c.status = 'Running')",
    )
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE operations o SET finished_at = $1, status = 'Succeeded'
         WHERE o.kind = 'DeleteWatcher' AND o.status = 'InProgress'
           AND NOT EXISTS (SELECT 1 FROM network_watchers w WHERE w.id = o.watcher_id)",
    )
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await?;
    Ok(())
}
