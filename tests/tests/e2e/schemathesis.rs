//! Schemathesis (pinned, `tests/python/schemathesis-requirements.txt`) against the served OpenAPI
//! document: every operation, with valid and invalid inputs, must answer without a server error
//! and as the document says. The subscription, resource group, watcher, api-version and the agent
//! ids are pinned to resources that exist, so that requests reach the handlers rather than stop
//! at the router or at a 404.

use std::time::Duration;

use e2e_tests::ScriptedAgent;
use e2e_tests::http::API_VERSION;
use serde_json::json;

use crate::{Ctx, capture_id};

/// Reproducible runs: the same seed generates the same requests.
const SEED: u64 = 20_260_301;
/// Test cases per operation and phase; with the time limit below, the run stays around a minute.
const MAX_EXAMPLES: u32 = 25;
/// The run is killed (and the test fails) after this long.
const TIME_LIMIT: Duration = Duration::from_secs(300);

fn schemathesis() -> std::path::PathBuf {
    let bin = e2e_tests::workspace_root().join("tests/python/.st-venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: the test command creates the schemathesis venv (see README)",
        bin.display()
    );
    bin
}

/// A TOML string (JSON's escapes are TOML's).
fn s(v: &str) -> String {
    serde_json::to_string(v).unwrap()
}

/// The tenant (`tid`) of a token of the built-in issuer.
fn tenant_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims");
    claims["tid"].as_str().expect("tid").to_string()
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let bin = schemathesis();
    // Throttling off: the fuzzer's burst must reach the handlers, not the rate limiter.
    let ctx = Ctx::with(|o| {
        o.extra
            .extend(["--rate-limit-per-second".to_string(), "0".to_string()])
    })
    .await;
    let creds = ctx.server.credentials().clone();
    assert!(ctx.server.url.starts_with("http://127.0.0.1:"));

    // What the pinned parameters name: the watcher "nw1" with a capture on a machine whose agent
    // is registered, a watcher of its own for the delete operation (deleting "nw1" would leave
    // every later request a 404), and a second agent for credential rotation (which replaces
    // the credential the other agent operations use).
    ctx.create_watcher("nw1").await;
    // (One watcher per subscription and region.)
    let r = ctx
        .api
        .put(&ctx.watcher("nw-delete"), &json!({"location": "westus"}))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    let rotating = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm2"), "eastus").await;
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    // .../providers/Microsoft.Network/locations/{location}/operations/{operationId}?api-version=…
    let monitor = r.header("azure-asyncoperation").unwrap();
    let monitor = monitor.split('?').next().unwrap();
    let mut segments = monitor.rsplit('/');
    let operation_id = segments.next().unwrap().to_string();
    assert_eq!(segments.next(), Some("operations"), "{monitor}");
    let location = segments.next().unwrap().to_string();
    let pc1 = capture_id(&ctx, "nw1", "pc1").await;
    // A capture trigger: its webhooks take its secret (generated bodies reach the payload checks).
    let r = ctx
        .api
        .put(
            &format!(
                "{}/captureTriggers/t1?api-version={API_VERSION}",
                ctx.watcher("nw1").split('?').next().unwrap()
            ),
            &json!({"properties": {
                "captureTemplate": {"storageLocation": {"filePath": "/var/captures/st/t.cap"}},
                "machines": {"scopes": [format!("/subscriptions/{}", ctx.sub)]}}}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let trigger_id = r.body["properties"]["webhooks"]["triggerId"]
        .as_str()
        .unwrap()
        .to_string();
    let trigger_secret = r.body["properties"]["webhookSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let agent_bearer = agent.client.bearer().unwrap();
    let rotating_bearer = rotating.client.bearer().unwrap();

    let dir = e2e_tests::scratch().join(format!(
        "capture-schemathesis-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        r#"# Written by tests/tests/e2e/schemathesis.rs.
[generation]
database = "none"

[headers]
Authorization = {owner}

[parameters]
"path.subscriptionId" = {sub}
"path.resourceGroupName" = "rg1"
"path.networkWatcherName" = "nw1"
"query.api-version" = {version}

[[operations]]
include-operation-id = "NetworkWatchers_Delete"
parameters = {{ "path.networkWatcherName" = "nw-delete" }}

# The machine of the registered agent.
[[operations]]
include-operation-id = "VirtualMachines_Get"
parameters = {{ "path.vmName" = "vm1" }}

# pc1 exists.
[[operations]]
include-operation-id = "PacketCaptures_Download"
parameters = {{ "path.packetCaptureName" = "pc1" }}

# The built-in issuer's documents and its sign-in endpoints.
[[operations]]
include-operation-id = ["discovery", "jwks", "authorize", "authorize_form", "logout", "revoke", "stylesheet"]
parameters = {{ "path.tenant" = {tenant} }}

# Microsoft.Storage has api-versions of its own; the scale set of the instance lists.
[[operations]]
include-operation-id = ["StorageAccounts_List", "StorageAccounts_ListByResourceGroup"]
parameters = {{ "query.api-version" = "2024-01-01" }}

[[operations]]
include-operation-id = "VirtualMachineScaleSetVMs_List"
parameters = {{ "path.virtualMachineScaleSetName" = "ss1" }}

[[operations]]
include-operation-id = ["Operations_GetAsyncStatus", "Operations_GetResult"]
parameters = {{ "path.location" = {location}, "path.operationId" = {operation_id} }}

[[operations]]
include-operation-id = "Agents_Register"
headers = {{ Authorization = {enrollment} }}

# The agent of vm1 (the target of pc1). Its long poll answers at once (waitSeconds 0) instead
# of holding the run for the server's longest wait.
[[operations]]
include-operation-id = ["Agents_PollAssignments", "Agents_ReportCapture", "Agents_ReportUpload", "Agents_RenewUploadSas", "Agents_DeclineFile"]
headers = {{ Authorization = {agent} }}
parameters = {{ "path.agentId" = {agent_id}, "path.captureId" = {pc1}, "query.waitSeconds" = 0 }}

# Only the first success counts: a rotation replaces the credential the next case sends (401).
[[operations]]
include-operation-id = "Agents_RotateCredential"
headers = {{ Authorization = {rotating} }}
parameters = {{ "path.agentId" = {rotating_id} }}

# The capture trigger t1 and its webhooks, with its secret.
[[operations]]
include-operation-id = ["CaptureTriggers_CreateOrUpdate", "CaptureTriggers_Get", "CaptureTriggers_Delete", "CaptureTriggers_RotateSecret"]
parameters = {{ "path.captureTriggerName" = "t1" }}

[[operations]]
include-operation-id = ["CaptureTriggers_Alertmanager", "CaptureTriggers_AzureMonitor"]
headers = {{ Authorization = {trigger_secret} }}
parameters = {{ "path.triggerId" = {trigger_id} }}

# Not fuzzed:
# - token: the OAuth client-credentials exchange takes a form-encoded client secret; generated
#   requests can only fail authentication, which the auth tests cover request by request.
# - Agents_SendFile: the agent's streaming upload of a file the server asked it for; it needs a
#   pending transfer and a byte stream, not a generated document.
# - PacketCaptures_GetContent: on pc1 it waits for a file the scripted agent never sends, and
#   answers its documented 504 `AgentTimeout` after 30 s (tests/tests/e2e/storage.rs and
#   continuous.rs drive it with real agents).
[[operations]]
include-operation-id = ["token", "Agents_SendFile", "PacketCaptures_GetContent"]
enabled = false
"#,
        owner = s(&format!("Bearer {}", creds.owner_token)),
        sub = s(&ctx.sub),
        version = s(API_VERSION),
        location = s(&location),
        operation_id = s(&operation_id),
        enrollment = s(&format!("Bearer {}", creds.enrollment_token)),
        agent = s(&format!("Bearer {agent_bearer}")),
        agent_id = s(&agent.agent_id.to_string()),
        pc1 = s(&pc1.to_string()),
        rotating = s(&format!("Bearer {rotating_bearer}")),
        rotating_id = s(&rotating.agent_id.to_string()),
        tenant = s(&tenant_of(&creds.owner_token)),
        trigger_secret = s(&format!("Bearer {trigger_secret}")),
        trigger_id = s(&trigger_id),
    );
    let config_path = dir.join("schemathesis.toml");
    std::fs::write(&config_path, &config).unwrap();

    let schema_url = format!("{}/openapi.json", ctx.server.url);
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance",
            // No stateful phase: it follows links from the responses, and can chain a create into
            // a download that waits for an agent; the three phases below are deterministic.
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            &MAX_EXAMPLES.to_string(),
            "--seed",
            &SEED.to_string(),
            // One worker: CPython 3.11's `ast.parse`, which hypothesis calls while it builds
            // strategies, can fail with "AST constructor recursion depth mismatch" when two
            // threads run it at once (a CPython bug, fixed in later releases).
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--output-truncate",
            "false",
            &schema_url,
        ])
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(TIME_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {TIME_LIMIT:?}"))
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis finished in {:?} ({}):\n{report}",
        started.elapsed(),
        out.status
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (config: {}):\n{report}",
        config_path.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The server is still well, and the pinned watcher still there.
    let r = ctx.api.get(&ctx.watcher("nw1")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
}
