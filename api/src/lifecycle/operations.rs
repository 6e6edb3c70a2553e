//! Long-running operations: started by an API call, completed by [`super::settle`] (or failed
//! by a deadline in [`super::deadlines`]) once the state they wait for is reached.

use chrono::{DateTime, Utc};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::states::{OperationKind, OperationStatus};
use crate::arm::ids;
use crate::db::models::{NewOperation, WatcherRow};
use crate::db::schema::operations;

/// Records an operation on a watcher's resource (`capture`: the capture it waits on); its
/// monitors answer from it. `principal` alone may read them.
pub async fn start(
    conn: &mut AsyncPgConnection,
    watcher: &WatcherRow,
    kind: OperationKind,
    resource_id: &str,
    capture: Option<Uuid>,
    deadline: DateTime<Utc>,
    principal: &str,
) -> diesel::QueryResult<Uuid> {
    let id = Uuid::new_v4();
    diesel::insert_into(operations::table)
        .values(NewOperation {
            id,
            subscription_key: ids::key(&watcher.subscription_id),
            location: &watcher.location,
            kind,
            resource_id,
            capture_id: capture,
            watcher_id: Some(watcher.id),
            status: OperationStatus::InProgress,
            deadline,
            principal_id: Some(principal),
        })
        .execute(conn)
        .await?;
    Ok(id)
}
