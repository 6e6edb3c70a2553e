//! Wakes agents' long polls when their assignments change, in every server replica.
//!
//! The `packet_captures` trigger sends `NOTIFY capture_assignments, '<machine key>'` on every
//! change an agent must see. Each replica keeps one LISTEN connection and wakes the long polls
//! waiting on that machine. When the connection is lost it reconnects and wakes every poll, so
//! that none misses a change made in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::watch;

pub const CHANNEL: &str = "capture_assignments";

#[derive(Debug, Default)]
pub struct Hub {
    machines: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The server is shutting down: long polls answer at once, the listener ends quietly.
    closing: std::sync::atomic::AtomicBool,
}

/// A long poll's interest in one machine; dropping it forgets the machine when nobody else waits.
pub struct Subscription {
    hub: Arc<Hub>,
    key: String,
    rx: watch::Receiver<u64>,
}

impl Hub {
    pub fn subscribe(self: &Arc<Self>, machine_key: &str) -> Subscription {
        let mut map = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        let tx = map
            .entry(machine_key.to_string())
            .or_insert_with(|| watch::channel(0).0);
        let rx = tx.subscribe();
        Subscription {
            hub: self.clone(),
            key: machine_key.to_string(),
            rx,
        }
    }

    fn wake(&self, machine_key: &str) {
        let map = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(machine_key) {
            tx.send_modify(|v| *v += 1);
        }
    }

    fn wake_all(&self) {
        let map = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        for tx in map.values() {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Shutdown: every long poll answers now, and no new one waits.
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake_all();
    }

    pub fn is_closing(&self) -> bool {
        // Spelled out: diesel's `RunQueryDsl::load` is in scope here too.
        std::sync::atomic::AtomicBool::load(&self.closing, std::sync::atomic::Ordering::SeqCst)
    }

    /// Number of long polls waiting right now (a metric).
    pub fn waiting(&self) -> usize {
        let map = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|tx| tx.receiver_count()).sum()
    }

    /// Listens until the process ends, reconnecting with a capped backoff.
    pub async fn listen(self: Arc<Self>, database_url: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = self.listen_once(&database_url).await;
            // The database goes away with the server at shutdown: nothing to warn about.
            if self.is_closing() {
                return;
            }
            match result {
                Ok(()) => tracing::warn!("notification connection closed; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "notification connection failed; reconnecting")
                }
            }
            self.wake_all();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen_once(&self, database_url: &str) -> Result<(), diesel::result::Error> {
        let mut conn = AsyncPgConnection::establish(database_url)
            .await
            .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
        diesel::sql_query(format!("LISTEN {CHANNEL}"))
            .execute(&mut conn)
            .await?;
        // Changes made while we were not listening: wake everyone to re-check.
        self.wake_all();
        tracing::debug!("listening for assignment changes");
        let mut stream = std::pin::pin!(conn.notifications_stream());
        while let Some(n) = stream.next().await {
            let n = n?;
            self.wake(&n.payload);
        }
        Ok(())
    }
}

/// Wakes whoever waits on `key`, in every replica (the same channel as the trigger's).
pub async fn send(conn: &mut AsyncPgConnection, key: &str) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<diesel::sql_types::Text, _>(CHANNEL)
        .bind::<diesel::sql_types::Text, _>(key)
        .execute(conn)
        .await?;
    Ok(())
}

impl Subscription {
    /// Waits until the machine's assignments may have changed, or `timeout` elapses.
    /// Returns whether a wake-up arrived.
    pub async fn changed(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.rx.changed()).await,
            Ok(Ok(()))
        )
    }

    /// Marks everything seen so far as seen (call before reading the state).
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self.hub.machines.lock().unwrap_or_else(|p| p.into_inner());
        // Our own receiver is still alive here: 1 means nobody else waits.
        if map
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.key);
        }
    }
}
