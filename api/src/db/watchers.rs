//! Queries of network watchers.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::models::WatcherRow;
use super::schema::network_watchers;
use crate::arm::ids;

/// Case-insensitive identity of the watcher `{subscription}/{rg}/{name}`.
pub fn identity(subscription: &str, rg: &str, name: &str) -> String {
    ids::key(&format!("{subscription}/{rg}/{name}"))
}

/// How a writer holds the watcher it works under until its transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    None,
    /// A concurrent delete waits; one that committed first is seen.
    Share,
    /// The watcher itself changes.
    Update,
}

impl WatcherRow {
    /// ARM id of the watcher.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkWatchers/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }

    /// The watcher `{subscription}/{rg}/{name}` (any casing).
    pub async fn find(
        conn: &mut AsyncPgConnection,
        subscription: &str,
        rg: &str,
        name: &str,
        lock: Lock,
    ) -> QueryResult<Option<WatcherRow>> {
        let query = network_watchers::table
            .filter(network_watchers::identity_key.eq(identity(subscription, rg, name)))
            .select(WatcherRow::as_select());
        match lock {
            Lock::None => query.first(conn).await.optional(),
            Lock::Share => query.for_share().first(conn).await.optional(),
            Lock::Update => query.for_update().first(conn).await.optional(),
        }
    }
}

impl WatcherRow {
    /// Creates the watcher `NetworkWatcher_{location}` in `NetworkWatcherRG` of `subscription`,
    /// as Azure does for a region's first machine, unless the subscription has one there.
    pub async fn ensure_default(
        conn: &mut AsyncPgConnection,
        subscription: &str,
        location: &str,
    ) -> QueryResult<()> {
        let name = format!("NetworkWatcher_{}", ids::location_key(location));
        let rg = "NetworkWatcherRG";
        diesel::insert_into(network_watchers::table)
            .values(super::models::NewWatcher {
                id: uuid::Uuid::new_v4(),
                subscription_id: subscription,
                resource_group: rg,
                name: &name,
                identity_key: identity(subscription, rg, &name),
                subscription_key: ids::key(subscription),
                location,
                location_key: ids::location_key(location),
                tags: serde_json::json!({}),
                etag: uuid::Uuid::new_v4(),
                provisioning_state: super::states::ProvisioningState::Succeeded,
            })
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        Ok(())
    }
}
