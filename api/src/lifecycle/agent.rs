//! Events from agents: a report on a capture, an agent that restarted, an agent that went silent.

use agent_protocol::{CaptureCounters, CaptureReport};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Double, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::states::{CaptureStatus, ProvisioningState, StopReason};
use crate::db::models::CaptureRow;
use crate::db::schema::packet_captures;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// An agent reports on a capture of its machine (`machine_key`):
/// - `Running`: `NotStarted` → `Running`; a waiting create succeeds.
/// - `Stopped`: `NotStarted`/`Running` → `Stopped` with the agent's stop reason (a user's stop
///   keeps the reason it was requested with); a waiting create succeeds.
/// - `Failed`: `NotStarted`/`Running` → `Error` with the agent's error; a waiting create fails.
///
/// A repeated or late report changes no state. Counters and files are recorded whatever the
/// state; operations settle at once.
pub async fn report(
    conn: &mut AsyncPgConnection,
    machine_key: &str,
    capture_id: Uuid,
    report: &CaptureReport,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let c = CaptureRow::lock_of_machine(conn, capture_id, machine_key)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::CaptureNotAssigned,
                format!(
                    "Capture {capture_id} is not assigned to this agent's machine (or was deleted)."
                ),
            )
        })?;
    match report {
        CaptureReport::Running { start_time, .. } if c.status == CaptureStatus::NotStarted => {
            started(conn, &c, *start_time).await?
        }
        CaptureReport::Stopped { stop_reason, .. } if c.status.is_active() => {
            let reason = match (stop_reason, c.stop_requested_reason) {
                (agent_protocol::StopReason::StoppedByUser, Some(requested)) => requested,
                (r, _) => StopReason::from(*r),
            };
            stopped(conn, &c, reason, now).await?
        }
        CaptureReport::Failed { code, message, .. } if c.status.is_active() => {
            failed(conn, &c, code.as_str(), message, now).await?
        }
        _ => {}
    }
    let (packets, bytes, drops, files) = counters(report.counters());
    diesel::update(packet_captures::table.find(c.id))
        .set((
            packet_captures::packets.eq(packets),
            packet_captures::bytes.eq(bytes),
            packet_captures::kernel_drops.eq(drops),
            packet_captures::files.eq(files),
            packet_captures::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    if !report.counters().file_set.is_empty() {
        super::files::reported(conn, &c, &report.counters().file_set, now).await?;
    }
    super::settle(conn, Some(c.id), now).await?;
    Ok(())
}

/// The provisioning state once the capture started or ended normally.
fn provisioned(c: &CaptureRow, outcome: ProvisioningState) -> ProvisioningState {
    if c.provisioning_state == ProvisioningState::Updating {
        outcome
    } else {
        c.provisioning_state
    }
}

async fn started(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    start_time: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    diesel::update(packet_captures::table.find(c.id))
        .set((
            packet_captures::status.eq(CaptureStatus::Running),
            packet_captures::capture_start_time.eq(start_time),
            packet_captures::provisioning_state.eq(provisioned(c, ProvisioningState::Succeeded)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn stopped(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    reason: StopReason,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    diesel::update(packet_captures::table.find(c.id))
        .set((
            packet_captures::status.eq(CaptureStatus::Stopped),
            packet_captures::stop_reason.eq(reason),
            packet_captures::stopped_at.eq(now),
            packet_captures::desired_running.eq(false),
            packet_captures::provisioning_state.eq(provisioned(c, ProvisioningState::Succeeded)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn failed(
    conn: &mut AsyncPgConnection,
    c: &CaptureRow,
    code: &str,
    message: &str,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    diesel::update(packet_captures::table.find(c.id))
        .set((
            packet_captures::status.eq(CaptureStatus::Error),
            packet_captures::errors.eq(serde_json::json!([code])),
            packet_captures::error_message.eq(message),
            packet_captures::stop_reason.eq(StopReason::CaptureError),
            packet_captures::stopped_at.eq(now),
            packet_captures::desired_running.eq(false),
            packet_captures::provisioning_state.eq(provisioned(c, ProvisioningState::Failed)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

fn counters(c: &CaptureCounters) -> (i64, i64, i64, serde_json::Value) {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (
        i(c.packets),
        i(c.bytes),
        i(c.kernel_drops),
        serde_json::Value::from(c.files.clone()),
    )
}

/// A machine's agent registered again, running only `running`: the captures the server
/// believed running there that it no longer runs end as agent-stopped.
pub async fn restarted(
    conn: &mut AsyncPgConnection,
    machine_key: &str,
    running: &[Uuid],
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(super::agent_stopped::update(
        "'The capture agent restarted and no longer runs this capture.'",
        "WHERE c.machine_key = $2 AND c.status = 'Running' AND NOT (c.id = ANY($3))",
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<Text, _>(machine_key)
    .bind::<Array<SqlUuid>, _>(running)
    .execute(conn)
    .await
}

/// Agents not seen for `lost_after_seconds` are marked lost; their running captures end as
/// agent-stopped. Returns the number of captures ended.
pub async fn lost(
    conn: &mut AsyncPgConnection,
    lost_after_seconds: f64,
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    let update = super::agent_stopped::update(
        "'The capture agent of ' || lost.resource_id || ' stopped polling the server.'",
        "FROM lost WHERE c.machine_key = lost.resource_key AND c.status = 'Running'",
    );
    diesel::sql_query(format!(
        "WITH lost AS (
             UPDATE machines SET lost = true
             WHERE NOT lost AND last_seen_at < $1 - make_interval(secs => $2)
             RETURNING resource_key, resource_id)
         {update}"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<Double, _>(lost_after_seconds)
    .execute(conn)
    .await
}
