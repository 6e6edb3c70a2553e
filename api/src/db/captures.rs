//! Queries of packet captures. Lock order: a scale set capture (the parent) before its
//! instances, as stop, delete and agent reports all take them.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::models::{CaptureRow, WatcherRow};
use super::schema::{network_watchers, packet_captures};
use crate::arm::ids;

impl CaptureRow {
    /// The capture `name` of the watcher `{subscription}/{rg}/{nw}`, with the watcher in one
    /// round trip. `None` also when the watcher is missing.
    pub async fn find_by_path(
        conn: &mut AsyncPgConnection,
        subscription: &str,
        rg: &str,
        nw: &str,
        name: &str,
    ) -> QueryResult<Option<CaptureRow>> {
        packet_captures::table
            .inner_join(network_watchers::table)
            .filter(network_watchers::identity_key.eq(super::watchers::identity(
                subscription,
                rg,
                nw,
            )))
            .filter(packet_captures::name_key.eq(ids::key(name)))
            .filter(packet_captures::parent_id.is_null())
            .select(CaptureRow::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// The capture `name` of `watcher`, locked until the transaction ends (the writers' read).
    pub async fn lock(
        conn: &mut AsyncPgConnection,
        watcher: &WatcherRow,
        name: &str,
    ) -> QueryResult<Option<CaptureRow>> {
        packet_captures::table
            .filter(packet_captures::watcher_id.eq(watcher.id))
            .filter(packet_captures::name_key.eq(ids::key(name)))
            .filter(packet_captures::parent_id.is_null())
            .select(CaptureRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()
    }

    /// The capture `id` if it runs on `machine_key`, locked (a scale set instance after its
    /// parent).
    pub async fn lock_of_machine(
        conn: &mut AsyncPgConnection,
        id: Uuid,
        machine_key: &str,
    ) -> QueryResult<Option<CaptureRow>> {
        if let Some(parent) = CaptureRow::parent_of(conn, id).await? {
            packet_captures::table
                .find(parent)
                .select(packet_captures::id)
                .for_update()
                .first::<Uuid>(conn)
                .await
                .optional()?;
        }
        packet_captures::table
            .find(id)
            .filter(packet_captures::machine_key.eq(machine_key))
            .select(CaptureRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()
    }

    /// The scale set capture whose instance `id` is, if it is one.
    pub async fn parent_of(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<Uuid>> {
        let parent: Option<Option<Uuid>> = packet_captures::table
            .find(id)
            .select(packet_captures::parent_id)
            .first(conn)
            .await
            .optional()?;
        Ok(parent.flatten())
    }

    /// The capture `id` if it runs on `machine_key`, in any state (not locked).
    pub async fn find_of_machine(
        conn: &mut AsyncPgConnection,
        id: Uuid,
        machine_key: &str,
    ) -> QueryResult<Option<CaptureRow>> {
        packet_captures::table
            .find(id)
            .filter(packet_captures::machine_key.eq(machine_key))
            .select(CaptureRow::as_select())
            .first(conn)
            .await
            .optional()
    }
}

impl CaptureRow {
    /// The id of the operation that created this capture.
    pub async fn create_operation(&self, conn: &mut AsyncPgConnection) -> QueryResult<Uuid> {
        use super::schema::operations;
        operations::table
            .filter(operations::capture_id.eq(self.id))
            .filter(operations::kind.eq(super::states::OperationKind::CreateCapture))
            .select(operations::id)
            .first(conn)
            .await
    }
}
