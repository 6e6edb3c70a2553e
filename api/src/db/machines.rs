//! Queries of machines (whose agents registered).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::models::NewMachine;
use super::schema::machines;
use crate::arm::ids;

impl NewMachine<'_> {
    /// Inserts the machine, or replaces what a registration sets of an existing one.
    pub async fn upsert(&self, conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
        diesel::insert_into(machines::table)
            .values(self)
            .on_conflict(machines::resource_key)
            .do_update()
            .set(self)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// What a list of machines shows of one (never its credentials).
#[derive(Debug, Clone, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = machines)]
pub struct MachineSummary {
    pub resource_key: String,
    pub resource_id: String,
    pub location: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub interfaces: serde_json::Value,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub lost: bool,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One scale set, aggregated from its registered instances.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ScaleSetSummary {
    /// Lower-cased id of the scale set (the list's key).
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub scale_set_key: String,
    /// The scale set's id, in the casing one of its instances registered with.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub scale_set_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub location: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub instances: i64,
    /// Instances whose agent is neither lost nor revoked.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub connected: i64,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
}

/// `s` as the literal part of a LIKE pattern (`\` escapes).
pub fn like_literal(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The LIKE pattern of the keys of `kind` (`virtualmachines` or `virtualmachinescalesets`) in
/// a subscription, or in one of its resource groups (any casing).
pub fn compute_pattern(subscription: &str, resource_group: Option<&str>, kind: &str) -> String {
    let sub = like_literal(&ids::key(subscription));
    let rg = resource_group
        .map(|rg| like_literal(&ids::key(rg)))
        .unwrap_or_else(|| "%".to_string());
    format!("/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.compute/{kind}/%")
}

impl MachineSummary {
    /// A page of the virtual machines (not scale set instances) of a subscription or resource
    /// group, in key order after `after`: at most `limit` rows.
    pub async fn list_vms(
        conn: &mut AsyncPgConnection,
        subscription: &str,
        resource_group: Option<&str>,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<MachineSummary>> {
        // A scale set instance never matches: its key has `virtualmachinescalesets/` where a
        // VM's has `virtualmachines/`, and names hold no `/`.
        let pattern = compute_pattern(subscription, resource_group, "virtualmachines");
        machines::table
            .filter(machines::resource_key.like(pattern))
            .filter(machines::resource_key.gt(after))
            .order(machines::resource_key)
            .limit(limit)
            .select(MachineSummary::as_select())
            .load(conn)
            .await
    }

    /// A page of the registered instances of the scale set `scale_set_id` (any casing), in key
    /// order after `after`: at most `limit` rows.
    pub async fn list_instances(
        conn: &mut AsyncPgConnection,
        scale_set_id: &str,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<MachineSummary>> {
        let pattern = format!(
            "{}/virtualmachines/%",
            like_literal(&ids::key(scale_set_id))
        );
        machines::table
            .filter(machines::resource_key.like(pattern))
            .filter(machines::resource_key.gt(after))
            .order(machines::resource_key)
            .limit(limit)
            .select(MachineSummary::as_select())
            .load(conn)
            .await
    }
}

impl ScaleSetSummary {
    /// A page of the scale sets with registered instances in a subscription or resource group,
    /// in key order after `after`: at most `limit` scale sets.
    pub async fn list(
        conn: &mut AsyncPgConnection,
        subscription: &str,
        resource_group: Option<&str>,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<ScaleSetSummary>> {
        let pattern = compute_pattern(subscription, resource_group, "virtualmachinescalesets");
        diesel::sql_query(
            "SELECT scale_set_key, min(scale_set_id) AS scale_set_id, min(location) AS location, \
                    count(*) AS instances, \
                    count(*) FILTER (WHERE NOT lost AND revoked_at IS NULL) AS connected, \
                    max(last_seen_at) AS last_seen_at \
             FROM (SELECT regexp_replace(resource_key, '/virtualmachines/[^/]*$', '') AS scale_set_key, \
                          regexp_replace(resource_id, '/virtualmachines/[^/]*$', '', 'i') AS scale_set_id, \
                          location, lost, revoked_at, last_seen_at \
                   FROM machines WHERE resource_key LIKE $1) AS instance \
             WHERE scale_set_key > $2 \
             GROUP BY scale_set_key ORDER BY scale_set_key LIMIT $3",
        )
        .bind::<diesel::sql_types::Text, _>(pattern)
        .bind::<diesel::sql_types::Text, _>(after)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .load(conn)
        .await
    }
}
