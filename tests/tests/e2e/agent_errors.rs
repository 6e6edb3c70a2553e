//! The real agent on errors that retrying cannot fix: it exits non-zero with a message that
//! names the cause and the fix (issue 11), and keeps retrying only what is transient. Also the
//! self-signed certificate of the common `openssl req -x509` recipe, trusted with `--ca-cert`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{ServerOptions, TestDb, TestServer};

use crate::Ctx;

/// One run of the real `capture-agent`, with no flag added behind the test's back (no
/// enrollment token unless given), in a folder of its own that is removed afterwards.
struct AgentRun {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl AgentRun {
    fn start(server: &str, machine_id: &str, extra: &[&str]) -> AgentRun {
        let dir = e2e_tests::scratch().join(format!(
            "capture-agent-errors-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("agent.log");
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=KILL")
            .arg(e2e_tests::bin("capture-agent"))
            .args(["run", "--server", server, "--machine-id", machine_id])
            .args(["--location", "eastus", "--interface", "lo"])
            .arg("--captures-root")
            .arg(dir.join("captures"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--report-seconds", "0.5"]);
        // Short, so that the tests end soon (a variable: a flag in `extra` wins).
        cmd.args(extra)
            .env("CAPTURE_AGENT_STARTUP_RETRY_SECONDS", "3")
            .env("RUST_LOG", "info")
            .env_remove("CAPTURE_AGENT_ENROLLMENT_TOKEN")
            .env_remove("CAPTURE_AGENT_CA_CERT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = e2e_tests::spawn_child(cmd).expect("spawn capture-agent");
        AgentRun {
            child: Some(child),
            dir,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn credential_file(&self) -> PathBuf {
        self.dir.join("state/credential.json")
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits for the agent to exit by itself; its status and what it printed.
    async fn exited(&mut self, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return (status, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the agent still runs after {within:?} (it should have exited); its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the agent's first registration (its saved credential).
    async fn registered(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.credential_file().exists() {
            assert!(
                self.exit_status().is_none(),
                "the agent exited; its log:\n{}",
                self.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "the agent did not register in {within:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts a non-zero exit whose message (the agent's last line) holds every one of `needles`.
#[track_caller]
fn assert_failed_saying(what: &str, (status, log): &(ExitStatus, String), needles: &[&str]) {
    assert!(
        !status.success(),
        "{what}: the agent exited successfully; its log:\n{log}"
    );
    let message = log
        .lines()
        .rev()
        .find(|l| l.starts_with("capture-agent: "))
        .unwrap_or_else(|| panic!("{what}: no final error message; the log:\n{log}"));
    eprintln!("{what}: {message}");
    for n in needles {
        assert!(
            message.to_lowercase().contains(&n.to_lowercase()),
            "{what}: the message does not say '{n}': {message}"
        );
    }
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn refused_enrollments_end_the_agent_with_what_to_do() {
    let ctx = Ctx::new().await;
    let url = ctx.server.url.clone();
    let scope = format!("/subscriptions/{}/resourceGroups/rg1", ctx.sub);
    let within = Duration::from_secs(20);

    // An invalid token.
    let mut a = AgentRun::start(
        &url,
        &ctx.vm("vm1"),
        &[
            "--enrollment-token",
            "cet_00000000000000000000000000000000.bogus",
        ],
    );
    let r = a.exited(within).await;
    assert_failed_saying(
        "invalid token",
        &r,
        &[
            "refused the enrollment token",
            "--enrollment-token",
            "capture-api agent-tokens create",
        ],
    );

    // A one-time token, used once already.
    let one_time = ctx
        .server
        .cli(&["agent-tokens", "create", "--scope", &scope, "--ttl", "600"]);
    let mut first = AgentRun::start(&url, &ctx.vm("vm2"), &["--enrollment-token", &one_time]);
    first.registered(within).await;
    drop(first);
    let mut a = AgentRun::start(&url, &ctx.vm("vm3"), &["--enrollment-token", &one_time]);
    let r = a.exited(within).await;
    assert_failed_saying(
        "used token",
        &r,
        &[
            "refused the enrollment token",
            "one-time",
            "agent-tokens create",
        ],
    );
    assert!(!r.1.contains(&one_time), "the token is in the log");

    // A revoked token.
    let revoked = ctx
        .server
        .cli(&["agent-tokens", "create", "--scope", &scope, "--reusable"]);
    let id = revoked
        .strip_prefix("cet_")
        .and_then(|t| t.split('.').next())
        .map(|id| uuid::Uuid::parse_str(id).unwrap().to_string())
        .unwrap();
    ctx.server.cli(&["agent-tokens", "revoke", "--id", &id]);
    let mut a = AgentRun::start(&url, &ctx.vm("vm4"), &["--enrollment-token", &revoked]);
    let r = a.exited(within).await;
    assert_failed_saying("revoked token", &r, &["refused the enrollment token"]);

    // A machine outside the token's scope.
    let rg1_only = ctx
        .server
        .cli(&["agent-tokens", "create", "--scope", &scope, "--reusable"]);
    let elsewhere = e2e_tests::vm_id(&ctx.sub, "rg2", "vm5");
    let mut a = AgentRun::start(&url, &elsewhere, &["--enrollment-token", &rg1_only]);
    let r = a.exited(within).await;
    assert_failed_saying(
        "machine outside the scope",
        &r,
        &[&scope, "--machine-id", "agent-tokens create"],
    );

    // No token, and no stored credential.
    let mut a = AgentRun::start(&url, &ctx.vm("vm6"), &[]);
    let r = a.exited(within).await;
    assert_failed_saying(
        "no token",
        &r,
        &[
            "requires an enrollment token",
            "--enrollment-token",
            "credential.json",
        ],
    );
    // An unreadable token file: known before any request.
    let mut a = AgentRun::start(
        &url,
        &ctx.vm("vm6"),
        &["--enrollment-token-file", "/nonexistent/agent-errors-token"],
    );
    let r = a.exited(within).await;
    assert_failed_saying(
        "unreadable token file",
        &r,
        &["--enrollment-token-file /nonexistent/agent-errors-token"],
    );
}

#[tokio::test]
async fn a_revoked_agent_exits_telling_to_re_enroll() {
    let ctx = Ctx::new().await;
    let scope = format!("/subscriptions/{}/resourceGroups/rg1", ctx.sub);
    let one_time = ctx
        .server
        .cli(&["agent-tokens", "create", "--scope", &scope, "--ttl", "600"]);
    let vm = ctx.vm("vm1");
    let mut a = AgentRun::start(&ctx.server.url, &vm, &["--enrollment-token", &one_time]);
    a.registered(Duration::from_secs(20)).await;
    // Registered for longer than --startup-retry-seconds: still, revocation is final.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(a.exit_status().is_none(), "{}", a.log_text());
    ctx.server.cli(&["agents", "revoke", "--machine-id", &vm]);
    let r = a.exited(Duration::from_secs(40)).await;
    assert_failed_saying(
        "revoked agent",
        &r,
        &[
            "refused this machine's credential",
            "capture-api agents re-enroll --machine-id",
            "--enrollment-token",
        ],
    );
}

#[tokio::test]
async fn unreachable_or_wrong_servers_are_named_with_the_cause_and_the_fix() {
    let ctx = Ctx::new().await;
    let url = ctx.server.url.clone();
    let token = ctx.server.credentials().enrollment_token.clone();
    let vm = ctx.vm("vm1");
    let within = Duration::from_secs(30);
    let port = url.rsplit(':').next().unwrap().to_string();

    // Nothing listens: retried for --startup-retry-seconds, then the cause.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let mut a = AgentRun::start(&closed, &vm, &["--enrollment-token", &token]);
    let r = a.exited(within).await;
    assert_failed_saying(
        "connection refused",
        &r,
        &["connection refused", "--server", "--startup-retry-seconds"],
    );
    assert!(!r.1.contains("transport error"), "{}", r.1);

    // A path that is not the server's base URL: 404 on the agent API.
    let wrong = format!("{url}/api/");
    let mut a = AgentRun::start(&wrong, &vm, &["--enrollment-token", &token]);
    let r = a.exited(within).await;
    assert_failed_saying(
        "wrong path",
        &r,
        &["404", "--server", "without a path", "/api/agent/v1/agents"],
    );

    // No scheme: both forms, with the URL to write instead.
    for (given, suggested) in [
        (
            format!("127.0.0.1:{port}"),
            format!("http://127.0.0.1:{port}"),
        ),
        (
            format!("localhost:{port}"),
            format!("http://localhost:{port}"),
        ),
    ] {
        let mut a = AgentRun::start(&given, &vm, &["--enrollment-token", &token]);
        let r = a.exited(within).await;
        assert_failed_saying(
            &given,
            &r,
            &["--server", "no scheme", &suggested, "https://"],
        );
    }

    // https:// against this plain HTTP server: a TLS failure that says why.
    let mut a = AgentRun::start(
        &format!("https://127.0.0.1:{port}"),
        &vm,
        &["--enrollment-token", &token],
    );
    let r = a.exited(within).await;
    assert_failed_saying(
        "https against http",
        &r,
        &[
            "TLS handshake",
            "plain HTTP",
            &format!("--server http://127.0.0.1:{port}"),
        ],
    );

    // Once registered, a server that goes away is retried for as long as it takes.
    let mut ctx = ctx;
    let mut a = AgentRun::start(
        &url,
        &vm,
        &["--enrollment-token", &token, "--startup-retry-seconds", "1"],
    );
    a.registered(within).await;
    ctx.server.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        a.exit_status().is_none(),
        "the agent gave up on a server that went away: {}",
        a.log_text()
    );
    assert!(
        a.log_text().to_lowercase().contains("connection refused"),
        "{}",
        a.log_text()
    );
}

/// Makes a self-signed certificate for 127.0.0.1 by the common recipe (its certificate says
/// `CA:TRUE`): `openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=host" -addext
/// "subjectAltName=…"`. Returns (certificate, key).
fn openssl_recipe(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "the recipe's certificate is CA:TRUE"
    );
    (cert, key)
}

#[tokio::test]
async fn the_openssl_recipe_self_signed_certificate_is_trusted_with_ca_cert() {
    let dir = TempDir::new("capture-agent-errors-tls");
    let dir = &dir.0;
    let (cert, key) = openssl_recipe(dir, "server");
    let (other_cert, _) = openssl_recipe(dir, "other");
    let db = TestDb::new().await;
    let mut opts = ServerOptions::new(&db.url);
    opts.tls = Some((cert.clone(), key));
    let server = TestServer::start(opts).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let token = server.credentials().enrollment_token.clone();
    let sub = e2e_tests::new_subscription();
    let vm = e2e_tests::vm_id(&sub, "rg1", "vm1");
    let within = Duration::from_secs(30);

    // Trusted with --ca-cert: the agent registers.
    let mut a = AgentRun::start(
        &server.url,
        &vm,
        &[
            "--enrollment-token",
            &token,
            "--ca-cert",
            cert.to_str().unwrap(),
        ],
    );
    a.registered(within).await;
    drop(a);

    // Not trusted: said so, with the flag to use.
    let mut a = AgentRun::start(&server.url, &vm, &["--enrollment-token", &token]);
    let r = a.exited(within).await;
    assert_failed_saying(
        "no --ca-cert",
        &r,
        &["TLS handshake", "certificate", "--ca-cert <file>"],
    );
    // Another certificate in --ca-cert (the same recipe, the same names): still refused.
    let mut a = AgentRun::start(
        &server.url,
        &vm,
        &[
            "--enrollment-token",
            &token,
            "--ca-cert",
            other_cert.to_str().unwrap(),
        ],
    );
    let r = a.exited(within).await;
    assert_failed_saying(
        "another --ca-cert",
        &r,
        &[
            "TLS handshake",
            &format!("--ca-cert {}", other_cert.display()),
        ],
    );
    // http:// against the HTTPS server.
    let plain = server.url.replacen("https://", "http://", 1);
    let mut a = AgentRun::start(
        &plain,
        &vm,
        &[
            "--enrollment-token",
            &token,
            "--ca-cert",
            cert.to_str().unwrap(),
        ],
    );
    let r = a.exited(within).await;
    assert_failed_saying(
        "http against https",
        &r,
        &[&format!("--server {}", server.url)],
    );
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let dir = e2e_tests::scratch().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
