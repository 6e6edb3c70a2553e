//! Every transition of the capture lifecycle, against a real (throwaway) PostgreSQL: no HTTP,
//! no sleeps. The clock is an argument: `sweep` is stepped at chosen times.
#![allow(clippy::expect_used)]

use std::time::Duration;

use agent_protocol::{CaptureCounters, CaptureErrorCode, CaptureReport, StopReason as Reported};
use capture_api::config::Timing;
use capture_api::db::models::{CaptureRow, NewMachine, NewWatcher, OperationRow, WatcherRow};
use capture_api::db::schema::{machines, network_watchers, operations, packet_captures};
use capture_api::lifecycle::create::{NewCaptureSpec, create};
use capture_api::lifecycle::stop::{self, Request};
use capture_api::lifecycle::sweeper::sweep;
use capture_api::lifecycle::{
    CaptureStatus, OperationKind, OperationStatus, ProvisioningState, StopReason, UploadState,
    agent, files, upload,
};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use e2e_tests::postgres::TestDb;
use uuid::Uuid;

const SUB: &str = "00000000-0000-0000-0000-0000000000aa";

fn timing() -> Timing {
    Timing {
        agent_wait: Duration::from_secs(60),
        agent_lost: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
    }
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn vm(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}"
    )
}

struct World {
    _db: TestDb,
    conn: AsyncPgConnection,
    watcher: WatcherRow,
    /// The clock of the test: every event happens at a time derived from it.
    t0: DateTime<Utc>,
}

async fn world() -> World {
    let db = TestDb::new().await;
    let mut conn = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connect");
    let watcher = diesel::insert_into(network_watchers::table)
        .values(NewWatcher {
            id: Uuid::new_v4(),
            subscription_id: SUB,
            resource_group: "rg1",
            name: "nw1",
            identity_key: format!("{SUB}/rg1/nw1"),
            subscription_key: SUB.to_string(),
            location: "eastus",
            location_key: "eastus".to_string(),
            tags: serde_json::json!({}),
            etag: Uuid::new_v4(),
            provisioning_state: ProvisioningState::Succeeded,
        })
        .returning(WatcherRow::as_returning())
        .get_result(&mut conn)
        .await
        .expect("watcher");
    World {
        _db: db,
        conn,
        watcher,
        // Microseconds, as PostgreSQL keeps them.
        t0: Utc::now().trunc_subsecs(6),
    }
}

impl World {
    async fn register(&mut self, machine: &str, at: DateTime<Utc>) {
        self.register_id(&vm(machine), at).await;
    }

    /// Registers the machine `id` (its agent last seen `at`).
    async fn register_id(&mut self, id: &str, at: DateTime<Utc>) {
        let row = NewMachine {
            resource_key: id.to_lowercase(),
            resource_id: id,
            subscription_id: SUB,
            subscription_key: SUB.to_string(),
            location: "eastus",
            agent_id: Uuid::new_v4(),
            hostname: "host",
            os: "linux",
            agent_version: "test",
            interfaces: serde_json::json!([]),
            last_seen_at: at,
            lost: false,
        };
        row.upsert(&mut self.conn).await.expect("machine");
    }

    /// A capture of `machine` created at t0, with its create operation.
    async fn create(&mut self, name: &str, machine: &str) -> (CaptureRow, Uuid) {
        self.create_with(name, machine, None).await
    }

    async fn create_with(
        &mut self,
        name: &str,
        machine: &str,
        storage: Option<(Uuid, String)>,
    ) -> (CaptureRow, Uuid) {
        let spec = NewCaptureSpec {
            name,
            parameters: serde_json::json!({"target": vm(machine)}),
            machine_key: vm(machine).to_lowercase(),
            time_limit_seconds: 100,
            is_scale_set: false,
            storage,
            deadline: self.t0 + secs(60),
            principal: "tester",
        };
        let watcher = self.watcher.clone();
        create(&mut self.conn, &watcher, spec, self.t0)
            .await
            .expect("create")
            .expect("created")
    }

    async fn capture(&mut self, id: Uuid) -> Option<CaptureRow> {
        packet_captures::table
            .find(id)
            .select(CaptureRow::as_select())
            .first(&mut self.conn)
            .await
            .optional()
            .expect("read capture")
    }

    async fn op(&mut self, id: Uuid) -> OperationRow {
        operations::table
            .find(id)
            .select(OperationRow::as_select())
            .first(&mut self.conn)
            .await
            .expect("read operation")
    }

    async fn report(&mut self, c: &CaptureRow, report: CaptureReport, at: DateTime<Utc>) {
        agent::report(&mut self.conn, &c.machine_key, c.id, &report, at)
            .await
            .expect("report");
    }

    async fn started(&mut self, c: &CaptureRow, at: DateTime<Utc>) {
        let report = CaptureReport::Running {
            start_time: at,
            counters: CaptureCounters::default(),
        };
        self.report(c, report, at).await;
    }

    /// A capture of `machine` that its agent started at t0, as stored then.
    async fn running(&mut self, name: &str, machine: &str) -> CaptureRow {
        let (c, _) = self.create(name, machine).await;
        self.started(&c, self.t0).await;
        self.capture(c.id).await.expect("capture")
    }

    async fn storage_account(&mut self) -> Uuid {
        let account = Uuid::new_v4();
        diesel::sql_query(
            "INSERT INTO storage_accounts (id, resource_id, resource_key, account_name, blob_endpoint, key_env)
             VALUES ($1, 'sa', 'sa', 'sa', 'http://127.0.0.1:1/sa', 'KEY')",
        )
        .bind::<diesel::sql_types::Uuid, _>(account)
        .execute(&mut self.conn)
        .await
        .expect("account");
        account
    }

    async fn sweep(&mut self, at: DateTime<Utc>) {
        sweep(&mut self.conn, &timing(), at).await.expect("sweep");
    }

    fn request(&self, at: DateTime<Utc>) -> Request<'static> {
        Request {
            principal: "tester",
            deadline: at + secs(20),
            now: at,
        }
    }
}

fn stopped(reason: Reported) -> CaptureReport {
    CaptureReport::Stopped {
        stop_reason: reason,
        counters: CaptureCounters {
            packets: 7,
            bytes: 700,
            kernel_drops: 0,
            files: vec!["/var/captures/a.cap".into()],
            file_set: vec![],
        },
    }
}

#[tokio::test]
async fn create_starts_not_started_with_a_create_operation() {
    let mut w = world().await;
    let (c, op) = w.create("pc1", "vm1").await;
    assert_eq!(c.status, CaptureStatus::NotStarted);
    assert_eq!(c.provisioning_state, ProvisioningState::Updating);
    assert!(c.desired_running);
    let op = w.op(op).await;
    assert_eq!(op.kind, OperationKind::CreateCapture);
    assert_eq!(op.status, OperationStatus::InProgress);
}

#[tokio::test]
async fn agent_start_runs_the_capture_and_completes_the_create() {
    let mut w = world().await;
    let (c, op) = w.create("pc1", "vm1").await;
    let t = w.t0 + secs(1);
    w.started(&c, t).await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Running);
    assert_eq!(c.provisioning_state, ProvisioningState::Succeeded);
    assert_eq!(c.capture_start_time, Some(t));
    assert_eq!(w.op(op).await.status, OperationStatus::Succeeded);
}

#[tokio::test]
async fn agent_stop_report_stops_with_its_reason_and_records_counters() {
    let mut w = world().await;
    let (c, _) = w.create("pc1", "vm1").await;
    w.started(&c, w.t0).await;
    w.report(&c, stopped(Reported::TotalBytesExceeded), w.t0 + secs(5))
        .await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Stopped);
    assert_eq!(c.stop_reason, Some(StopReason::TotalBytesExceeded));
    assert_eq!((c.packets, c.bytes), (Some(7), Some(700)));
    assert_eq!(c.files, serde_json::json!(["/var/captures/a.cap"]));
    // A late report changes no state.
    w.started(&c, w.t0 + secs(6)).await;
    let again = w.capture(c.id).await.expect("capture");
    assert_eq!(again.status, CaptureStatus::Stopped);
}

#[tokio::test]
async fn agent_failure_before_start_fails_the_create() {
    let mut w = world().await;
    let (c, op) = w.create("pc1", "vm1").await;
    let report = CaptureReport::Failed {
        code: CaptureErrorCode::CaptureFailed,
        message: "no such interface".into(),
        counters: CaptureCounters::default(),
    };
    w.report(&c, report, w.t0 + secs(1)).await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Error);
    assert_eq!(c.provisioning_state, ProvisioningState::Failed);
    assert_eq!(c.stop_reason, Some(StopReason::CaptureError));
    let op = w.op(op).await;
    assert_eq!(op.status, OperationStatus::Failed);
    assert_eq!(op.error_code.as_deref(), Some("CaptureFailed"));
    assert_eq!(op.error_message.as_deref(), Some("no such interface"));
}

#[tokio::test]
async fn report_on_another_machines_capture_is_refused() {
    let mut w = world().await;
    let (c, _) = w.create("pc1", "vm1").await;
    let report = CaptureReport::Running {
        start_time: w.t0,
        counters: CaptureCounters::default(),
    };
    let refused = agent::report(&mut w.conn, &vm("vm2").to_lowercase(), c.id, &report, w.t0).await;
    assert!(refused.is_err());
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::NotStarted);
}

#[tokio::test]
async fn stop_before_start_stops_at_once_and_cancels_the_create() {
    let mut w = world().await;
    let (c, create_op) = w.create("pc1", "vm1").await;
    let watcher = w.watcher.clone();
    let request = w.request(w.t0 + secs(1));
    let op = stop::stop(&mut w.conn, &watcher, &c, request)
        .await
        .expect("stop");
    assert_eq!(op, None, "nothing runs, so no operation");
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Stopped);
    assert_eq!(c.provisioning_state, ProvisioningState::Canceled);
    assert_eq!(c.stop_reason, Some(StopReason::StoppedByUser));
    let create_op = w.op(create_op).await;
    assert_eq!(create_op.status, OperationStatus::Canceled);
    assert_eq!(create_op.error_code.as_deref(), Some("OperationCanceled"));
}

#[tokio::test]
async fn stop_of_a_running_capture_waits_for_the_agent() {
    let mut w = world().await;
    let c = w.running("pc1", "vm1").await;
    let watcher = w.watcher.clone();
    let request = w.request(w.t0 + secs(1));
    let op = stop::stop(&mut w.conn, &watcher, &c, request)
        .await
        .expect("stop")
        .expect("an operation");
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Running);
    assert!(!c.desired_running);
    assert_eq!(w.op(op).await.status, OperationStatus::InProgress);
    // The agent reports its own reason for a user's stop; the requested reason stays.
    w.report(&c, stopped(Reported::StoppedByUser), w.t0 + secs(2))
        .await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Stopped);
    assert_eq!(c.stop_reason, Some(StopReason::StoppedByUser));
    assert_eq!(w.op(op).await.status, OperationStatus::Succeeded);
    // Stopping again: nothing runs.
    let request = w.request(w.t0 + secs(3));
    let again = stop::stop(&mut w.conn, &watcher, &c, request)
        .await
        .expect("stop");
    assert_eq!(again, None);
}

#[tokio::test]
async fn unacknowledged_stop_ends_after_the_grace() {
    let mut w = world().await;
    let (c, _) = w.create("pc1", "vm1").await;
    w.register("vm1", w.t0).await;
    w.started(&c, w.t0).await;
    let c = w.capture(c.id).await.expect("capture");
    let watcher = w.watcher.clone();
    let request = w.request(w.t0);
    let op = stop::stop(&mut w.conn, &watcher, &c, request)
        .await
        .expect("stop")
        .expect("an operation");
    // Within the grace (10 s): still running.
    w.sweep(w.t0 + secs(9)).await;
    assert_eq!(
        w.capture(c.id).await.expect("capture").status,
        CaptureStatus::Running
    );
    w.sweep(w.t0 + secs(11)).await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Stopped);
    assert_eq!(c.stop_reason, Some(StopReason::StoppedByUser));
    assert_eq!(w.op(op).await.status, OperationStatus::Succeeded);
}

#[tokio::test]
async fn time_limit_is_enforced_after_the_grace() {
    let mut w = world().await;
    let (c, _) = w.create("pc1", "vm1").await;
    w.register("vm1", w.t0).await;
    w.started(&c, w.t0).await;
    // Limit 100 s + grace 10 s; the agent stays alive meanwhile.
    w.register("vm1", w.t0 + secs(100)).await;
    w.sweep(w.t0 + secs(109)).await;
    assert_eq!(
        w.capture(c.id).await.expect("capture").status,
        CaptureStatus::Running
    );
    w.sweep(w.t0 + secs(111)).await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Stopped);
    assert_eq!(c.stop_reason, Some(StopReason::TimeExceeded));
    assert!(!c.desired_running);
}

#[tokio::test]
async fn create_deadline_without_an_agent_fails_machine_not_registered() {
    let mut w = world().await;
    let (c, op) = w.create("pc1", "vm1").await;
    w.sweep(w.t0 + secs(59)).await;
    assert_eq!(w.op(op).await.status, OperationStatus::InProgress);
    w.sweep(w.t0 + secs(61)).await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Error);
    assert_eq!(c.provisioning_state, ProvisioningState::Failed);
    assert_eq!(c.stop_reason, Some(StopReason::AgentStopped));
    assert!(
        c.error_message
            .as_deref()
            .is_some_and(|m| m.starts_with("No capture agent is registered"))
    );
    let op = w.op(op).await;
    assert_eq!(op.status, OperationStatus::Failed);
    assert_eq!(op.error_code.as_deref(), Some("MachineNotRegistered"));
}

#[tokio::test]
async fn create_deadline_with_a_silent_agent_fails_start_timeout() {
    let mut w = world().await;
    let (c, op) = w.create("pc1", "vm1").await;
    w.register("vm1", w.t0 + secs(55)).await;
    w.sweep(w.t0 + secs(61)).await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Error);
    let op = w.op(op).await;
    assert_eq!(op.error_code.as_deref(), Some("CaptureStartTimeout"));
}

#[tokio::test]
async fn agent_restart_ends_the_captures_it_no_longer_runs() {
    let mut w = world().await;
    let (kept, _) = w.create("kept", "vm1").await;
    let (lost, _) = w.create("lost", "vm1").await;
    w.started(&kept, w.t0).await;
    w.started(&lost, w.t0).await;
    let ended = agent::restarted(&mut w.conn, &kept.machine_key, &[kept.id], w.t0 + secs(5))
        .await
        .expect("restarted");
    assert_eq!(ended, 1);
    assert_eq!(
        w.capture(kept.id).await.expect("kept").status,
        CaptureStatus::Running
    );
    let lost = w.capture(lost.id).await.expect("lost");
    assert_eq!(lost.status, CaptureStatus::Error);
    assert_eq!(lost.stop_reason, Some(StopReason::AgentStopped));
    assert_eq!(lost.errors, serde_json::json!(["AgentStopped"]));
    assert_eq!(lost.provisioning_state, ProvisioningState::Succeeded);
}

#[tokio::test]
async fn a_silent_agent_is_lost_with_its_running_captures() {
    let mut w = world().await;
    let (c, _) = w.create("pc1", "vm1").await;
    w.register("vm1", w.t0).await;
    w.started(&c, w.t0).await;
    // Lost after 30 s without a poll.
    w.sweep(w.t0 + secs(29)).await;
    assert_eq!(
        w.capture(c.id).await.expect("capture").status,
        CaptureStatus::Running
    );
    w.sweep(w.t0 + secs(31)).await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Error);
    assert_eq!(c.stop_reason, Some(StopReason::AgentStopped));
    assert!(
        c.error_message
            .as_deref()
            .is_some_and(|m| m.contains("stopped polling"))
    );
    let lost: bool = machines::table
        .select(machines::lost)
        .first(&mut w.conn)
        .await
        .expect("machine");
    assert!(lost);
}

#[tokio::test]
async fn delete_of_a_running_capture_removes_it_once_stopped() {
    let mut w = world().await;
    let c = w.running("pc1", "vm1").await;
    let watcher = w.watcher.clone();
    let request = w.request(w.t0 + secs(1));
    let op = stop::delete_capture(&mut w.conn, &watcher, &c, request)
        .await
        .expect("delete");
    let still = w.capture(c.id).await.expect("still there while running");
    assert!(still.deleting && !still.desired_running);
    assert_eq!(w.op(op).await.status, OperationStatus::InProgress);
    w.report(&c, stopped(Reported::StoppedByUser), w.t0 + secs(2))
        .await;
    assert!(w.capture(c.id).await.is_none(), "removed once stopped");
    assert_eq!(w.op(op).await.status, OperationStatus::Succeeded);
}

#[tokio::test]
async fn delete_before_start_removes_it_and_cancels_the_create() {
    let mut w = world().await;
    let (c, create_op) = w.create("pc1", "vm1").await;
    let watcher = w.watcher.clone();
    let request = w.request(w.t0 + secs(1));
    let op = stop::delete_capture(&mut w.conn, &watcher, &c, request)
        .await
        .expect("delete");
    assert!(w.capture(c.id).await.is_none());
    assert_eq!(w.op(op).await.status, OperationStatus::Succeeded);
    assert_eq!(w.op(create_op).await.status, OperationStatus::Canceled);
}

#[tokio::test]
async fn delete_of_a_watcher_waits_for_its_running_captures() {
    let mut w = world().await;
    let (running, _) = w.create("running", "vm1").await;
    let (waiting, _) = w.create("waiting", "vm2").await;
    w.started(&running, w.t0).await;
    let watcher = w.watcher.clone();
    let request = w.request(w.t0 + secs(1));
    let op = stop::delete_watcher(&mut w.conn, &watcher, request)
        .await
        .expect("delete watcher");
    assert!(w.capture(waiting.id).await.is_none());
    let state: ProvisioningState = network_watchers::table
        .find(watcher.id)
        .select(network_watchers::provisioning_state)
        .first(&mut w.conn)
        .await
        .expect("watcher still there");
    assert_eq!(state, ProvisioningState::Deleting);
    assert_eq!(w.op(op).await.status, OperationStatus::InProgress);
    w.report(&running, stopped(Reported::StoppedByUser), w.t0 + secs(2))
        .await;
    w.sweep(w.t0 + secs(2)).await;
    let left: i64 = network_watchers::table
        .count()
        .get_result(&mut w.conn)
        .await
        .expect("count");
    assert_eq!(left, 0);
    assert_eq!(w.op(op).await.status, OperationStatus::Succeeded);
}

#[tokio::test]
async fn upload_verified_and_failed() {
    let mut w = world().await;
    let account = w.storage_account().await;
    let (ok, _) = w
        .create_with("ok", "vm1", Some((account, "ok.cap".into())))
        .await;
    let (bad, _) = w
        .create_with("bad", "vm1", Some((account, "bad.cap".into())))
        .await;
    for c in [&ok, &bad] {
        w.started(c, w.t0).await;
        w.report(c, stopped(Reported::TimeExceeded), w.t0 + secs(1))
            .await;
    }
    assert_eq!(ok.upload_state, Some(UploadState::Pending));
    let ok = w.capture(ok.id).await.expect("ok");
    upload::verified(&mut w.conn, &ok, &["http://blob/ok.cap".into()], w.t0)
        .await
        .expect("verified");
    let ok = w.capture(ok.id).await.expect("ok");
    assert_eq!(ok.upload_state, Some(UploadState::Uploaded));
    assert_eq!(ok.status, CaptureStatus::Stopped);
    assert_eq!(ok.files, serde_json::json!(["http://blob/ok.cap"]));

    let bad = w.capture(bad.id).await.expect("bad");
    upload::failed(
        &mut w.conn,
        &bad,
        "unreachable",
        "/var/captures/bad.cap",
        w.t0,
    )
    .await
    .expect("failed");
    let bad = w.capture(bad.id).await.expect("bad");
    assert_eq!(bad.upload_state, Some(UploadState::Failed));
    assert_eq!(bad.status, CaptureStatus::Error);
    assert_eq!(bad.errors, serde_json::json!(["StorageFailed"]));
    assert!(
        bad.error_message
            .as_deref()
            .is_some_and(|m| m.contains("kept on the machine at /var/captures/bad.cap"))
    );
    // A repeated failure changes nothing (only a pending upload changes).
    upload::failed(&mut w.conn, &bad, "again", "", w.t0)
        .await
        .expect("failed again");
    let again = w.capture(bad.id).await.expect("bad");
    assert_eq!(again.error_message, bad.error_message);
}

#[tokio::test]
async fn scale_set_captures_follow_their_instances() {
    let mut w = world().await;
    let ss = format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1"
    );
    for i in ["0", "1"] {
        w.register_id(&format!("{ss}/virtualMachines/{i}"), w.t0)
            .await;
    }
    let spec = NewCaptureSpec {
        name: "pcss",
        parameters: serde_json::json!({"target": ss, "targetType": "AzureVMSS"}),
        machine_key: ss.to_lowercase(),
        time_limit_seconds: 100,
        is_scale_set: true,
        storage: None,
        deadline: w.t0 + secs(60),
        principal: "tester",
    };
    let watcher = w.watcher.clone();
    let (parent, op) = create(&mut w.conn, &watcher, spec, w.t0)
        .await
        .expect("create")
        .expect("created");
    let instances: Vec<CaptureRow> = packet_captures::table
        .filter(packet_captures::parent_id.eq(parent.id))
        .order(packet_captures::machine_key)
        .select(CaptureRow::as_select())
        .load(&mut w.conn)
        .await
        .expect("instances");
    assert_eq!(
        instances.len(),
        2,
        "one instance row per registered instance"
    );
    w.started(&instances[0], w.t0).await;
    let p = w.capture(parent.id).await.expect("parent");
    assert_eq!(p.status, CaptureStatus::Running);
    // One instance never starts: at the deadline it ends as agent-stopped; the parent keeps
    // running on the other.
    diesel::update(machines::table)
        .set(machines::last_seen_at.eq(w.t0 + secs(61)))
        .execute(&mut w.conn)
        .await
        .expect("alive");
    w.sweep(w.t0 + secs(61)).await;
    let late = w.capture(instances[1].id).await.expect("instance");
    assert_eq!(late.status, CaptureStatus::Error);
    assert_eq!(late.stop_reason, Some(StopReason::AgentStopped));
    let p = w.capture(parent.id).await.expect("parent");
    assert_eq!(p.status, CaptureStatus::Running);
    assert_eq!(p.provisioning_state, ProvisioningState::Succeeded);
    assert_eq!(w.op(op).await.status, OperationStatus::Succeeded);
    w.report(
        &instances[0],
        stopped(Reported::TimeExceeded),
        w.t0 + secs(62),
    )
    .await;
    let p = w.capture(parent.id).await.expect("parent");
    assert_eq!(p.status, CaptureStatus::Stopped);
    assert_eq!(p.stop_reason, Some(StopReason::TimeExceeded));
}

#[tokio::test]
async fn the_database_refuses_unknown_states() {
    let mut w = world().await;
    let (c, _) = w.create("pc1", "vm1").await;
    let refused = diesel::sql_query("UPDATE packet_captures SET status = 'Paused' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(c.id)
        .execute(&mut w.conn)
        .await;
    assert!(refused.is_err(), "CHECK constraint: {refused:?}");
    let refused = diesel::sql_query("UPDATE operations SET status = 'Done'")
        .execute(&mut w.conn)
        .await;
    assert!(refused.is_err(), "CHECK constraint: {refused:?}");
}

/// A continuous capture's report: files `done` complete, then `writing` being written.
fn with_files(report: CaptureReport, done: &[u32], writing: Option<u32>) -> CaptureReport {
    let file = |index, complete| agent_protocol::CaptureFile {
        index,
        size: 1000,
        packets: 2,
        first_packet_time: None,
        last_packet_time: None,
        complete,
    };
    let mut set: Vec<_> = done.iter().map(|&i| file(i, true)).collect();
    set.extend(writing.map(|i| file(i, false)));
    match report {
        CaptureReport::Running {
            start_time,
            mut counters,
        } => {
            counters.file_set = set;
            CaptureReport::Running {
                start_time,
                counters,
            }
        }
        CaptureReport::Stopped {
            stop_reason,
            mut counters,
        } => {
            counters.file_set = set;
            CaptureReport::Stopped {
                stop_reason,
                counters,
            }
        }
        other => other,
    }
}

#[tokio::test]
async fn continuous_files_upload_leave_the_ring_and_settle_the_capture() {
    use capture_api::db::file_set::FileState;
    let mut w = world().await;
    let account = w.storage_account().await;
    let (c, _) = w
        .create_with("ring", "vm1", Some((account, "ring.cap".into())))
        .await;
    diesel::update(packet_captures::table.find(c.id))
        .set(packet_captures::parameters.eq(serde_json::json!({
            "target": vm("vm1"), "continuousCapture": true,
            "storageLocation": {"storageId": "sa", "localPath": "/var/captures/ring.cap"},
            "captureSettings": {"fileCount": 2, "fileSizeInBytes": 300000, "sessionTimeLimitInSeconds": 600},
        })))
        .execute(&mut w.conn)
        .await
        .expect("parameters");
    let states = |c: &CaptureRow| -> Vec<(u32, FileState)> {
        c.file_set().iter().map(|f| (f.index, f.state)).collect()
    };
    let running = |at| CaptureReport::Running {
        start_time: at,
        counters: CaptureCounters::default(),
    };
    w.report(&c, with_files(running(w.t0), &[1], Some(2)), w.t0)
        .await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(
        states(&c),
        [(1, FileState::Uploading), (2, FileState::Writing)]
    );
    files::upload_verified(&mut w.conn, &c, 1, 1000, w.t0)
        .await
        .expect("verified");
    // File 3 starts: file 1 leaves the ring of 2, its blob to delete; then deleted.
    w.report(&c, with_files(running(w.t0), &[2], Some(3)), w.t0 + secs(1))
        .await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(
        states(&c),
        [
            (1, FileState::Discarded),
            (2, FileState::Uploading),
            (3, FileState::Writing)
        ]
    );
    assert!(!files::uploadable(&c, 1) && files::uploadable(&c, 2) && files::uploadable(&c, 4));
    files::blob_deleted(&mut w.conn, &c, 1, w.t0)
        .await
        .expect("deleted");
    // Stopped with files 2 and 3 still to upload: the capture's upload waits for them.
    w.report(
        &c,
        with_files(stopped(Reported::StoppedByUser), &[2, 3], None),
        w.t0 + secs(2),
    )
    .await;
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.status, CaptureStatus::Stopped);
    assert_eq!(c.upload_state, Some(UploadState::Pending));
    files::upload_verified(&mut w.conn, &c, 2, 1000, w.t0)
        .await
        .expect("verified");
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(c.upload_state, Some(UploadState::Pending));
    files::upload_failed(&mut w.conn, &c, 3, "storage unreachable", w.t0)
        .await
        .expect("failed");
    let c = w.capture(c.id).await.expect("capture");
    assert_eq!(
        states(&c),
        [(2, FileState::Uploaded), (3, FileState::UploadFailed)]
    );
    assert_eq!(c.upload_state, Some(UploadState::Failed));
    assert_eq!(c.status, CaptureStatus::Error);
    assert_eq!(c.errors, serde_json::json!(["StorageFailed"]));
    let message = c.error_message.clone().unwrap_or_default();
    assert!(
        message.contains("file 3") && message.contains("/var/captures/ring_00003.cap"),
        "{message}"
    );
}
