//! The embedded PostgreSQL heals itself: its postmaster killed under load, the server that
//! started it notices, says so in `/readyz`, restarts it, and answers again without a restart of
//! its own and without losing anything it acknowledged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e_tests::http::{watcher_path, with_version};
use e2e_tests::{Api, ServerOptions, TestServer};
use serde_json::{Value, json};

/// The longest the database may be unavailable after the kill.
const OUTAGE_BOUND: Duration = Duration::from_secs(30);
/// Load workers, and the most requests each sends.
const WORKERS: usize = 4;
const MAX_REQUESTS_PER_WORKER: usize = 400;

/// One answer of the load.
struct Answer {
    started: Instant,
    finished: Instant,
    request: String,
    status: u16,
    request_id: Option<String>,
    retry_after: Option<String>,
    body: Value,
    text: String,
}

/// Stops whatever PostgreSQL still runs in the data folder when the test ends early (a failed
/// assertion leaves the server killed but its cluster running), and removes the folder.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = postmaster_pid(&self.0) {
            // Immediate shutdown.
            let _ = Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pid in `postmaster.pid`, if it names a running postgres process.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postgres/data/postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "postgres").then_some(pid)
}

/// What the server logged about its database, and its last lines.
fn log_excerpt(server: &TestServer) -> String {
    let log = server.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let about: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("embedded PostgreSQL"))
        .collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    format!("{}\n...\n{}", about.join("\n"), tail.join("\n"))
}

/// The server's log lines about the request `id`.
fn logged_for(server: &TestServer, id: &str) -> String {
    let log = server.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
    lines.join("\n")
}

/// Asserts a 503 as ARM answers it: `Retry-After` and a `ServiceUnavailable` error body.
fn assert_unavailable(a: &Answer) {
    assert!(
        a.retry_after
            .as_deref()
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "503 without Retry-After: {} -> {}",
        a.request,
        a.text
    );
    assert_eq!(
        a.body["error"]["code"], "ServiceUnavailable",
        "503 without an ARM error body: {} -> {}",
        a.request, a.text
    );
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        a.text
    );
}

/// A watcher's URL path, in a subscription of its own (one watcher per subscription and region).
fn new_watcher(name: &str) -> String {
    with_version(&watcher_path(&e2e_tests::new_subscription(), "rg1", name))
}

/// PUTs new watchers and reads `old` until `stop`; every answer, and the watchers created.
async fn load(
    api: Api,
    old: String,
    worker: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<Answer>, Vec<String>) {
    let mut answers = Vec::new();
    let mut created = Vec::new();
    for i in 0..MAX_REQUESTS_PER_WORKER {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let started = Instant::now();
        let (request, r) = if i % 2 == 0 {
            let path = new_watcher(&format!("load-{worker}-{i}"));
            let r = api.put(&path, &json!({"location": "eastus"})).await;
            if r.status.as_u16() == 201 {
                created.push(path.clone());
            }
            (format!("PUT {path}"), r)
        } else {
            (format!("GET {old}"), api.get(&old).await)
        };
        answers.push(Answer {
            started,
            finished: Instant::now(),
            request,
            status: r.status.as_u16(),
            request_id: r.header("x-ms-request-id"),
            retry_after: r.header("retry-after"),
            body: r.body,
            text: r.text,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (answers, created)
}

#[tokio::test]
async fn embedded_postgres_killed_under_load_is_restarted_and_nothing_is_lost() {
    let dir =
        e2e_tests::scratch().join(format!("capture-healing-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let mut opts = ServerOptions::new("");
    opts.database_url = None;
    opts.data_dir = Some(dir.clone());
    // No throttling: the load must see the database's answers, not the rate limiter's.
    opts.extra
        .extend(["--rate-limit-per-second".to_string(), "0".to_string()]);
    let mut server = TestServer::start(opts).await;
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let api = Api::new(&server.url);

    // Acknowledged before the kill.
    let mut acknowledged: Vec<String> = Vec::new();
    for i in 0..5 {
        let path = new_watcher(&format!("before-{i}"));
        let r = api
            .put(
                &path,
                &json!({"location": "eastus", "tags": {"i": i.to_string()}}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        acknowledged.push(path);
    }
    let first = acknowledged[0].clone();
    let tagged = acknowledged[3].clone();
    let capture = first.replacen('?', "/packetCaptures/pc1?", 1);
    let sub = first.split('/').nth(2).unwrap().to_string();
    let r = api
        .put(
            &capture,
            &json!({"properties": {
                "target": e2e_tests::vm_id(&sub, "rg1", "vm1"),
                "storageLocation": {"filePath": "/var/captures/pc1.cap"},
                "timeLimitInSeconds": 600
            }}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);

    // A bounded load, then the postmaster killed in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(load(api.clone(), first.clone(), w, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_pid = postmaster_pid(&dir).expect("the postmaster's pid");
    let killed_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-KILL", &old_pid.to_string()])
            .status()
            .unwrap()
            .success()
    );

    // /readyz says the embedded database is restarting (an ARM 503), then ready; /healthz, the
    // liveness check, stays 200 meanwhile.
    let mut saw_restarting = false;
    let mut saw_healthz_ok_while_down = false;
    let mut saw_outage = false;
    let ready_at = loop {
        let r = api.get("/readyz").await;
        // (A backend may still answer for a moment after its postmaster was killed.)
        if r.status.as_u16() == 200 && saw_outage {
            break Instant::now();
        }
        if r.status.as_u16() == 200 {
            assert!(
                killed_at.elapsed() < Duration::from_secs(5),
                "/readyz still 200 5 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        saw_outage = true;
        assert_eq!(r.status.as_u16(), 503, "{}", r.text);
        let a = Answer {
            started: Instant::now(),
            finished: Instant::now(),
            request: "GET /readyz".to_string(),
            status: 503,
            request_id: r.header("x-ms-request-id"),
            retry_after: r.header("retry-after"),
            body: r.body.clone(),
            text: r.text.clone(),
        };
        assert_unavailable(&a);
        if r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("embedded database is restarting"))
        {
            saw_restarting = true;
            let h = api.get("/healthz").await;
            saw_healthz_ok_while_down |= h.status.as_u16() == 200;
        }
        assert!(
            killed_at.elapsed() < OUTAGE_BOUND,
            "the embedded database was not back within {OUTAGE_BOUND:?}; the server's log:\n{}",
            log_excerpt(&server)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        saw_restarting,
        "/readyz never said the embedded database is restarting; the server's log:\n{}",
        log_excerpt(&server)
    );
    assert!(saw_healthz_ok_while_down, "/healthz is a liveness check");
    // Load goes on for a while after the recovery.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for w in workers {
        let (a, created) = w.await.unwrap();
        answers.extend(a);
        acknowledged.extend(created);
    }

    // Only 503s (ARM, Retry-After) while the database was down; only successes after.
    let unavailable: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    eprintln!(
        "ready again {:?} after the kill; {} answers, {} of them 503",
        ready_at - killed_at,
        answers.len(),
        unavailable.len()
    );
    assert!(
        !unavailable.is_empty(),
        "no request saw the outage ({} answers)",
        answers.len()
    );
    for a in &answers {
        assert!(
            matches!(a.status, 200 | 201 | 503),
            "unexpected answer: {} -> {} {}; the server logged:\n{}",
            a.request,
            a.status,
            a.text,
            a.request_id
                .as_deref()
                .map(|id| logged_for(&server, id))
                .unwrap_or_default()
        );
        if a.status == 503 {
            assert_unavailable(a);
            assert!(
                a.finished > killed_at && a.started < ready_at,
                "503 outside the outage: {} -> {}",
                a.request,
                a.text
            );
        }
    }
    let after: Vec<&Answer> = answers.iter().filter(|a| a.started > ready_at).collect();
    assert!(!after.is_empty(), "no request after the recovery");
    assert!(
        answers
            .iter()
            .any(|a| a.started < killed_at && a.status < 300)
    );

    // Nothing acknowledged is lost.
    for path in &acknowledged {
        let r = api.get(path).await;
        assert_eq!(r.status.as_u16(), 200, "watcher {path} lost: {}", r.text);
    }
    assert_eq!(api.get(&tagged).await.body["tags"]["i"], "3");
    assert_eq!(api.get(&capture).await.status.as_u16(), 200);

    // Restarted by this server (a new postmaster), counted, and logged with the reason.
    let new_pid = postmaster_pid(&dir).expect("a running postmaster");
    assert_ne!(new_pid, old_pid);
    let metrics = api
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("capture_api_embedded_database_restarts_total 1\n")
            && metrics.contains("capture_api_embedded_database_restarting 0\n"),
        "{metrics}"
    );
    let log = server.log_text();
    for line in log.lines().filter(|l| l.contains("embedded PostgreSQL")) {
        eprintln!("server: {line}");
    }
    assert!(
        log.contains("the embedded PostgreSQL exited") && log.contains("SIGKILL"),
        "{log}"
    );
    assert!(
        log.contains("the embedded PostgreSQL was restarted"),
        "{log}"
    );

    // Shutdown still stops the (restarted) cluster, promptly.
    let t = Instant::now();
    assert!(server.terminate(Duration::from_secs(30)), "clean exit");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(
        !dir.join("postgres/data/postmaster.pid").exists(),
        "PostgreSQL still running after shutdown"
    );
}
