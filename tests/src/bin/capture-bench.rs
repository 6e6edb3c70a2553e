//! Benchmark clients that need the agent protocol (`scripts/bench` runs them):
//!
//! - `capture-bench latency --url URL --count N`: time from a PUT's 201 to a long-polling agent
//!   receiving the assignment, one capture at a time.
//! - `capture-bench agents --url URL --count N --seconds S`: N agents long-polling at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_client::{DesiredState, StopReason};
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
        Some("agents") => {
            let seconds: u64 = arg(&args, "--seconds", "30").parse().unwrap();
            agents(&url, count, seconds).await
        }
        _ => eprintln!("usage: capture-bench latency|agents --url URL --count N [--seconds S]"),
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
