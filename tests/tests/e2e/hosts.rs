//! Real captures of real Ethernet traffic between hosts: a fleet of network-namespace machines
//! (`e2e_tests::netns`) on a bridge of their own, the real server on 127.0.0.1, and one real
//! agent per capturing machine on that machine's host-side interface. Root only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use e2e_tests::netns::{self, ACK, FIN, Family, Fleet, Frame, Machine, SYN};
use e2e_tests::pcapfile;
use e2e_tests::real_agent::RealAgent;
use serde_json::{Value, json};

use crate::Ctx;

/// One test's world: a server, a fleet, and agents on some of its machines. The agents stop
/// before the fleet's links go, and the fleet is removed before the server stops.
pub struct Hosts {
    pub agents: BTreeMap<String, RealAgent>,
    pub fleet: Fleet,
    pub ctx: Ctx,
}

impl Hosts {
    /// A fleet of `machines`, a watcher `nw1`, and a registered agent (machine id
    /// `ctx.vm(name)`) capturing on the host-side interface of each of `agents_on`. `None` (the
    /// test is skipped) when not root: namespaces, veths and bridges need it.
    pub async fn new(machines: &[&str], agents_on: &[&str]) -> Option<Hosts> {
        Self::with(machines, agents_on, |_| {}).await
    }

    /// [`Hosts::new`] with server options of the test's own.
    pub async fn with(
        machines: &[&str],
        agents_on: &[&str],
        configure: impl FnOnce(&mut e2e_tests::ServerOptions),
    ) -> Option<Hosts> {
        if !e2e_tests::is_root() {
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let ctx = Ctx::with(configure).await;
        ctx.create_watcher("nw1").await;
        let fleet = Fleet::new(machines);
        let mut agents = BTreeMap::new();
        for name in agents_on {
            let m = fleet.machine(name);
            let agent =
                RealAgent::start(&ctx.server.url, &ctx.vm(name), &["--interface", &m.host_if]);
            agents.insert(name.to_string(), agent);
        }
        for name in agents_on {
            let vm = format!(
                "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}?api-version=2026-04-01",
                ctx.sub
            );
            ctx.api
                .wait_http_status(&vm, 200, Duration::from_secs(20))
                .await;
        }
        Some(Hosts { agents, fleet, ctx })
    }

    pub fn vm(&self, name: &str) -> &Machine {
        self.fleet.machine(name)
    }

    pub fn agent(&self, vm: &str) -> &RealAgent {
        self.agents
            .get(vm)
            .unwrap_or_else(|| panic!("no agent on {vm}"))
    }

    /// Creates capture `name` on machine `vm` (in `nw1`) with these extra properties
    /// (`filters`...), waits until its agent runs it, and answers its ARM file path.
    pub async fn start_capture(&self, vm: &str, name: &str, extra: Value) -> String {
        let path = format!("/var/captures/{}/{name}.cap", uuid::Uuid::new_v4().simple());
        let mut props = json!({"target": self.ctx.vm(vm), "storageLocation": {"filePath": path}});
        for (k, v) in extra.as_object().expect("properties") {
            props[k] = v.clone();
        }
        self.ctx
            .create_capture(name, &json!({"properties": props}))
            .await;
        path
    }

    /// Stops capture `name` and waits until it is `Stopped`; answers its status.
    pub async fn stop_capture(&self, name: &str) -> Value {
        let ctx = &self.ctx;
        let r = ctx.api.post(&ctx.capture_action("nw1", name, "stop")).await;
        if r.status.as_u16() == 202 {
            ctx.api
                .wait_http_status(
                    &r.header("location").expect("location"),
                    200,
                    Duration::from_secs(15),
                )
                .await;
        }
        let s = ctx.wait_capture_status("nw1", name, "Stopped").await;
        assert_eq!(s["stopReason"], "StoppedByUser", "{s}");
        s
    }

    /// The frames of the capture file at ARM path `path` on machine `vm`.
    pub fn frames(&self, vm: &str, path: &str) -> Vec<Frame> {
        let file = pcapfile::read(&self.agent(vm).file(path));
        assert_eq!(file.trailing, 0, "a partial record in {path}");
        netns::frames(&file)
    }

    /// Waits until the capture file at `path` on `vm` holds frames with all of `tags` (the agent
    /// flushes its file every second), then a little longer, so that every frame the agent's
    /// socket took before the last of them is written too: after this, a stop loses nothing that
    /// was sent before.
    pub async fn wait_for_tags(&self, vm: &str, path: &str, tags: &[&str]) {
        let file = self.agent(vm).file(path);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // The header is written at the first flush.
            if std::fs::metadata(&file).is_ok_and(|m| m.len() >= 24) {
                let f = pcapfile::read(&file);
                let have = tags_of(&netns::frames(&f));
                if tags.iter().all(|t| have.contains(*t)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{path} on {vm} never held {tags:?}; it holds {have:?}"
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "{path} on {vm} was never written"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A block of the kernel's ring is handed over within 50 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The payload texts of the frames (UDP datagrams, TCP data segments).
pub fn tags_of(frames: &[Frame]) -> BTreeSet<String> {
    frames.iter().filter_map(Frame::tag).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Every frame was sent or received by `m` (its MAC is the source or the destination).
fn assert_own(frames: &[Frame], m: &Machine, what: &str) {
    for f in frames {
        assert!(
            f.src_mac == m.mac || f.dst_mac == m.mac,
            "{what}: a frame of {} neither from nor to {} ({}): {f:?}",
            m.host_if,
            m.name,
            netns::mac_string(&m.mac)
        );
    }
}

/// The frames hold a whole TCP connection from `client` to `server`: the handshake, the data
/// `tag` and its reply `<tag>-reply`, and a FIN each way.
fn assert_tcp_connection(
    frames: &[Frame],
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    tag: &str,
    what: &str,
) {
    let from = |f: &Frame, a: (IpAddr, u16)| {
        f.packet
            .as_ref()
            .is_some_and(|p| (p.src, p.src_port) == a && p.proto == 6)
    };
    let conn: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.between(client, server))
        .collect();
    let has = |pred: &dyn Fn(&Frame) -> bool, step: &str| {
        assert!(
            conn.iter().any(|f| pred(f)),
            "{what}: no {step} of {client:?} -> {server:?} among {conn:#?}"
        );
    };
    has(&|f| from(f, client) && f.tcp_is(SYN), "SYN");
    has(&|f| from(f, server) && f.tcp_is(SYN | ACK), "SYN-ACK");
    has(
        &|f| from(f, client) && f.tag().as_deref() == Some(tag),
        "client data",
    );
    let reply = format!("{tag}-reply");
    has(
        &|f| from(f, server) && f.tag().as_deref() == Some(reply.as_str()),
        "server data",
    );
    has(
        &|f| from(f, client) && f.tcp_flags.is_some_and(|x| x & FIN != 0),
        "client FIN",
    );
    has(
        &|f| from(f, server) && f.tcp_flags.is_some_and(|x| x & FIN != 0),
        "server FIN",
    );
}

#[tokio::test]
async fn capture_files_hold_the_machines_ethernet_frames() {
    let Some(h) = Hosts::new(&["vm1", "vm2"], &["vm1"]).await else {
        return;
    };
    let (vm1, vm2) = (h.vm("vm1").clone(), h.vm("vm2").clone());
    let path = h
        .start_capture(
            "vm1",
            "eth",
            json!({"filters": [
                {"protocol": "UDP", "localIPAddress": vm1.ipv4.to_string()},
                {"protocol": "UDP", "localIPAddress": vm1.ipv6.to_string()},
            ]}),
        )
        .await;
    h.fleet.udp(Family::V4, "vm1", 40001, "vm2", 50001, "out4");
    h.fleet.udp(Family::V4, "vm2", 50002, "vm1", 40002, "in4");
    h.fleet.udp(Family::V6, "vm1", 40003, "vm2", 50003, "out6");
    // Full-size frames, in the order they were sent.
    h.fleet
        .udp_many(Family::V4, "vm2", 50004, "vm1", 40004, "bulk", 50, 1400);
    h.wait_for_tags("vm1", &path, &["out4", "in4", "out6", "bulk49"])
        .await;
    h.stop_capture("eth").await;

    let file = pcapfile::read(&h.agent("vm1").file(&path));
    assert_eq!(file.linktype, 1, "link type Ethernet, not Linux cooked");
    let frames = netns::frames(&file);
    let bulk: Vec<String> = (0..50).map(|i| format!("bulk{i}")).collect();
    let mut want = set(&["out4", "in4", "out6"]);
    want.extend(bulk.iter().cloned());
    assert_eq!(tags_of(&frames), want);
    let bulk_frames: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.tag().is_some_and(|t| t.starts_with("bulk")))
        .collect();
    assert_eq!(
        bulk_frames
            .iter()
            .filter_map(|f| f.tag())
            .collect::<Vec<_>>(),
        bulk
    );
    assert!(
        bulk_frames
            .iter()
            .all(|f| f.origlen == 14 + 20 + 8 + 1400 && f.src_mac == vm2.mac),
        "whole 1442-byte frames from vm2"
    );
    assert_own(&frames, &vm1, "eth");
    for r in &file.records {
        assert_eq!(r.caplen, r.origlen, "whole frames");
    }
    let frame = |tag: &str| {
        frames
            .iter()
            .find(|f| f.tag().as_deref() == Some(tag))
            .unwrap_or_else(|| panic!("no frame {tag}"))
            .clone()
    };
    // Sent by vm1: its MAC is the source, vm2's the destination; IPv4 + UDP + 4 bytes.
    let out = frame("out4");
    assert_eq!(
        (out.src_mac, out.dst_mac, out.ethertype),
        (vm1.mac, vm2.mac, 0x0800)
    );
    let p = out.packet.as_ref().unwrap();
    assert_eq!(
        (p.src, p.src_port, p.dst, p.dst_port),
        (IpAddr::V4(vm1.ipv4), 40001, IpAddr::V4(vm2.ipv4), 50001)
    );
    assert_eq!(out.origlen, 14 + 20 + 8 + 4);
    // Received by vm1.
    let inbound = frame("in4");
    assert_eq!(
        (inbound.src_mac, inbound.dst_mac, inbound.ethertype),
        (vm2.mac, vm1.mac, 0x0800)
    );
    let p = inbound.packet.as_ref().unwrap();
    assert_eq!(
        (p.src, p.src_port, p.dst, p.dst_port),
        (IpAddr::V4(vm2.ipv4), 50002, IpAddr::V4(vm1.ipv4), 40002)
    );
    // IPv6 over Ethernet.
    let out6 = frame("out6");
    assert_eq!(
        (out6.src_mac, out6.dst_mac, out6.ethertype),
        (vm1.mac, vm2.mac, 0x86dd)
    );
    assert_eq!(out6.origlen, 14 + 40 + 8 + 4);
    let p = out6.packet.as_ref().unwrap();
    assert_eq!((p.src, p.dst), (IpAddr::V6(vm1.ipv6), IpAddr::V6(vm2.ipv6)));
}

#[tokio::test]
async fn filters_select_ethernet_traffic_by_address_port_protocol_and_family() {
    let Some(h) = Hosts::new(&["vm1", "vm2", "vm3"], &["vm1"]).await else {
        return;
    };
    let vm1 = h.vm("vm1").clone();
    let (v4, v6) = (Family::V4, Family::V6);
    let (a1, a2, a3) = (vm1.ip(v4), h.vm("vm2").ip(v4), h.vm("vm3").ip(v4));
    let (b1, b2) = (vm1.ip(v6), h.vm("vm2").ip(v6));
    // Each capture: its filters, the tags it must hold (exactly), and what every one of its
    // frames must be.
    type Check = Box<dyn Fn(&netns::Frame) -> bool>;
    let side = |p: &pcapfile::Packet, ip: IpAddr, port: Option<u16>| {
        (p.src == ip && port.is_none_or(|x| p.src_port == x))
            || (p.dst == ip && port.is_none_or(|x| p.dst_port == x))
    };
    let captures: Vec<(&str, Value, Vec<&str>, Check)> = vec![
        (
            "local",
            json!([{"protocol": "UDP", "localIPAddress": a1.to_string(), "localPort": "40001"}]),
            vec!["u1", "u2", "u9"],
            Box::new(move |f| {
                f.packet
                    .as_ref()
                    .is_some_and(|p| p.proto == 17 && side(p, a1, Some(40001)))
            }),
        ),
        (
            "remote",
            json!([{"protocol": "UDP", "remoteIPAddress": a3.to_string(), "remotePort": "50003"}]),
            vec!["u5", "u6", "u9"],
            Box::new(move |f| {
                f.packet
                    .as_ref()
                    .is_some_and(|p| p.proto == 17 && side(p, a3, Some(50003)))
            }),
        ),
        (
            "tcp",
            json!([{"protocol": "TCP", "localIPAddress": a1.to_string(), "remoteIPAddress": a2.to_string()}]),
            vec![
                "t-out",
                "t-out-reply",
                "t-in",
                "t-in-reply",
                "t-8086",
                "t-8086-reply",
            ],
            Box::new(move |f| {
                f.packet
                    .as_ref()
                    .is_some_and(|p| p.proto == 6 && side(p, a1, None) && side(p, a2, None))
            }),
        ),
        (
            "tcpport",
            json!([{"protocol": "TCP", "localPort": "9090"}]),
            vec!["t-in", "t-in-reply"],
            Box::new(|f| {
                f.packet
                    .as_ref()
                    .is_some_and(|p| p.proto == 6 && (p.src_port == 9090 || p.dst_port == 9090))
            }),
        ),
        (
            "ipv6",
            json!([
                {"protocol": "UDP", "localIPAddress": b1.to_string(), "localPort": "41001"},
                {"protocol": "TCP", "remoteIPAddress": b2.to_string(), "remotePort": "8086"},
            ]),
            vec!["v1", "v2", "t6-out", "t6-out-reply"],
            Box::new(move |f| {
                f.ethertype == 0x86dd
                    && f.packet.as_ref().is_some_and(|p| {
                        (p.proto == 17 && side(p, b1, Some(41001)))
                            || (p.proto == 6 && side(p, b2, Some(8086)))
                    })
            }),
        ),
    ];
    let mut paths = vec![];
    for (name, filters, _, _) in &captures {
        paths.push(
            h.start_capture("vm1", name, json!({"filters": filters}))
                .await,
        );
    }

    let f = &h.fleet;
    // UDP by local address and port, vm1 sending and receiving.
    f.udp(v4, "vm1", 40001, "vm2", 50001, "u1");
    f.udp(v4, "vm2", 50001, "vm1", 40001, "u2");
    f.udp(v4, "vm1", 40002, "vm2", 50001, "u3"); // another local port
    f.udp(v4, "vm2", 40001, "vm1", 50009, "u4"); // 40001 on the remote side
    // UDP by remote address and port.
    f.udp(v4, "vm1", 40005, "vm3", 50003, "u5");
    f.udp(v4, "vm3", 50003, "vm1", 40006, "u6");
    f.udp(v4, "vm1", 40005, "vm3", 50004, "u7"); // another remote port
    f.udp(v4, "vm3", 50004, "vm1", 50003, "u8"); // 50003 on the local side
    f.udp(v4, "vm1", 40001, "vm3", 50003, "u9"); // both "local" and "remote"
    f.udp(v4, "vm1", 9090, "vm2", 50010, "u10"); // UDP, not TCP
    // TCP: vm1 connecting out, vm2 connecting in, vm1 to another machine.
    let t_out = f.tcp(v4, "vm1", 0, "vm2", 8080, "t-out");
    let t_in = f.tcp(v4, "vm2", 0, "vm1", 9090, "t-in");
    f.tcp(v4, "vm1", 0, "vm3", 8080, "t-other");
    let t_8086 = f.tcp(v4, "vm1", 0, "vm2", 8086, "t-8086"); // IPv4, not IPv6
    // IPv6.
    f.udp(v6, "vm1", 41001, "vm2", 51001, "v1");
    f.udp(v6, "vm2", 51001, "vm1", 41001, "v2");
    f.udp(v4, "vm1", 41001, "vm2", 51001, "v3"); // the same ports over IPv4
    f.udp(v6, "vm1", 41002, "vm2", 51001, "v4"); // another local port
    let t6 = f.tcp(v6, "vm1", 0, "vm2", 8086, "t6-out");
    f.tcp(v6, "vm1", 0, "vm3", 8086, "t6-other"); // another remote address

    for ((_, _, want, _), path) in captures.iter().zip(&paths) {
        h.wait_for_tags("vm1", path, want).await;
    }
    for ((name, _, want, check), path) in captures.iter().zip(&paths) {
        let status = h.stop_capture(name).await;
        let frames = h.frames("vm1", path);
        // What must be there, and nothing else of what was sent.
        assert_eq!(tags_of(&frames), set(want), "capture {name}");
        // Every frame (acknowledgements, FINs... included) matches the filter.
        for fr in &frames {
            assert!(check(fr), "capture {name} holds {fr:?}");
        }
        assert_own(&frames, &vm1, name);
        assert_eq!(
            status["packetsCaptured"],
            frames.len(),
            "counters of {name}"
        );
    }
    let frames_of = |name: &str| {
        let i = captures.iter().position(|c| c.0 == name).unwrap();
        h.frames("vm1", &paths[i])
    };
    // The TCP connections whole: handshake, data, FINs; with the machine as client and server.
    let tcp = frames_of("tcp");
    assert_tcp_connection(&tcp, (a1, t_out), (a2, 8080), "t-out", "tcp");
    assert_tcp_connection(&tcp, (a2, t_in), (a1, 9090), "t-in", "tcp");
    assert_tcp_connection(&tcp, (a1, t_8086), (a2, 8086), "t-8086", "tcp");
    let tcpport = frames_of("tcpport");
    assert_tcp_connection(&tcpport, (a2, t_in), (a1, 9090), "t-in", "tcpport");
    let ipv6 = frames_of("ipv6");
    assert_tcp_connection(&ipv6, (b1, t6), (b2, 8086), "t6-out", "ipv6");
}

#[tokio::test]
async fn two_machines_capture_at_once_each_its_own() {
    let Some(h) = Hosts::new(&["vm1", "vm2", "vm3"], &["vm1", "vm2"]).await else {
        return;
    };
    let (vm1, vm2) = (h.vm("vm1").clone(), h.vm("vm2").clone());
    let c1 = h
        .start_capture(
            "vm1",
            "c1",
            json!({"filters": [{"protocol": "UDP", "localIPAddress": vm1.ipv4.to_string()}]}),
        )
        .await;
    let c2 = h
        .start_capture(
            "vm2",
            "c2",
            json!({"filters": [{"protocol": "UDP", "localIPAddress": vm2.ipv4.to_string(), "localPort": "45002"}]}),
        )
        .await;
    let f = &h.fleet;
    let v4 = Family::V4;
    f.udp(v4, "vm1", 45001, "vm3", 55001, "a1"); // c1 only
    f.udp(v4, "vm2", 45002, "vm3", 55002, "b1"); // c2 only
    f.udp(v4, "vm1", 45001, "vm2", 45002, "ab"); // both
    f.udp(v4, "vm2", 45003, "vm1", 45001, "ba"); // c1 only (vm2's port is not 45002)
    f.udp(v4, "vm2", 45003, "vm3", 55002, "b2"); // neither
    f.tcp(v4, "vm1", 0, "vm2", 45002, "t12"); // neither: TCP
    h.wait_for_tags("vm1", &c1, &["a1", "ab", "ba"]).await;
    h.wait_for_tags("vm2", &c2, &["b1", "ab"]).await;
    h.stop_capture("c1").await;
    h.stop_capture("c2").await;

    let f1 = h.frames("vm1", &c1);
    let f2 = h.frames("vm2", &c2);
    assert_eq!(tags_of(&f1), set(&["a1", "ab", "ba"]));
    assert_eq!(tags_of(&f2), set(&["b1", "ab"]));
    assert_own(&f1, &vm1, "c1");
    assert_own(&f2, &vm2, "c2");
    assert!(
        f1.iter()
            .chain(&f2)
            .all(|f| f.packet.as_ref().is_some_and(|p| p.proto == 17))
    );
    // The one datagram both hold is the same frame, seen leaving vm1 and reaching vm2.
    for frames in [&f1, &f2] {
        let ab = frames
            .iter()
            .find(|f| f.tag().as_deref() == Some("ab"))
            .unwrap();
        assert_eq!((ab.src_mac, ab.dst_mac), (vm1.mac, vm2.mac));
    }
    // Neither file is in the other agent's captures root.
    assert!(!h.agent("vm2").file(&c1).exists());
    assert!(!h.agent("vm1").file(&c2).exists());
}

#[tokio::test]
async fn a_capture_never_holds_traffic_between_other_machines() {
    let Some(h) = Hosts::new(&["vm1", "vm2", "vm3"], &["vm1"]).await else {
        return;
    };
    let (vm1, vm2, vm3) = (
        h.vm("vm1").clone(),
        h.vm("vm2").clone(),
        h.vm("vm3").clone(),
    );
    // No filter: everything that crosses vm1's interface.
    let path = h.start_capture("vm1", "all", json!({})).await;
    let f = &h.fleet;
    let (v4, v6) = (Family::V4, Family::V6);
    f.udp(v4, "vm2", 46001, "vm3", 56001, "x23");
    f.udp(v4, "vm3", 56001, "vm2", 46001, "x32");
    f.tcp(v4, "vm2", 0, "vm3", 8080, "t23");
    f.udp(v6, "vm2", 46002, "vm3", 56002, "x23v6");
    f.tcp(v6, "vm3", 0, "vm2", 8080, "t32v6");
    // vm1's own traffic, last.
    f.udp(v4, "vm1", 46003, "vm2", 56003, "own1");
    f.udp(v6, "vm3", 56004, "vm1", 46004, "own2");
    h.wait_for_tags("vm1", &path, &["own1", "own2"]).await;
    h.stop_capture("all").await;

    let frames = h.frames("vm1", &path);
    assert_eq!(tags_of(&frames), set(&["own1", "own2"]));
    let others: BTreeSet<IpAddr> = [vm2.ip(v4), vm2.ip(v6), vm3.ip(v4), vm3.ip(v6)].into();
    let others_mac = [vm2.mac, vm3.mac];
    for fr in &frames {
        // Broadcasts and multicasts of the link (ARP requests, neighbour solicitations) reach
        // every machine; no unicast frame between two others does.
        if fr.is_unicast() {
            assert!(
                !(others_mac.contains(&fr.src_mac) && others_mac.contains(&fr.dst_mac)),
                "a frame between vm2 and vm3 in vm1's capture: {fr:?}"
            );
        }
        if let Some(p) = &fr.packet {
            assert!(
                !(others.contains(&p.src) && others.contains(&p.dst)),
                "a packet between vm2 and vm3 in vm1's capture: {fr:?}"
            );
        }
    }
    let own = |tag: &str| {
        frames
            .iter()
            .find(|f| f.tag().as_deref() == Some(tag))
            .unwrap()
    };
    assert_eq!(
        (own("own1").src_mac, own("own1").dst_mac),
        (vm1.mac, vm2.mac)
    );
    assert_eq!(
        (own("own2").src_mac, own("own2").dst_mac),
        (vm3.mac, vm1.mac)
    );
}

#[test]
fn a_fleet_is_removed_when_its_test_panics() {
    if !e2e_tests::is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let run = std::thread::spawn(move || {
        let fleet = Fleet::new(&["a", "b"]);
        let mut names: Vec<String> = fleet
            .machines
            .iter()
            .flat_map(|m| {
                [
                    format!("/run/netns/{}", m.ns),
                    format!("/sys/class/net/{}", m.host_if),
                ]
            })
            .collect();
        names.push(format!("/sys/class/net/{}", fleet.bridge));
        tx.send(names).unwrap();
        panic!("a test failing with a fleet");
    });
    assert!(run.join().is_err());
    let names = rx.recv().unwrap();
    assert_eq!(names.len(), 5);
    for n in &names {
        assert!(!std::path::Path::new(n).exists(), "{n} is left");
    }
}

#[test]
fn leftovers_of_ended_runs_are_removed_and_those_of_running_ones_kept() {
    if !e2e_tests::is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ip = |args: &[&str]| {
        assert!(
            std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success()
        );
    };
    // A pid above the largest one the kernel hands out never runs; pid 1 always does.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (ended_ns, ended_link) = (
        format!("{}{}-1-vm1", netns::PREFIX, pid_max + 1),
        format!("{}{}-0", netns::PREFIX, pid_max + 1),
    );
    let running_link = format!("{}1-{}", netns::PREFIX, std::process::id() % 10000);
    ip(&["netns", "add", &ended_ns]);
    ip(&["link", "add", &ended_link, "type", "bridge"]);
    ip(&["link", "add", &running_link, "type", "bridge"]);
    netns::remove_stale();
    let exists = |p: String| std::path::Path::new(&p).exists();
    let left = (
        exists(format!("/run/netns/{ended_ns}")),
        exists(format!("/sys/class/net/{ended_link}")),
        exists(format!("/sys/class/net/{running_link}")),
    );
    ip(&["link", "del", &running_link]);
    assert_eq!(left, (false, false, true));
}

/// Creates the continuous capture `name` on `vm` of the UDP datagrams to its port `port`, files
/// of `file_size` bytes; answers its ARM `localPath`.
async fn start_continuous(
    h: &Hosts,
    vm: &str,
    name: &str,
    ring: bool,
    file_count: u32,
    file_size: u64,
    port: u16,
) -> String {
    let path = format!("/var/captures/{}/{name}.cap", uuid::Uuid::new_v4().simple());
    let ip = h.vm(vm).ip(Family::V4).to_string();
    let body = json!({"properties": {
        "target": h.ctx.vm(vm),
        "continuousCapture": ring,
        "captureSettings": {"fileCount": file_count, "fileSizeInBytes": file_size},
        "storageLocation": {"localPath": path},
        "filters": [{"protocol": "UDP", "localIPAddress": ip, "localPort": port.to_string()}],
    }});
    h.ctx.create_capture(name, &body).await;
    path
}

/// The numbered files of a continuous capture at `path` on `vm`'s agent, by index.
fn numbered_files(h: &Hosts, vm: &str, path: &str) -> Vec<(u64, std::path::PathBuf)> {
    let base = h.agent(vm).file(path);
    let dir = base.parent().expect("folder");
    let stem = base
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("stem")
        .to_string();
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .expect("captures folder")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let digits = name
                .strip_prefix(&format!("{stem}_"))?
                .strip_suffix(".cap")?;
            Some((digits.parse().ok()?, p))
        })
        .collect();
    files.sort();
    files
}

/// The datagram tags of the files, in file order, checking each file is a whole pcap of
/// Ethernet frames of at most `file_size` bytes.
fn tags_in_order(files: &[(u64, std::path::PathBuf)], file_size: u64) -> Vec<String> {
    let mut tags = vec![];
    for (index, p) in files {
        let len = std::fs::metadata(p).expect("file").len();
        assert!(len <= file_size, "file {index} has {len} bytes");
        let f = pcapfile::read(p);
        assert_eq!(f.trailing, 0, "a partial record in file {index}");
        assert!(!f.records.is_empty(), "file {index} is empty");
        tags.extend(netns::frames(&f).iter().filter_map(Frame::tag));
    }
    tags
}

#[tokio::test]
async fn a_ring_on_a_real_host_keeps_the_newest_files_with_every_packet_once() {
    let Some(h) = Hosts::new(&["vm1", "vm2"], &["vm1"]).await else {
        return;
    };
    // 1442-byte frames (1458 with the record header): 205 per 300,000-byte file; 2,000 of them
    // fill 10 files (9 rotations), of which the ring keeps the newest 4.
    let file_size = 300_000;
    let path = start_continuous(&h, "vm1", "ring", true, 4, file_size, 47001).await;
    h.fleet
        .udp_many(Family::V4, "vm2", 37001, "vm1", 47001, "p", 2000, 1400);
    let url = h.ctx.capture_action("nw1", "ring", "queryStatus");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = h.ctx.api.post(&url).await.body;
        if s["packetsCaptured"] == 2000 {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["kernelDrops"], 0, "{status}");
    let s = h
        .ctx
        .api
        .post(&h.ctx.capture_action("nw1", "ring", "stop"))
        .await;
    assert!(s.status.is_success(), "{}", s.text);
    let s = h.ctx.wait_capture_status("nw1", "ring", "Stopped").await;
    let files = numbered_files(&h, "vm1", &path);
    let indices: Vec<u64> = files.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [7, 8, 9, 10], "the ring keeps the newest 4 of 10");
    let listed: Vec<u64> = s["continuousCaptureFiles"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(listed, indices, "{s}");
    // The kept files hold the newest datagrams, each exactly once, in order: nothing lost or
    // doubled at the rotations between them.
    let tags = tags_in_order(&files, file_size);
    let first = 2000 - tags.len();
    let want: Vec<String> = (first..2000).map(|i| format!("p{i}")).collect();
    assert_eq!(tags, want);
    assert_eq!(first, 6 * 205, "files 7 to 10 begin with datagram 1230");
}

#[tokio::test]
async fn without_a_ring_a_real_host_stops_after_its_last_file_with_every_packet_once() {
    let Some(h) = Hosts::new(&["vm1", "vm2"], &["vm1"]).await else {
        return;
    };
    let file_size = 300_000;
    let path = start_continuous(&h, "vm1", "once", false, 5, file_size, 47002).await;
    // 1,500 datagrams: 5 files hold 1,025; the next one ends the capture.
    h.fleet
        .udp_many(Family::V4, "vm2", 37002, "vm1", 47002, "q", 1500, 1400);
    let s = h.ctx.wait_capture_status("nw1", "once", "Stopped").await;
    assert_eq!(s["stopReason"], "FileCountReached", "{s}");
    let files = numbered_files(&h, "vm1", &path);
    let indices: Vec<u64> = files.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [1, 2, 3, 4, 5]);
    let tags = tags_in_order(&files, file_size);
    let want: Vec<String> = (0..tags.len()).map(|i| format!("q{i}")).collect();
    assert_eq!(tags, want);
    assert_eq!(tags.len(), 5 * 205);
    assert_eq!(s["packetsCaptured"], 5 * 205, "{s}");
}
