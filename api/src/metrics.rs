//! Process metrics in the Prometheus text format (database-wide gauges are added by the
//! `/metrics` handler).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: Counter,
    pub responses_4xx: Counter,
    pub responses_5xx: Counter,
    pub captures_created: Counter,
    pub polls_waiting: Gauge,
    pub uploads_verified: Counter,
    pub uploads_failed: Counter,
    /// Blobs of continuous captures' files deleted as the files left their ring.
    pub ring_blobs_deleted: Counter,
    pub file_bytes_streamed: Counter,
    pub auth_failures: Counter,
    pub throttled: Counter,
    /// Restarts of the embedded PostgreSQL by this process after its postmaster exited.
    pub embedded_db_restarts: Counter,
    /// 1 while this process restarts its embedded PostgreSQL (`/readyz` answers 503 then).
    pub embedded_db_restarting: Gauge,
    /// Capture trigger events, per [`TRIGGER_SOURCES`] × [`TRIGGER_OUTCOMES`].
    pub trigger_events: [Counter; 6],
}

/// The `source` labels of `capture_api_trigger_events_total`.
pub const TRIGGER_SOURCES: [&str; 2] = ["Alertmanager", "AzureMonitor"];
/// The `outcome` labels of `capture_api_trigger_events_total`.
pub const TRIGGER_OUTCOMES: [&str; 3] = ["CaptureCreated", "CaptureStopped", "Skipped"];

impl Metrics {
    /// Counts a capture trigger event (names as in [`TRIGGER_SOURCES`], [`TRIGGER_OUTCOMES`]).
    pub fn trigger_event(&self, source: &str, outcome: &str) {
        let s = TRIGGER_SOURCES.iter().position(|x| *x == source);
        let o = TRIGGER_OUTCOMES.iter().position(|x| *x == outcome);
        if let (Some(s), Some(o)) = (s, o)
            && let Some(c) = self.trigger_events.get(s * TRIGGER_OUTCOMES.len() + o)
        {
            c.inc();
        }
    }

    fn render_trigger_events(&self) -> String {
        let mut out = String::from(
            "# HELP capture_api_trigger_events_total Alerts recorded by capture triggers, per source and outcome.\n# TYPE capture_api_trigger_events_total counter\n",
        );
        for (s, source) in TRIGGER_SOURCES.iter().enumerate() {
            for (o, outcome) in TRIGGER_OUTCOMES.iter().enumerate() {
                let n = self
                    .trigger_events
                    .get(s * TRIGGER_OUTCOMES.len() + o)
                    .map_or(0, Counter::get);
                out.push_str(&format!(
                    "capture_api_trigger_events_total{{source=\"{source}\",outcome=\"{outcome}\"}} {n}\n"
                ));
            }
        }
        out
    }

    pub fn render(&self) -> String {
        let triggers = self.render_trigger_events();
        format!(
            "# HELP capture_api_requests_total HTTP requests served.\n# TYPE capture_api_requests_total counter\ncapture_api_requests_total {}\n\
             # HELP capture_api_responses_client_errors_total 4xx responses.\n# TYPE capture_api_responses_client_errors_total counter\ncapture_api_responses_client_errors_total {}\n\
             # HELP capture_api_responses_server_errors_total 5xx responses.\n# TYPE capture_api_responses_server_errors_total counter\ncapture_api_responses_server_errors_total {}\n\
             # HELP capture_api_capture_puts_total Successful packet capture PUTs.\n# TYPE capture_api_capture_puts_total counter\ncapture_api_capture_puts_total {}\n\
             # HELP capture_api_agent_polls_in_flight Agent long polls being served.\n# TYPE capture_api_agent_polls_in_flight gauge\ncapture_api_agent_polls_in_flight {}\n\
             # HELP capture_api_uploads_verified_total Capture uploads to storage accounts checked complete.\n# TYPE capture_api_uploads_verified_total counter\ncapture_api_uploads_verified_total {}\n\
             # HELP capture_api_uploads_failed_total Capture uploads given up by agents (StorageFailed).\n# TYPE capture_api_uploads_failed_total counter\ncapture_api_uploads_failed_total {}\n\
             # HELP capture_api_ring_blobs_deleted_total Blobs of continuous captures' files deleted as the files left their ring.\n# TYPE capture_api_ring_blobs_deleted_total counter\ncapture_api_ring_blobs_deleted_total {}\n\
             # HELP capture_api_file_bytes_streamed_total Bytes of capture files streamed from agents to callers.\n# TYPE capture_api_file_bytes_streamed_total counter\ncapture_api_file_bytes_streamed_total {}\n\
             # HELP capture_api_auth_failures_total Management requests refused with 401.\n# TYPE capture_api_auth_failures_total counter\ncapture_api_auth_failures_total {}\n\
             # HELP capture_api_throttled_total Management requests refused with 429.\n# TYPE capture_api_throttled_total counter\ncapture_api_throttled_total {}\n\
             # HELP capture_api_embedded_database_restarts_total Restarts of the embedded PostgreSQL after its postmaster exited.\n# TYPE capture_api_embedded_database_restarts_total counter\ncapture_api_embedded_database_restarts_total {}\n\
             # HELP capture_api_embedded_database_restarting 1 while the embedded PostgreSQL is being restarted.\n# TYPE capture_api_embedded_database_restarting gauge\ncapture_api_embedded_database_restarting {}\n{triggers}",
            self.requests.get(),
            self.responses_4xx.get(),
            self.responses_5xx.get(),
            self.captures_created.get(),
            self.polls_waiting.get(),
            self.uploads_verified.get(),
            self.uploads_failed.get(),
            self.ring_blobs_deleted.get(),
            self.file_bytes_streamed.get(),
            self.auth_failures.get(),
            self.throttled.get(),
            self.embedded_db_restarts.get(),
            self.embedded_db_restarting.get(),
        )
    }
}
