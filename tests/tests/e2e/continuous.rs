//! Continuous captures on `lo`: a ring of files, the stop after the last file, the files in GET
//! and queryStatus, downloads of one file and of all files merged, uploads of each file to a real
//! Azurite with the ring deleting old blobs, and an agent restart in the middle of a ring.
//!
//! Records here: UDP datagrams of 500 bytes (542-byte frames on `lo`, 558 bytes with the record
//! header), so a file of 1,200 bytes holds exactly two (24 + 2 × 558 = 1,140).

use std::time::Duration;

use e2e_tests::pcapfile::{self, PcapFile};
use e2e_tests::real_agent::RealAgent;
use e2e_tests::traffic::udp;
use serde_json::{Value, json};

use super::storage::{self, World};
use crate::Ctx;

const FILE_SIZE: u64 = 1200;

async fn setup() -> (Ctx, RealAgent) {
    super::capture::setup(|_| {}).await
}

/// The body of a continuous capture of UDP from `ip`.
fn body(ctx: &Ctx, ring: bool, file_count: u32, ip: &str, storage: Value) -> Value {
    json!({"properties": {
        "target": ctx.vm("vm1"),
        "continuousCapture": ring,
        "captureSettings": {"fileCount": file_count, "fileSizeInBytes": FILE_SIZE, "sessionTimeLimitInSeconds": 600},
        "bytesToCapturePerPacket": 600,
        "storageLocation": storage,
        "filters": [{"protocol": "UDP", "localIPAddress": ip}],
    }})
}

async fn create(ctx: &Ctx, name: &str, body: &Value) -> Value {
    ctx.create_capture(name, body).await
}

/// Sends the tagged datagrams `{prefix}{i}` from `ip`, one after the other.
fn send(ip: &str, prefix: &str, range: std::ops::Range<u32>) {
    for i in range {
        udp(
            &format!("{ip}:40000"),
            "127.0.9.9:50000",
            &format!("{prefix}{i}"),
            500,
        );
    }
}

async fn stop(ctx: &Ctx, name: &str) -> Value {
    storage::stop(ctx, name).await;
    ctx.wait_capture_status("nw1", name, "Stopped").await
}

fn indices(files: &Value) -> Vec<u64> {
    files
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .collect()
}

/// The datagram tags of pcap bytes, in file order.
fn tags_in(bytes: &[u8]) -> Vec<String> {
    let path = e2e_tests::scratch().join(format!("merged-{}.cap", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, bytes).unwrap();
    let tags = pcapfile::read(&path).tags();
    std::fs::remove_file(&path).unwrap();
    tags
}

fn expected(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// The capture's files, or one of them, through `download` with `Accept: application/octet-stream`.
async fn download_bytes(ctx: &Ctx, name: &str, file: Option<u32>) -> (u16, Vec<u8>) {
    let mut url = format!(
        "{}{}",
        ctx.server.url,
        ctx.capture_action("nw1", name, "download")
    );
    if let Some(i) = file {
        url.push_str(&format!("&fileIndex={i}"));
    }
    let r = e2e_tests::credentials::authorized(reqwest::Client::new().post(&url), &url)
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_ring_keeps_the_newest_files_and_every_packet_exactly_once() {
    let (ctx, agent) = setup().await;
    let base = format!("/var/captures/{}/ring.cap", uuid::Uuid::new_v4().simple());
    let created = create(
        &ctx,
        "ring",
        &body(&ctx, true, 3, "127.0.5.2", json!({"localPath": base})),
    )
    .await;
    assert_eq!(created["properties"]["continuousCapture"], true);
    // 14 datagrams: 7 files of 2 (6 rotations); the ring keeps files 5, 6 and 7.
    send("127.0.5.2", "r", 0..14);
    let s = storage::wait_status(&ctx, "ring", Duration::from_secs(15), |s| {
        s["packetsCaptured"] == 14 && indices(&s["continuousCaptureFiles"]) == [5, 6, 7]
    })
    .await;
    assert_eq!(s["packetCaptureStatus"], "Running", "{s}");
    let files = s["continuousCaptureFiles"].as_array().unwrap();
    assert_eq!(files[0]["state"], "Complete", "{s}");
    assert_eq!(files[0]["localPath"], base.replace(".cap", "_00005.cap"));
    assert_eq!(files[0]["packets"], 2);
    assert_eq!(files[0]["sizeInBytes"], 24 + 2 * 558);
    assert!(files[0]["firstPacketTime"].is_string() && files[0]["lastPacketTime"].is_string());
    // The same list in GET.
    let got = ctx.api.get(&ctx.capture("nw1", "ring")).await.body;
    assert_eq!(
        indices(&got["properties"]["continuousCaptureFiles"]),
        [5, 6, 7]
    );

    let s = stop(&ctx, "ring").await;
    assert_eq!(s["stopReason"], "StoppedByUser");
    // On the machine: exactly the newest three, each a valid pcap of at most 1,200 bytes.
    let dir = agent.file(&base).parent().unwrap().to_path_buf();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ring_00005.cap", "ring_00006.cap", "ring_00007.cap"]
    );
    let mut all = vec![];
    for n in &names {
        let file: PcapFile = pcapfile::read(&dir.join(n));
        assert!(std::fs::metadata(dir.join(n)).unwrap().len() <= FILE_SIZE);
        assert_eq!(file.records.len(), 2, "{n}");
        all.extend(file.tags());
    }
    assert_eq!(all, expected("r", 8..14));
    // Downloads: all kept files merged in order, or one of them.
    let (code, merged) = download_bytes(&ctx, "ring", None).await;
    assert_eq!(code, 200);
    assert_eq!(tags_in(&merged), expected("r", 8..14));
    let (code, one) = download_bytes(&ctx, "ring", Some(6)).await;
    assert_eq!(code, 200);
    assert_eq!(tags_in(&one), expected("r", 10..12));
    let (code, gone) = download_bytes(&ctx, "ring", Some(2)).await;
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&gone));
    assert!(String::from_utf8_lossy(&gone).contains("keeps files 5 to 7"));
}

#[tokio::test]
async fn without_a_ring_the_capture_stops_when_its_last_file_is_full() {
    let (ctx, agent) = setup().await;
    let base = format!("/var/captures/{}/once.cap", uuid::Uuid::new_v4().simple());
    create(
        &ctx,
        "once",
        &body(&ctx, false, 3, "127.0.5.3", json!({"localPath": base})),
    )
    .await;
    send("127.0.5.3", "o", 0..8);
    let s = ctx.wait_capture_status("nw1", "once", "Stopped").await;
    assert_eq!(s["stopReason"], "FileCountReached", "{s}");
    assert_eq!(s["packetsCaptured"], 6, "{s}");
    let (started, stopped) = (
        s["captureStartTime"].as_str().unwrap(),
        s["captureStopTime"].as_str().unwrap(),
    );
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    assert!(at(stopped) >= at(started), "{s}");
    assert_eq!(indices(&s["continuousCaptureFiles"]), [1, 2, 3]);
    let mut all = vec![];
    for i in 1..=3 {
        let f = pcapfile::read(&agent.file(&base.replace(".cap", &format!("_{i:05}.cap"))));
        all.extend(f.tags());
    }
    assert_eq!(all, expected("o", 0..6));
}

#[tokio::test]
async fn continuous_settings_are_checked_and_their_defaults_shown() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let vm = ctx.vm("vm1");
    let put = |props: Value| {
        let url = ctx.capture("nw1", "bad");
        let api = &ctx.api;
        async move { api.put(&url, &json!({"properties": props})).await }
    };
    let local = json!({"localPath": "/var/captures/a.cap"});
    for (props, target, words) in [
        (
            json!({"target": vm, "storageLocation": {"filePath": "/var/captures/a.cap"}, "captureSettings": {"fileCount": 2}}),
            "properties.captureSettings",
            "continuousCapture",
        ),
        (
            json!({"target": vm, "continuousCapture": true, "storageLocation": local, "captureSettings": {"fileCount": 0}}),
            "properties.captureSettings.fileCount",
            "between 1 and 10000",
        ),
        (
            json!({"target": vm, "continuousCapture": true, "storageLocation": local, "captureSettings": {"fileSizeInBytes": 1000}}),
            "properties.captureSettings.fileSizeInBytes",
            "at least 262184",
        ),
        (
            json!({"target": vm, "continuousCapture": false, "storageLocation": local, "timeLimitInSeconds": 600, "captureSettings": {"sessionTimeLimitInSeconds": 3600}}),
            "properties.timeLimitInSeconds",
            "sessionTimeLimitInSeconds",
        ),
        (
            json!({"target": vm, "continuousCapture": true, "storageLocation": local, "totalBytesPerSession": 5000000}),
            "properties.totalBytesPerSession",
            "does not stop on bytes",
        ),
        (
            json!({"target": vm, "continuousCapture": true, "storageLocation": {"filePath": "/var/captures/a.cap"}}),
            "properties.storageLocation.filePath",
            "localPath",
        ),
    ] {
        let r = put(props).await;
        let e = r.assert_error(400, "InvalidParameter");
        assert_eq!(e["target"], target, "{}", r.text);
        assert!(e["message"].as_str().unwrap().contains(words), "{}", r.text);
    }
    // Continuous capture came with api-version 2023-11-01.
    let old = ctx
        .capture("nw1", "old")
        .replace("api-version=2026-03-01", "api-version=2023-09-01");
    assert!(old.contains("2023-09-01"), "{old}");
    let r = ctx
        .api
        .put(
            &old,
            &json!({"properties": {"target": vm, "continuousCapture": true, "storageLocation": local}}),
        )
        .await;
    let e = r.assert_error(400, "InvalidParameter");
    assert_eq!(e["target"], "properties.continuousCapture", "{}", r.text);
    assert!(
        e["message"].as_str().unwrap().contains("2023-11-01"),
        "{}",
        r.text
    );
    // Accepted with their defaults shown; the SDKs' default time limit (18000) and byte limit
    // are not contradictions.
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "good"),
            &json!({"properties": {"target": vm, "continuousCapture": true, "storageLocation": local, "timeLimitInSeconds": 18000, "totalBytesPerSession": 1073741824}}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    assert_eq!(
        r.body["properties"]["captureSettings"],
        json!({"fileCount": 10, "fileSizeInBytes": 104857600, "sessionTimeLimitInSeconds": 86400})
    );
}

#[tokio::test]
async fn a_ring_uploads_each_file_and_deletes_the_blobs_that_leave_it() {
    let azurite = e2e_tests::azurite::Azurite::start_for_cli();
    let w: World = storage::setup_on(azurite, &[], |_| {}).await;
    let created = create(
        &w.ctx,
        "ring",
        &body(
            &w.ctx,
            true,
            2,
            "127.0.5.4",
            json!({"storageId": w.account}),
        ),
    )
    .await;
    let storage_path = created["properties"]["storageLocation"]["storagePath"]
        .as_str()
        .unwrap()
        .to_string();
    // 10 datagrams: 5 files; the ring keeps files 4 and 5. Each file is seen uploaded before
    // the ring drops it (a file is finished when the next one's first datagram comes).
    send("127.0.5.4", "u", 0..2);
    for file in 1..5u32 {
        send("127.0.5.4", "u", file * 2..file * 2 + 2);
        storage::wait_status(&w.ctx, "ring", Duration::from_secs(20), |s| {
            s["continuousCaptureFiles"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|f| f["index"] == file && f["state"] == "Uploaded")
            })
        })
        .await;
    }
    storage::wait_status(&w.ctx, "ring", Duration::from_secs(20), |s| {
        s["packetsCaptured"] == 10 && indices(&s["continuousCaptureFiles"]) == [4, 5]
    })
    .await;
    storage::stop(&w.ctx, "ring").await;
    let s = storage::wait_status(&w.ctx, "ring", Duration::from_secs(30), |s| {
        s["packetCaptureStatus"] == "Stopped"
            && s["continuousCaptureFiles"]
                .as_array()
                .is_some_and(|f| f.iter().all(|f| f["state"] == "Uploaded"))
    })
    .await;
    let files = s["continuousCaptureFiles"].as_array().unwrap();
    assert_eq!(
        files[1]["blobUrl"],
        storage_path.replace(".cap", "_00005.cap"),
        "{s}"
    );
    // In the storage account: exactly the two kept files' blobs (the server deleted the others
    // with its own credentials as they left the ring).
    let container = "network-watcher-logs";
    let prefix = storage_path
        .split_once(&format!("/{container}/"))
        .unwrap()
        .1
        .trim_end_matches(".cap")
        .to_string();
    let blobs: Vec<String> = w
        .azurite
        .list_blobs(container)
        .into_iter()
        .filter(|b| b.starts_with(&prefix))
        .collect();
    assert_eq!(
        blobs,
        [format!("{prefix}_00004.cap"), format!("{prefix}_00005.cap")]
    );
    // Nothing left in the agent's spool; the download merges the two blobs.
    assert!(storage::spool_files(&w.agent).is_empty());
    let (code, merged) = download_bytes(&w.ctx, "ring", None).await;
    assert_eq!(code, 200);
    assert_eq!(tags_in(&merged), expected("u", 6..10));
    let answer = storage::download(&w, "ring").await;
    assert_eq!(answer["source"], "StorageAccount", "{answer}");
    // One file: a read-only SAS URL of its blob.
    let url = format!(
        "{}&fileIndex=4",
        w.ctx.capture_action("nw1", "ring", "download")
    );
    let one = w.ctx.api.post(&url).await;
    assert_eq!(one.status.as_u16(), 200, "{}", one.text);
    let (code, bytes) = storage::fetch(one.body["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(code, 200);
    assert_eq!(tags_in(&bytes), expected("u", 6..8));
}

#[tokio::test]
async fn an_agent_restart_in_a_ring_keeps_and_uploads_the_finished_files() {
    let mut w: World = storage::setup(&[], |_| {}).await;
    let base = format!("/var/captures/{}/kept.cap", uuid::Uuid::new_v4().simple());
    create(
        &w.ctx,
        "ring",
        &body(
            &w.ctx,
            true,
            10,
            "127.0.5.5",
            json!({"storageId": w.account, "localPath": base}),
        ),
    )
    .await;
    // Storage is down: finished files wait for their upload.
    w.azurite.stop();
    send("127.0.5.5", "k", 0..7);
    storage::wait_status(&w.ctx, "ring", Duration::from_secs(15), |s| {
        s["packetsCaptured"] == 7
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // one flush interval
    w.agent.kill();
    w.azurite.restart();
    w.agent.restart();
    let s = storage::wait_status(&w.ctx, "ring", Duration::from_secs(40), |s| {
        s["continuousCaptureFiles"]
            .as_array()
            .is_some_and(|f| f.len() == 4 && f.iter().all(|f| f["state"] == "Uploaded"))
    })
    .await;
    assert_eq!(s["packetCaptureStatus"], "Error", "{s}");
    assert_eq!(s["packetCaptureError"], json!(["AgentStopped"]), "{s}");
    // Every finished file is a valid pcap, on the machine and in storage, with every packet once.
    let mut all = vec![];
    for i in 1..=4 {
        let f = pcapfile::read(&w.agent.file(&base.replace(".cap", &format!("_{i:05}.cap"))));
        all.extend(f.tags());
    }
    assert_eq!(all, expected("k", 0..7));
    let (code, merged) = download_bytes(&w.ctx, "ring", None).await;
    assert_eq!(code, 200);
    assert_eq!(tags_in(&merged), expected("k", 0..7));
}
