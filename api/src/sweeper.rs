//! Time-driven transitions and operation completion, run by every server replica.
//!
//! Each statement is one atomic, idempotent SQL statement, so replicas sweeping the same database
//! at once cannot apply a transition twice. The same [`settle`] step also runs right after an
//! agent's report, so operations complete without waiting for the next sweep.

use std::time::Duration;

use diesel::sql_types::{Double, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::config::Timing;
use crate::db::DbPool;

/// How often each replica sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(pool: DbPool, timing: Timing, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let mut conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "sweep skipped: database unavailable");
                continue;
            }
        };
        if let Err(e) = sweep(&mut conn, &timing).await {
            tracing::warn!(error = %e, "sweep failed");
        }
    }
}

/// One pass of every time-driven transition, then [`settle`].
pub async fn sweep(conn: &mut AsyncPgConnection, timing: &Timing) -> diesel::QueryResult<()> {
    let lost = diesel::sql_query(
        "WITH lost AS (
             UPDATE machines SET lost = true
             WHERE NOT lost AND last_seen_at < now() - make_interval(secs => $1)
             RETURNING resource_key, resource_id)
         UPDATE packet_captures c SET status = 'Error', errors = '[\"AgentStopped\"]',
             stop_reason = 'AgentStopped', stopped_at = now(), updated_at = now(),
             error_message = 'The capture agent of ' || lost.resource_id || ' stopped polling the server.',
             provisioning_state = CASE WHEN c.provisioning_state = 'Updating' THEN 'Failed' ELSE c.provisioning_state END
         FROM lost WHERE c.machine_key = lost.resource_key AND c.status = 'Running'",
    )
    .bind::<Double, _>(timing.agent_lost.as_secs_f64())
    .execute(conn)
    .await?;
    if lost > 0 {
        tracing::warn!(
            captures = lost,
            "captures ended because their agent was lost"
        );
    }

    // File transfers nobody moved for a while (a caller's replica died mid-stream, an agent
    // went away): removed with their chunks.
    diesel::sql_query("DELETE FROM file_transfers WHERE updated_at < now() - interval '5 minutes'")
        .execute(conn)
        .await?;

    // The server's own safety net for the time limit, and for stops an agent never acknowledged.
    diesel::sql_query(
        "UPDATE packet_captures SET status = 'Stopped', stop_reason = 'TimeExceeded',
             stopped_at = now(), desired_running = false, updated_at = now()
         WHERE status = 'Running' AND NOT is_scale_set
           AND capture_start_time + make_interval(secs => time_limit_seconds + $1) < now()",
    )
    .bind::<Double, _>(timing.stop_grace.as_secs_f64())
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE packet_captures SET status = 'Stopped',
             stop_reason = coalesce(stop_requested_reason, 'StoppedByUser'),
             stopped_at = now(), updated_at = now()
         WHERE status = 'Running' AND NOT is_scale_set AND NOT desired_running
           AND stop_requested_at < now() - make_interval(secs => $1)",
    )
    .bind::<Double, _>(timing.stop_grace.as_secs_f64())
    .execute(conn)
    .await?;

    // Scale set instances that did not start before their capture's create deadline.
    diesel::sql_query(
        "UPDATE packet_captures i SET status = 'Error', provisioning_state = 'Failed',
             errors = '[\"AgentStopped\"]', stop_reason = 'AgentStopped', stopped_at = now(),
             updated_at = now(), desired_running = false,
             error_message = 'The capture agent of ' || i.machine_key || ' did not start the capture in time.'
         FROM operations o
         WHERE o.capture_id = i.parent_id AND o.kind = 'CreateCapture' AND o.deadline < now()
           AND i.status = 'NotStarted'",
    )
    .execute(conn)
    .await?;

    // Create operations whose capture no agent started in time.
    diesel::sql_query(
        "WITH expired AS (
             SELECT o.id AS op_id, c.id AS capture_id, c.parameters->>'target' AS target,
                    EXISTS (SELECT 1 FROM machines m WHERE NOT m.lost AND (m.resource_key = c.machine_key
                            OR left(m.resource_key, length(c.machine_key) + 17) = c.machine_key || '/virtualmachines/')) AS has_agent
             FROM operations o JOIN packet_captures c ON c.id = o.capture_id
             WHERE o.kind = 'CreateCapture' AND o.status = 'InProgress' AND o.deadline < now()
               AND c.status = 'NotStarted'
             FOR UPDATE OF o, c SKIP LOCKED),
         failed AS (
             UPDATE packet_captures c SET provisioning_state = 'Failed', status = 'Error',
                 errors = '[\"AgentStopped\"]', stop_reason = 'AgentStopped', stopped_at = now(), updated_at = now(),
                 desired_running = false,
                 error_message = CASE WHEN e.has_agent
                     THEN 'The capture agent of ' || e.target || ' did not start the capture in time.'
                     ELSE 'No capture agent is registered for the target ' || e.target
                          || ': install and start capture-agent on that machine, then create the capture again.'
                 END
             FROM expired e WHERE c.id = e.capture_id AND c.status = 'NotStarted'
             RETURNING c.id, c.error_message)
         UPDATE operations o SET status = 'Failed', finished_at = now(),
             error_code = CASE WHEN e.has_agent THEN 'CaptureStartTimeout' ELSE 'MachineNotRegistered' END,
             error_message = failed.error_message
         FROM expired e JOIN failed ON failed.id = e.capture_id
         WHERE o.id = e.op_id",
    )
    .execute(conn)
    .await?;

    settle(conn, None).await
}

/// Finishes what the current state allows: removes deleted captures and watchers once nothing
/// of theirs runs, and completes the operations waiting on them. `capture` limits the work to
/// one capture (after an agent's report or an API call); `None` does everything.
pub async fn settle(
    conn: &mut AsyncPgConnection,
    capture: Option<Uuid>,
) -> diesel::QueryResult<()> {
    // A scale set instance's report settles its parent, the ARM resource, too.
    let mut targets: Vec<Uuid> = capture.into_iter().collect();
    if let Some(id) = capture {
        use crate::db::schema::packet_captures;
        use diesel::{OptionalExtension, QueryDsl};
        let parent: Option<Option<Uuid>> = packet_captures::table
            .find(id)
            .select(packet_captures::parent_id)
            .first(conn)
            .await
            .optional()?;
        targets.extend(parent.flatten());
    } else {
        expand_scale_sets(conn, None).await?;
    }
    aggregate_scale_sets(conn, &targets).await?;
    // `{capture}` is the filter on a capture id column: `= $1` for one capture (so that the
    // indexes are used), `IS NOT NULL` for all.
    const STATEMENTS: &[&str] = &[
        "DELETE FROM packet_captures WHERE deleting AND status <> 'Running' AND id {capture}",
        // Create operations follow the capture's provisioning state.
        "UPDATE operations o SET finished_at = now(),
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
        "UPDATE operations o SET finished_at = now(), status = 'Canceled',
             error_code = 'OperationCanceled', error_message = 'The capture was deleted before it started.'
         WHERE o.kind = 'CreateCapture' AND o.status = 'InProgress' AND o.capture_id {capture}
           AND NOT EXISTS (SELECT 1 FROM packet_captures c WHERE c.id = o.capture_id)",
        // Stop and delete operations end when their capture no longer runs (or no longer exists).
        "UPDATE operations o SET finished_at = now(), status = 'Succeeded'
         WHERE o.kind IN ('StopCapture', 'DeleteCapture') AND o.status = 'InProgress'
           AND o.capture_id {capture}
           AND NOT EXISTS (SELECT 1 FROM packet_captures c WHERE c.id = o.capture_id
                           AND (c.status = 'Running' OR o.kind = 'DeleteCapture'))",
    ];
    for statement in STATEMENTS {
        if capture.is_none() {
            diesel::sql_query(statement.replace("{capture}", "IS NOT NULL"))
                .execute(conn)
                .await?;
        }
        for id in &targets {
            diesel::sql_query(statement.replace("{capture}", "= $1"))
                .bind::<SqlUuid, _>(*id)
                .execute(conn)
                .await?;
        }
    }
    diesel::sql_query(
        "DELETE FROM network_watchers w
         WHERE provisioning_state = 'Deleting'
           AND NOT EXISTS (SELECT 1 FROM packet_captures c WHERE c.watcher_id = w.id AND c.status = 'Running')",
    )
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE operations o SET finished_at = now(), status = 'Succeeded'
         WHERE o.kind = 'DeleteWatcher' AND o.status = 'InProgress'
           AND NOT EXISTS (SELECT 1 FROM network_watchers w WHERE w.id = o.watcher_id)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives every in-scope, registered instance of a scale set capture still being provisioned its
/// instance row (`capture`: one capture; `None`: all).
pub async fn expand_scale_sets(
    conn: &mut AsyncPgConnection,
    capture: Option<Uuid>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "INSERT INTO packet_captures (id, watcher_id, name, name_key, resource_id, parameters, machine_key,
                                      etag, provisioning_state, status, time_limit_seconds, parent_id,
                                      storage_account_id, blob_name, upload_state)
         SELECT gen_random_uuid(), p.watcher_id, p.name, p.name_key, p.resource_id, p.parameters,
                m.resource_key, p.etag, 'Updating', 'NotStarted', p.time_limit_seconds, p.id,
                -- each instance uploads to its own blob, in a folder under the scale set's
                p.storage_account_id,
                regexp_replace(p.blob_name, '^(.*/virtualmachinescalesets/[^/]+)/',
                               '\\1/virtualmachines/' || substring(m.resource_key from '[^/]+$') || '/'),
                p.upload_state
         FROM packet_captures p
         JOIN machines m ON left(m.resource_key, length(p.machine_key) + 17) = p.machine_key || '/virtualmachines/'
         WHERE p.is_scale_set AND p.provisioning_state = 'Updating' AND p.desired_running AND NOT p.deleting
           AND NOT m.lost AND ($1::uuid IS NULL OR p.id = $1)
           -- not yet an instance (no insert attempt, so no spurious wake-up through the trigger)
           AND NOT EXISTS (SELECT 1 FROM packet_captures i WHERE i.parent_id = p.id AND i.machine_key = m.resource_key)
           -- not past the create deadline
           AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.capture_id = p.id AND o.kind = 'CreateCapture'
                           AND o.deadline < now())
           AND (jsonb_array_length(coalesce(p.parameters->'scope'->'include', '[]')) = 0
                OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(p.parameters->'scope'->'include') i
                           WHERE lower(i) = m.resource_key))
           AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(coalesce(p.parameters->'scope'->'exclude', '[]')) e
                           WHERE lower(e) = m.resource_key)
         -- waits for a concurrent stop or delete of the parent, then sees its outcome
         FOR SHARE OF p
         ON CONFLICT DO NOTHING",
    )
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(capture)
    .execute(conn)
    .await
}

/// Derives a scale set capture's state from its instances: Running while any runs; provisioned
/// once none is still starting; errors, counters and files of all instances together.
async fn aggregate_scale_sets(
    conn: &mut AsyncPgConnection,
    targets: &[Uuid],
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "WITH locked AS (
             -- Parents that a report or an API call is changing right now are skipped (the
             -- report settles them itself); the others are locked before they are derived.
             SELECT id FROM packet_captures
             WHERE is_scale_set AND (cardinality($1::uuid[]) = 0 OR id = ANY($1))
             FOR UPDATE SKIP LOCKED)
         UPDATE packet_captures p SET
             status = a.status, provisioning_state = a.prov, capture_start_time = a.start_time,
             stopped_at = CASE WHEN a.status IN ('Stopped', 'Error') THEN coalesce(p.stopped_at, now()) END,
             stop_reason = CASE WHEN a.status IN ('Stopped', 'Error') THEN a.stop_reason END,
             errors = a.errors, error_message = a.error_message, packets = a.packets, bytes = a.bytes,
             kernel_drops = a.drops, files = a.files, updated_at = now()
         FROM (SELECT i.parent_id,
                 CASE WHEN bool_or(i.status = 'Running') THEN 'Running'
                      WHEN bool_or(i.status = 'NotStarted') THEN 'NotStarted'
                      WHEN bool_and(i.status = 'Error') THEN 'Error' ELSE 'Stopped' END AS status,
                 CASE WHEN bool_or(i.provisioning_state = 'Updating') THEN 'Updating'
                      WHEN bool_or(i.provisioning_state = 'Succeeded') THEN 'Succeeded'
                      WHEN bool_and(i.provisioning_state = 'Canceled') THEN 'Canceled' ELSE 'Failed' END AS prov,
                 min(i.capture_start_time) AS start_time,
                 coalesce(min(i.stop_reason) FILTER (WHERE i.status = 'Stopped'), min(i.stop_reason)) AS stop_reason,
                 (SELECT coalesce(jsonb_agg(DISTINCT e), '[]') FROM packet_captures j, jsonb_array_elements(j.errors) e
                  WHERE j.parent_id = i.parent_id) AS errors,
                 string_agg(DISTINCT i.error_message, ' ') AS error_message,
                 sum(i.packets)::bigint AS packets, sum(i.bytes)::bigint AS bytes, sum(i.kernel_drops)::bigint AS drops,
                 (SELECT coalesce(jsonb_agg(DISTINCT f), '[]') FROM packet_captures j, jsonb_array_elements(j.files) f
                  WHERE j.parent_id = i.parent_id) AS files
               FROM packet_captures i
               WHERE i.parent_id IS NOT NULL AND (cardinality($1::uuid[]) = 0 OR i.parent_id = ANY($1))
               GROUP BY i.parent_id) a
         WHERE p.id = a.parent_id AND NOT (p.status = 'Stopped' AND a.status = 'NotStarted')
           AND p.id IN (SELECT id FROM locked)
           AND (p.status, p.provisioning_state, p.errors, p.error_message, p.packets, p.bytes,
                p.kernel_drops, p.files, p.capture_start_time, p.stop_reason)
               IS DISTINCT FROM (a.status, a.prov, a.errors, a.error_message, a.packets, a.bytes,
                a.drops, a.files, a.start_time,
                CASE WHEN a.status IN ('Stopped', 'Error') THEN a.stop_reason END)",
    )
    .bind::<diesel::sql_types::Array<SqlUuid>, _>(targets)
    .execute(conn)
    .await
}
