//! The real Prometheus Alertmanager (Debian's `prometheus-alertmanager`), one process per test on
//! 127.0.0.1, with a webhook receiver pointing at a capture trigger; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BINARY: &str = "prometheus-alertmanager";

pub struct Alertmanager {
    pub url: String,
    pub dir: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

/// The receiver's configuration: every alert goes at once (`group_wait: 0s`) to the webhook,
/// grouped per alert (`group_by: ['...']`), resolved alerts too.
fn config(webhook_url: &str, bearer: &str) -> String {
    format!(
        r#"route:
  receiver: trigger
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: trigger
    webhook_configs:
      - url: '{webhook_url}'
        send_resolved: true
        max_alerts: 1000
        http_config:
          authorization:
            type: Bearer
            credentials: '{bearer}'
"#
    )
}

impl Alertmanager {
    /// Starts Alertmanager delivering to `webhook_url` with `bearer` as its secret; retries
    /// on another port when the one picked was taken meanwhile.
    pub async fn start(webhook_url: &str, bearer: &str) -> Alertmanager {
        let dir = crate::scratch().join(format!("alertmanager-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).expect("alertmanager dir");
        let config_file = dir.join("alertmanager.yml");
        std::fs::write(&config_file, config(webhook_url, bearer)).expect("alertmanager config");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        for attempt in 1..=5 {
            let port = crate::free_port();
            let log = std::fs::File::create(dir.join(format!("log-{attempt}"))).expect("log");
            let mut cmd = Command::new("setpriv");
            cmd.arg("--pdeathsig=KILL")
                .arg(BINARY)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = crate::spawn_child(cmd).expect("spawn prometheus-alertmanager");
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: the port was taken, or worse; see the log
                }
                let ready = http.get(format!("{url}/-/ready")).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Alertmanager {
                        url,
                        dir,
                        child: Some(child),
                        http,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!(
            "prometheus-alertmanager did not start; logs in {}",
            dir.display()
        );
    }

    /// Posts alerts to Alertmanager's API (`POST /api/v2/alerts`).
    pub async fn post_alerts(&self, alerts: &Value) {
        let r = self
            .http
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .expect("post alerts");
        let status = r.status();
        assert!(
            status.is_success(),
            "alertmanager refused the alerts: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Fires the alert with `labels`, which started at `starts_at` (RFC 3339).
    pub async fn fire(&self, labels: &Value, starts_at: &str) {
        self.post_alerts(&json!([{
            "labels": labels,
            "annotations": {"summary": "test alert"},
            "startsAt": starts_at,
            "generatorURL": "http://127.0.0.1/graph",
        }]))
        .await;
    }

    /// Resolves the alert: the same labels and start, ended now (not before `starts_at`:
    /// Alertmanager refuses an end before the start).
    pub async fn resolve(&self, labels: &Value, starts_at: &str) {
        let now = chrono::Utc::now();
        let start = chrono::DateTime::parse_from_rfc3339(starts_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(now);
        let ended = now
            .max(start)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.post_alerts(&json!([{
            "labels": labels,
            "annotations": {"summary": "test alert"},
            "startsAt": starts_at,
            "endsAt": ended,
            "generatorURL": "http://127.0.0.1/graph",
        }]))
        .await;
    }

    pub fn log_text(&self) -> String {
        let mut out = String::new();
        for attempt in 1..=5 {
            if let Ok(s) = std::fs::read_to_string(self.dir.join(format!("log-{attempt}"))) {
                out.push_str(&s);
            }
        }
        out
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
