//! The sweeper: every server replica runs [`run`], which applies the time-driven transitions of
//! [`super::deadlines`] and [`super::agent::lost`], then [`super::settle`]s everything.
//!
//! Each statement is one atomic, idempotent SQL statement, so replicas sweeping the same
//! database at once cannot apply a transition twice. [`sweep`] is one step with the clock as an
//! argument: tests call it with a time of their choosing instead of waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::config::Timing;
use crate::db::DbPool;

/// How often each replica sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Sweeps every [`SWEEP_INTERVAL`] until `shutdown` changes.
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
        if let Err(e) = sweep(&mut conn, &timing, Utc::now()).await {
            tracing::warn!(error = %e, "sweep failed");
        }
    }
}

/// One pass of every time-driven transition as of `now`, then [`super::settle`].
pub async fn sweep(
    conn: &mut AsyncPgConnection,
    timing: &Timing,
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let lost = super::agent::lost(conn, timing.agent_lost.as_secs_f64(), now).await?;
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
    let grace = timing.stop_grace.as_secs_f64();
    super::deadlines::time_limit_passed(conn, grace, now).await?;
    super::deadlines::stop_grace_passed(conn, grace, now).await?;
    super::deadlines::create_deadline_passed(conn, now).await?;
    super::settle(conn, None, now).await
}
