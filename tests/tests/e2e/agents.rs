//! The agent protocol: long polls woken through LISTEN/NOTIFY (also across replicas), agent
//! loss, the server's time-limit safety net, and least privilege.

use std::time::{Duration, Instant};

use agent_protocol::{CaptureCounters, CaptureReport, DesiredState, RegisterRequest};
use e2e_tests::{Api, ScriptedAgent, ServerOptions, TestServer};

use crate::{Ctx, capture_id};

#[tokio::test]
async fn long_poll_wakes_on_a_put_made_on_another_replica() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let other = TestServer::start(ServerOptions::new(&ctx.db.url)).await;
    // The agent long-polls replica B; the PUT goes to replica A.
    let agent = ScriptedAgent::register(&other.url, &ctx.vm("vm1"), "eastus").await;
    let first = agent.poll(None, Duration::from_secs(1)).await;
    assert!(first.captures.is_empty());
    let since = first.generation;
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let a = agent.poll(Some(since), Duration::from_secs(10)).await;
        (a, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(r.status.as_u16(), 201);
    let (a, elapsed) = poll.await.unwrap();
    assert_eq!(a.captures.len(), 1, "{a:?}");
    assert_ne!(a.generation, since);
    assert!(
        elapsed < Duration::from_secs(5),
        "woken after {elapsed:?}, not by the notification"
    );
    // With nothing new, the long poll waits for its full time.
    let agent2 = ScriptedAgent::register(&other.url, &ctx.vm("vm2"), "eastus").await;
    let g = agent2.poll(None, Duration::from_secs(1)).await.generation;
    let started = Instant::now();
    agent2.poll(Some(g), Duration::from_secs(1)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn lost_agent_ends_its_running_captures() {
    let ctx = Ctx::with(|o| o.agent_lost_seconds = 2).await;
    ctx.create_watcher("nw1").await;
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    ctx.api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    let id = capture_id(&ctx, "nw1", "pc1").await;
    agent.wait_for(id, DesiredState::Running).await;
    agent.report_running(id, 1).await;
    // The agent stops polling: within the bound (plus a sweep) the capture ends.
    let status = ctx.wait_capture_status("nw1", "pc1", "Error").await;
    assert_eq!(
        status["packetCaptureError"],
        serde_json::json!(["AgentStopped"])
    );
    assert_eq!(status["stopReason"], "AgentStopped");
}

#[tokio::test]
async fn server_enforces_the_time_limit_as_a_safety_net() {
    let ctx = Ctx::with(|o| o.stop_grace_seconds = 1).await;
    ctx.create_watcher("nw1").await;
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    let mut body = ctx.capture_body("vm1");
    body["properties"]["timeLimitInSeconds"] = serde_json::json!(1);
    ctx.api.put(&ctx.capture("nw1", "pc1"), &body).await;
    let id = capture_id(&ctx, "nw1", "pc1").await;
    agent.wait_for(id, DesiredState::Running).await;
    agent.report_running(id, 1).await;
    // The agent never stops it; the server does, with TimeExceeded, and tells the agent.
    let s = ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    assert_eq!(s["stopReason"], "TimeExceeded");
    let a = agent.poll(None, Duration::from_secs(1)).await;
    assert!(a.captures.iter().all(|c| c.capture_id != id));
}

#[tokio::test]
async fn create_fails_clearly_when_no_agent_is_registered() {
    let ctx = Ctx::with(|o| o.agent_wait_seconds = 1).await;
    ctx.create_watcher("nw1").await;
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("nobody"))
        .await;
    assert_eq!(r.status.as_u16(), 201);
    let op = ctx
        .api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(op["status"], "Failed");
    assert_eq!(op["error"]["code"], "MachineNotRegistered");
    assert!(op["error"]["message"].as_str().unwrap().contains("nobody"));
    let g = ctx.api.get(&ctx.capture("nw1", "pc1")).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Failed");
    let loc = ctx.api.get(&r.header("location").unwrap()).await;
    assert_eq!(loc.status.as_u16(), 400);
    assert_eq!(loc.body["error"]["code"], "OperationFailed");
}

#[tokio::test]
async fn agents_see_and_report_only_their_own_captures() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let a = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm-a"), "eastus").await;
    let b = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm-b"), "eastus").await;
    ctx.api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm-a"))
        .await;
    let id = capture_id(&ctx, "nw1", "pc1").await;
    a.wait_for(id, DesiredState::Running).await;
    assert!(
        b.poll(None, Duration::from_millis(100))
            .await
            .captures
            .is_empty()
    );
    let err = b
        .client
        .report(
            b.agent_id,
            id,
            &CaptureReport::Running {
                start_time: chrono::Utc::now(),
                counters: CaptureCounters::default(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    let s = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "queryStatus"))
        .await;
    assert_eq!(s.body["packetCaptureStatus"], "NotStarted");
    // An unknown agent id is told to register again.
    let err = a
        .client
        .poll(uuid::Uuid::new_v4(), None, Duration::from_millis(10))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    // Invalid registrations are rejected.
    let err = a
        .client
        .register(&RegisterRequest {
            machine_id:
                "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s"
                    .into(),
            location: String::new(),
            hostname: "h".into(),
            os: "Linux".into(),
            agent_version: "1".into(),
            interfaces: vec![],
            running_captures: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}

#[tokio::test]
async fn registered_machines_are_readable_as_vms_and_restarts_end_lost_captures() {
    let ctx = Ctx::new().await;
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "westeurope").await;
    let api = Api::new(&ctx.server.url);
    let vm = api
        .get(&format!("/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/VM1?api-version=2026-04-01", ctx.sub))
        .await;
    assert_eq!(vm.status.as_u16(), 200, "{}", vm.text);
    assert_eq!(vm.body["location"], "westeurope");
    assert_eq!(vm.body["name"], "vm1");
    let subs = api.get("/subscriptions?api-version=2022-12-01").await;
    assert!(
        subs.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subscriptionId"] == ctx.sub.as_str())
    );
    // A watcher was created for the machine's region, as Azure does.
    let all = api
        .get(&format!(
            "/subscriptions/{}/providers/Microsoft.Network/networkWatchers?api-version=2022-01-01",
            ctx.sub
        ))
        .await;
    let w = &all.body["value"][0];
    assert_eq!(w["name"], "NetworkWatcher_westeurope");
    assert!(
        w["id"]
            .as_str()
            .unwrap()
            .contains("/resourceGroups/NetworkWatcherRG/")
    );

    // Start a capture, then the agent restarts without it: the capture ends as AgentStopped.
    let path = format!(
        "/subscriptions/{}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westeurope/packetCaptures/pc1?api-version=2026-03-01",
        ctx.sub
    );
    ctx.api.put(&path, &ctx.capture_body("vm1")).await;
    let a = agent.poll(None, Duration::from_secs(1)).await;
    let id = a.captures[0].capture_id;
    agent.report_running(id, 1).await;
    let _restarted = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "westeurope").await;
    let status_path = path.replace("/pc1?", "/pc1/queryStatus?");
    let s = ctx.api.post(&status_path).await;
    assert_eq!(s.body["packetCaptureStatus"], "Error");
    assert_eq!(
        s.body["packetCaptureError"],
        serde_json::json!(["AgentStopped"])
    );
    // The old agent id is no longer valid.
    assert_eq!(
        agent
            .client
            .poll(agent.agent_id, None, Duration::ZERO)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}
