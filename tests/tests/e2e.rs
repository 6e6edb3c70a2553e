//! End-to-end tests: the real server binary over a real PostgreSQL, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e {
    pub mod agent_errors;
    pub mod agents;
    pub mod auth;
    pub mod capture;
    pub mod console;
    pub mod console_external;
    pub mod continuous;
    pub mod durability;
    pub mod edges;
    pub mod first_hour;
    pub mod hostile_input;
    pub mod hosts;
    pub mod inventory;
    pub mod lifecycle;
    pub mod package;
    pub mod readme;
    pub mod scale_sets;
    pub mod schemathesis;
    pub mod sdk;
    pub mod self_healing;
    pub mod semantics;
    pub mod server_ops;
    pub mod signin;
    pub mod storage;
    pub mod triggers;
    pub mod validation;
}

use e2e_tests::http::{capture_path, watcher_path, with_version};
use e2e_tests::{Api, ServerOptions, TestDb, TestServer};
use serde_json::{Value, json};

/// One test's world: its own database, a server on it, and a fresh subscription.
pub struct Ctx {
    pub db: TestDb,
    pub server: TestServer,
    pub api: Api,
    pub sub: String,
}

impl Ctx {
    pub async fn new() -> Ctx {
        Self::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut ServerOptions)) -> Ctx {
        let db = TestDb::new().await;
        let mut opts = ServerOptions::new(&db.url);
        configure(&mut opts);
        let server = TestServer::start(opts).await;
        let api = Api::new(&server.url);
        Ctx {
            db,
            server,
            api,
            sub: e2e_tests::new_subscription(),
        }
    }

    pub fn watcher(&self, nw: &str) -> String {
        with_version(&watcher_path(&self.sub, "rg1", nw))
    }

    pub fn capture(&self, nw: &str, pc: &str) -> String {
        with_version(&capture_path(&self.sub, "rg1", nw, pc))
    }

    pub fn captures(&self, nw: &str) -> String {
        with_version(&format!(
            "{}/packetCaptures",
            watcher_path(&self.sub, "rg1", nw)
        ))
    }

    pub fn capture_action(&self, nw: &str, pc: &str, action: &str) -> String {
        with_version(&format!(
            "{}/{action}",
            capture_path(&self.sub, "rg1", nw, pc)
        ))
    }

    /// A new service principal of the built-in issuer, with `role` at `scope` if given: its
    /// object id and a token for it.
    pub fn principal(&self, role: Option<(&str, &str)>) -> (String, String) {
        let sp: Value = serde_json::from_str(&self.server.cli(&[
            "service-principals",
            "create",
            "--name",
            "p",
        ]))
        .unwrap();
        let client = sp["clientId"].as_str().unwrap().to_string();
        let oid = sp["objectId"].as_str().unwrap().to_string();
        if let Some((role, scope)) = role {
            self.server.cli(&[
                "role-assignments",
                "create",
                "--assignee",
                &oid,
                "--role",
                role,
                "--scope",
                scope,
            ]);
        }
        (oid, self.server.cli(&["token", "--principal", &client]))
    }

    pub fn vm(&self, vm: &str) -> String {
        e2e_tests::vm_id(&self.sub, "rg1", vm)
    }

    pub async fn create_watcher(&self, nw: &str) -> Value {
        let r = self
            .api
            .put(&self.watcher(nw), &json!({"location": "eastus"}))
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        r.body
    }

    /// PUTs capture `pc` of watcher `nw1` and waits until its create operation succeeded (its
    /// agent runs it); answers the PUT's body.
    pub async fn create_capture(&self, pc: &str, body: &Value) -> Value {
        let r = self.api.put(&self.capture("nw1", pc), body).await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        let op = self
            .api
            .wait_operation(
                &r.header("azure-asyncoperation").expect("operation"),
                std::time::Duration::from_secs(20),
            )
            .await;
        assert_eq!(op["status"], "Succeeded", "capture {pc}: {op}");
        r.body
    }

    /// Polls queryStatus until the capture's status is `want`; returns the status body.
    pub async fn wait_capture_status(&self, nw: &str, pc: &str, want: &str) -> Value {
        let url = self.capture_action(nw, pc, "queryStatus");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let s = self.api.post(&url).await;
            if s.body["packetCaptureStatus"] == want {
                return s.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "capture {pc} never became {want}: {}",
                s.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn capture_body(&self, vm: &str) -> Value {
        json!({"properties": {
            "target": self.vm(vm),
            "storageLocation": {"filePath": "/var/captures/test.cap"},
            "timeLimitInSeconds": 600,
            "filters": [{"protocol": "UDP", "localIPAddress": "127.0.0.1", "localPort": "9999"}]
        }})
    }
}

/// The capture id the agent protocol uses, read from the database by ARM id.
pub async fn capture_id(ctx: &Ctx, nw: &str, pc: &str) -> uuid::Uuid {
    let client = ctx.db.client().await;
    let id = capture_path(&ctx.sub, "rg1", nw, pc);
    let row = client
        .query_one(
            "SELECT id FROM packet_captures WHERE lower(resource_id) = lower($1)",
            &[&id],
        )
        .await
        .expect("capture row");
    row.get(0)
}
