//! Request coalescing for reads: concurrent reads of one resource share one database query.
//!
//! A read joins only a query that starts *after* the read arrived, so every answer reflects all
//! that was committed before its request came in: coalescing never serves stale data. While a
//! query runs, newly arriving readers queue for the next one; each query answers its whole queue.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::{ApiError, ApiResult};

type Waiter<V> = oneshot::Sender<Result<Arc<V>, ApiError>>;

struct Slot<V> {
    running: bool,
    waiters: Vec<Waiter<V>>,
}

pub struct Coalescer<V> {
    slots: Mutex<HashMap<String, Slot<V>>>,
}

impl<V> Default for Coalescer<V> {
    fn default() -> Self {
        Coalescer {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

/// A clonable copy of an error, for every reader of a failed query.
fn share(e: &ApiError) -> ApiError {
    let (_, code, message, target) = e.arm_parts();
    ApiError::Arm {
        code,
        message,
        target,
    }
}

impl<V: Send + Sync + 'static> Coalescer<V> {
    /// Reads `key` with `query`, sharing the query with concurrent readers of the same key.
    pub async fn read<F, Fut>(self: &Arc<Self>, key: String, query: F) -> ApiResult<Arc<V>>
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = ApiResult<V>> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                running: false,
                waiters: Vec::new(),
            });
            slot.waiters.push(tx);
            !std::mem::replace(&mut slot.running, true)
        };
        if lead {
            let this = self.clone();
            actix_web::rt::spawn(async move { this.run(key, query).await });
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(ApiError::internal("a coalesced read was abandoned")),
        }
    }

    /// Runs queries for `key` until no reader waits.
    async fn run<F, Fut>(self: Arc<Self>, key: String, query: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ApiResult<V>>,
    {
        loop {
            let batch = {
                let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                match slots.get_mut(&key) {
                    Some(slot) if !slot.waiters.is_empty() => std::mem::take(&mut slot.waiters),
                    _ => {
                        slots.remove(&key);
                        return;
                    }
                }
            };
            // Every reader in `batch` arrived before this query starts.
            let result = query().await.map(Arc::new);
            for waiter in batch {
                let _ = waiter.send(match &result {
                    Ok(v) => Ok(v.clone()),
                    Err(e) => Err(share(e)),
                });
            }
            if let Err(e) = &result
                && e.arm_parts().0.is_server_error()
            {
                tracing::warn!(error = %e, "coalesced read failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::Coalescer;

    #[actix_web::test]
    async fn concurrent_reads_share_queries_but_never_see_older_state() {
        let coalescer: Arc<Coalescer<u64>> = Arc::default();
        // "The database": a value, and the number of queries made.
        let value = Arc::new(AtomicU64::new(0));
        let queries = Arc::new(AtomicU64::new(0));
        let read = |c: Arc<Coalescer<u64>>, value: Arc<AtomicU64>, queries: Arc<AtomicU64>| async move {
            c.read("k".to_string(), move || {
                let (value, queries) = (value.clone(), queries.clone());
                async move {
                    queries.fetch_add(1, Ordering::SeqCst);
                    let v = value.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(v)
                }
            })
            .await
            .map(|v| *v)
        };
        let mut tasks = vec![];
        for _ in 0..50 {
            tasks.push(actix_web::rt::spawn(read(
                coalescer.clone(),
                value.clone(),
                queries.clone(),
            )));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 0);
        }
        let q = queries.load(Ordering::SeqCst);
        assert!((1..=2).contains(&q), "50 concurrent reads made {q} queries");

        // A write while a query is in flight: a read that arrives after the write must see it,
        // even though a query (which started before the write) is still running.
        let first = actix_web::rt::spawn(read(coalescer.clone(), value.clone(), queries.clone()));
        tokio::time::sleep(Duration::from_millis(5)).await;
        value.store(7, Ordering::SeqCst);
        let second = read(coalescer.clone(), value.clone(), queries.clone())
            .await
            .unwrap();
        assert_eq!(second, 7);
        assert_eq!(first.await.unwrap().unwrap(), 0);
    }
}
