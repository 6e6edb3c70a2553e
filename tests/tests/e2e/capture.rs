//! The real agent capturing real packets on `lo` (traffic only within 127.0.0.0/8 and ::1),
//! files read back with an independent pcap reader.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e_tests::pcapfile::{self, PcapFile};
use e2e_tests::real_agent::RealAgent;
use e2e_tests::traffic::{tcp, udp};
use serde_json::{Value, json};

use crate::Ctx;

/// A test world with a real agent for `vm1`, registered.
pub(crate) async fn setup(
    configure: impl FnOnce(&mut e2e_tests::ServerOptions),
) -> (Ctx, RealAgent) {
    let ctx = Ctx::with(configure).await;
    ctx.create_watcher("nw1").await;
    let agent = RealAgent::start(&ctx.server.url, &ctx.vm("vm1"), &[]);
    let vm = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2026-04-01",
        ctx.sub
    );
    ctx.api
        .wait_http_status(&vm, 200, Duration::from_secs(20))
        .await;
    (ctx, agent)
}

/// Creates a capture and waits until the agent runs it; returns its ARM file path.
async fn start_capture(ctx: &Ctx, name: &str, extra: Value) -> String {
    let path = format!("/var/captures/{}/{name}.cap", uuid::Uuid::new_v4().simple());
    let mut props = json!({"target": ctx.vm("vm1"), "storageLocation": {"filePath": path}});
    for (k, v) in extra.as_object().unwrap() {
        props[k] = v.clone();
    }
    let r = ctx
        .api
        .put(&ctx.capture("nw1", name), &json!({"properties": props}))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let op = ctx
        .api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    path
}

async fn stop_capture(ctx: &Ctx, name: &str) -> Value {
    let r = ctx.api.post(&ctx.capture_action("nw1", name, "stop")).await;
    if r.status.as_u16() == 202 {
        ctx.api
            .wait_http_status(&r.header("location").unwrap(), 200, Duration::from_secs(15))
            .await;
    }
    ctx.wait_capture_status("nw1", name, "Stopped").await
}

fn tags(file: &PcapFile) -> BTreeSet<String> {
    file.packets()
        .into_iter()
        .filter(|p| p.proto == 17)
        .map(|p| {
            String::from_utf8_lossy(&p.payload)
                .trim_end_matches('.')
                .to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn filters_capture_exactly_the_matching_packets() {
    let (ctx, agent) = setup(|_| {}).await;
    let captures: Vec<(&str, Value, Vec<&str>)> = vec![
        // local address and port go together, in either direction
        (
            "single",
            json!([{"protocol": "UDP", "localIPAddress": "127.0.0.2", "localPort": "40001"}]),
            vec!["t1", "t2"],
        ),
        // remote side with a port range, protocol Any
        (
            "range",
            json!([{"remoteIPAddress": "127.0.0.3", "remotePort": "50001-50002"}]),
            vec!["t1", "t2", "t3", "t7"],
        ),
        // an address list
        (
            "list",
            json!([{"protocol": "UDP", "localIPAddress": "127.0.0.4;127.0.0.5"}]),
            vec!["t3", "t4"],
        ),
        // an address range that is not a CIDR block
        (
            "iprange",
            json!([{"localIPAddress": "127.0.0.9-127.0.0.10"}]),
            vec!["t5"],
        ),
        // IPv6
        (
            "ipv6",
            json!([{"protocol": "UDP", "localIPAddress": "::1", "localPort": "40005"}]),
            vec!["t6"],
        ),
        // two filters, OR-ed (one of them TCP)
        (
            "two",
            json!([{"protocol": "UDP", "localPort": "40003"}, {"protocol": "TCP", "localPort": "50007"}]),
            vec!["t4"],
        ),
        // local and remote together
        (
            "both",
            json!([{"protocol": "UDP", "localIPAddress": "127.0.0.2", "remoteIPAddress": "127.0.0.3", "remotePort": "50001"}]),
            vec!["t1", "t2", "t7"],
        ),
        // nothing matches
        (
            "none",
            json!([{"protocol": "TCP", "remoteIPAddress": "127.0.0.3"}]),
            vec![],
        ),
    ];
    let mut paths = vec![];
    for (name, filters, _) in &captures {
        paths.push(start_capture(&ctx, name, json!({"filters": filters})).await);
    }
    udp("127.0.0.2:40001", "127.0.0.3:50001", "t1", 64);
    udp("127.0.0.3:50001", "127.0.0.2:40001", "t2", 64);
    udp("127.0.0.4:40002", "127.0.0.3:50002", "t3", 64);
    udp("127.0.0.5:40003", "127.0.0.6:50003", "t4", 64);
    udp("127.0.0.9:40004", "127.0.0.10:50004", "t5", 64);
    udp("[::1]:40005", "[::1]:50005", "t6", 64);
    udp("127.0.0.2:40006", "127.0.0.3:50001", "t7", 64);
    udp("127.0.0.11:40008", "127.0.0.12:50008", "t8", 64);
    tcp("127.0.0.7:50007", "tcp1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for ((name, _, want), path) in captures.iter().zip(&paths) {
        let status = stop_capture(&ctx, name).await;
        assert_eq!(status["stopReason"], "StoppedByUser");
        let file = pcapfile::read(&agent.file(path));
        assert_eq!(file.linktype, 1, "lo is Ethernet");
        assert_eq!(file.trailing, 0, "a partial record in {name}");
        assert_eq!(tags(&file), set(want), "capture {name}");
        let tcp_packets: Vec<_> = file
            .packets()
            .into_iter()
            .filter(|p| p.proto == 6)
            .collect();
        if *name == "two" {
            assert!(
                tcp_packets.len() >= 4,
                "the TCP connection's packets: {tcp_packets:?}"
            );
            assert!(
                tcp_packets
                    .iter()
                    .all(|p| p.src_port == 50007 || p.dst_port == 50007)
            );
            assert!(tcp_packets.iter().any(|p| p.payload == b"tcp1"));
        } else {
            assert!(tcp_packets.is_empty(), "capture {name} has TCP packets");
        }
        assert_eq!(
            status["packetsCaptured"],
            file.records.len(),
            "counters of {name}"
        );
    }
}

#[tokio::test]
async fn snap_length_and_byte_limit_are_exact() {
    let (ctx, agent) = setup(|_| {}).await;
    // Snap length: 60 bytes of each 542-byte frame (14 Ethernet + 20 IPv4 + 8 UDP + 500).
    let snap = start_capture(&ctx, "snap", json!({"bytesToCapturePerPacket": 60, "filters": [{"protocol": "UDP", "localIPAddress": "127.0.1.2"}]})).await;
    // Byte limit: room for 3 frames and 100 bytes more.
    let limit = 542 * 3 + 100;
    let bytes = start_capture(&ctx, "bytes", json!({"totalBytesPerSession": limit, "filters": [{"protocol": "UDP", "localIPAddress": "127.0.1.3"}]})).await;
    for i in 0..3 {
        udp("127.0.1.2:41000", "127.0.1.9:51000", &format!("s{i}"), 500);
    }
    for i in 0..6 {
        udp("127.0.1.3:41001", "127.0.1.9:51001", &format!("b{i}"), 500);
    }
    let s = ctx.wait_capture_status("nw1", "bytes", "Stopped").await;
    assert_eq!(s["stopReason"], "TotalBytesExceeded");
    let file = pcapfile::read(&agent.file(&bytes));
    let total: u64 = file.records.iter().map(|r| r.caplen as u64).sum();
    assert_eq!(file.records.len(), 3);
    assert!(total <= limit && total + 542 > limit, "{total} of {limit}");
    assert_eq!(s["bytesCaptured"], total);
    assert_eq!(file.tags(), vec!["b0", "b1", "b2"]);

    stop_capture(&ctx, "snap").await;
    let file = pcapfile::read(&agent.file(&snap));
    assert_eq!(file.records.len(), 3);
    assert_eq!(file.snaplen, 60);
    assert!(
        file.records
            .iter()
            .all(|r| r.caplen == 60 && r.origlen == 542),
        "{:?}",
        file.records
            .iter()
            .map(|r| (r.caplen, r.origlen))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn time_limit_stops_the_capture() {
    let (ctx, agent) = setup(|_| {}).await;
    let path = start_capture(&ctx, "timed", json!({"timeLimitInSeconds": 2, "filters": [{"protocol": "UDP", "localIPAddress": "127.0.2.2"}]})).await;
    let started = Instant::now();
    udp("127.0.2.2:42000", "127.0.2.9:52000", "x1", 64);
    let s = ctx.wait_capture_status("nw1", "timed", "Stopped").await;
    let elapsed = started.elapsed();
    assert_eq!(s["stopReason"], "TimeExceeded");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    assert_eq!(pcapfile::read(&agent.file(&path)).tags(), vec!["x1"]);
}

#[tokio::test]
async fn killed_agent_leaves_a_readable_file_and_an_agent_stopped_capture() {
    let (ctx, mut agent) = setup(|o| o.agent_lost_seconds = 2).await;
    let path = start_capture(
        &ctx,
        "k",
        json!({"filters": [{"protocol": "UDP", "localIPAddress": "127.0.3.2"}]}),
    )
    .await;
    for i in 0..3 {
        udp("127.0.3.2:43000", "127.0.3.9:53000", &format!("k{i}"), 64);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // one flush interval
    agent.kill();
    let s = ctx.wait_capture_status("nw1", "k", "Error").await;
    assert_eq!(s["packetCaptureError"], json!(["AgentStopped"]));
    assert_eq!(s["stopReason"], "AgentStopped");
    let file = pcapfile::read(&agent.file(&path));
    assert_eq!(file.tags(), vec!["k0", "k1", "k2"]);
}

#[tokio::test]
async fn capture_survives_a_server_restart_and_stops_after_it() {
    let (mut ctx, agent) = setup(|_| {}).await;
    let path = start_capture(
        &ctx,
        "r",
        json!({"filters": [{"protocol": "UDP", "localIPAddress": "127.0.4.2"}]}),
    )
    .await;
    udp("127.0.4.2:44000", "127.0.4.9:54000", "before", 64);
    ctx.server.restart_same_address().await;
    udp("127.0.4.2:44000", "127.0.4.9:54000", "during", 64);
    let s = ctx
        .api
        .post(&ctx.capture_action("nw1", "r", "queryStatus"))
        .await;
    assert_eq!(s.body["packetCaptureStatus"], "Running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    udp("127.0.4.2:44000", "127.0.4.9:54000", "after", 64);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = stop_capture(&ctx, "r").await;
    assert_eq!(s["stopReason"], "StoppedByUser");
    assert_eq!(
        pcapfile::read(&agent.file(&path)).tags(),
        vec!["before", "during", "after"]
    );
}

#[tokio::test]
async fn agent_shuts_down_cleanly_on_sigterm() {
    let (ctx, mut agent) = setup(|_| {}).await;
    let path = start_capture(
        &ctx,
        "t",
        json!({"filters": [{"protocol": "UDP", "localIPAddress": "127.0.5.2"}]}),
    )
    .await;
    udp("127.0.5.2:45000", "127.0.5.9:55000", "t0", 64);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(agent.terminate(), "clean exit");
    let s = ctx.wait_capture_status("nw1", "t", "Stopped").await;
    assert_eq!(s["stopReason"], "AgentStopped");
    let file = pcapfile::read(&agent.file(&path));
    assert_eq!((file.tags(), file.trailing), (vec!["t0".to_string()], 0));
}

#[tokio::test]
async fn capture_errors_are_reported_with_their_codes() {
    // An interface that does not exist: CaptureFailed, and the create operation fails with it.
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let _agent = RealAgent::start(
        &ctx.server.url,
        &ctx.vm("vm1"),
        &["--interface", "nosuchif0"],
    );
    let vm = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2026-04-01",
        ctx.sub
    );
    ctx.api
        .wait_http_status(&vm, 200, Duration::from_secs(20))
        .await;
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "bad"), &ctx.capture_body("vm1"))
        .await;
    let op = ctx
        .api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(op["status"], "Failed");
    assert_eq!(op["error"]["code"], "CaptureFailed");
    assert!(
        op["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchif0"),
        "{op}"
    );
    let s = ctx
        .api
        .post(&ctx.capture_action("nw1", "bad", "queryStatus"))
        .await;
    assert_eq!(s.body["packetCaptureStatus"], "Error");
    assert_eq!(s.body["packetCaptureError"], json!(["CaptureFailed"]));
}

#[tokio::test]
async fn a_full_disk_ends_the_capture_with_local_file_failed() {
    if !e2e_tests::is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let (ctx, agent) = setup(|_| {}).await;
    let small = agent.captures_root.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let path = "/var/captures/small/full.cap";
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "full"), &json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": {"filePath": path}, "filters": [{"protocol": "UDP", "localIPAddress": "127.0.6.2"}]}}))
        .await;
    ctx.api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(20),
        )
        .await;
    for i in 0..100 {
        udp("127.0.6.2:46000", "127.0.6.9:56000", &format!("f{i}"), 1400);
    }
    let s = ctx.wait_capture_status("nw1", "full", "Error").await;
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(s["packetCaptureError"], json!(["LocalFileFailed"]), "{s}");
    assert!(
        s["errorMessage"].as_str().unwrap().contains("full.cap"),
        "{s}"
    );
}

#[tokio::test]
async fn restarted_agent_ends_what_it_was_running_and_keeps_the_file() {
    // A long lost-agent bound: the restart itself, not the silence, ends the capture.
    let (ctx, mut agent) = setup(|o| o.agent_lost_seconds = 300).await;
    let path = start_capture(
        &ctx,
        "rs",
        json!({"filters": [{"protocol": "UDP", "localIPAddress": "127.0.8.2"}]}),
    )
    .await;
    udp("127.0.8.2:48000", "127.0.8.9:58000", "r0", 64);
    tokio::time::sleep(Duration::from_millis(1500)).await; // one flush interval
    agent.restart();
    let s = ctx.wait_capture_status("nw1", "rs", "Error").await;
    assert_eq!(s["packetCaptureError"], json!(["AgentStopped"]));
    assert_eq!(s["stopReason"], "AgentStopped");
    assert_eq!(pcapfile::read(&agent.file(&path)).tags(), vec!["r0"]);
    // The restarted agent works: a new capture runs.
    start_capture(
        &ctx,
        "rs2",
        json!({"filters": [{"protocol": "UDP", "localIPAddress": "127.0.8.3"}]}),
    )
    .await;
}

#[tokio::test]
async fn a_stop_keeps_every_packet_captured_before_it() {
    let (ctx, mut agent) = setup(|_| {}).await;
    let path = start_capture(
        &ctx,
        "drain",
        json!({"filters": [{"protocol": "UDP", "localIPAddress": "127.0.8.5"}]}),
    )
    .await;
    // Sent, then the agent is told to stop (SIGTERM) at once: what the kernel captured before
    // the stop is written all the same (the capture reads the ring on for a moment).
    for i in 0..20 {
        udp("127.0.8.5:48005", "127.0.8.9:58005", &format!("d{i}"), 64);
    }
    assert!(agent.terminate(), "the agent did not exit cleanly");
    let want: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
    assert_eq!(pcapfile::read(&agent.file(&path)).tags(), want);
    let s = ctx.wait_capture_status("nw1", "drain", "Stopped").await;
    assert_eq!(s["stopReason"], "AgentStopped", "{s}");
    assert_eq!(s["packetsCaptured"], 20, "{s}");
}
