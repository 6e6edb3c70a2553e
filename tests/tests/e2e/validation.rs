//! Every rejection: ARM error body, status, code and the JSON path of the field.

use serde_json::{Value, json};

use crate::Ctx;

#[tokio::test]
async fn capture_rejections_name_the_field_and_store_nothing() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let vm = ctx.vm("vm1");
    let path = |p: Value| json!({"properties": p});
    let file = json!({"filePath": "/var/captures/a.cap"});
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!([1, 2]), "InvalidRequestFormat", "body"),
        (json!({}), "InvalidRequestFormat", "properties"),
        (
            json!({"properties": "x"}),
            "InvalidRequestFormat",
            "properties",
        ),
        (
            path(json!({"storageLocation": file})),
            "InvalidParameter",
            "properties.target",
        ),
        (
            path(json!({"target": 5, "storageLocation": file})),
            "InvalidRequestFormat",
            "properties.target",
        ),
        (
            path(
                json!({"target": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s", "storageLocation": file}),
            ),
            "InvalidParameter",
            "properties.target",
        ),
        (
            path(json!({"target": vm, "targetType": "AzureFunction", "storageLocation": file})),
            "InvalidParameter",
            "properties.targetType",
        ),
        (
            path(json!({"target": vm, "targetType": "AzureVMSS", "storageLocation": file})),
            "InvalidParameter",
            "properties.target",
        ),
        (
            path(json!({"target": vm, "scope": {"include": ["0"]}, "storageLocation": file})),
            "InvalidParameter",
            "properties.scope",
        ),
        (
            path(json!({"target": vm})),
            "InvalidParameter",
            "properties.storageLocation",
        ),
        (
            path(json!({"target": vm, "storageLocation": {}})),
            "InvalidParameter",
            "properties.storageLocation",
        ),
        (
            path(json!({"target": vm, "storageLocation": {"filePath": "/tmp/a.cap"}})),
            "InvalidParameter",
            "properties.storageLocation.filePath",
        ),
        (
            path(json!({"target": vm, "storageLocation": {"filePath": "/var/captures/a.pcap"}})),
            "InvalidParameter",
            "properties.storageLocation.filePath",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": {"filePath": "/var/captures/../etc/a.cap"}}),
            ),
            "InvalidParameter",
            "properties.storageLocation.filePath",
        ),
        (
            path(json!({"target": vm, "storageLocation": {"filePath": "D:\\capture\\a.cap"}})),
            "InvalidParameter",
            "properties.storageLocation.filePath",
        ),
        (
            path(json!({"target": vm, "continuousCapture": true, "storageLocation": file})),
            "InvalidParameter",
            "properties.storageLocation.filePath",
        ),
        (
            path(json!({"target": vm, "storageLocation": {"localPath": "/var/captures/a.cap"}})),
            "InvalidParameter",
            "properties.storageLocation.localPath",
        ),
        (
            path(json!({"target": vm, "continuousCapture": "yes", "storageLocation": file})),
            "InvalidRequestFormat",
            "properties.continuousCapture",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": {"storageId": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"}}),
            ),
            "InvalidParameter",
            "properties.storageLocation.storageId",
        ),
        (
            path(json!({"target": vm, "storageLocation": file, "bytesToCapturePerPacket": -1})),
            "InvalidParameter",
            "properties.bytesToCapturePerPacket",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": file, "bytesToCapturePerPacket": 4294967296u64}),
            ),
            "InvalidParameter",
            "properties.bytesToCapturePerPacket",
        ),
        (
            path(json!({"target": vm, "storageLocation": file, "totalBytesPerSession": "many"})),
            "InvalidRequestFormat",
            "properties.totalBytesPerSession",
        ),
        (
            path(json!({"target": vm, "storageLocation": file, "timeLimitInSeconds": 18001})),
            "InvalidParameter",
            "properties.timeLimitInSeconds",
        ),
        (
            path(json!({"target": vm, "storageLocation": file, "timeLimitInSeconds": 1.5})),
            "InvalidParameter",
            "properties.timeLimitInSeconds",
        ),
        (
            path(json!({"target": vm, "storageLocation": file, "filters": {}})),
            "InvalidRequestFormat",
            "properties.filters",
        ),
        (
            path(json!({"target": vm, "storageLocation": file, "filters": [{"protocol": "ICMP"}]})),
            "InvalidParameter",
            "properties.filters[0].protocol",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": file, "filters": [{}, {"localIPAddress": "10.0.0.300"}]}),
            ),
            "InvalidParameter",
            "properties.filters[1].localIPAddress",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": file, "filters": [{"remoteIPAddress": "10.0.0.9-10.0.0.1"}]}),
            ),
            "InvalidParameter",
            "properties.filters[0].remoteIPAddress",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": file, "filters": [{"remoteIPAddress": "10.0.0.1-10.0.0.5;10.0.0.9"}]}),
            ),
            "InvalidParameter",
            "properties.filters[0].remoteIPAddress",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": file, "filters": [{"localPort": "65536"}]}),
            ),
            "InvalidParameter",
            "properties.filters[0].localPort",
        ),
        (
            path(
                json!({"target": vm, "storageLocation": file, "filters": [{"remotePort": "80-"}]}),
            ),
            "InvalidParameter",
            "properties.filters[0].remotePort",
        ),
        (
            path(json!({"target": vm, "storageLocation": file, "filters": [{"remotePort": 80}]})),
            "InvalidRequestFormat",
            "properties.filters[0].remotePort",
        ),
        (
            path(
                json!({"target": vm, "continuousCapture": true, "storageLocation": {"localPath": "/var/captures/a.cap"}, "captureSettings": {"fileCount": 10001}}),
            ),
            "InvalidParameter",
            "properties.captureSettings.fileCount",
        ),
    ];
    for (body, code, target) in cases {
        let r = ctx.api.put(&ctx.capture("nw1", "pc1"), &body).await;
        let err = r.assert_error(400, code);
        assert_eq!(err["target"], target, "body {body}: {}", r.text);
        assert!(r.header("retry-after").is_none(), "no Retry-After on a 4xx");
    }
    // None of them created anything.
    ctx.api
        .get(&ctx.capture("nw1", "pc1"))
        .await
        .assert_error(404, "ResourceNotFound");

    // Not JSON, empty, and too large.
    let raw = |body: Vec<u8>| {
        let api = ctx.api.clone();
        let url = format!("{}{}", ctx.api.base, ctx.capture("nw1", "pc1"));
        async move {
            let r = e2e_tests::credentials::authorized(api.http.put(&url), &url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = serde_json::from_str(&r.text().await.unwrap()).expect("JSON error body");
            (status, v)
        }
    };
    let (s, v) = raw(b"{not json".to_vec()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidRequestContent"))
    );
    let (s, v) = raw(vec![]).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidRequestContent"))
    );
    let (s, v) = raw(vec![b' '; 5 * 1024 * 1024]).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );

    // A valid capture still goes through afterwards: nothing was corrupted.
    let ok = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.text);
}

#[tokio::test]
async fn path_and_version_rejections() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let base = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1",
        ctx.sub
    );
    ctx.api
        .get(&base)
        .await
        .assert_error(400, "MissingApiVersionParameter");
    let e = ctx.api.get(&format!("{base}?api-version=2021-01-01")).await;
    let err = e.assert_error(400, "InvalidApiVersionParameter");
    assert!(err["message"].as_str().unwrap().contains("2026-03-01"));
    for v in ["2022-01-01", "2024-05-01", "2026-03-01"] {
        assert_eq!(
            ctx.api
                .get(&format!("{base}?api-version={v}"))
                .await
                .status
                .as_u16(),
            200
        );
    }
    ctx.api
        .get("/subscriptions/not-a-guid/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1?api-version=2026-03-01")
        .await
        .assert_error(400, "InvalidSubscriptionId");
    ctx.api
        .put(&ctx.capture("nw1", "-bad"), &ctx.capture_body("vm1"))
        .await
        .assert_error(400, "InvalidResourceName");
    ctx.api
        .put(&ctx.capture("missing", "pc1"), &ctx.capture_body("vm1"))
        .await
        .assert_error(404, "ResourceNotFound");
    let r = ctx.api.get("/no/such/route").await;
    r.assert_error(404, "NotFound");
    let r = ctx.api.get("/agent/v1/agents/not-a-uuid/assignments").await;
    assert_eq!(r.status.as_u16(), 404);
    assert!(r.body["error"]["code"].is_string(), "{}", r.text);
}

#[tokio::test]
async fn watcher_rules() {
    let ctx = Ctx::new().await;
    ctx.api
        .put(&ctx.watcher("nw1"), &json!({}))
        .await
        .assert_error(400, "LocationRequired");
    ctx.api
        .put(
            &ctx.watcher("nw1"),
            &json!({"location": "eastus", "tags": {"a": 1}}),
        )
        .await
        .assert_error(400, "InvalidRequestFormat");
    let created = ctx
        .api
        .put(
            &ctx.watcher("nw1"),
            &json!({"location": "eastus", "tags": {"env": "test"}}),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201);
    assert_eq!(created.body["tags"]["env"], "test");
    assert_eq!(created.body["type"], "Microsoft.Network/networkWatchers");
    // Same name: update (200); other region: rejected; second watcher in one region: rejected.
    let updated = ctx
        .api
        .put(&ctx.watcher("nw1"), &json!({"location": "East US"}))
        .await;
    assert_eq!(updated.status.as_u16(), 200);
    assert_ne!(updated.body["etag"], created.body["etag"]);
    ctx.api
        .put(&ctx.watcher("nw1"), &json!({"location": "westus"}))
        .await
        .assert_error(400, "InvalidResourceLocation");
    ctx.api
        .put(&ctx.watcher("nw2"), &json!({"location": "eastus"}))
        .await
        .assert_error(400, "NetworkWatcherCountLimitReached");
    assert_eq!(
        ctx.api
            .put(&ctx.watcher("nw2"), &json!({"location": "westus"}))
            .await
            .status
            .as_u16(),
        201
    );
    // PATCH tags.
    let patched = ctx
        .api
        .request(
            reqwest::Method::PATCH,
            &ctx.watcher("nw1"),
            Some(&json!({"tags": {"k": "v"}})),
        )
        .await;
    assert_eq!(patched.status.as_u16(), 200);
    assert_eq!(patched.body["tags"], json!({"k": "v"}));
    assert_eq!(
        ctx.api.get(&ctx.watcher("nw1")).await.body["tags"],
        json!({"k": "v"})
    );
}
