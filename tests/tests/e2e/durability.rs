//! Restarts and outages: nothing is lost, operations complete, the database coming back needs no
//! restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_protocol::DesiredState;
use e2e_tests::{Api, ScriptedAgent, ServerOptions, TestServer};
use tokio::net::{TcpListener, TcpStream};

use crate::{Ctx, capture_id};

#[tokio::test]
async fn sigkill_mid_operation_then_restart_completes_it() {
    let mut ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(r.status.as_u16(), 201);
    let op_url = r.header("azure-asyncoperation").unwrap();
    let op_path = op_url.trim_start_matches(&ctx.server.url).to_string();

    // Killed while the create operation is in progress; restarted on the same database.
    ctx.server.kill();
    ctx.server.restart().await;
    let api = Api::new(&ctx.server.url);
    assert_eq!(api.get(&op_path).await.body["status"], "InProgress");
    let g = api.get(&ctx.capture("nw1", "pc1")).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Updating");

    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    let id = capture_id(&ctx, "nw1", "pc1").await;
    agent.wait_for(id, DesiredState::Running).await;
    agent.report_running(id, 1).await;
    let done = api.wait_operation(&op_path, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "Succeeded");

    // A stop in progress survives a kill too.
    let stop = api.post(&ctx.capture_action("nw1", "pc1", "stop")).await;
    assert_eq!(stop.status.as_u16(), 202);
    let stop_loc = stop
        .header("location")
        .unwrap()
        .trim_start_matches(&ctx.server.url)
        .to_string();
    ctx.server.kill();
    ctx.server.restart().await;
    let api = Api::new(&ctx.server.url);
    assert_eq!(api.get(&stop_loc).await.status.as_u16(), 202);
    // The agent process comes back without the capture: re-registering ends it.
    ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    api.wait_http_status(&stop_loc, 200, Duration::from_secs(10))
        .await;
    let s = api
        .post(&ctx.capture_action("nw1", "pc1", "queryStatus"))
        .await;
    assert_ne!(s.body["packetCaptureStatus"], "Running");
    assert!(s.body["stopReason"].is_string());
}

/// A TCP proxy in front of PostgreSQL whose link can be cut and restored.
struct Proxy {
    port: u16,
    broken: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broken = Arc::new(AtomicBool::new(false));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (b, c) = (broken.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Proxy {
            port,
            broken,
            conns,
        }
    }

    fn cut(&self) {
        self.broken.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.broken.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn database_outage_answers_503_then_recovers_without_restart() {
    let db = e2e_tests::TestDb::new().await;
    let cluster_port: u16 = db
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = Proxy::start(cluster_port).await;
    let proxied = db
        .url
        .replace(&format!(":{cluster_port}/"), &format!(":{}/", proxy.port));
    let server = TestServer::start(ServerOptions::new(&proxied)).await;
    let api = Api::new(&server.url);
    let sub = e2e_tests::new_subscription();
    let w = format!(
        "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1?api-version=2026-03-01"
    );
    assert_eq!(
        api.put(&w, &serde_json::json!({"location": "eastus"}))
            .await
            .status
            .as_u16(),
        201
    );

    proxy.cut();
    let r = api.get(&w).await;
    let err = r.assert_error(503, "ServiceUnavailable");
    assert!(err["message"].as_str().unwrap().contains("database"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(api.get("/readyz").await.status.as_u16(), 503);
    assert_eq!(api.get("/healthz").await.status.as_u16(), 200);

    proxy.restore();
    let g = api.wait_http_status(&w, 200, Duration::from_secs(20)).await;
    assert_eq!(g.body["name"], "nw1");
}
