//! Queries of machines (whose agents registered).

use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::models::NewMachine;
use super::schema::machines;

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
