//! The agent's Debian package, as an operator uses it: built with cargo-deb from the debug binary
//! this test run built (no release build), installed with `dpkg -i`, its unit checked with
//! `systemd-analyze verify`, its files' modes and owners checked, and the installed binary run
//! the way the installed unit runs it (systemd is not PID 1 here): as the `capture-agent` user
//! with exactly CAP_NET_RAW and CAP_NET_ADMIN, no new privileges, the file system read-only but
//! for the captures root and the state folder, the settings from the installed env file and the
//! enrollment token from its file. It captures real packets on `lo`; without the capabilities,
//! the capture fails and says why. The package is purged at the end, also when the test fails.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::pcapfile;
use e2e_tests::traffic::udp;
use serde_json::json;

use crate::Ctx;

const PACKAGE: &str = "capture-agent";
/// The Debian revision of the package this test builds: a package installed with it is a
/// leftover of an interrupted run, which the test may purge; any other is an operator's.
const REVISION: &str = "0e2etest";
/// Where cargo-deb installs units (`/lib/systemd/system` is the same folder on a merged /usr,
/// which Debian 12 has).
const UNIT: &str = "/usr/lib/systemd/system/capture-agent.service";
const ENV_FILE: &str = "/etc/capture-agent/capture-agent.env";
const TOKEN_FILE: &str = "/etc/capture-agent/enrollment-token";
const CAPTURES: &str = "/var/captures";
const STATE: &str = "/var/lib/capture-agent";
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as /proc/PID/status shows capability sets.
const NET_CAPS: &str = "0000000000003000";

fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Runs a command that must succeed; its standard output.
fn ok(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The installed package's version, if dpkg knows it (installed, or removed with its
/// configuration kept).
fn installed_version() -> Option<String> {
    let out = output(
        "dpkg-query",
        &["-W", "-f=${db:Status-Abbrev}|${Version}", PACKAGE],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once('|')?;
    (out.status.success() && status.trim() != "un").then(|| version.to_string())
}

/// Purges the package when dropped (the test's end, or a failed assertion), with the capture
/// folders the test made first, so that `/var/captures` goes too.
struct Installed {
    folders: Vec<PathBuf>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for f in &self.folders {
            let _ = std::fs::remove_dir_all(f);
        }
        if installed_version().is_some() {
            let _ = output("dpkg", &["--purge", PACKAGE]);
        }
    }
}

/// `[Section]` `Key=value` lines of a unit file, in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every value of `key` (a key given several times adds to the list, as for ReadWritePaths=).
fn values(settings: &[(String, String)], key: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
        .collect()
}

fn one(settings: &[(String, String)], key: &str) -> String {
    let v: Vec<_> = settings.iter().filter(|(k, _)| k == key).collect();
    assert_eq!(v.len(), 1, "the unit sets {key}= once: {v:?}");
    v[0].1.clone()
}

/// The variables of an EnvironmentFile= (comments and blank lines skipped, quotes removed).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// What systemd sets up for the unit before it runs ExecStart: ProtectSystem=strict with
/// ReadWritePaths= (every mount read-only but /dev, /proc, /sys and those paths), ProtectHome=,
/// PrivateTmp= and UMask=, in a mount namespace of its own; then `exec "$@"`.
fn sandbox_script(read_write: &[String], umask: &str) -> String {
    format!(
        r#"set -eu
umask {umask}
for p in {rw}; do mount --bind "$p" "$p"; done
awk '{{ print $5 }}' /proc/self/mountinfo | sort -u | while read -r m; do
  case "$m" in /dev | /dev/* | /proc | /proc/* | /sys | /sys/*) continue ;; esac
  for p in {rw}; do [ "$m" = "$p" ] && continue 2; done
  mount -o remount,bind,ro "$m"
done
for home in /home /root /run/user; do
  if [ -d "$home" ]; then mount -t tmpfs -o ro,mode=0755 none "$home"; fi
done
mount -t tmpfs -o mode=1777 none /tmp
mount -t tmpfs -o mode=1777 none /var/tmp
exec "$@"
"#,
        rw = read_write.join(" ")
    )
}

/// The installed agent, run as the installed unit runs it (`caps`: the capabilities given, as
/// AmbientCapabilities= and CapabilityBoundingSet= give them).
struct ServiceAgent {
    child: Option<Child>,
    log: PathBuf,
}

impl ServiceAgent {
    fn start(unit: &[(String, String)], caps: &[String], name: &str) -> ServiceAgent {
        let user = one(unit, "User");
        let group = one(unit, "Group");
        let exec: Vec<String> = one(unit, "ExecStart")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let caps = if caps.is_empty() {
            "-all".to_string()
        } else {
            let named: Vec<String> = caps
                .iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
                .collect();
            format!("-all,{}", named.join(","))
        };
        let script = sandbox_script(&values(unit, "ReadWritePaths"), &one(unit, "UMask"));
        let env_text = std::fs::read_to_string(one(unit, "EnvironmentFile")).unwrap();
        let log = e2e_tests::scratch().join(format!("{name}.log"));
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg("setpriv")
        .arg("--pdeathsig=KILL")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={group}"))
        .arg("--init-groups")
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg("--no-new-privs")
        .args(&exec)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("USER", &user)
        .env("LOGNAME", &user)
        .env("HOME", STATE)
        .env("SHELL", "/usr/sbin/nologin")
        .envs(env_file(&env_text))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        let child = e2e_tests::spawn_child(cmd).expect("spawn the installed capture-agent");
        ServiceAgent {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process runs the installed binary (the sandbox and setpriv exec into it).
    fn wait_exec(&mut self) {
        let exe = PathBuf::from(format!("/proc/{}/exe", self.pid()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(&exe).ok() != Some(PathBuf::from("/usr/bin/capture-agent")) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the installed agent exited ({status}):\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the agent never ran:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// /proc/PID/status of the agent, as `Name:\tvalue` pairs.
    fn status(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// Waits up to `limit` for the agent to end by itself.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        e2e_tests::wait_exit(&mut c, limit)
    }

    /// SIGTERM (KillSignal=), then waits up to `limit` (TimeoutStopSec=); whether it exited
    /// successfully in time.
    fn stop(&mut self, limit: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = output("kill", &["-TERM", &c.id().to_string()]);
        e2e_tests::wait_exit(&mut c, limit).is_some_and(|s| s.success())
    }
}

impl Drop for ServiceAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (mode, user, group) of a path.
fn owner(path: &str) -> (u32, String, String) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        ok("getent", &[db, &id.to_string()])
            .split(':')
            .next()
            .unwrap()
            .to_string()
    };
    (
        m.permissions().mode() & 0o7777,
        name("passwd", m.uid()),
        name("group", m.gid()),
    )
}

fn build_package(dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let version = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: ./scripts/test installs it (cargo install cargo-deb --locked)"
    );
    // The debug binary the test command built (`--profile dev` packages target/debug), into
    // a package of its own revision; `--fast` compression.
    let target_dir = e2e_tests::bin_dir().parent().unwrap().to_path_buf();
    let out = Command::new(&cargo)
        .args([
            "deb",
            "-p",
            PACKAGE,
            "--no-build",
            "--profile",
            "dev",
            "--fast",
        ])
        .args(["--deb-revision", REVISION, "-o"])
        .arg(dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(e2e_tests::workspace_root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deb = PathBuf::from(deb.lines().last().unwrap_or_default());
    assert!(
        deb.exists() && deb.starts_with(dir),
        "no package: {}",
        deb.display()
    );
    deb
}

/// Configures the agent as the README does: its settings added to the installed env file
/// (`shipped`), and the enrollment token in its file (root:capture-agent, 0640).
fn configure(ctx: &Ctx, shipped: &str, vm: &str, gid: u32) {
    let settings = format!(
        "CAPTURE_AGENT_SERVER={}\nCAPTURE_AGENT_MACHINE_ID={}\nCAPTURE_AGENT_LOCATION=eastus\nCAPTURE_AGENT_INTERFACE=lo\nCAPTURE_AGENT_BUFFER_SIZE={}\nCAPTURE_AGENT_REPORT_SECONDS=0.5\n",
        ctx.server.url,
        ctx.vm(vm),
        8 * 1024 * 1024
    );
    std::fs::write(ENV_FILE, format!("{shipped}{settings}")).unwrap();
    use std::io::Write;
    let mut token = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o640)
        .open(TOKEN_FILE)
        .unwrap();
    writeln!(token, "{}", ctx.server.credentials().enrollment_token).unwrap();
    std::os::unix::fs::chown(TOKEN_FILE, Some(0), Some(gid)).unwrap();
}

async fn wait_registered(ctx: &Ctx, vm: &str, agent: &ServiceAgent) {
    let url = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{vm}?api-version=2026-04-01",
        ctx.sub
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx.api.get(&url).await.status.as_u16() != 200 {
        assert!(
            Instant::now() < deadline,
            "{vm} never registered; the agent's log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates capture `pc` of `vm`'s UDP traffic from 127.0.77.2 into `path`; its operation.
async fn create_capture(ctx: &Ctx, vm: &str, pc: &str, path: &str) -> serde_json::Value {
    let body = json!({"properties": {
        "target": ctx.vm(vm),
        "storageLocation": {"filePath": path},
        "timeLimitInSeconds": 120,
        "filters": [{"protocol": "UDP", "localIPAddress": "127.0.77.2"}]
    }});
    let r = ctx.api.put(&ctx.capture("nw1", pc), &body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    ctx.api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(30),
        )
        .await
}

#[tokio::test]
async fn the_debian_package_runs_the_agent_as_a_service_without_root() {
    if !e2e_tests::is_root() {
        eprintln!("skipped: installing a package needs root");
        return;
    }
    // One installation at a time on this machine (also across test processes).
    let lock = std::fs::File::create(std::env::temp_dir().join("capture-agent-package-test.lock"))
        .unwrap();
    lock.lock().unwrap();
    match installed_version() {
        None => {}
        Some(v) if v.ends_with(&format!("-{REVISION}")) => {
            ok("dpkg", &["--purge", PACKAGE]);
        }
        Some(v) => panic!(
            "the {PACKAGE} package {v} is installed on this machine; this test installs and purges its own: remove it first (dpkg --purge {PACKAGE})"
        ),
    }
    let dir = e2e_tests::scratch().join(format!("package-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let deb = build_package(&dir);

    // The package: its control data.
    let info = ok("dpkg-deb", &["-f", deb.to_str().unwrap(), "Depends"]);
    for dep in ["libpcap0.8", "adduser"] {
        assert!(info.contains(dep), "Depends: {info}");
    }
    let folder = format!("{CAPTURES}/e2e-{}", uuid::Uuid::new_v4().simple());
    let mut installed = Installed {
        folders: vec![PathBuf::from(&folder)],
    };
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    assert!(conffiles.contains(ENV_FILE), "conffiles: {conffiles}");

    // The system user and its group, and the modes and owners of what the package installed.
    let user: Vec<String> = ok("getent", &["passwd", PACKAGE])
        .trim()
        .split(':')
        .map(str::to_string)
        .collect();
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    assert!(uid < 1000, "a system user: {user:?}");
    assert_eq!(
        (user[5].as_str(), user[6].as_str()),
        (STATE, "/usr/sbin/nologin")
    );
    assert!(ok("getent", &["group", PACKAGE]).starts_with(&format!("{PACKAGE}:x:{gid}:")));
    let root = |mode| (mode, "root".to_string(), "root".to_string());
    let service = |mode| (mode, PACKAGE.to_string(), PACKAGE.to_string());
    let config = |mode| (mode, "root".to_string(), PACKAGE.to_string());
    for (path, want) in [
        ("/usr/bin/capture-agent", root(0o755)),
        (UNIT, root(0o644)),
        ("/etc/capture-agent", config(0o750)),
        (ENV_FILE, config(0o640)),
        (CAPTURES, service(0o750)),
        (STATE, service(0o750)),
    ] {
        assert_eq!(owner(path), want, "{path}");
    }
    // Installed, neither enabled nor started: it has no settings yet.
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/capture-agent.service").exists()
    );

    // The unit, checked offline: any warning about it fails.
    let verify = output("systemd-analyze", &["verify", UNIT]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && !said.contains("capture-agent"),
        "systemd-analyze verify {UNIT}:\n{said}"
    );
    let security = ok("systemd-analyze", &["security", "--offline=true", UNIT]);
    let exposure: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for capture-agent.service:")
                .nth(1)
        })
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{security}"));
    assert!(exposure < 3.0, "exposure {exposure}:\n{security}");
    let unit = unit_settings(&std::fs::read_to_string(UNIT).unwrap());
    let net_caps = ["CAP_NET_RAW", "CAP_NET_ADMIN"].map(str::to_string);
    assert_eq!(values(&unit, "AmbientCapabilities"), net_caps);
    assert_eq!(values(&unit, "CapabilityBoundingSet"), net_caps);
    for (key, want) in [
        ("User", PACKAGE),
        ("Group", PACKAGE),
        ("ExecStart", "/usr/bin/capture-agent run"),
        ("EnvironmentFile", ENV_FILE),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(&unit, key), want, "{key}=");
    }
    assert_eq!(values(&unit, "ReadWritePaths"), [CAPTURES, STATE]);
    let families: BTreeSet<String> = values(&unit, "RestrictAddressFamilies")
        .into_iter()
        .collect();
    for f in ["AF_PACKET", "AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"] {
        assert!(families.contains(f), "RestrictAddressFamilies lacks {f}");
    }
    assert!(one(&unit, "RestartSec").parse::<u64>().is_ok_and(|s| s > 0));
    // Longer than the agent's 10 s shutdown deadline.
    let stop_timeout: u64 = one(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(stop_timeout > 10, "TimeoutStopSec={stop_timeout}");
    let stop_timeout = Duration::from_secs(stop_timeout);

    // As installed, the settings name the token file and no server: the agent ends at once
    // with a command line error, which the unit does not restart (RestartPreventExitStatus=).
    let shipped = std::fs::read_to_string(ENV_FILE).unwrap();
    let shipped_vars = env_file(&shipped);
    assert_eq!(
        shipped_vars,
        [(
            "CAPTURE_AGENT_ENROLLMENT_TOKEN_FILE".to_string(),
            TOKEN_FILE.to_string()
        )]
    );
    let mut agent = ServiceAgent::start(&unit, &net_caps, "package-agent-unconfigured");
    let status = agent.wait(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "{}",
        agent.log_text()
    );
    assert_eq!(values(&unit, "RestartPreventExitStatus"), ["2"]);
    assert!(
        agent.log_text().contains("--server"),
        "{}",
        agent.log_text()
    );
    drop(agent);

    // Configured as the README says, against a server on 127.0.0.1; run as the unit runs it.
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    configure(&ctx, &shipped, "vm1", gid);
    let mut agent = ServiceAgent::start(&unit, &net_caps, "package-agent");
    agent.wait_exec();
    let status = agent.status();
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(get("Gid"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
    for set in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(get(set), NET_CAPS, "{set}");
    }
    assert_eq!(get("NoNewPrivs"), "1");
    wait_registered(&ctx, "vm1", &agent).await;

    // A capture of real packets on lo, into the captures root, as the service user.
    let path = format!("{folder}/pc1.cap");
    let op = create_capture(&ctx, "vm1", "pc1", &path).await;
    assert_eq!(op["status"], "Succeeded", "{op}\n{}", agent.log_text());
    for i in 0..5 {
        udp(
            "127.0.77.2:43000",
            "127.0.77.9:53000",
            &format!("pkg{i}"),
            64,
        );
    }
    udp("127.0.77.3:43000", "127.0.77.9:53000", "other", 64);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = ctx
        .api
        .post(&ctx.capture_action("nw1", "pc1", "stop"))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let s = ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    assert_eq!(s["stopReason"], "StoppedByUser");
    let file = pcapfile::read(Path::new(&path));
    assert_eq!(
        file.tags(),
        ["pkg0", "pkg1", "pkg2", "pkg3", "pkg4"],
        "{}",
        agent.log_text()
    );
    assert_eq!(file.trailing, 0);
    let (mode, file_user, _) = owner(&path);
    assert_eq!(file_user, PACKAGE);
    assert_eq!(mode & 0o007, 0, "the capture file is private: {mode:o}");
    // The machine's credential, kept in the state folder, only for the service user.
    let credential = format!("{STATE}/credential.json");
    assert_eq!(owner(&credential), service(0o600));
    assert!(
        agent.stop(stop_timeout),
        "SIGTERM did not stop the agent cleanly:\n{}",
        agent.log_text()
    );
    assert!(
        !agent
            .log_text()
            .contains(&ctx.server.credentials().enrollment_token),
        "the token is logged"
    );

    // Without the capabilities (the unit's AmbientCapabilities= removed), the capture fails
    // and says why.
    configure(&ctx, &shipped, "vm2", gid);
    let mut agent = ServiceAgent::start(&unit, &[], "package-agent-without-caps");
    agent.wait_exec();
    assert_eq!(
        agent
            .status()
            .iter()
            .find(|(n, _)| n == "CapEff")
            .map(|(_, v)| v.as_str()),
        Some("0000000000000000")
    );
    wait_registered(&ctx, "vm2", &agent).await;
    let op = create_capture(&ctx, "vm2", "pc2", &format!("{folder}/pc2.cap")).await;
    assert_eq!(op["status"], "Failed", "{op}");
    assert_eq!(op["error"]["code"], "CaptureFailed", "{op}");
    let message = op["error"]["message"].as_str().unwrap_or_default();
    let lower = message.to_lowercase();
    assert!(
        message
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == "lo")
            && (message.contains("CAP_NET_RAW")
                || lower.contains("permission")
                || lower.contains("not permitted")),
        "an unclear error: {message}"
    );
    assert!(agent.stop(stop_timeout), "{}", agent.log_text());
    drop(agent);

    // Purged: the user, its group, the state, the settings, and the captures root once empty.
    std::fs::remove_dir_all(&folder).unwrap();
    installed.folders.clear();
    ok("dpkg", &["--purge", PACKAGE]);
    assert_eq!(installed_version(), None);
    assert!(!output("getent", &["passwd", PACKAGE]).status.success());
    assert!(!output("getent", &["group", PACKAGE]).status.success());
    for gone in [
        "/usr/bin/capture-agent",
        UNIT,
        "/etc/capture-agent",
        STATE,
        CAPTURES,
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
