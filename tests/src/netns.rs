//! A fleet of "virtual machines" made of Linux network namespaces, for captures of real Ethernet
//! traffic between hosts (root only).
//!
//! Each machine is a namespace with its own `eth0` (a fixed MAC, an IPv4 address in
//! `10.77.<fleet>.0/24` and an IPv6 address in `fd00:77:<fleet>::/64`, no default route), the
//! peer of a veth pair whose other end (the machine's "host-side interface") lives in the host
//! namespace, enslaved to a bridge of the fleet's own. The host side carries no address at all:
//! IPv6 is disabled on the bridge and the host-side ends before they come up, and nothing routes
//! into or out of the namespaces, so the test traffic stays between the machines. A real agent
//! captures on a machine's host-side interface: what crosses it is exactly what the machine sends
//! and receives. The bridge floods no unknown unicast, like a cloud's virtual switch: a machine
//! sees its own traffic and the broadcasts and multicasts of the link (ARP, neighbour discovery),
//! never the unicast traffic between two other machines.
//!
//! Names: everything a test process makes starts with `pct<pid>-` (interface names are limited
//! to 15 characters: `pct<pid>-<n>`, `n` counting the links of the process; namespaces
//! `pct<pid>-<fleet>-<machine>`), so tests of one process running in parallel never share a
//! name, and the first fleet of a process removes what processes that no longer run left behind
//! (a run that was killed). A fleet removes its namespaces and links when dropped, also when the
//! test panics.
//!
//! Traffic runs inside the namespaces, in Python (`ip netns exec <ns> python3 -c ...`): each
//! machine runs a helper that takes requests on its standard input (one Python start per machine,
//! not per packet). [`Fleet::udp`] and [`Fleet::tcp`] bind a receiver in the destination machine,
//! send from the source machine and check that what was sent arrived; [`Fleet::exec`] and
//! [`Fleet::spawn`] run programs of the test's own.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::pcapfile::{Packet, PcapFile};

/// The prefix of every namespace and interface name the fixture makes.
pub const PREFIX: &str = "pct";

/// How long one traffic program may take before it is killed and the test fails.
const PROGRAM_LIMIT: Duration = Duration::from_secs(20);

static FLEETS: AtomicU32 = AtomicU32::new(0);
static LINKS: AtomicU32 = AtomicU32::new(0);

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One "virtual machine" of a fleet.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The name the test gave it (`vm1`).
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// The host-side end of its veth pair, in the host namespace (where its agent captures).
    pub host_if: String,
    /// The MAC address of its `eth0`.
    pub mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Machine {
    /// Its `eth0` address of `family`.
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.ipv4),
            Family::V6 => IpAddr::V6(self.ipv6),
        }
    }

    /// `ip netns exec <ns> <program>`: a command that runs inside the machine.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }
}

/// A few machines on one bridge of their own. Dropping it removes them.
pub struct Fleet {
    /// The fleet's number within this test process.
    pub id: u32,
    /// The bridge joining the machines' host-side interfaces.
    pub bridge: String,
    pub machines: Vec<Machine>,
    /// Namespaces and links made so far (removed on drop, also after a failed setup).
    namespaces: Vec<String>,
    links: Vec<String>,
    /// Each machine's traffic helper (see [`HELPER`]), by machine index.
    helpers: Vec<Mutex<Background>>,
}

impl Fleet {
    /// Makes one machine per name (at most 250), connected at layer 2, and waits until every link
    /// forwards. Needs root.
    pub fn new(names: &[&str]) -> Fleet {
        assert!(crate::is_root(), "a fleet of namespaces needs root");
        assert!(!names.is_empty() && names.len() <= 250, "1 to 250 machines");
        remove_stale_once();
        let id = FLEETS.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fleet = Fleet {
            id,
            bridge: link_name(),
            machines: vec![],
            namespaces: vec![],
            links: vec![],
            helpers: vec![],
        };
        let bridge = fleet.bridge.clone();
        ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ]);
        fleet.links.push(bridge.clone());
        disable_ipv6(&bridge);
        ip(&["link", "set", &bridge, "up"]);
        for (i, name) in names.iter().enumerate() {
            let n = i as u8 + 1;
            let m = Machine {
                name: name.to_string(),
                ns: format!("{PREFIX}{}-{id}-{name}", std::process::id()),
                host_if: link_name(),
                mac: [0x02, 0x77, 0, (id >> 8) as u8, id as u8, n],
                ipv4: Ipv4Addr::new(10, 77, id as u8, n),
                ipv6: Ipv6Addr::new(0xfd00, 0x77, id as u16, 0, 0, 0, 0, n as u16),
            };
            assert!(
                fleet.machines.iter().all(|o| o.name != m.name),
                "two machines named {name}"
            );
            ip(&["netns", "add", &m.ns]);
            fleet.namespaces.push(m.ns.clone());
            ip(&[
                "link", "add", &m.host_if, "type", "veth", "peer", "name", "eth0", "netns", &m.ns,
            ]);
            fleet.links.push(m.host_if.clone());
            // Before it comes up, so that it never gets a link-local address.
            disable_ipv6(&m.host_if);
            ip(&["link", "set", &m.host_if, "master", &bridge]);
            ip(&[
                "link",
                "set",
                &m.host_if,
                "type",
                "bridge_slave",
                "flood",
                "off",
            ]);
            ip(&["link", "set", &m.host_if, "up"]);
            let mac = mac_string(&m.mac);
            let inside = format!(
                "set -e
                 echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
                 echo 0 > /proc/sys/net/ipv6/conf/eth0/router_solicitations
                 ip link set lo up
                 ip link set eth0 address {mac}
                 ip addr add {}/24 dev eth0
                 ip addr add {}/64 dev eth0 nodad
                 ip link set eth0 up",
                m.ipv4, m.ipv6
            );
            let out = m
                .command("sh")
                .args(["-c", &inside])
                .output()
                .expect("ip netns exec");
            assert!(
                out.status.success(),
                "setting up {} failed: {}",
                m.ns,
                String::from_utf8_lossy(&out.stderr)
            );
            fleet.machines.push(m);
        }
        fleet.wait_forwarding();
        // Started together: the first request waits for its helper's start.
        fleet.helpers = fleet
            .machines
            .iter()
            .map(|m| Mutex::new(Background::start(m, HELPER, &[], true)))
            .collect();
        fleet
    }

    /// Waits until every host-side interface is up and its bridge port forwards.
    fn wait_forwarding(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for m in &self.machines {
            let dir = Path::new("/sys/class/net").join(&m.host_if);
            loop {
                let read = |f: &str| {
                    std::fs::read_to_string(dir.join(f))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                };
                // Bridge port state 3 = forwarding.
                if read("operstate") == "up" && read("brport/state") == "3" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} ({}) never forwarded",
                    m.host_if,
                    m.name
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The machine named `name`.
    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no machine {name} in the fleet"))
    }

    /// Runs the Python `program` (with `args` in `sys.argv[1:]`) inside machine `vm`; answers its
    /// standard output. Fails the test when it fails or takes longer than 20 s.
    pub fn exec(&self, vm: &str, program: &str, args: &[&str]) -> String {
        self.spawn(vm, program, args).finish()
    }

    /// Starts the Python `program` (with `args`) inside machine `vm`, in the background.
    pub fn spawn(&self, vm: &str, program: &str, args: &[&str]) -> Background {
        Background::start(self.machine(vm), program, args, false)
    }

    /// Sends one UDP datagram with payload `tag` from `from`'s address of `family`, port
    /// `from_port`, to `to`'s, port `to_port`, and checks that a socket bound there received it.
    pub fn udp(
        &self,
        family: Family,
        from: &str,
        from_port: u16,
        to: &str,
        to_port: u16,
        tag: &str,
    ) {
        let (src, dst) = (self.machine(from).ip(family), self.machine(to).ip(family));
        let (src_s, dst_s) = (src.to_string(), dst.to_string());
        let (from_p, to_p) = (from_port.to_string(), to_port.to_string());
        let socket = self.ask(to, &["udp_listen", &dst_s, &to_p]);
        self.ask(from, &["udp_send", &src_s, &from_p, &dst_s, &to_p, tag]);
        let got = self.ask(to, &["udp_recv", &socket]);
        assert_eq!(
            got,
            format!("{tag} {src} {from_port}"),
            "the datagram {tag} from {from} to {to}"
        );
    }

    /// Sends `count` UDP datagrams like [`Fleet::udp`], tagged `<prefix><i>` (`i` from 0) and
    /// padded with '.' to `size` bytes of payload, and checks that all of them arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_many(
        &self,
        family: Family,
        from: &str,
        from_port: u16,
        to: &str,
        to_port: u16,
        prefix: &str,
        count: usize,
        size: usize,
    ) {
        let (src, dst) = (self.machine(from).ip(family), self.machine(to).ip(family));
        let (src_s, dst_s) = (src.to_string(), dst.to_string());
        let (from_p, to_p) = (from_port.to_string(), to_port.to_string());
        let (count_s, size_s) = (count.to_string(), size.to_string());
        let socket = self.ask(to, &["udp_listen", &dst_s, &to_p]);
        self.ask(to, &["udp_collect", &socket, &count_s]);
        self.ask(
            from,
            &[
                "udp_send_many",
                &src_s,
                &from_p,
                &dst_s,
                &to_p,
                prefix,
                &count_s,
                &size_s,
            ],
        );
        let got = self.ask(to, &["udp_collected", &socket]);
        assert_eq!(
            got, count_s,
            "datagrams {prefix}* from {from} to {to} that arrived"
        );
    }

    /// A TCP connection from `from` (port `from_port`, 0 = an ephemeral port) to a listener of
    /// `to` on `to_port`: the handshake, `tag` sent by the client, `<tag>-reply` sent back by the
    /// server, and both sides' FIN. Answers the client's port.
    pub fn tcp(
        &self,
        family: Family,
        from: &str,
        from_port: u16,
        to: &str,
        to_port: u16,
        tag: &str,
    ) -> u16 {
        let (src, dst) = (self.machine(from).ip(family), self.machine(to).ip(family));
        let (src_s, dst_s) = (src.to_string(), dst.to_string());
        let (from_p, to_p) = (from_port.to_string(), to_port.to_string());
        let listener = self.ask(to, &["tcp_listen", &dst_s, &to_p]);
        let client = self.ask(from, &["tcp_connect", &src_s, &from_p, &dst_s, &to_p, tag]);
        let server = self.ask(to, &["tcp_result", &listener]);
        let (reply, port) = client
            .split_once(' ')
            .unwrap_or_else(|| panic!("client answered {client:?}"));
        let port: u16 = port.parse().expect("client port");
        assert_eq!(reply, format!("{tag}-reply"), "the reply to {tag}");
        assert_eq!(
            server,
            format!("{tag} {src} {port}"),
            "what the listener of {to} got"
        );
        port
    }

    /// One request to the traffic helper of machine `vm` (started with the fleet); its answer.
    fn ask(&self, vm: &str, words: &[&str]) -> String {
        assert!(
            words
                .iter()
                .all(|w| !w.is_empty() && !w.contains(char::is_whitespace)),
            "words without spaces: {words:?}"
        );
        let i = self
            .machines
            .iter()
            .position(|m| m.name == vm)
            .unwrap_or_else(|| panic!("no machine {vm} in the fleet"));
        let mut helper = self.helpers[i].lock().unwrap_or_else(|e| e.into_inner());
        let answer = helper.request(&words.join(" "));
        if let Some(e) = answer.strip_prefix("ERR ") {
            panic!("{} in {vm} failed: {e}", words.join(" "));
        }
        answer
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The helpers first: a process inside a namespace keeps it alive.
        self.helpers.clear();
        // Deleting a namespace destroys its eth0 and so the veth pair; the links are deleted too
        // in case something still holds a namespace open.
        for ns in &self.namespaces {
            ip_quiet(&["netns", "del", ns]);
        }
        for link in self.links.iter().rev() {
            if Path::new("/sys/class/net").join(link).exists() {
                ip_quiet(&["link", "del", link]);
            }
        }
    }
}

/// A program running in a machine (with the test process's death signal), killed when dropped.
pub struct Background {
    what: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: Instant,
}

impl Background {
    fn start(m: &Machine, program: &str, args: &[&str], with_stdin: bool) -> Background {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=KILL")
            .args(["ip", "netns", "exec", &m.ns])
            .arg(python())
            .args(["-u", "-c", program])
            .args(args)
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = crate::spawn_child(cmd).expect("ip netns exec python3");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        Background {
            what: format!("python3 in {}", m.name),
            child: Some(child),
            stdin,
            stdout,
            stderr: Some(stderr),
            started: Instant::now(),
        }
    }

    /// Reads its output up to a line `ready`.
    pub fn wait_ready(&mut self) {
        loop {
            if self.line() == "ready" {
                return;
            }
        }
    }

    /// The next line of its standard output; fails the test when it ended instead.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap_or(0) == 0 {
            let err = self.take_stderr();
            panic!("{} ended: {err}", self.what);
        }
        line.trim_end().to_string()
    }

    /// Writes `line` to its standard input and answers the next line of its output.
    fn request(&mut self, line: &str) -> String {
        use std::io::Write;
        let sent = self
            .stdin
            .as_mut()
            .map(|i| writeln!(i, "{line}").and_then(|_| i.flush()));
        if !matches!(sent, Some(Ok(()))) {
            let err = self.take_stderr();
            panic!("{} does not take requests: {err}", self.what);
        }
        self.line()
    }

    /// Waits for it to end (at most 20 s from its start); answers the rest of its standard output.
    /// Fails the test when it failed.
    pub fn finish(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let deadline = self.started + PROGRAM_LIMIT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut out = String::new();
        let _ = self.stdout.read_to_string(&mut out);
        let err = self.take_stderr();
        match status {
            Some(s) if s.success() => out,
            Some(s) => panic!("{} failed ({s}): {err}", self.what),
            None => panic!("{} took longer than {PROGRAM_LIMIT:?}: {err}", self.what),
        }
    }

    fn take_stderr(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The traffic helper each machine runs: one request a line on standard input, one answer a
/// line on standard output (`ERR <why>` when it failed). Every socket operation times out after
/// 15 s, so an answer always comes.
///
/// - `udp_listen ADDR PORT` binds a UDP socket; answers its number;
/// - `udp_recv N` waits for a datagram on socket N; answers `<payload> <source> <port>`;
/// - `udp_send ADDR PORT DEST DPORT TAG` sends TAG from ADDR:PORT; answers `ok`;
/// - `udp_collect N COUNT` receives COUNT datagrams on socket N in the background; answers `ok`;
/// - `udp_collected N` waits for them (15 s at most between two); answers how many came;
/// - `udp_send_many ADDR PORT DEST DPORT PREFIX COUNT SIZE` sends COUNT datagrams tagged
///   `<PREFIX><i>`, padded with '.' to SIZE bytes; answers `ok`;
/// - `tcp_listen ADDR PORT` listens and, in the background, accepts one connection, reads it to
///   its end, answers `<data>-reply` and closes; answers the listener's number;
/// - `tcp_result N` waits for listener N's connection to end; answers `<data> <client> <port>`;
/// - `tcp_connect ADDR PORT DEST DPORT TAG` connects from ADDR:PORT (0 = any), sends TAG, shuts
///   its side down and reads the reply to its end; answers `<reply> <client port>`.
const HELPER: &str = r#"
import socket, sys, threading
S = socket.socket
socks, threads, results = {}, {}, {}
count = 0

def sock(addr, kind):
    s = S(socket.AF_INET6 if ":" in addr else socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(15)
    return s

def read_all(c):
    data = b""
    while True:
        b = c.recv(65536)
        if not b:
            return data
        data += b

def serve(n, s):
    try:
        c, peer = s.accept()
        c.settimeout(15)
        data = read_all(c)
        c.sendall(data + b"-reply")
        c.close()
        results[n] = "%s %s %d" % (data.decode(), peer[0], peer[1])
    except Exception as e:
        results[n] = "ERR %r" % (e,)
    finally:
        s.close()

def collect(n, s, want):
    got = 0
    try:
        while got < want:
            s.recvfrom(65535)
            got += 1
    except Exception:
        pass
    finally:
        s.close()
    results[n] = str(got)

while True:
    line = sys.stdin.readline()
    if not line:
        break
    w = line.split()
    try:
        if w[0] == "udp_listen":
            s = sock(w[1], socket.SOCK_DGRAM)
            s.bind((w[1], int(w[2])))
            count += 1
            socks[count] = s
            out = str(count)
        elif w[0] == "udp_recv":
            s = socks.pop(int(w[1]))
            data, peer = s.recvfrom(65535)
            s.close()
            out = "%s %s %d" % (data.decode(), peer[0], peer[1])
        elif w[0] == "udp_send":
            s = sock(w[1], socket.SOCK_DGRAM)
            s.bind((w[1], int(w[2])))
            s.sendto(w[5].encode(), (w[3], int(w[4])))
            s.close()
            out = "ok"
        elif w[0] == "udp_collect":
            n, want = int(w[1]), int(w[2])
            s = socks.pop(n)
            s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
            t = threading.Thread(target=collect, args=(n, s, want), daemon=True)
            t.start()
            threads[n] = t
            out = "ok"
        elif w[0] == "udp_collected":
            n = int(w[1])
            threads.pop(n).join()
            out = results.pop(n)
        elif w[0] == "udp_send_many":
            s = sock(w[1], socket.SOCK_DGRAM)
            s.bind((w[1], int(w[2])))
            size = int(w[7])
            for i in range(int(w[6])):
                s.sendto(("%s%d" % (w[5], i)).encode().ljust(size, b"."), (w[3], int(w[4])))
            s.close()
            out = "ok"
        elif w[0] == "tcp_listen":
            s = sock(w[1], socket.SOCK_STREAM)
            s.bind((w[1], int(w[2])))
            s.listen(1)
            count += 1
            t = threading.Thread(target=serve, args=(count, s), daemon=True)
            t.start()
            threads[count] = t
            out = str(count)
        elif w[0] == "tcp_result":
            n = int(w[1])
            threads.pop(n).join()
            out = results.pop(n)
        elif w[0] == "tcp_connect":
            s = sock(w[1], socket.SOCK_STREAM)
            s.bind((w[1], int(w[2])))
            s.connect((w[3], int(w[4])))
            port = s.getsockname()[1]
            s.sendall(w[5].encode())
            s.shutdown(socket.SHUT_WR)
            data = read_all(s)
            s.close()
            out = "%s %d" % (data.decode(), port)
        else:
            out = "ERR unknown request"
    except Exception as e:
        out = "ERR %r" % (e,)
    print(out, flush=True)
"#;

/// The Python interpreter itself (not a version manager's shim script, which is slow to start).
fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".to_string())
    })
}

/// A new interface name of this process: `pct<pid>-<n>` (at most 15 characters).
fn link_name() -> String {
    let n = LINKS.fetch_add(1, Ordering::SeqCst);
    let name = format!("{PREFIX}{}-{n}", std::process::id());
    assert!(name.len() <= 15, "interface name {name} is too long");
    name
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_quiet(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn disable_ipv6(interface: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    // No IPv6 in the kernel: no link-local address to prevent either.
    if Path::new(&path).exists() {
        std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// The process that made a namespace or interface of this fixture (`pct<pid>-...`).
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a name of this fixture belongs to a process that no longer runs.
fn stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the namespaces and interfaces that test processes no longer running left behind.
fn remove_stale_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(remove_stale);
}

/// Removes the namespaces and interfaces of this fixture whose owning process no longer runs.
pub fn remove_stale() {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| stale(n))
            .collect()
    };
    for ns in names("/run/netns") {
        ip_quiet(&["netns", "del", &ns]);
    }
    // Bridges and host-side ends whose namespace is gone or still held.
    for link in names("/sys/class/net") {
        ip_quiet(&["link", "del", &link]);
    }
}

/// One captured Ethernet frame (link type 1), parsed.
#[derive(Debug, Clone)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ethertype: u16,
    /// Its IPv4/IPv6 addresses and TCP/UDP ports and payload (without any Ethernet padding).
    pub packet: Option<Packet>,
    /// The TCP flags (`FIN` 0x01, `SYN` 0x02, `ACK` 0x10...).
    pub tcp_flags: Option<u8>,
    /// The frame's length on the wire.
    pub origlen: u32,
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

impl Frame {
    /// Whether it is addressed to one machine (not broadcast nor multicast).
    pub fn is_unicast(&self) -> bool {
        self.dst_mac[0] & 1 == 0
    }

    /// The transport payload as text without its '.' padding, when there is one (the tags of
    /// [`Fleet::udp`], [`Fleet::udp_many`] and [`Fleet::tcp`]).
    pub fn tag(&self) -> Option<String> {
        self.packet
            .as_ref()
            .filter(|p| !p.payload.is_empty())
            .map(|p| {
                String::from_utf8_lossy(&p.payload)
                    .trim_end_matches('.')
                    .to_string()
            })
    }

    /// A TCP segment with exactly these of SYN, ACK, FIN set (others ignored but RST, PSH).
    pub fn tcp_is(&self, flags: u8) -> bool {
        self.tcp_flags
            .is_some_and(|f| f & (SYN | ACK | FIN) == flags)
    }

    /// Whether the IP packet goes between these two endpoints, in either direction.
    pub fn between(&self, a: (IpAddr, u16), b: (IpAddr, u16)) -> bool {
        self.packet.as_ref().is_some_and(|p| {
            ((p.src, p.src_port) == a && (p.dst, p.dst_port) == b)
                || ((p.src, p.src_port) == b && (p.dst, p.dst_port) == a)
        })
    }
}

/// The frames of a capture file, which must have link type Ethernet (1).
pub fn frames(file: &PcapFile) -> Vec<Frame> {
    assert_eq!(file.linktype, 1, "link type Ethernet");
    file.records
        .iter()
        .map(|r| parse_frame(&r.data, r.origlen))
        .collect()
}

/// Parses an Ethernet II frame; panics when it is shorter than its header.
pub fn parse_frame(d: &[u8], origlen: u32) -> Frame {
    assert!(d.len() >= 14, "a frame of {} bytes", d.len());
    let mac = |o: usize| -> [u8; 6] { d[o..o + 6].try_into().unwrap_or_default() };
    let ethertype = u16::from_be_bytes([d[12], d[13]]);
    let (packet, tcp_flags) = parse_ip(d, ethertype).unzip();
    Frame {
        dst_mac: mac(0),
        src_mac: mac(6),
        ethertype,
        packet,
        tcp_flags: tcp_flags.flatten(),
        origlen,
    }
}

fn parse_ip(d: &[u8], ethertype: u16) -> Option<(Packet, Option<u8>)> {
    const L3: usize = 14;
    let be16 = |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*d.get(o)?, *d.get(o + 1)?])) };
    let (src, dst, proto, l4, end) = match ethertype {
        0x0800 => {
            let ihl = (*d.get(L3)? & 0x0f) as usize * 4;
            let a: [u8; 4] = d.get(L3 + 12..L3 + 16)?.try_into().ok()?;
            let b: [u8; 4] = d.get(L3 + 16..L3 + 20)?.try_into().ok()?;
            let total = be16(L3 + 2)? as usize;
            (
                IpAddr::from(a),
                IpAddr::from(b),
                *d.get(L3 + 9)?,
                L3 + ihl,
                L3 + total,
            )
        }
        0x86dd => {
            let a: [u8; 16] = d.get(L3 + 8..L3 + 24)?.try_into().ok()?;
            let b: [u8; 16] = d.get(L3 + 24..L3 + 40)?.try_into().ok()?;
            let payload_len = be16(L3 + 4)? as usize;
            (
                IpAddr::from(a),
                IpAddr::from(b),
                *d.get(L3 + 6)?,
                L3 + 40,
                L3 + 40 + payload_len,
            )
        }
        _ => return None,
    };
    let (header, flags) = match proto {
        17 => (8, None),
        6 => (
            ((*d.get(l4 + 12)? >> 4) as usize) * 4,
            Some(*d.get(l4 + 13)?),
        ),
        _ => (0, None),
    };
    let ports = if proto == 6 || proto == 17 {
        (be16(l4)?, be16(l4 + 2)?)
    } else {
        (0, 0)
    };
    // The IP length, not the frame's: Ethernet may pad short frames.
    let end = end.min(d.len());
    let payload = if proto == 6 || proto == 17 {
        d.get(l4 + header..end).unwrap_or_default().to_vec()
    } else {
        vec![]
    };
    Some((
        Packet {
            src,
            dst,
            proto,
            src_port: ports.0,
            dst_port: ports.1,
            payload,
        },
        flags,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_read_from_the_names() {
        assert_eq!(owner_pid("pct1234-5"), Some(1234));
        assert_eq!(owner_pid("pct1234-3-vm1"), Some(1234));
        assert_eq!(owner_pid("pct-3"), None);
        assert_eq!(owner_pid("pct12a-3"), None);
        assert_eq!(owner_pid("pct1234"), None);
        assert_eq!(owner_pid("eth0"), None);
        assert!(stale("pct4294967294-1"));
        assert!(!stale(&format!("pct{}-1", std::process::id())));
    }

    #[test]
    fn frames_are_parsed_without_their_padding() {
        // Ethernet + IPv4 (total length 20 + 8 + 2) + UDP "hi", padded to 60 bytes.
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend([
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend([0x9c, 0x41, 0xc3, 0x51, 0, 10, 0, 0, b'h', b'i']);
        f.resize(60, 0);
        let frame = parse_frame(&f, 60);
        assert_eq!(frame.src_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(frame.tag().as_deref(), Some("hi"));
        let p = frame.packet.as_ref().unwrap();
        assert_eq!((p.src_port, p.dst_port, p.proto), (40001, 50001, 17));
        assert!(frame.tcp_flags.is_none() && frame.is_unicast());
    }
}
