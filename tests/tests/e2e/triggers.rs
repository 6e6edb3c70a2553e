//! Capture triggers (issue 14): alerts from the real Prometheus Alertmanager, and Azure Monitor
//! common-schema payloads, start captures on the machine of a real agent capturing on `lo`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e_tests::alertmanager::Alertmanager;
use e2e_tests::http::{Response, watcher_path, with_version};
use e2e_tests::real_agent::RealAgent;
use e2e_tests::{eventually, pcapfile};
use reqwest::Method;
use serde_json::{Value, json};

use super::capture::setup;
use crate::Ctx;

fn trigger_path(ctx: &Ctx, name: &str) -> String {
    format!(
        "{}/captureTriggers/{name}",
        watcher_path(&ctx.sub, "rg1", "nw1")
    )
}

fn trigger_url(ctx: &Ctx, name: &str) -> String {
    with_version(&trigger_path(ctx, name))
}

/// A trigger body capturing UDP to 127.0.0.1:`port` on the machines of resource group rg1.
fn trigger_body(ctx: &Ctx, port: u16, guards: Value) -> Value {
    json!({"properties": {
        "captureTemplate": {
            "storageLocation": {"filePath": format!("/var/captures/{}/trigger.cap", uuid::Uuid::new_v4().simple())},
            "timeLimitInSeconds": 120,
            "filters": [{"protocol": "UDP", "localIPAddress": "127.0.0.1", "localPort": port.to_string()}]
        },
        "machines": {"scopes": [format!("/subscriptions/{}/resourceGroups/rg1", ctx.sub)]},
        "guards": guards
    }})
}

/// Creates a trigger; answers its body (with the secret).
async fn create_trigger(ctx: &Ctx, name: &str, body: &Value) -> Value {
    let r = ctx.api.put(&trigger_url(ctx, name), body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let secret = r.body["properties"]["webhookSecret"].as_str().unwrap_or("");
    assert_eq!(secret.len(), 43, "a fresh secret: {}", r.text);
    r.body
}

async fn events(ctx: &Ctx, name: &str) -> Vec<Value> {
    let r = ctx.api.get(&trigger_url(ctx, name)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(
        r.body["properties"].get("webhookSecret").is_none(),
        "GET never shows the secret: {}",
        r.text
    );
    r.body["properties"]["recentEvents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits for an event with this outcome (and reason); answers it.
async fn wait_event(ctx: &Ctx, name: &str, outcome: &str, reason: Option<&str>) -> Value {
    eventually(
        &format!("a {outcome} {reason:?} event of {name}"),
        Duration::from_secs(20),
        || async {
            events(ctx, name)
                .await
                .into_iter()
                .find(|e| e["outcome"] == outcome && reason.is_none_or(|r| e["reason"] == r))
        },
    )
    .await
}

/// UDP datagrams to 127.0.0.1:`port` every 5 ms until dropped, each tagged `tag`.
struct Traffic(Arc<AtomicBool>);

impl Traffic {
    fn start(port: u16, tag: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, tag) = (stop.clone(), tag.to_string());
        std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            while !s.load(Ordering::Relaxed) {
                let _ = sock.send_to(tag.as_bytes(), ("127.0.0.1", port));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Traffic(stop)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn capture_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

async fn capture_file_path(ctx: &Ctx, name: &str) -> String {
    let r = ctx.api.get(&ctx.capture("nw1", name)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    r.body["properties"]["storageLocation"]["filePath"]
        .as_str()
        .expect("filePath")
        .to_string()
}

async fn capture_count(ctx: &Ctx) -> usize {
    let r = ctx.api.get(&ctx.captures("nw1")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    r.body["value"].as_array().map_or(0, Vec::len)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn post_webhook(ctx: &Ctx, url: &str, secret: Option<&str>, body: &Value) -> Response {
    let api = ctx.api.with_bearer(secret);
    api.request(Method::POST, url, Some(body)).await
}

#[tokio::test]
async fn alertmanager_alerts_start_and_stop_captures_within_the_guards() {
    let (ctx, agent) = setup(|_| {}).await;
    let port = e2e_tests::free_port();
    let body = trigger_body(
        &ctx,
        port,
        json!({"cooldownInSeconds": 600, "stopWhenResolved": true}),
    );
    let t = create_trigger(&ctx, "t1", &body).await;
    let secret = t["properties"]["webhookSecret"].as_str().unwrap();
    let webhook = t["properties"]["webhooks"]["alertmanager"]
        .as_str()
        .unwrap();
    assert!(webhook.ends_with("/alertmanager"), "{t}");
    let am = Alertmanager::start(webhook, secret).await;
    let _traffic = Traffic::start(port, "alerted");

    // Firing: a capture starts on the machine and records the traffic.
    let labels =
        json!({"alertname": "HighLatency", "azure_resource_id": ctx.vm("vm1"), "severity": "page"});
    let started = now_rfc3339();
    am.fire(&labels, &started).await;
    let created = wait_event(&ctx, "t1", "CaptureCreated", None).await;
    assert_eq!(created["source"], "Alertmanager", "{created}");
    assert_eq!(created["condition"], "Fired");
    assert_eq!(created["alertName"], "HighLatency");
    let capture_id = created["packetCapture"]
        .as_str()
        .expect("capture")
        .to_string();
    let name = capture_name(&capture_id).to_string();
    assert!(name.starts_with("t1-vm1-"), "{name}");
    ctx.wait_capture_status("nw1", &name, "Running").await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Resolved: the capture stops (stopWhenResolved).
    am.resolve(&labels, &started).await;
    let stopped = wait_event(&ctx, "t1", "CaptureStopped", None).await;
    assert_eq!(stopped["packetCapture"], capture_id.as_str());
    assert_eq!(stopped["condition"], "Resolved");
    let status = ctx.wait_capture_status("nw1", &name, "Stopped").await;
    assert_eq!(status["stopReason"], "StoppedByUser", "{status}");
    let file = pcapfile::read(&agent.file(&capture_file_path(&ctx, &name).await));
    let tags = file.tags();
    assert!(
        tags.iter().filter(|t| t.as_str() == "alerted").count() > 10,
        "the capture recorded the traffic: {} records",
        file.records.len()
    );

    // The same alert firing again within the cooldown: no capture, and the event says why.
    am.fire(&labels, &now_rfc3339()).await;
    let cooldown = wait_event(&ctx, "t1", "Skipped", Some("Cooldown")).await;
    assert!(
        cooldown["message"].as_str().unwrap().contains("ends at"),
        "{cooldown}"
    );

    // A machine outside the trigger's scope: nothing.
    let outside = format!(
        "/subscriptions/{}/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/vm9",
        ctx.sub
    );
    am.fire(
        &json!({"alertname": "HighLatency", "azure_resource_id": outside}),
        &now_rfc3339(),
    )
    .await;
    let skipped = wait_event(&ctx, "t1", "Skipped", Some("OutsideScope")).await;
    assert_eq!(skipped["machine"], outside.as_str());
    assert_eq!(
        capture_count(&ctx).await,
        1,
        "only the first alert captured"
    );
    // Alertmanager's repeated notifications of a group recorded each alert once.
    let all = events(&ctx, "t1").await;
    assert_eq!(all.len(), 4, "{all:#?}");
    let metrics = ctx.api.get("/metrics").await.text;
    assert!(
        metrics.contains(
            "capture_api_trigger_events_total{source=\"Alertmanager\",outcome=\"CaptureCreated\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        !ctx.server.log_text().contains(secret),
        "the secret is never logged"
    );
    drop(am);
}

/// Microsoft's documented sample of the common alert schema (a metric alert), with our ids.
fn common_schema(ctx: &Ctx, condition: &str, fired: &str, targets: &[String]) -> Value {
    json!({
        "schemaId": "azureMonitorCommonAlertSchema",
        "data": {
            "essentials": {
                "alertId": format!("/subscriptions/{}/providers/Microsoft.AlertsManagement/alerts/b9569717-bc32-442f-add5-83a997729330", ctx.sub),
                "alertRule": "WCUS-R2-Gen2",
                "severity": "Sev3",
                "signalType": "Metric",
                "monitorCondition": condition,
                "monitoringService": "Platform",
                "alertTargetIDs": targets,
                "configurationItems": ["vm1"],
                "originAlertId": "3f2d4487-b0fc-4125-8bd5-7ad17384221e_PipeLineAlertRG_microsoft.insights_metricAlerts_WCUS-R2-Gen2_-117781227",
                "firedDateTime": fired,
                "resolvedDateTime": if condition == "Resolved" { json!("2026-12-03T14:03:16.2246313Z") } else { Value::Null },
                "description": "",
                "essentialsVersion": "1.0",
                "alertContextVersion": "1.0"
            },
            "alertContext": {
                "properties": null,
                "conditionType": "SingleResourceMultipleMetricCriteria",
                "condition": {
                    "windowSize": "PT5M",
                    "allOf": [{
                        "metricName": "Percentage CPU",
                        "metricNamespace": "Microsoft.Compute/virtualMachines",
                        "operator": "GreaterThan",
                        "threshold": "25",
                        "timeAggregation": "Average",
                        "dimensions": [],
                        "metricValue": 31.1105,
                        "webTestName": null
                    }],
                    "windowStartTime": "2026-12-03T13:40:03.064Z",
                    "windowEndTime": "2026-12-03T13:45:03.064Z"
                }
            }
        }
    })
}

#[tokio::test]
async fn azure_monitor_alerts_and_repeated_deliveries() {
    let (ctx, agent) = setup(|_| {}).await;
    let port = e2e_tests::free_port();
    let t = create_trigger(
        &ctx,
        "az",
        &trigger_body(&ctx, port, json!({"stopWhenResolved": true})),
    )
    .await;
    let secret = t["properties"]["webhookSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!(
        "{}?code={secret}",
        t["properties"]["webhooks"]["azureMonitor"]
            .as_str()
            .unwrap()
    );
    let _traffic = Traffic::start(port, "azure");
    // Azure lower-cases the ids it sends.
    let vm = ctx.vm("vm1").to_lowercase();
    let fired = "2026-12-03T13:58:24.3713213Z";
    let alert = common_schema(&ctx, "Fired", fired, std::slice::from_ref(&vm));

    // Azure Monitor retries: ten concurrent deliveries of one alert create one capture.
    let deliveries = (0..10).map(|_| post_webhook(&ctx, &url, None, &alert));
    let answers = futures_util::future::join_all(deliveries).await;
    let mut created = vec![];
    for r in &answers {
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        created.extend(
            r.body["capturesCreated"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    assert_eq!(created.len(), 1, "{answers:#?}");
    let duplicates: u64 = answers
        .iter()
        .map(|r| r.body["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!(duplicates, 9);
    let name = capture_name(created[0].as_str().unwrap()).to_string();
    ctx.wait_capture_status("nw1", &name, "Running").await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let resolved = common_schema(&ctx, "Resolved", fired, std::slice::from_ref(&vm));
    let r = post_webhook(&ctx, &url, None, &resolved).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(
        r.body["capturesStopped"].as_array().unwrap().len(),
        1,
        "{}",
        r.text
    );
    ctx.wait_capture_status("nw1", &name, "Stopped").await;
    let file = pcapfile::read(&agent.file(&capture_file_path(&ctx, &name).await));
    assert!(
        file.tags().iter().any(|t| t == "azure"),
        "recorded the traffic"
    );

    // The alert fires again (a new firedDateTime) within the cooldown.
    let again = common_schema(
        &ctx,
        "Fired",
        "2026-12-03T14:10:00.0Z",
        std::slice::from_ref(&vm),
    );
    let r = post_webhook(&ctx, &url, None, &again).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(r.body["skipped"], 1, "{}", r.text);
    let e = wait_event(&ctx, "az", "Skipped", Some("Cooldown")).await;
    assert_eq!(e["source"], "AzureMonitor");
    assert_eq!(e["alertName"], "WCUS-R2-Gen2");

    // One alert naming two machines: vm1 is in its cooldown, vm2 (a second real agent) captures.
    let agent2 = RealAgent::start(&ctx.server.url, &ctx.vm("vm2"), &[]);
    let vm2_url = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm2?api-version=2026-04-01",
        ctx.sub
    );
    ctx.api
        .wait_http_status(&vm2_url, 200, Duration::from_secs(20))
        .await;
    let both = [vm.clone(), ctx.vm("vm2")];
    let fired2 = "2026-12-03T14:15:00.0Z";
    let r = post_webhook(
        &ctx,
        &url,
        None,
        &common_schema(&ctx, "Fired", fired2, &both),
    )
    .await;
    assert_eq!(r.body["skipped"], 1, "{}", r.text);
    let c = r.body["capturesCreated"].as_array().unwrap();
    assert_eq!(c.len(), 1, "{}", r.text);
    let name2 = capture_name(c[0].as_str().unwrap()).to_string();
    assert!(name2.starts_with("az-vm2-"), "{name2}");
    ctx.wait_capture_status("nw1", &name2, "Running").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = post_webhook(
        &ctx,
        &url,
        None,
        &common_schema(&ctx, "Resolved", fired2, &both),
    )
    .await;
    assert_eq!(
        r.body["capturesStopped"].as_array().unwrap().len(),
        1,
        "{}",
        r.text
    );
    ctx.wait_capture_status("nw1", &name2, "Stopped").await;
    let path2 = capture_file_path(&ctx, &name2).await;
    let file = pcapfile::read(&agent2.file(&path2));
    assert!(
        file.tags().iter().any(|t| t == "azure"),
        "vm2 recorded the traffic"
    );
    assert!(
        !agent.file(&path2).exists(),
        "only the machine the alert named captured"
    );

    // Outside the scope, and a machine with no agent.
    let outside = format!(
        "/subscriptions/{}/resourcegroups/rg2/providers/microsoft.compute/virtualmachines/vm1",
        ctx.sub
    );
    let unregistered = ctx.vm("vm7");
    let two = common_schema(
        &ctx,
        "Fired",
        "2026-12-03T14:20:00.0Z",
        &[outside, unregistered],
    );
    let r = post_webhook(&ctx, &url, None, &two).await;
    assert_eq!(r.body["skipped"], 2, "{}", r.text);
    wait_event(&ctx, "az", "Skipped", Some("OutsideScope")).await;
    wait_event(&ctx, "az", "Skipped", Some("MachineNotRegistered")).await;
    assert_eq!(capture_count(&ctx).await, 2);

    // A trigger matching Prometheus `instance` labels against the agents' host names.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let h = create_trigger(
        &ctx,
        "byhost",
        &json!({"properties": {
            "captureTemplate": {"storageLocation": {"filePath": "/var/captures/byhost/x.cap"}},
            "machines": {"scopes": [format!("/subscriptions/{}", ctx.sub)],
                         "alertmanagerLabel": "instance", "labelMatches": "hostname"}
        }}),
    )
    .await;
    let payload = json!({"version": "4", "status": "firing", "receiver": "r", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "NodeDown",
                    "instance": format!("{}:9100", host.trim().to_uppercase())},
                    "annotations": {}, "startsAt": now_rfc3339(), "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "0123456789abcdef"}]});
    let r = post_webhook(
        &ctx,
        h["properties"]["webhooks"]["alertmanager"]
            .as_str()
            .unwrap(),
        h["properties"]["webhookSecret"].as_str(),
        &payload,
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    // Both agents of this test run on this host: the host name names both machines.
    let mut c: Vec<&str> = r.body["capturesCreated"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .map(capture_name)
        .collect();
    c.sort();
    assert_eq!(c.len(), 2, "{}", r.text);
    assert!(
        c[0].starts_with("byhost-vm1-") && c[1].starts_with("byhost-vm2-"),
        "{c:?}"
    );
    let machines: Vec<Value> = events(&ctx, "byhost")
        .await
        .into_iter()
        .map(|e| e["machine"].clone())
        .collect();
    assert!(machines.contains(&json!(ctx.vm("vm1"))), "{machines:?}");
    assert!(machines.contains(&json!(ctx.vm("vm2"))), "{machines:?}");
    assert!(
        !ctx.server.log_text().contains(&secret),
        "the secret (in the URL's code) is never logged"
    );
}

#[tokio::test]
async fn webhooks_refuse_bad_input_with_arm_errors() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let t = create_trigger(&ctx, "t1", &trigger_body(&ctx, 9999, json!({}))).await;
    let secret = t["properties"]["webhookSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let am_url = t["properties"]["webhooks"]["alertmanager"]
        .as_str()
        .unwrap()
        .to_string();
    let az_url = t["properties"]["webhooks"]["azureMonitor"]
        .as_str()
        .unwrap()
        .to_string();
    let alert = json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
        "labels": {"alertname": "A", "azure_resource_id": ctx.vm("vm1")},
        "startsAt": "2026-12-03T00:00:00Z", "fingerprint": "f1"}]});

    // No secret, a wrong one: 401, nothing done or recorded.
    let r = post_webhook(&ctx, &am_url, None, &alert).await;
    r.assert_error(401, "InvalidWebhookSecret");
    let r = post_webhook(&ctx, &am_url, Some("wrong"), &alert).await;
    r.assert_error(401, "InvalidWebhookSecret");
    let r = post_webhook(&ctx, &format!("{az_url}?code=wrong"), None, &alert).await;
    r.assert_error(401, "InvalidWebhookSecret");
    assert!(events(&ctx, "t1").await.is_empty());
    // Unknown triggers: 404.
    let other = am_url.replace(
        t["properties"]["webhooks"]["triggerId"].as_str().unwrap(),
        &uuid::Uuid::new_v4().to_string(),
    );
    post_webhook(&ctx, &other, Some(&secret), &alert)
        .await
        .assert_error(404, "ResourceNotFound");
    let bad_id = format!(
        "{}/webhooks/captureTriggers/not-a-trigger/alertmanager",
        ctx.server.url
    );
    post_webhook(&ctx, &bad_id, Some(&secret), &alert)
        .await
        .assert_error(404, "ResourceNotFound");

    // Malformed payloads: 400 with the JSON path of the field.
    let raw = ctx
        .api
        .http
        .post(&am_url)
        .bearer_auth(&secret)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let b: Value = raw.json().await.unwrap();
    assert_eq!(b["error"]["code"], "InvalidRequestContent");
    assert_eq!(b["error"]["target"], "body");
    for (payload, target) in [
        (json!({"version": "3", "alerts": []}), "version"),
        (json!({"version": "4"}), "alerts"),
        (
            json!({"version": "4", "alerts": [{"status": "pending", "fingerprint": "f", "startsAt": "x"}]}),
            "alerts[0].status",
        ),
        (
            json!({"version": "4", "alerts": [{"status": "firing", "startsAt": "x"}]}),
            "alerts[0].fingerprint",
        ),
    ] {
        let r = post_webhook(&ctx, &am_url, Some(&secret), &payload).await;
        let e = r.assert_error(400, "InvalidAlertPayload");
        assert_eq!(e["target"], target, "{}", r.text);
    }
    let az = format!("{az_url}?code={secret}");
    for (payload, target) in [
        (
            json!({"schemaId": "Microsoft.Insights/activityLogs", "data": {}}),
            "schemaId",
        ),
        (
            json!({"schemaId": "azureMonitorCommonAlertSchema", "data": {}}),
            "data.essentials",
        ),
        (
            common_schema(&ctx, "Open", "2026-12-03T00:00:00Z", &[]),
            "data.essentials.monitorCondition",
        ),
    ] {
        let r = post_webhook(&ctx, &az, None, &payload).await;
        let e = r.assert_error(400, "InvalidAlertPayload");
        assert_eq!(e["target"], target, "{}", r.text);
    }
    // Too large: 413 before it is read.
    let big = json!({"version": "4", "alerts": [], "pad": "x".repeat(1024 * 1024 + 1)});
    post_webhook(&ctx, &am_url, Some(&secret), &big)
        .await
        .assert_error(413, "RequestEntityTooLarge");
    // An alert without the machine label, and one for an unregistered machine: recorded.
    let nolabel = json!({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"},
        "startsAt": "2026-12-03T00:00:00Z", "fingerprint": "f2"}]});
    let r = post_webhook(&ctx, &am_url, Some(&secret), &nolabel).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    wait_event(&ctx, "t1", "Skipped", Some("NoMachineInAlert")).await;
    let r = post_webhook(&ctx, &am_url, Some(&secret), &alert).await;
    assert_eq!(r.body["skipped"], 1, "{}", r.text);
    wait_event(&ctx, "t1", "Skipped", Some("MachineNotRegistered")).await;

    // Rotation: the old secret stops working, the new one works.
    let r = ctx
        .api
        .post(&with_version(&format!(
            "{}/rotateSecret",
            trigger_path(&ctx, "t1")
        )))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    let fresh = r.body["webhookSecret"].as_str().unwrap().to_string();
    assert_ne!(fresh, secret);
    post_webhook(&ctx, &am_url, Some(&secret), &alert)
        .await
        .assert_error(401, "InvalidWebhookSecret");
    let r = post_webhook(&ctx, &am_url, Some(&fresh), &alert).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    // Delivered before and skipped: checked again (the machine is still not registered).
    assert_eq!(
        (&r.body["skipped"], &r.body["duplicates"]),
        (&json!(1), &json!(0)),
        "{}",
        r.text
    );
    assert_eq!(capture_count(&ctx).await, 0);
}

#[tokio::test]
async fn trigger_puts_validate_like_captures_and_follow_rbac() {
    let ctx = Ctx::with(|o| o.page_size = 1).await;
    ctx.create_watcher("nw1").await;
    let url = trigger_url(&ctx, "t1");
    // The template is validated as a packet capture, with its own messages.
    let mut bad = trigger_body(&ctx, 9999, json!({}));
    bad["properties"]["captureTemplate"]["storageLocation"]["filePath"] = json!("/tmp/x.cap");
    let r = ctx.api.put(&url, &bad).await;
    let e = r.assert_error(400, "InvalidParameter");
    assert_eq!(
        e["target"],
        "properties.captureTemplate.storageLocation.filePath"
    );
    let mut bad = trigger_body(&ctx, 9999, json!({}));
    bad["properties"]["captureTemplate"]["filters"][0]["protocol"] = json!("SCTP");
    let e = ctx.api.put(&url, &bad).await;
    assert_eq!(
        e.body["error"]["target"], "properties.captureTemplate.filters[0].protocol",
        "{}",
        e.text
    );
    let mut bad = trigger_body(&ctx, 9999, json!({}));
    bad["properties"]["captureTemplate"]["target"] = json!(ctx.vm("vm1"));
    let e = ctx.api.put(&url, &bad).await;
    assert_eq!(
        e.body["error"]["target"], "properties.captureTemplate.target",
        "{}",
        e.text
    );
    let mut bad = trigger_body(&ctx, 9999, json!({"cooldownInSeconds": 86401}));
    let e = ctx.api.put(&url, &bad).await;
    assert_eq!(
        e.body["error"]["target"], "properties.guards.cooldownInSeconds",
        "{}",
        e.text
    );
    bad["properties"]["guards"] = json!({});
    bad["properties"]["machines"]["scopes"] =
        json!(["/subscriptions/00000000-0000-0000-0000-0000000000ff"]);
    let e = ctx.api.put(&url, &bad).await;
    assert_eq!(
        e.body["error"]["target"], "properties.machines.scopes[0]",
        "{}",
        e.text
    );
    assert_eq!(ctx.api.get(&url).await.status.as_u16(), 404);

    // Create, update (200, the secret stays hidden), list, delete.
    let body = trigger_body(&ctx, 9999, json!({}));
    let created = create_trigger(&ctx, "t1", &body).await;
    assert_eq!(created["properties"]["guards"]["cooldownInSeconds"], 600);
    assert_eq!(created["properties"]["enabled"], true);
    assert_eq!(
        created["type"],
        "Microsoft.Network/networkWatchers/captureTriggers"
    );
    let r = ctx
        .api
        .request_with(Method::PUT, &url, Some(&body), &[("If-None-Match", "*")])
        .await;
    r.assert_error(412, "PreconditionFailed");
    let mut changed = body.clone();
    changed["properties"]["enabled"] = json!(false);
    let r = ctx.api.put(&url, &changed).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(r.body["properties"].get("webhookSecret").is_none());
    assert_eq!(r.body["properties"]["enabled"], false);
    // Lists are paged (here one trigger a page).
    create_trigger(&ctx, "t0", &body).await;
    let list = ctx
        .api
        .get(&with_version(&format!(
            "{}/captureTriggers",
            watcher_path(&ctx.sub, "rg1", "nw1")
        )))
        .await;
    assert_eq!(list.body["value"][0]["name"], "t0", "{}", list.text);
    assert!(
        list.body["value"][0]["properties"]
            .get("webhookSecret")
            .is_none()
    );
    let next = list.body["nextLink"].as_str().expect("nextLink");
    let page2 = ctx.api.get(next).await;
    assert_eq!(page2.body["value"][0]["name"], "t1", "{}", page2.text);
    assert!(page2.body.get("nextLink").is_none(), "{}", page2.text);

    // A Reader reads, without the secret; cannot write, rotate or delete.
    let (_, reader) = ctx.principal(Some(("Reader", &format!("/subscriptions/{}", ctx.sub))));
    let as_reader = ctx.api.with_bearer(Some(&reader));
    let r = as_reader.get(&url).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(!r.text.contains("webhookSecret"));
    as_reader
        .put(&url, &body)
        .await
        .assert_error(403, "AuthorizationFailed");
    let rotate = with_version(&format!("{}/rotateSecret", trigger_path(&ctx, "t1")));
    as_reader
        .post(&rotate)
        .await
        .assert_error(403, "AuthorizationFailed");
    as_reader
        .delete(&url)
        .await
        .assert_error(403, "AuthorizationFailed");
    // Network Contributor on the watcher alone may not capture in the whole resource group.
    let watcher_scope = watcher_path(&ctx.sub, "rg1", "nw1");
    let (_, nc) = ctx.principal(Some(("Network Contributor", &watcher_scope)));
    let r = ctx
        .api
        .with_bearer(Some(&nc))
        .put(&trigger_url(&ctx, "t2"), &body)
        .await;
    let e = r.assert_error(403, "AuthorizationFailed");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("packetCaptures/write"),
        "{}",
        r.text
    );
    // Nor take over an existing trigger's machines by rotating its secret: rotating needs what a
    // PUT needs (its scopes), not only the trigger's write right.
    let r = ctx.api.with_bearer(Some(&nc)).post(&rotate).await;
    let e = r.assert_error(403, "AuthorizationFailed");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("packetCaptures/write"),
        "{}",
        r.text
    );
    let r = ctx.api.post(&rotate).await;
    assert_eq!(r.status.as_u16(), 200, "the owner rotates: {}", r.text);

    let r = ctx.api.delete(&url).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(ctx.api.delete(&url).await.status.as_u16(), 204);
    let webhook = created["properties"]["webhooks"]["alertmanager"]
        .as_str()
        .unwrap();
    let alert = json!({"version": "4", "alerts": []});
    let secret = created["properties"]["webhookSecret"].as_str();
    post_webhook(&ctx, webhook, secret, &alert)
        .await
        .assert_error(404, "ResourceNotFound");
}
