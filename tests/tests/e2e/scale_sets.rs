//! AzureVMSS targets: one ARM resource, run by every in-scope instance's agent, with its state
//! derived from the instances.

use std::time::Duration;

use agent_protocol::{DesiredState, StopReason};
use e2e_tests::ScriptedAgent;
use serde_json::json;

use crate::Ctx;

fn instance(ctx: &Ctx, i: u32) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines/{i}",
        ctx.sub
    )
}

#[tokio::test]
async fn scale_set_capture_runs_on_each_instance_in_scope() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let mut agents = vec![];
    for i in 0..3 {
        agents.push(ScriptedAgent::register(&ctx.server.url, &instance(&ctx, i), "eastus").await);
    }
    let vmss = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1",
        ctx.sub
    );
    let body = json!({"properties": {
        "target": vmss, "targetType": "AzureVMSS",
        "scope": {"exclude": ["2"]},
        "storageLocation": {"filePath": "/var/captures/ss.cap"}
    }});
    let r = ctx.api.put(&ctx.capture("nw1", "pc1"), &body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    assert_eq!(
        r.body["properties"]["scope"],
        json!({"include": [], "exclude": [instance(&ctx, 2)]})
    );
    let op = r.header("azure-asyncoperation").unwrap();

    // Instances 0 and 1 get it; the excluded instance 2 does not.
    let mut ids = vec![];
    for agent in &agents[..2] {
        let a = agent.poll(None, Duration::from_secs(2)).await;
        assert_eq!(a.captures.len(), 1, "{a:?}");
        assert_eq!(a.captures[0].resource_id, r.body["id"].as_str().unwrap());
        ids.push(a.captures[0].capture_id);
    }
    assert_ne!(ids[0], ids[1]);
    assert!(
        agents[2]
            .poll(None, Duration::from_millis(200))
            .await
            .captures
            .is_empty()
    );

    // Provisioned once every instance started; running while any runs.
    agents[0].report_running(ids[0], 3).await;
    let s = ctx.wait_capture_status("nw1", "pc1", "Running").await;
    assert_eq!(s["packetsCaptured"], 3);
    assert_eq!(ctx.api.get(&op).await.body["status"], "InProgress");
    agents[1].report_running(ids[1], 4).await;
    assert_eq!(
        ctx.api.wait_operation(&op, Duration::from_secs(10)).await["status"],
        "Succeeded"
    );
    let s = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "queryStatus"))
        .await;
    assert_eq!(s.body["packetsCaptured"], 7);

    // One resource in the list, not one per instance.
    let list = ctx.api.get(&ctx.captures("nw1")).await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);

    // Stop reaches both instances; stopped once both stopped.
    let stop = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "stop"))
        .await;
    assert_eq!(stop.status.as_u16(), 202);
    let loc = stop.header("location").unwrap();
    for (agent, id) in agents.iter().zip(&ids) {
        agent.wait_for(*id, DesiredState::Stopped).await;
    }
    agents[0]
        .report_stopped(ids[0], StopReason::StoppedByUser, 5)
        .await;
    assert_eq!(ctx.api.get(&loc).await.status.as_u16(), 202);
    agents[1]
        .report_stopped(ids[1], StopReason::StoppedByUser, 6)
        .await;
    ctx.api
        .wait_http_status(&loc, 200, Duration::from_secs(10))
        .await;
    let s = ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    assert_eq!(s["stopReason"], "StoppedByUser");
    assert_eq!(s["packetsCaptured"], 11);

    let d = ctx.api.delete(&ctx.capture("nw1", "pc1")).await;
    ctx.api
        .wait_http_status(&d.header("location").unwrap(), 204, Duration::from_secs(10))
        .await;
    ctx.api
        .get(&ctx.capture("nw1", "pc1"))
        .await
        .assert_error(404, "ResourceNotFound");
    assert!(
        agents[0]
            .poll(None, Duration::from_millis(100))
            .await
            .captures
            .is_empty()
    );
}

#[tokio::test]
async fn scale_set_instance_that_never_starts_is_reported() {
    let ctx = Ctx::with(|o| o.agent_wait_seconds = 2).await;
    ctx.create_watcher("nw1").await;
    let a0 = ScriptedAgent::register(&ctx.server.url, &instance(&ctx, 0), "eastus").await;
    let _a1 = ScriptedAgent::register(&ctx.server.url, &instance(&ctx, 1), "eastus").await;
    let vmss = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1",
        ctx.sub
    );
    let body = json!({"properties": {"target": vmss, "targetType": "AzureVMSS", "storageLocation": {"filePath": "/var/captures/ss.cap"}}});
    let r = ctx.api.put(&ctx.capture("nw1", "pc1"), &body).await;
    let a = a0.poll(None, Duration::from_secs(2)).await;
    a0.report_running(a.captures[0].capture_id, 1).await;
    // Instance 1 never starts: after the wait the capture is provisioned (one instance runs),
    // and the error names the instance that did not start.
    let op = ctx
        .api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(op["status"], "Succeeded");
    let s = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "queryStatus"))
        .await;
    assert_eq!(s.body["packetCaptureStatus"], "Running");
    assert_eq!(s.body["packetCaptureError"], json!(["AgentStopped"]));
    assert!(
        s.body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("virtualmachines/1")
    );
}
