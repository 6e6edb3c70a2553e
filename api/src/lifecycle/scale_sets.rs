//! Captures of a VM scale set (`targetType: AzureVMSS`): one ARM resource (the parent row)
//! whose state is derived from one hidden instance row per scale set instance that runs it.
//! Agents see instance rows like any capture of their machine; every transition of an instance
//! is one of a capture's, and [`aggregate`] derives the parent from its instances.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Nullable, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Gives every in-scope, registered instance of a scale set capture still being provisioned its
/// instance row (`capture`: one capture; `None`: all).
pub async fn expand(
    conn: &mut AsyncPgConnection,
    capture: Option<Uuid>,
    now: DateTime<Utc>,
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
           AND NOT m.lost AND ($2::uuid IS NULL OR p.id = $2)
           -- not yet an instance (no insert attempt, so no spurious wake-up through the trigger)
           AND NOT EXISTS (SELECT 1 FROM packet_captures i WHERE i.parent_id = p.id AND i.machine_key = m.resource_key)
           -- not past the create deadline
           AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.capture_id = p.id AND o.kind = 'CreateCapture'
                           AND o.deadline < $1)
           AND (jsonb_array_length(coalesce(p.parameters->'scope'->'include', '[]')) = 0
                OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(p.parameters->'scope'->'include') i
                           WHERE lower(i) = m.resource_key))
           AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(coalesce(p.parameters->'scope'->'exclude', '[]')) e
                           WHERE lower(e) = m.resource_key)
         -- waits for a concurrent stop or delete of the parent, then sees its outcome
         FOR SHARE OF p
         ON CONFLICT DO NOTHING",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<SqlUuid>, _>(capture)
    .execute(conn)
    .await
}

/// Derives a scale set capture's state from its instances: Running while any runs; provisioned
/// once none is still starting; errors, counters and files of all instances together.
pub(super) async fn aggregate(
    conn: &mut AsyncPgConnection,
    targets: &[Uuid],
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "WITH locked AS (
             -- Parents that a report or an API call is changing right now are skipped (the
             -- report settles them itself); the others are locked before they are derived.
             SELECT id FROM packet_captures
             WHERE is_scale_set AND (cardinality($2::uuid[]) = 0 OR id = ANY($2))
             FOR UPDATE SKIP LOCKED)
         UPDATE packet_captures p SET
             status = a.status, provisioning_state = a.prov, capture_start_time = a.start_time,
             stopped_at = CASE WHEN a.status IN ('Stopped', 'Error') THEN coalesce(p.stopped_at, $1) END,
             stop_reason = CASE WHEN a.status IN ('Stopped', 'Error') THEN a.stop_reason END,
             errors = a.errors, error_message = a.error_message, packets = a.packets, bytes = a.bytes,
             kernel_drops = a.drops, files = a.files, updated_at = $1
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
               WHERE i.parent_id IS NOT NULL AND (cardinality($2::uuid[]) = 0 OR i.parent_id = ANY($2))
               GROUP BY i.parent_id) a
         WHERE p.id = a.parent_id AND NOT (p.status = 'Stopped' AND a.status = 'NotStarted')
           AND p.id IN (SELECT id FROM locked)
           AND (p.status, p.provisioning_state, p.errors, p.error_message, p.packets, p.bytes,
                p.kernel_drops, p.files, p.capture_start_time, p.stop_reason)
               IS DISTINCT FROM (a.status, a.prov, a.errors, a.error_message, a.packets, a.bytes,
                a.drops, a.files, a.start_time,
                CASE WHEN a.status IN ('Stopped', 'Error') THEN a.stop_reason END)",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Array<SqlUuid>, _>(targets)
    .execute(conn)
    .await
}
