//! A scripted agent: the real `agent-protocol` client, driven by the tests instead of
//! by libpcap.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_protocol::{
    AgentClient, Assignments, CaptureCounters, CaptureReport, DesiredState, RegisterRequest,
    StopReason,
};
use chrono::Utc;
use uuid::Uuid;

pub struct ScriptedAgent {
    pub client: AgentClient,
    pub agent_id: Uuid,
    pub machine_id: String,
}

impl ScriptedAgent {
    pub async fn register(server_url: &str, machine_id: &str, location: &str) -> ScriptedAgent {
        Self::register_with(server_url, machine_id, location, reqwest::Client::new()).await
    }

    pub async fn register_with(
        server_url: &str,
        machine_id: &str,
        location: &str,
        http: reqwest::Client,
    ) -> ScriptedAgent {
        let client = AgentClient::new(server_url, http).expect("client");
        client.set_bearer(crate::credentials::for_url(server_url).map(|c| c.enrollment_token));
        let resp = client
            .register(&RegisterRequest {
                machine_id: machine_id.to_string(),
                location: location.to_string(),
                hostname: "test-host".to_string(),
                os: "Linux".to_string(),
                agent_version: "scripted".to_string(),
                interfaces: vec!["lo".to_string()],
                running_captures: vec![],
            })
            .await
            .expect("register");
        ScriptedAgent {
            client,
            agent_id: resp.agent_id,
            machine_id: machine_id.to_string(),
        }
    }

    pub async fn poll(&self, since: Option<i64>, wait: Duration) -> Assignments {
        self.client
            .poll(self.agent_id, since, wait)
            .await
            .expect("poll")
    }

    /// Polls until an assignment for `capture` with the desired state shows up.
    pub async fn wait_for(&self, capture: Uuid, desired: DesiredState) -> Assignments {
        let mut since = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let a = self.poll(since, Duration::from_secs(2)).await;
            if a.captures
                .iter()
                .any(|c| c.capture_id == capture && c.desired == desired)
            {
                return a;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {desired:?} assignment for {capture}"
            );
            since = Some(a.generation);
        }
    }

    pub async fn report_running(&self, capture: Uuid, packets: u64) {
        self.client
            .report(
                self.agent_id,
                capture,
                &CaptureReport::Running {
                    start_time: Utc::now(),
                    counters: counters(packets),
                },
            )
            .await
            .expect("report running");
    }

    pub async fn report_stopped(&self, capture: Uuid, reason: StopReason, packets: u64) {
        self.client
            .report(
                self.agent_id,
                capture,
                &CaptureReport::Stopped {
                    stop_reason: reason,
                    counters: counters(packets),
                },
            )
            .await
            .expect("report stopped");
    }

    /// Runs the agent's loop in the background: starts what should run, stops what should not.
    /// Returns the handle (abort it to make the agent vanish) and the ids it ever started.
    pub fn run_auto(self: Arc<Self>) -> (tokio::task::JoinHandle<()>, Arc<Mutex<HashSet<Uuid>>>) {
        let started: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
        let seen = started.clone();
        let handle = tokio::spawn(async move {
            let mut running: HashSet<Uuid> = HashSet::new();
            let mut since = None;
            loop {
                let a = match self
                    .client
                    .poll(self.agent_id, since, Duration::from_secs(5))
                    .await
                {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                since = Some(a.generation);
                for c in &a.captures {
                    match c.desired {
                        DesiredState::Running if !running.contains(&c.capture_id) => {
                            running.insert(c.capture_id);
                            seen.lock().expect("lock").insert(c.capture_id);
                            self.report_running(c.capture_id, 1).await;
                        }
                        DesiredState::Stopped if running.remove(&c.capture_id) => {
                            self.report_stopped(c.capture_id, StopReason::StoppedByUser, 2)
                                .await;
                        }
                        _ => {}
                    }
                }
                let assigned: HashSet<Uuid> = a.captures.iter().map(|c| c.capture_id).collect();
                running.retain(|id| assigned.contains(id));
            }
        });
        (handle, started)
    }
}

fn counters(packets: u64) -> CaptureCounters {
    CaptureCounters {
        packets,
        bytes: packets * 100,
        kernel_drops: 0,
        files: vec!["/var/captures/scripted.cap".to_string()],
        file_set: vec![],
    }
}
