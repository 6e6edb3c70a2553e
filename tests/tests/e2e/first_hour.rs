//! The first hour of a new user: what the server prints, and how it refuses what it cannot do.

use e2e_tests::{ServerOptions, TestDb, TestServer};

#[tokio::test]
async fn logs_to_a_file_carry_no_colour_codes_and_json_is_one_object_a_line() {
    let db = TestDb::new().await;
    // The harness writes the server's standard error to a file: not a terminal.
    let server = TestServer::start(ServerOptions::new(&db.url)).await;
    let text = server.log_text();
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
    drop(server);

    let mut options = ServerOptions::new(&db.url);
    options.extra = vec!["--log-format".into(), "json".into()];
    let server = TestServer::start(options).await;
    let text = server.log_text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
    }
}

/// Runs `capture-api serve` with `args`; it must exit by itself within `within`.
fn serve_exits(args: &[&str], within: std::time::Duration) -> (bool, String) {
    let mut child = std::process::Command::new(e2e_tests::bin("capture-api"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = e2e_tests::wait_exit(&mut child, within) else {
        panic!("capture-api serve {args:?} still runs after {within:?}");
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

#[tokio::test]
async fn database_urls_that_retrying_cannot_fix_fail_at_once_with_the_cause() {
    let within = std::time::Duration::from_secs(15);
    let (ok, err) = serve_exits(
        &[
            "--database-url",
            "postgres://app:s3cret@no-such-host.invalid:5432/captures",
        ],
        within,
    );
    assert!(!ok);
    assert!(
        err.contains("unknown host") && err.contains("no-such-host.invalid:5432"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the password shows: {err}");

    let (ok, err) = serve_exits(&["--database-url", "postgres://app@db:notaport/x"], within);
    assert!(!ok);
    assert!(err.contains("not a PostgreSQL URL"), "{err}");

    let db = TestDb::new().await;
    let missing = db
        .url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/no_such_db"))
        .unwrap();
    let (ok, err) = serve_exits(&["--database-url", &missing], within);
    assert!(!ok);
    assert!(
        err.contains("the database 'no_such_db' does not exist") && err.contains("createdb"),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_folder_postgres_cannot_reach_is_named_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    if !e2e_tests::is_root() {
        eprintln!("skipped: the embedded PostgreSQL runs as another user only under root");
        return;
    }
    // Like a clone in root's home folder: a parent only its owner may enter.
    let home = e2e_tests::scratch().join(format!("home-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(home.join("clone")).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = home.join("clone/data");
    let (ok, err) = serve_exits(
        &["--data-dir", data.to_str().unwrap()],
        std::time::Duration::from_secs(20),
    );
    let _ = std::fs::remove_dir_all(&home);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot enter {}", home.display())) && err.contains("--data-dir"),
        "{err}"
    );
}

#[tokio::test]
async fn docs_without_the_slash_redirect() {
    let db = TestDb::new().await;
    let server = TestServer::start(ServerOptions::new(&db.url)).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{}/docs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], "/docs/");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_folder_is_refused_and_harms_nothing() {
    let dir = e2e_tests::scratch().join(format!("twice-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut opts = ServerOptions::new("");
    opts.database_url = None;
    opts.data_dir = Some(dir.clone());
    let server = TestServer::start(opts).await;
    let (ok, err) = serve_exits(
        &["--data-dir", dir.to_str().unwrap()],
        std::time::Duration::from_secs(15),
    );
    assert!(!ok);
    assert!(
        err.contains("another capture-api server")
            && err.contains(&format!("pid {}", server.pid())),
        "{err}"
    );
    // The first server still has its database.
    let r = reqwest::get(format!("{}/readyz", server.url))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_files_and_a_busy_port_are_checked_before_any_database_work() {
    let dir = e2e_tests::scratch().join(format!("early-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path, junk) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("junk.pem"),
    );
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&junk, "not a PEM file\n").unwrap();
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let within = std::time::Duration::from_secs(10);

    let (ok, err) = serve_exits(
        &[
            "--data-dir",
            data_arg,
            "--tls-cert",
            junk.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        within,
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "--tls-cert {} holds no PEM certificate",
            junk.display()
        )),
        "{err}"
    );
    let (ok, err) = serve_exits(
        &[
            "--data-dir",
            data_arg,
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            junk.to_str().unwrap(),
        ],
        within,
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "--tls-key {} holds no PEM private key",
            junk.display()
        )),
        "{err}"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let mut cmd = std::process::Command::new(e2e_tests::bin("capture-api"));
    let out = cmd
        .args(["serve", "--listen", &port, "--data-dir", data_arg])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("cannot listen on {port}")), "{err}");
    // None of these made a cluster or a key.
    assert!(!data.join("postgres").exists() && !data.join("secrets.key").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_with_an_agent_waiting_stops_promptly_and_quietly() {
    // The embedded default: its database stops with the server, as in the quick start.
    let dir = e2e_tests::scratch().join(format!("term-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut opts = ServerOptions::new("");
    opts.database_url = None;
    opts.data_dir = Some(dir.clone());
    let mut server = TestServer::start(opts).await;
    let vm = e2e_tests::vm_id(&e2e_tests::new_subscription(), "rg1", "vm1");
    let agent = e2e_tests::ScriptedAgent::register(&server.url, &vm, "eastus").await;
    let first = agent.poll(None, std::time::Duration::from_secs(5)).await;
    // A long poll that would wait for up to 25 s.
    let waiting = tokio::spawn(async move {
        agent
            .client
            .poll(
                agent.agent_id,
                Some(first.generation),
                std::time::Duration::from_secs(25),
            )
            .await
            .is_ok()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let stopped = tokio::task::spawn_blocking(move || {
        let ok = server.terminate(std::time::Duration::from_secs(20));
        (ok, server.log_text())
    });
    let (ok, log) = stopped.await.unwrap();
    let took = started.elapsed();
    assert!(ok, "the server did not exit cleanly: {log}");
    assert!(
        took < std::time::Duration::from_secs(5),
        "SIGTERM took {took:?}"
    );
    assert!(!log.contains(" WARN "), "a clean shutdown warns: {log}");
    let _ = waiting.await;
    let _ = std::fs::remove_dir_all(&dir);
}
