//! Rows and queries of capture triggers and their events.
//!
//! Lock order (with [`super::captures`]): the network watcher (share) before the trigger row
//! (`FOR UPDATE`) before any capture. A delivery, a trigger PUT, a rotation and a DELETE all take
//! them so; the cascade of a watcher's removal holds the watcher first too.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::models::WatcherRow;
use super::schema::{capture_trigger_events, capture_triggers, machines, network_watchers};
use super::states::{AlertCondition, AlertSource, SkipReason, TriggerOutcome};
use crate::arm::ids;

/// Events kept per trigger (older ones are pruned, except what the guards still need).
pub const KEPT_EVENTS: i64 = 1000;
/// Events shown in `recentEvents`.
pub const RECENT_EVENTS: i64 = 50;
/// At most this many machines answer one host name.
pub const MAX_HOST_MATCHES: i64 = 100;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = capture_triggers)]
pub struct TriggerRow {
    /// The opaque id of the webhook URLs.
    pub id: Uuid,
    pub watcher_id: Uuid,
    pub name: String,
    pub resource_id: String,
    /// The normalised properties (`CaptureTriggerProperties`).
    pub properties: serde_json::Value,
    pub enabled: bool,
    pub secret_hash: String,
    pub etag: Uuid,
    pub provisioning_state: String,
    pub created_by: String,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = capture_triggers)]
pub struct NewTrigger<'a> {
    pub id: Uuid,
    pub watcher_id: Uuid,
    pub name: &'a str,
    pub name_key: String,
    pub resource_id: String,
    pub properties: serde_json::Value,
    pub enabled: bool,
    pub secret_hash: String,
    pub etag: Uuid,
    pub provisioning_state: &'a str,
    pub created_by: &'a str,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = capture_trigger_events)]
pub struct TriggerEventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub source: AlertSource,
    pub alert_name: String,
    pub alert_id: String,
    pub condition: AlertCondition,
    pub machine: Option<String>,
    pub outcome: TriggerOutcome,
    pub reason: Option<SkipReason>,
    pub message: String,
    pub capture_resource_id: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = capture_trigger_events)]
pub struct NewTriggerEvent<'a> {
    pub trigger_id: Uuid,
    pub at: DateTime<Utc>,
    pub source: AlertSource,
    pub alert_name: &'a str,
    pub alert_key: &'a str,
    pub alert_id: &'a str,
    pub condition: AlertCondition,
    /// `''` when the alert named no machine.
    pub machine_key: &'a str,
    pub machine: Option<&'a str>,
    pub outcome: TriggerOutcome,
    pub reason: Option<SkipReason>,
    pub message: &'a str,
    pub capture_id: Option<Uuid>,
    pub capture_resource_id: Option<&'a str>,
}

/// A registered machine as a trigger sees it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = machines)]
pub struct TriggerMachine {
    pub resource_key: String,
    pub resource_id: String,
    pub location: String,
    pub hostname: String,
    pub lost: bool,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TriggerMachine {
    /// The registered machine `key` (lower-cased id).
    pub async fn find(conn: &mut AsyncPgConnection, key: &str) -> QueryResult<Option<Self>> {
        machines::table
            .find(key)
            .select(Self::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// The registered machines of `subscription` whose host name is `host` (any casing).
    pub async fn with_hostname(
        conn: &mut AsyncPgConnection,
        subscription: &str,
        host: &str,
    ) -> QueryResult<Vec<Self>> {
        machines::table
            .filter(machines::subscription_key.eq(ids::key(subscription)))
            .filter(
                diesel::dsl::sql::<Bool>("lower(machines.hostname) = ")
                    .bind::<Text, _>(host.to_lowercase()),
            )
            .order(machines::resource_key)
            .limit(MAX_HOST_MATCHES)
            .select(Self::as_select())
            .load(conn)
            .await
    }
}

impl TriggerRow {
    /// The trigger `name` of `watcher`; locked until the transaction ends with `lock`.
    pub async fn find(
        conn: &mut AsyncPgConnection,
        watcher: &WatcherRow,
        name: &str,
        lock: bool,
    ) -> QueryResult<Option<TriggerRow>> {
        let q = capture_triggers::table
            .filter(capture_triggers::watcher_id.eq(watcher.id))
            .filter(capture_triggers::name_key.eq(ids::key(name)))
            .select(TriggerRow::as_select());
        if lock {
            q.for_update().first(conn).await.optional()
        } else {
            q.first(conn).await.optional()
        }
    }

    /// The trigger of a webhook URL; locked until the transaction ends with `lock`.
    pub async fn by_id(
        conn: &mut AsyncPgConnection,
        id: Uuid,
        lock: bool,
    ) -> QueryResult<Option<TriggerRow>> {
        let q = capture_triggers::table
            .find(id)
            .select(TriggerRow::as_select());
        if lock {
            q.for_update().first(conn).await.optional()
        } else {
            q.first(conn).await.optional()
        }
    }

    /// The trigger's watcher, held (share) until the transaction ends: a delete of the watcher
    /// waits, and one that committed first is seen.
    pub async fn watcher(&self, conn: &mut AsyncPgConnection) -> QueryResult<Option<WatcherRow>> {
        network_watchers::table
            .find(self.watcher_id)
            .select(WatcherRow::as_select())
            .for_share()
            .first(conn)
            .await
            .optional()
    }

    /// Inserts a trigger; `None` when one of that name appeared concurrently.
    pub async fn insert(
        conn: &mut AsyncPgConnection,
        new: NewTrigger<'_>,
    ) -> QueryResult<Option<TriggerRow>> {
        diesel::insert_into(capture_triggers::table)
            .values(new)
            .on_conflict_do_nothing()
            .returning(TriggerRow::as_returning())
            .get_result(conn)
            .await
            .optional()
    }

    /// Replaces the properties (a new etag).
    pub async fn update_properties(
        &self,
        conn: &mut AsyncPgConnection,
        properties: serde_json::Value,
        enabled: bool,
    ) -> QueryResult<TriggerRow> {
        diesel::update(capture_triggers::table.find(self.id))
            .set((
                capture_triggers::properties.eq(properties),
                capture_triggers::enabled.eq(enabled),
                capture_triggers::etag.eq(Uuid::new_v4()),
                capture_triggers::updated_at.eq(diesel::dsl::now),
            ))
            .returning(TriggerRow::as_returning())
            .get_result(conn)
            .await
    }

    /// Replaces the secret's hash (the old secret stops working at once).
    pub async fn set_secret_hash(
        &self,
        conn: &mut AsyncPgConnection,
        hash: String,
    ) -> QueryResult<()> {
        diesel::update(capture_triggers::table.find(self.id))
            .set((
                capture_triggers::secret_hash.eq(hash),
                capture_triggers::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Removes the trigger and its events (its captures stay).
    pub async fn delete(&self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        diesel::delete(capture_triggers::table.find(self.id))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The keys and stored sizes of the next `limit` triggers of `watcher` after `after`, in
    /// name order (what a list page measures before it loads anything).
    pub async fn page_sizes(
        conn: &mut AsyncPgConnection,
        watcher: &WatcherRow,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<(String, i32)>> {
        capture_triggers::table
            .filter(capture_triggers::watcher_id.eq(watcher.id))
            .filter(capture_triggers::name_key.gt(after))
            .order(capture_triggers::name_key)
            .limit(limit)
            .select((
                capture_triggers::name_key,
                diesel::dsl::sql::<diesel::sql_types::Integer>(
                    "octet_length(capture_triggers.properties::text) + octet_length(capture_triggers.resource_id)",
                ),
            ))
            .load(conn)
            .await
    }

    /// The triggers of `watcher` after `after` up to `last` (keys), in name order.
    pub async fn page(
        conn: &mut AsyncPgConnection,
        watcher: &WatcherRow,
        after: &str,
        last: &str,
    ) -> QueryResult<Vec<(String, TriggerRow)>> {
        capture_triggers::table
            .filter(capture_triggers::watcher_id.eq(watcher.id))
            .filter(capture_triggers::name_key.gt(after))
            .filter(capture_triggers::name_key.le(last))
            .order(capture_triggers::name_key)
            .select((capture_triggers::name_key, TriggerRow::as_select()))
            .load(conn)
            .await
    }

    /// The latest [`RECENT_EVENTS`] events, newest first.
    pub async fn recent_events(
        &self,
        conn: &mut AsyncPgConnection,
    ) -> QueryResult<Vec<TriggerEventRow>> {
        capture_trigger_events::table
            .filter(capture_trigger_events::trigger_id.eq(self.id))
            .order(capture_trigger_events::id.desc())
            .limit(RECENT_EVENTS)
            .select(TriggerEventRow::as_select())
            .load(conn)
            .await
    }

    /// Records an event, unless this alert (key and condition) already created or stopped a
    /// capture on the machine: `None` then (a repeated delivery). An earlier `Skipped` event of
    /// it is replaced: the guards are checked again at each repeat (Alertmanager repeats a firing
    /// alert every `repeat_interval`), so an alert skipped for a limit or a cooldown captures
    /// once they allow it. Called under the trigger's row lock.
    pub async fn record(
        conn: &mut AsyncPgConnection,
        event: NewTriggerEvent<'_>,
    ) -> QueryResult<Option<i64>> {
        use capture_trigger_events as e;
        diesel::delete(
            e::table
                .filter(e::trigger_id.eq(event.trigger_id))
                .filter(e::alert_key.eq(event.alert_key))
                .filter(e::condition.eq(event.condition))
                .filter(e::machine_key.eq(event.machine_key))
                .filter(e::outcome.eq(TriggerOutcome::Skipped)),
        )
        .execute(conn)
        .await?;
        diesel::insert_into(capture_trigger_events::table)
            .values(event)
            .on_conflict_do_nothing()
            .returning(capture_trigger_events::id)
            .get_result(conn)
            .await
            .optional()
    }

    /// Sets the capture an event created.
    pub async fn set_event_capture(
        conn: &mut AsyncPgConnection,
        event: i64,
        capture: Uuid,
        resource_id: &str,
        message: &str,
    ) -> QueryResult<()> {
        diesel::update(capture_trigger_events::table.find(event))
            .set((
                capture_trigger_events::capture_id.eq(capture),
                capture_trigger_events::capture_resource_id.eq(resource_id),
                capture_trigger_events::message.eq(message),
            ))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Turns an event that was to create a capture into a skip (no capture could be made).
    pub async fn set_event_skipped(
        conn: &mut AsyncPgConnection,
        event: i64,
        reason: SkipReason,
        message: &str,
    ) -> QueryResult<()> {
        diesel::update(capture_trigger_events::table.find(event))
            .set((
                capture_trigger_events::outcome.eq(TriggerOutcome::Skipped),
                capture_trigger_events::reason.eq(Some(reason)),
                capture_trigger_events::message.eq(message),
            ))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// How many captures this trigger created still run (or are to run), on `machine_key`
    /// only when given.
    pub async fn running_captures(
        &self,
        conn: &mut AsyncPgConnection,
        machine_key: Option<&str>,
    ) -> QueryResult<i64> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let c: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM packet_captures c
             WHERE c.id IN (SELECT e.capture_id FROM capture_trigger_events e
                            WHERE e.trigger_id = $1 AND e.outcome = 'CaptureCreated'
                              AND e.capture_id IS NOT NULL
                              AND ($2::text IS NULL OR e.machine_key = $2))
               AND c.status IN ('NotStarted', 'Running') AND NOT c.deleting",
        )
        .bind::<SqlUuid, _>(self.id)
        .bind::<diesel::sql_types::Nullable<Text>, _>(machine_key)
        .get_result(conn)
        .await?;
        Ok(c.n)
    }

    /// When this trigger last created a capture on `machine_key`.
    pub async fn last_capture_on(
        &self,
        conn: &mut AsyncPgConnection,
        machine_key: &str,
    ) -> QueryResult<Option<DateTime<Utc>>> {
        capture_trigger_events::table
            .filter(capture_trigger_events::trigger_id.eq(self.id))
            .filter(capture_trigger_events::machine_key.eq(machine_key))
            .filter(capture_trigger_events::outcome.eq(TriggerOutcome::CaptureCreated))
            .select(diesel::dsl::max(capture_trigger_events::at))
            .first(conn)
            .await
    }

    /// The captures a firing alert (`alert_key`) created, with the machine of each.
    pub async fn captures_of_alert(
        &self,
        conn: &mut AsyncPgConnection,
        alert_key: &str,
    ) -> QueryResult<Vec<(Uuid, String, Option<String>)>> {
        let rows: Vec<(Option<Uuid>, String, Option<String>)> = capture_trigger_events::table
            .filter(capture_trigger_events::trigger_id.eq(self.id))
            .filter(capture_trigger_events::alert_key.eq(alert_key))
            .filter(capture_trigger_events::condition.eq(AlertCondition::Fired))
            .filter(capture_trigger_events::outcome.eq(TriggerOutcome::CaptureCreated))
            .order(capture_trigger_events::id)
            .select((
                capture_trigger_events::capture_id,
                capture_trigger_events::machine_key,
                capture_trigger_events::machine,
            ))
            .load(conn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(c, k, m)| c.map(|c| (c, k, m)))
            .collect())
    }

    /// Keeps the newest [`KEPT_EVENTS`] events, and older ones still needed: a capture created
    /// within the longest cooldown, still running, or by an alert not resolved yet (30 days at
    /// most).
    pub async fn prune_events(
        &self,
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
    ) -> QueryResult<usize> {
        // A created capture's event is kept while the guards need it (cooldown, running
        // captures), and while its alert may still be repeated (not resolved, 30 days at most),
        // so that a repeat never captures again.
        diesel::sql_query(
            "DELETE FROM capture_trigger_events e
             WHERE e.trigger_id = $1
               AND e.id < (SELECT id FROM capture_trigger_events WHERE trigger_id = $1
                           ORDER BY id DESC OFFSET $2 LIMIT 1)
               AND NOT (e.outcome = 'CaptureCreated'
                        AND (e.at > $3 - interval '86400 seconds'
                             OR EXISTS (SELECT 1 FROM packet_captures c WHERE c.id = e.capture_id
                                        AND c.status IN ('NotStarted', 'Running'))
                             OR (e.at > $3 - interval '30 days'
                                 AND NOT EXISTS (SELECT 1 FROM capture_trigger_events r
                                                 WHERE r.trigger_id = e.trigger_id
                                                   AND r.alert_key = e.alert_key
                                                   AND r.condition = 'Resolved'))))",
        )
        .bind::<SqlUuid, _>(self.id)
        .bind::<BigInt, _>(KEPT_EVENTS - 1)
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await
    }
}
