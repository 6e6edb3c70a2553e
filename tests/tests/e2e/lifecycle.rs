//! The whole lifecycle with a scripted agent, over plain HTTP.

use std::time::Duration;

use agent_protocol::{DesiredState, StopReason};
use e2e_tests::ScriptedAgent;
use serde_json::json;

use crate::{Ctx, capture_id};

#[tokio::test]
async fn full_lifecycle_with_scripted_agent() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;

    // Create: 201, Updating, both monitors and Retry-After.
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert_eq!(r.body["properties"]["bytesToCapturePerPacket"], 0);
    assert_eq!(r.body["properties"]["totalBytesPerSession"], 1073741824u64);
    assert_eq!(r.body["properties"]["timeLimitInSeconds"], 600);
    assert_eq!(r.body["properties"]["targetType"], "AzureVM");
    assert_eq!(r.body["properties"]["filters"][0]["protocol"], "UDP");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    let async_op = r
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation");
    let location = r.header("location").expect("Location");
    assert!(async_op.starts_with(&ctx.server.url) && async_op.contains("api-version="));
    assert!(location.contains("/operationResults/"));

    // While the agent has not started it: InProgress, and the result monitor answers 202.
    let op = ctx.api.get(&async_op).await;
    assert_eq!(op.body["status"], "InProgress");
    assert_eq!(op.header("retry-after").as_deref(), Some("1"));
    let res = ctx.api.get(&location).await;
    assert_eq!(res.status.as_u16(), 202);
    assert_eq!(res.header("retry-after").as_deref(), Some("1"));

    // The agent receives the assignment and starts it.
    let id = capture_id(&ctx, "nw1", "pc1").await;
    let a = agent.wait_for(id, DesiredState::Running).await;
    let assignment = a.captures.iter().find(|c| c.capture_id == id).unwrap();
    assert_eq!(
        assignment.file_path.as_deref(),
        Some("/var/captures/test.cap")
    );
    assert_eq!(assignment.time_limit_in_seconds, 600);
    assert_eq!(assignment.filters[0].local_port.as_deref(), Some("9999"));
    agent.report_running(id, 5).await;

    let done = ctx
        .api
        .wait_operation(&async_op, Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let res = ctx.api.get(&location).await;
    assert_eq!(res.status.as_u16(), 200);
    assert_eq!(res.body["properties"]["provisioningState"], "Succeeded");

    let g = ctx.api.get(&ctx.capture("nw1", "pc1")).await;
    assert_eq!(g.status.as_u16(), 200);
    assert_eq!(g.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(g.header("etag").as_deref(), g.body["etag"].as_str());

    let list = ctx.api.get(&ctx.captures("nw1")).await;
    assert_eq!(list.status.as_u16(), 200, "{}", list.text);
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);

    let s = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "queryStatus"))
        .await;
    assert_eq!(s.status.as_u16(), 200);
    assert_eq!(s.body["packetCaptureStatus"], "Running");
    assert!(s.body["captureStartTime"].is_string());
    assert!(s.body.get("stopReason").is_none());
    assert_eq!(s.body["packetsCaptured"], 5);
    assert_eq!(s.body["packetCaptureError"], json!([]));

    // Stop: 202 and a Location monitor that ends in 200 once the agent stopped.
    let stop = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "stop"))
        .await;
    assert_eq!(stop.status.as_u16(), 202, "{}", stop.text);
    let stop_loc = stop.header("location").unwrap();
    agent.wait_for(id, DesiredState::Stopped).await;
    assert_eq!(ctx.api.get(&stop_loc).await.status.as_u16(), 202);
    agent.report_stopped(id, StopReason::StoppedByUser, 9).await;
    let r = ctx.api.get(&stop_loc).await;
    assert_eq!(r.status.as_u16(), 200);
    let s = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "queryStatus"))
        .await;
    assert_eq!(s.body["packetCaptureStatus"], "Stopped");
    assert_eq!(s.body["stopReason"], "StoppedByUser");
    assert_eq!(s.body["packetsCaptured"], 9);

    // Stop is idempotent.
    let again = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "stop"))
        .await;
    assert_eq!(again.status.as_u16(), 200);

    // Delete: 202, the Location monitor ends in 204; then 404 and the name is free again.
    let d = ctx.api.delete(&ctx.capture("nw1", "pc1")).await;
    assert_eq!(d.status.as_u16(), 202);
    let loc = d.header("location").unwrap();
    ctx.api
        .wait_http_status(&loc, 204, Duration::from_secs(10))
        .await;
    ctx.api
        .get(&ctx.capture("nw1", "pc1"))
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(
        ctx.api
            .delete(&ctx.capture("nw1", "pc1"))
            .await
            .status
            .as_u16(),
        204
    );
    let again = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(again.status.as_u16(), 201, "{}", again.text);
}

#[tokio::test]
async fn delete_of_running_capture_stops_it_first() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    ctx.api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    let id = capture_id(&ctx, "nw1", "pc1").await;
    agent.wait_for(id, DesiredState::Running).await;
    agent.report_running(id, 1).await;

    let d = ctx.api.delete(&ctx.capture("nw1", "pc1")).await;
    assert_eq!(d.status.as_u16(), 202);
    let op = d.header("azure-asyncoperation").unwrap();
    assert_eq!(ctx.api.get(&op).await.body["status"], "InProgress");
    let g = ctx.api.get(&ctx.capture("nw1", "pc1")).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Deleting");
    agent.wait_for(id, DesiredState::Stopped).await;
    agent.report_stopped(id, StopReason::StoppedByUser, 3).await;
    let done = ctx.api.wait_operation(&op, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "Succeeded");
    ctx.api
        .get(&ctx.capture("nw1", "pc1"))
        .await
        .assert_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn watcher_delete_stops_and_removes_its_captures() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let agent = std::sync::Arc::new(
        ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await,
    );
    let (handle, _) = agent.clone().run_auto();
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    let op = r.header("azure-asyncoperation").unwrap();
    assert_eq!(
        ctx.api.wait_operation(&op, Duration::from_secs(10)).await["status"],
        "Succeeded"
    );

    let d = ctx.api.delete(&ctx.watcher("nw1")).await;
    assert_eq!(d.status.as_u16(), 202, "{}", d.text);
    let loc = d.header("location").unwrap();
    ctx.api
        .wait_http_status(&loc, 204, Duration::from_secs(15))
        .await;
    ctx.api
        .get(&ctx.watcher("nw1"))
        .await
        .assert_error(404, "ResourceNotFound");
    ctx.api
        .get(&ctx.capture("nw1", "pc1"))
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(
        ctx.api.delete(&ctx.watcher("nw1")).await.status.as_u16(),
        204
    );
    handle.abort();
}

#[tokio::test]
async fn request_ids_are_returned_and_echoed() {
    let ctx = Ctx::new().await;
    let r = ctx
        .api
        .request_with(
            reqwest::Method::GET,
            &ctx.watcher("missing"),
            None,
            &[
                ("x-ms-client-request-id", "client-1"),
                ("x-ms-correlation-request-id", "corr-1"),
            ],
        )
        .await;
    r.assert_error(404, "ResourceNotFound");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing")
    );
    assert_eq!(
        r.header("x-ms-client-request-id").as_deref(),
        Some("client-1")
    );
    assert_eq!(
        r.header("x-ms-correlation-request-id").as_deref(),
        Some("corr-1")
    );
    assert!(uuid::Uuid::parse_str(&r.header("x-ms-request-id").unwrap()).is_ok());
    // The request id is in the server's log, with the client's ids.
    let id = r.header("x-ms-request-id").unwrap();
    e2e_tests::eventually("log line", Duration::from_secs(5), || {
        let log = ctx.server.log_text();
        let id = id.clone();
        async move { (log.contains(&id) && log.contains("client-1")).then_some(()) }
    })
    .await;
}
