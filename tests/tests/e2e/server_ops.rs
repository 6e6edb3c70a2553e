//! Operating the server: the embedded default, graceful shutdown, the OpenAPI document, docs,
//! metrics.

use std::process::Command;
use std::time::Duration;

use e2e_tests::{Api, ServerOptions, TestServer};

#[tokio::test]
async fn openapi_document_is_checked_in_and_current() {
    let out = Command::new(e2e_tests::bin("capture-api"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = e2e_tests::workspace_root().join("openapi/openapi.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "openapi/openapi.json is stale: run `cargo run -p capture-api -- openapi > openapi/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures/{packetCaptureName}",
        "/subscriptions/{subscriptionId}/providers/Microsoft.Network/locations/{location}/operations/{operationId}",
        "/agent/v1/agents/{agentId}/assignments",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
}

#[tokio::test]
async fn serves_docs_metrics_and_the_document() {
    let db = e2e_tests::TestDb::new().await;
    let server = TestServer::start(ServerOptions::new(&db.url)).await;
    let api = Api::new(&server.url);
    let docs = api
        .http
        .get(format!("{}/docs/", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let doc = api.get("/openapi.json").await;
    assert_eq!(doc.status.as_u16(), 200);
    assert!(doc.body["paths"].is_object());
    api.get("/healthz").await;
    let m = api
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("capture_api_requests_total"), "{m}");
}

#[tokio::test]
async fn embedded_default_runs_its_own_postgres_and_stops_it() {
    let dir = e2e_tests::scratch().join(format!(
        "capture-embedded-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut opts = ServerOptions::new("");
    opts.database_url = None;
    opts.data_dir = Some(dir.clone());
    let mut server = TestServer::start(opts).await;
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
    // The first start says how to get a token with Owner on the demo subscription.
    let out = server.stdout_text();
    assert!(out.contains("created the service principal 'demo-owner' with Owner on /subscriptions/00000000-0000-0000-0000-000000000001"), "{out}");
    let command = out
        .lines()
        .find_map(|l| l.split("TOKEN=$(").nth(1))
        .and_then(|c| c.strip_suffix(')'))
        .expect("a token command");
    let principal = command
        .split("--principal ")
        .nth(1)
        .expect("a principal")
        .trim();
    let demo_token = server.cli(&["token", "--principal", principal]);
    let demo = Api::new(&server.url).with_bearer(Some(&demo_token));
    let demo_watcher = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1?api-version=2026-03-01";
    assert_eq!(
        demo.put(demo_watcher, &serde_json::json!({"location": "eastus"}))
            .await
            .status
            .as_u16(),
        201
    );
    assert!(!server.log_text().contains(&demo_token));
    let pid_file = dir.join("postgres/data/postmaster.pid");
    assert!(pid_file.exists());
    // Graceful shutdown stops the cluster too.
    assert!(
        server.terminate(Duration::from_secs(30)),
        "clean exit on SIGTERM"
    );
    assert!(
        !pid_file.exists(),
        "PostgreSQL still running after shutdown"
    );
    // Restarted, it finds its data again.
    let mut opts = ServerOptions::new("");
    opts.database_url = None;
    opts.data_dir = Some(dir.clone());
    let mut server = TestServer::start(opts).await;
    let api = Api::new(&server.url);
    assert_eq!(api.get(&w).await.status.as_u16(), 200);
    assert!(!server.stdout_text().contains("first start"));
    assert!(server.terminate(Duration::from_secs(30)));
    let _ = std::fs::remove_dir_all(&dir);
}
