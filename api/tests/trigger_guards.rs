//! The guards of capture triggers ([`capture_api::lifecycle::triggers::deliver`]) against a real
//! (throwaway) PostgreSQL: no HTTP, no sleeps; the clock is an argument of each delivery.
#![allow(clippy::expect_used)]

use capture_api::db::models::{CaptureRow, NewMachine, NewWatcher, WatcherRow};
use capture_api::db::schema::{network_watchers, packet_captures};
use capture_api::db::states::{AlertCondition, AlertSource};
use capture_api::db::triggers::{NewTrigger, TriggerRow};
use capture_api::lifecycle::triggers::{Delivered, Delivery, deliver};
use capture_api::lifecycle::{CaptureStatus, ProvisioningState};
use capture_api::triggers::validate::trigger_body;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use e2e_tests::postgres::TestDb;
use serde_json::json;
use uuid::Uuid;

const SUB: &str = "00000000-0000-0000-0000-0000000000bb";
const HASH: &str = "sha256$00";

fn vm(rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    )
}

struct World {
    db: TestDb,
    conn: AsyncPgConnection,
    trigger: Uuid,
    t0: DateTime<Utc>,
}

async fn world(guards: serde_json::Value) -> World {
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
            tags: json!({}),
            etag: Uuid::new_v4(),
            provisioning_state: ProvisioningState::Succeeded,
        })
        .returning(WatcherRow::as_returning())
        .get_result(&mut conn)
        .await
        .expect("watcher");
    for (name, location) in [
        ("vm1", "eastus"),
        ("vm2", "eastus"),
        ("vm3", "eastus"),
        ("vm4", "westus"),
    ] {
        let id = vm("rg1", name);
        NewMachine {
            resource_key: id.to_lowercase(),
            resource_id: &id,
            subscription_id: SUB,
            subscription_key: SUB.to_string(),
            location,
            agent_id: Uuid::new_v4(),
            hostname: name,
            os: "linux",
            agent_version: "test",
            interfaces: json!([]),
            last_seen_at: Utc::now(),
            lost: false,
        }
        .upsert(&mut conn)
        .await
        .expect("machine");
    }
    let body = json!({"properties": {
        "captureTemplate": {"storageLocation": {"filePath": "/var/captures/t/x.cap"}},
        "machines": {"scopes": [format!("/subscriptions/{SUB}/resourceGroups/rg1")]},
        "guards": guards,
    }});
    let valid = trigger_body(&body, SUB, "rg1", "2026-03-01").expect("valid trigger");
    let id = Uuid::new_v4();
    TriggerRow::insert(
        &mut conn,
        NewTrigger {
            id,
            watcher_id: watcher.id,
            name: "t1",
            name_key: "t1".to_string(),
            resource_id: format!("{}/captureTriggers/t1", watcher.resource_id()),
            properties: serde_json::to_value(&valid.properties).expect("json"),
            enabled: true,
            secret_hash: HASH.to_string(),
            etag: Uuid::new_v4(),
            provisioning_state: "Succeeded",
            created_by: "tester",
        },
    )
    .await
    .expect("insert")
    .expect("inserted");
    World {
        db,
        conn,
        trigger: id,
        t0: Utc::now().trunc_subsecs(6),
    }
}

/// An Alertmanager alert (webhook payload version 4) naming at most one machine.
fn alert(id: &str, condition: AlertCondition, machines: &[String]) -> serde_json::Value {
    let mut labels = json!({"alertname": "A"});
    if let Some(m) = machines.first() {
        labels["azure_resource_id"] = json!(m);
    }
    let status = match condition {
        AlertCondition::Fired => "firing",
        AlertCondition::Resolved => "resolved",
    };
    json!({
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": "2026-12-02T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": id,
    })
}

async fn deliver_on(
    conn: &mut AsyncPgConnection,
    trigger: Uuid,
    alerts: &[serde_json::Value],
    now: DateTime<Utc>,
) -> Delivered {
    let body = json!({"version": "4", "status": "firing", "alerts": alerts});
    let d = Delivery {
        trigger,
        secret_hash: HASH,
        source: AlertSource::Alertmanager,
        body: &body,
        now,
        create_deadline: now + TimeDelta::seconds(60),
        stop_deadline: now + TimeDelta::seconds(20),
    };
    conn.transaction(async |conn| deliver(conn, &d).await)
        .await
        .expect("delivered")
}

impl World {
    async fn deliver(&mut self, alerts: &[serde_json::Value], at: i64) -> Delivered {
        let now = self.t0 + TimeDelta::seconds(at);
        deliver_on(&mut self.conn, self.trigger, alerts, now).await
    }

    async fn reasons(&mut self) -> Vec<String> {
        let t = TriggerRow::by_id(&mut self.conn, self.trigger, false)
            .await
            .expect("query")
            .expect("trigger");
        t.recent_events(&mut self.conn)
            .await
            .expect("events")
            .into_iter()
            .map(|e| {
                e.reason
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| e.outcome.to_string())
            })
            .collect()
    }

    async fn captures(&mut self) -> Vec<CaptureRow> {
        packet_captures::table
            .select(CaptureRow::as_select())
            .load(&mut self.conn)
            .await
            .expect("captures")
    }
}

#[tokio::test]
async fn guards_dedupe_and_resolution() {
    let mut w = world(
        json!({"cooldownInSeconds": 600, "maxConcurrentCaptures": 2, "stopWhenResolved": true}),
    )
    .await;
    let (vm1, vm2, vm3, vm4) = (
        vm("rg1", "vm1"),
        vm("rg1", "vm2"),
        vm("rg1", "vm3"),
        vm("rg1", "vm4"),
    );
    let fired = |id: &str, m: &String| alert(id, AlertCondition::Fired, std::slice::from_ref(m));

    let d = w.deliver(&[fired("a", &vm1)], 0).await;
    assert_eq!(d.result.captures_created.len(), 1);
    // The same alert again: nothing, nothing recorded.
    let d = w.deliver(&[fired("a", &vm1)], 1).await;
    assert_eq!(
        (d.result.duplicates, d.result.captures_created.len()),
        (1, 0)
    );
    // Another alert on the same machine while its capture runs.
    w.deliver(&[fired("b", &vm1)], 2).await;
    // A second machine, then the limit of two running captures.
    let d = w.deliver(&[fired("c", &vm2), fired("d", &vm3)], 3).await;
    assert_eq!(d.result.captures_created.len(), 1);
    // Another region, and outside the scopes.
    w.deliver(&[fired("e", &vm4), fired("f", &vm("rg2", "vm1"))], 4)
        .await;
    assert_eq!(
        w.reasons().await,
        [
            "OutsideScope",
            "OtherRegion",
            "ConcurrencyLimit",
            "CaptureCreated",
            "AlreadyCapturing",
            "CaptureCreated"
        ]
    );

    // Resolving "a" stops its capture (it never started: Stopped at once).
    let d = w
        .deliver(
            &[alert(
                "a",
                AlertCondition::Resolved,
                std::slice::from_ref(&vm1),
            )],
            5,
        )
        .await;
    assert_eq!(d.result.captures_stopped.len(), 1);
    let first = w
        .captures()
        .await
        .into_iter()
        .find(|c| c.machine_key == vm1.to_lowercase())
        .expect("vm1's capture");
    assert_eq!(first.status, CaptureStatus::Stopped);
    // The cooldown holds until 600 s after the capture was created, then it is over.
    w.deliver(&[fired("g", &vm1)], 599).await;
    assert_eq!(w.reasons().await[0], "Cooldown");
    let d = w.deliver(&[fired("h", &vm1)], 600).await;
    assert_eq!(
        d.result.captures_created.len(),
        1,
        "{:?}",
        w.reasons().await
    );
    assert_eq!(w.captures().await.len(), 3);
}

/// A repeat of an alert that was skipped checks the guards again (Alertmanager repeats a firing
/// alert every `repeat_interval`): skipped for the cooldown, it captures once the cooldown is
/// over, once; a further repeat is a duplicate.
#[tokio::test]
async fn a_skipped_alert_captures_when_repeated_after_the_cooldown() {
    let mut w = world(json!({"cooldownInSeconds": 600, "stopWhenResolved": true})).await;
    let vm1 = vm("rg1", "vm1");
    let one = std::slice::from_ref(&vm1);
    w.deliver(&[alert("a", AlertCondition::Fired, one)], 0)
        .await;
    w.deliver(&[alert("a", AlertCondition::Resolved, one)], 1)
        .await;
    // Another alert on the machine within the cooldown: skipped; its repeat too.
    let d = w
        .deliver(&[alert("b", AlertCondition::Fired, one)], 100)
        .await;
    assert_eq!((d.result.skipped, d.result.duplicates), (1, 0));
    let d = w
        .deliver(&[alert("b", AlertCondition::Fired, one)], 200)
        .await;
    assert_eq!((d.result.skipped, d.result.duplicates), (1, 0));
    let reasons = w.reasons().await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "Cooldown").count(),
        1,
        "the repeat replaced the first skip: {reasons:?}"
    );
    // Its repeat after the cooldown captures, and the next repeat is a duplicate.
    let d = w
        .deliver(&[alert("b", AlertCondition::Fired, one)], 600)
        .await;
    assert_eq!(
        d.result.captures_created.len(),
        1,
        "{:?}",
        w.reasons().await
    );
    let d = w
        .deliver(&[alert("b", AlertCondition::Fired, one)], 700)
        .await;
    assert_eq!(
        (d.result.duplicates, d.result.captures_created.len()),
        (1, 0)
    );
    assert_eq!(w.captures().await.len(), 2);
    assert_eq!(
        w.reasons().await,
        vec!["CaptureCreated", "CaptureStopped", "CaptureCreated"]
    );
}

/// When every name the trigger would give the capture is taken, that alert is skipped with
/// `CaptureNotCreated` (the delivery is not refused as a whole, which its sender would retry).
#[tokio::test]
async fn an_alert_whose_capture_names_are_all_taken_is_skipped() {
    use capture_api::lifecycle::create::{NewCaptureSpec, create};
    use capture_api::lifecycle::triggers::capture_name;
    let mut w = world(json!({})).await;
    let now = w.t0;
    let watcher: WatcherRow = network_watchers::table
        .select(WatcherRow::as_select())
        .first(&mut w.conn)
        .await
        .expect("watcher");
    for n in 1..=20 {
        let name = capture_name("t1", "vm1", now, n);
        let body = json!({"properties": {"target": vm("rg1", "vm2"),
            "storageLocation": {"filePath": format!("/var/captures/{name}.cap")}}});
        let valid = capture_api::arm::validate::capture_body(&body).expect("valid capture");
        let parameters = serde_json::to_value(&valid.parameters).expect("json");
        let spec = NewCaptureSpec::of(&name, parameters, &valid, None, now, "tester");
        create(&mut w.conn, &watcher, spec, now)
            .await
            .expect("create")
            .expect("created");
    }
    let vm1 = vm("rg1", "vm1");
    let d = w
        .deliver(
            &[alert(
                "a",
                AlertCondition::Fired,
                std::slice::from_ref(&vm1),
            )],
            0,
        )
        .await;
    assert_eq!((d.result.skipped, d.result.captures_created.len()), (1, 0));
    assert_eq!(w.reasons().await, vec!["CaptureNotCreated"]);
    assert_eq!(w.captures().await.len(), 20);
}

#[tokio::test]
async fn concurrent_deliveries_keep_one_capture_per_machine() {
    let w = world(json!({})).await;
    let vm1 = vm("rg1", "vm1");
    let mut conns = vec![];
    for _ in 0..6 {
        conns.push(
            AsyncPgConnection::establish(&w.db.url)
                .await
                .expect("connect"),
        );
    }
    // Six different alerts for one machine at once: the trigger's row lock orders them.
    let alerts: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            alert(
                &format!("x{i}"),
                AlertCondition::Fired,
                std::slice::from_ref(&vm1),
            )
        })
        .collect();
    let runs = conns
        .iter_mut()
        .zip(&alerts)
        .map(|(conn, a)| deliver_on(conn, w.trigger, std::slice::from_ref(a), w.t0));
    let done = futures_util::future::join_all(runs).await;
    let created: usize = done.iter().map(|d| d.result.captures_created.len()).sum();
    assert_eq!(created, 1);
    let skipped: u32 = done.iter().map(|d| d.result.skipped).sum();
    assert_eq!(skipped, 5);
}

#[tokio::test]
async fn resolving_stops_only_when_asked() {
    let mut w = world(json!({"stopWhenResolved": false})).await;
    let vm1 = vm("rg1", "vm1");
    let d = w
        .deliver(
            &[alert(
                "a",
                AlertCondition::Fired,
                std::slice::from_ref(&vm1),
            )],
            0,
        )
        .await;
    assert_eq!(d.result.captures_created.len(), 1);
    let d = w
        .deliver(
            &[alert(
                "a",
                AlertCondition::Resolved,
                std::slice::from_ref(&vm1),
            )],
            1,
        )
        .await;
    assert_eq!((d.result.captures_stopped.len(), d.result.skipped), (0, 1));
    assert_eq!(w.reasons().await[0], "StopNotRequested");
    assert_eq!(w.captures().await[0].status, CaptureStatus::NotStarted);
    // An alert that created nothing resolves with nothing to stop (recorded once).
    let mut w = world(json!({"stopWhenResolved": true})).await;
    for at in [0, 1] {
        w.deliver(
            &[alert(
                "z",
                AlertCondition::Resolved,
                std::slice::from_ref(&vm1),
            )],
            at,
        )
        .await;
    }
    assert_eq!(w.reasons().await, ["NoRunningCapture"]);
}

#[tokio::test]
async fn a_disabled_trigger_records_and_skips() {
    let mut w = world(json!({})).await;
    let t = TriggerRow::by_id(&mut w.conn, w.trigger, false)
        .await
        .expect("query")
        .expect("trigger");
    let mut props = t.properties.clone();
    props["enabled"] = json!(false);
    t.update_properties(&mut w.conn, props, false)
        .await
        .expect("update");
    let vm1 = vm("rg1", "vm1");
    let d = w
        .deliver(
            &[
                alert("a", AlertCondition::Fired, &[vm1]),
                alert("b", AlertCondition::Fired, &[]),
            ],
            0,
        )
        .await;
    assert_eq!(d.result.captures_created.len(), 0);
    assert_eq!(w.reasons().await, ["TriggerDisabled", "TriggerDisabled"]);
}
