//! Benchmark clients that need the agent protocol (`scripts/bench` runs them):
//!
//! - `capture-bench latency --url URL --count N`: time from a PUT's 201 to a long-polling agent
//!   receiving the assignment, one capture at a time.
//! - `capture-bench agents --url URL --count N --seconds S`: N agents long-polling at once.
//! - `capture-bench upload-sas --url URL --vm ID`: registers the machine as an agent and prints
//!   the upload SAS URL of its first assigned capture (the baseline of the upload benchmark).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_protocol::{DesiredState, StopReason};
use e2e_tests::{Api, ScriptedAgent};
use serde_json::json;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url", "http://127.0.0.1:8480");
    let count: usize = arg(&args, "--count", "1000").parse().unwrap();
    match args.get(1).map(String::as_str) {
        Some("latency") => latency(&url, count).await,
        Some("udpgen") => {
            let to = arg(&args, "--to", "127.0.0.1:47000");
            let rate: u64 = arg(&args, "--rate", "100000").parse().unwrap();
            let size: usize = arg(&args, "--size", "64").parse().unwrap();
            let threads: u64 = arg(&args, "--threads", "1").parse().unwrap();
            let started = Instant::now();
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let to = to.clone();
                    std::thread::spawn(move || {
                        udpgen(&to, rate / threads, count as u64 / threads, size)
                    })
                })
                .collect();
            let sent: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let secs = started.elapsed().as_secs_f64();
            println!("sent {sent} in {secs:.3} s ({:.0}/s)", sent as f64 / secs);
        }
        Some("upload-sas") => {
            let vm = arg(&args, "--vm", "");
            let agent = ScriptedAgent::register(&url, &vm, "eastus").await;
            let a = agent.poll(None, Duration::from_secs(5)).await;
            let sas = a
                .captures
                .iter()
                .find_map(|c| c.upload.as_ref())
                .expect("a capture with a storage account assigned to the machine");
            println!("{}", sas.blob_url);
        }
        Some("startlat") => {
            let root = arg(&args, "--captures-root", "/var/captures");
            let vm = arg(&args, "--vm", "");
            startlat(&url, &vm, &root, count).await
        }
        Some("agents") => {
            let seconds: u64 = arg(&args, "--seconds", "30").parse().unwrap();
            agents(&url, count, seconds).await
        }
        _ => eprintln!(
            "usage: capture-bench latency|agents|startlat --url URL --count N [--seconds S] [--vm ID --captures-root DIR]\n       capture-bench udpgen --to ADDR --rate PPS --count N --size BYTES"
        ),
    }
}

async fn latency(url: &str, count: usize) {
    let api = Api::new(url);
    let sub = e2e_tests::new_subscription();
    let nw = format!(
        "/subscriptions/{sub}/resourceGroups/bench/providers/Microsoft.Network/networkWatchers/nw"
    );
    let r = api
        .put(
            &format!("{nw}?api-version=2026-03-01"),
            &json!({"location": "eastus"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let vm = e2e_tests::vm_id(&sub, "bench", "vm");
    let agent = Arc::new(ScriptedAgent::register(url, &vm, "eastus").await);
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    {
        let (agent, received, notify) = (agent.clone(), received.clone(), notify.clone());
        tokio::spawn(async move {
            let mut since = None;
            loop {
                let a = agent.poll(since, Duration::from_secs(10)).await;
                let now = Instant::now();
                since = Some(a.generation);
                let mut fresh = vec![];
                {
                    let mut map = received.lock().unwrap();
                    for c in &a.captures {
                        if c.desired == DesiredState::Running && !map.contains_key(&c.resource_id) {
                            map.insert(c.resource_id.clone(), now);
                            fresh.push(c.capture_id);
                        }
                    }
                }
                notify.notify_waiters();
                // Finish them so the assignment list stays short.
                for id in fresh {
                    agent.report_stopped(id, StopReason::StoppedByUser, 0).await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = json!({"properties": {"target": vm, "storageLocation": {"filePath": "/var/captures/b.cap"}}});
    let mut from_201 = vec![];
    let mut from_send = vec![];
    for i in 0..count {
        let path = format!("{nw}/packetCaptures/lat{i}?api-version=2026-03-01");
        let sent = Instant::now();
        let r = api.put(&path, &body).await;
        let got_201 = Instant::now();
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        let id = r.body["id"].as_str().unwrap().to_string();
        let recv = loop {
            let waiter = notify.notified();
            if let Some(t) = received.lock().unwrap().get(&id) {
                break *t;
            }
            if tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .is_err()
            {
                panic!("assignment {id} never arrived");
            }
        };
        from_201.push(recv.saturating_duration_since(got_201).as_secs_f64() * 1000.0);
        from_send.push(recv.saturating_duration_since(sent).as_secs_f64() * 1000.0);
    }
    for v in [&mut from_201, &mut from_send] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    println!(
        "change-to-agent over {count} captures: from 201 p50 {:.2} ms p99 {:.2} ms max {:.2} ms; from PUT sent p50 {:.2} ms p99 {:.2} ms",
        percentile(&from_201, 50.0),
        percentile(&from_201, 99.0),
        percentile(&from_201, 100.0),
        percentile(&from_send, 50.0),
        percentile(&from_send, 99.0),
    );
}

async fn agents(url: &str, count: usize, seconds: u64) {
    let sub = e2e_tests::new_subscription();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(count + 10)
        .build()
        .unwrap();
    let mut handles = vec![];
    for i in 0..count {
        let vm = e2e_tests::vm_id(&sub, "bench", &format!("vm{i}"));
        let agent = ScriptedAgent::register_with(url, &vm, "eastus", http.clone()).await;
        handles.push(tokio::spawn(async move {
            let mut since = None;
            loop {
                match agent
                    .client
                    .poll(agent.agent_id, since, Duration::from_secs(25))
                    .await
                {
                    Ok(a) => since = Some(a.generation),
                    Err(e) => {
                        eprintln!("poll failed: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }));
    }
    println!("{count} agents registered and long-polling");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for h in handles {
        h.abort();
    }
}

/// Sends `count` UDP datagrams of `size` bytes to `to` at `rate` per second (paced), from one
/// socket; returns how many it sent.
fn udpgen(to: &str, rate: u64, count: u64, size: usize) -> u64 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(to).unwrap();
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    while sent < count {
        // Packets due by now.
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(count);
        while sent < due {
            match socket.send(&payload) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        if sent < count {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    if errors > 0 {
        eprintln!("{errors} send errors");
    }
    sent
}

/// Start latency: from sending a capture's PUT to the first packet in its file, with a sender
/// putting a packet on `lo` every 100 microseconds.
async fn startlat(url: &str, vm: &str, root: &str, count: usize) {
    let api = Api::new(url);
    let sub = vm.split('/').nth(2).unwrap().to_string();
    let nw = format!(
        "/subscriptions/{sub}/resourceGroups/bench/providers/Microsoft.Network/networkWatchers/startlat"
    );
    let _ = api
        .put(
            &format!("{nw}?api-version=2026-03-01"),
            &json!({"location": "westus"}),
        )
        .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.7.2:47000").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.send_to(b"tick", "127.0.7.9:57000");
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut to_first_packet = vec![];
    let mut to_running = vec![];
    for i in 0..count {
        let name = format!("s{i}");
        let arm = format!("/var/captures/startlat-{run}/{name}.cap");
        let body = json!({"properties": {"target": vm, "storageLocation": {"filePath": arm},
            "filters": [{"protocol": "UDP", "localIPAddress": "127.0.7.2"}]}});
        let t0 = std::time::SystemTime::now();
        let r = api
            .put(
                &format!("{nw}/packetCaptures/{name}?api-version=2026-03-01"),
                &body,
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        let op = api
            .wait_operation(
                &r.header("azure-asyncoperation").unwrap(),
                Duration::from_secs(20),
            )
            .await;
        assert_eq!(op["status"], "Succeeded", "{op}");
        to_running.push(t0.elapsed().unwrap().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = api
            .post(&format!(
                "{nw}/packetCaptures/{name}/stop?api-version=2026-03-01"
            ))
            .await;
        if let Some(loc) = s.header("location") {
            api.wait_http_status(&loc, 200, Duration::from_secs(20))
                .await;
        }
        let file = e2e_tests::pcapfile::read(
            &std::path::Path::new(root).join(arm.trim_start_matches("/var/captures/")),
        );
        let first = file.records.first().expect("a packet");
        let latency = file.time(first).duration_since(t0).unwrap_or_default();
        to_first_packet.push(latency.as_secs_f64() * 1000.0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    for v in [&mut to_first_packet, &mut to_running] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    println!(
        "start latency over {count} captures: PUT sent to first packet in the file p50 {:.2} ms p99 {:.2} ms; PUT sent to create operation Succeeded (seen by polling) p50 {:.2} ms p99 {:.2} ms",
        percentile(&to_first_packet, 50.0),
        percentile(&to_first_packet, 99.0),
        percentile(&to_running, 50.0),
        percentile(&to_running, 99.0),
    );
}
