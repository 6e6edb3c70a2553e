//! Events of time, found by the sweeper ([`super::sweeper`]): the server's own safety nets for
//! what an agent did not do in time. `$1` is always the sweep's clock.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Double, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A running capture past its time limit plus the stop grace (its agent did not stop it):
/// `Running` → `Stopped` / `TimeExceeded`.
pub async fn time_limit_passed(
    conn: &mut AsyncPgConnection,
    stop_grace_seconds: f64,
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "UPDATE packet_captures SET status = 'Stopped', stop_reason = 'TimeExceeded',
             stopped_at = $1, desired_running = false, updated_at = $1
         WHERE status = 'Running' AND NOT is_scale_set
           AND capture_start_time + make_interval(secs => time_limit_seconds + $2) < $1",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Double, _>(stop_grace_seconds)
    .execute(conn)
    .await
}

/// A stop its agent did not acknowledge within the stop grace: `Running` → `Stopped` with the
/// requested reason.
pub async fn stop_grace_passed(
    conn: &mut AsyncPgConnection,
    stop_grace_seconds: f64,
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "UPDATE packet_captures SET status = 'Stopped',
             stop_reason = coalesce(stop_requested_reason, 'StoppedByUser'),
             stopped_at = $1, updated_at = $1
         WHERE status = 'Running' AND NOT is_scale_set AND NOT desired_running
           AND stop_requested_at < $1 - make_interval(secs => $2)",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Double, _>(stop_grace_seconds)
    .execute(conn)
    .await
}

/// Create operations whose deadline passed with their capture not started: scale set instances
/// that did not start end as agent-stopped; a capture that no agent started ends as
/// agent-stopped and its create fails with `CaptureStartTimeout` (an agent is registered) or
/// `MachineNotRegistered` (none is).
pub async fn create_deadline_passed(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(super::agent_stopped::update(
        "'The capture agent of ' || c.machine_key || ' did not start the capture in time.'",
        "FROM operations o
         WHERE o.capture_id = c.parent_id AND o.kind = 'CreateCapture' AND o.deadline < $1
           AND c.status = 'NotStarted'",
    ))
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await?;

    let failed = super::agent_stopped::update(
        "CASE WHEN e.has_agent
             THEN 'The capture agent of ' || e.target || ' did not start the capture in time.'
             ELSE 'No capture agent is registered for the target ' || e.target
                  || ': install and start capture-agent on that machine, then create the capture again.'
         END",
        "FROM expired e WHERE c.id = e.capture_id AND c.status = 'NotStarted'
         RETURNING c.id, c.error_message",
    );
    diesel::sql_query(format!(
        "WITH expired AS (
             SELECT o.id AS op_id, c.id AS capture_id, c.parameters->>'target' AS target,
                    EXISTS (SELECT 1 FROM machines m WHERE NOT m.lost AND (m.resource_key = c.machine_key
                            OR left(m.resource_key, length(c.machine_key) + 17) = c.machine_key || '/virtualmachines/')) AS has_agent
             FROM operations o JOIN packet_captures c ON c.id = o.capture_id
             WHERE o.kind = 'CreateCapture' AND o.status = 'InProgress' AND o.deadline < $1
               AND c.status = 'NotStarted'
             FOR UPDATE OF o, c SKIP LOCKED),
         failed AS ({failed})
         UPDATE operations o SET status = 'Failed', finished_at = $1,
             error_code = CASE WHEN e.has_agent THEN 'CaptureStartTimeout' ELSE 'MachineNotRegistered' END,
             error_message = failed.error_message
         FROM expired e JOIN failed ON failed.id = e.capture_id
         WHERE o.id = e.op_id"
    ))
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
}
