//! The unchanged Python SDK `azure-mgmt-network` drives the whole lifecycle over HTTPS with a
//! self-signed certificate, against the real server and the real agent capturing on `lo`.

use std::time::Duration;

use e2e_tests::real_agent::RealAgent;
use e2e_tests::{Api, ServerOptions, TestDb, TestServer};

fn python() -> std::path::PathBuf {
    let venv = e2e_tests::workspace_root().join("tests/python/.venv/bin/python");
    std::env::var_os("CAPTURE_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or(venv)
}

/// A server on HTTPS with a self-signed certificate for 127.0.0.1, over a database of its own.
struct Https {
    dir: std::path::PathBuf,
    cert_pem: String,
    cert_path: std::path::PathBuf,
    server: TestServer,
    _db: TestDb,
}

async fn https_server() -> Https {
    let dir = e2e_tests::scratch().join(format!("capture-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let db = TestDb::new().await;
    let mut opts = ServerOptions::new(&db.url);
    opts.tls = Some((cert_path.clone(), key_path));
    let server = TestServer::start(opts).await;
    Https {
        dir,
        cert_pem: cert.cert.pem(),
        cert_path,
        server,
        _db: db,
    }
}

#[tokio::test]
async fn python_sdk_full_lifecycle_over_https() {
    let py = python();
    assert!(
        py.exists(),
        "{} is missing: the test command creates the SDK venv (see README)",
        py.display()
    );
    let Https {
        dir,
        cert_pem,
        cert_path,
        server,
        _db,
    } = https_server().await;
    assert!(server.url.starts_with("https://"));

    let sub = e2e_tests::new_subscription();
    let vm = e2e_tests::vm_id(&sub, "rg-sdk", "vm-sdk");
    let mut child = tokio::process::Command::new(&py)
        .arg(e2e_tests::workspace_root().join("tests/python/sdk_lifecycle.py"))
        .env("TMPDIR", e2e_tests::scratch())
        .env("CAPTURE_API_URL", &server.url)
        .env("CAPTURE_API_CA", &cert_path)
        .env("SUBSCRIPTION_ID", &sub)
        .env("RESOURCE_GROUP", "rg-sdk")
        .env("LOCATION", "eastus")
        .env("TARGET_VM_ID", &vm)
        .env("SDK_TIMEOUT", "120")
        .env("CAPTURE_TENANT_ID", "00000000-0000-0000-0000-00000000ca9e")
        .env("CAPTURE_CLIENT_ID", &server.credentials().client_id)
        .env("CAPTURE_CLIENT_SECRET", &server.credentials().client_secret)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The agent registers once the SDK created its watcher (otherwise the server would create
    // the region's default watcher for the machine first).
    let root = reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let api = Api {
        base: server.url.clone(),
        http: http.clone(),
        bearer: Some(server.credentials().owner_token.clone()),
    };
    let watcher = format!(
        "/subscriptions/{sub}/resourceGroups/rg-sdk/providers/Microsoft.Network/networkWatchers/nw-sdk?api-version=2026-03-01"
    );
    api.wait_http_status(&watcher, 200, Duration::from_secs(60))
        .await;
    // The real agent, trusting the server's self-signed certificate, capturing on lo.
    let agent = RealAgent::start(
        &server.url,
        &vm,
        &["--ca-cert", cert_path.to_str().unwrap()],
    );
    let _ = http;

    // Real traffic for the capture's filter (UDP, local 127.0.0.1:9999) while the script runs,
    // and some that the filter must leave out.
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = {
        let sending = sending.clone();
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let _sink = std::net::UdpSocket::bind("127.0.0.1:9999");
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.send_to(b"sdk-traffic", "127.0.0.1:9999");
                let _ = s.send_to(b"other-traffic", "127.0.0.1:9998");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let status = tokio::time::timeout(Duration::from_secs(150), child.wait())
        .await
        .expect("the SDK script finished in time")
        .unwrap();
    assert!(
        status.success(),
        "the Python SDK lifecycle failed (see its output above); agent log:\n{}",
        agent.log_text()
    );
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    // The capture really ran on lo: its file holds the matching traffic and nothing else.
    let file = e2e_tests::pcapfile::read(&agent.file("/var/captures/sdk.cap"));
    assert_eq!((file.linktype, file.trailing), (1, 0));
    let packets = file.packets();
    assert!(!packets.is_empty(), "no packet captured");
    assert!(
        packets
            .iter()
            .all(|p| p.dst_port == 9999 && p.payload == b"sdk-traffic"),
        "packets outside the filter: {packets:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `az ARGS` with its own configuration folder, trusting `ca`; returns stdout, or panics
/// with what az printed.
fn az(config: &std::path::Path, ca: &std::path::Path, args: &[&str]) -> String {
    let bin = e2e_tests::workspace_root().join("tests/python/.az-venv/bin/az");
    assert!(
        bin.exists(),
        "{} is missing: the test command installs the Azure CLI (see README)",
        bin.display()
    );
    let out = std::process::Command::new(&bin)
        .args(args)
        .env("TMPDIR", e2e_tests::scratch())
        .env("AZURE_CONFIG_DIR", config)
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("AZURE_CORE_COLLECT_TELEMETRY", "0")
        .env("AZURE_CORE_NO_COLOR", "1")
        .env("AZURE_CORE_ONLY_SHOW_ERRORS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "az {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn az_cli_signs_in_with_the_built_in_issuer_and_runs_a_capture() {
    let Https {
        dir,
        cert_pem,
        cert_path,
        server,
        _db,
    } = https_server().await;
    let creds = server.credentials().clone();
    let sub = e2e_tests::new_subscription();
    let vm = e2e_tests::vm_id(&sub, "rg-az", "vm-az");
    let agent = RealAgent::start(
        &server.url,
        &vm,
        &["--ca-cert", cert_path.to_str().unwrap()],
    );
    // The agent's registration creates the region's watcher (NetworkWatcherRG/NetworkWatcher_eastus).
    let root = reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let api = Api {
        base: server.url.clone(),
        http: reqwest::Client::builder()
            .tls_certs_only([root])
            .build()
            .unwrap(),
        bearer: Some(creds.owner_token.clone()),
    };
    api.wait_http_status(
        &format!("{vm}?api-version=2024-07-01"),
        200,
        Duration::from_secs(20),
    )
    .await;

    let config = dir.join("az");
    let run = |args: &[&str]| az(&config, &cert_path, args);
    // The server is the cloud: its ARM metadata names itself as the sign-in endpoint.
    run(&[
        "cloud",
        "register",
        "-n",
        "capture",
        "--endpoint-resource-manager",
        &server.url,
    ]);
    run(&["cloud", "set", "-n", "capture"]);
    run(&["config", "set", "core.instance_discovery=false"]);
    // `--password=…`: a secret may start with '-', which az would take for an option.
    let password = format!("--password={}", creds.client_secret);
    run(&[
        "login",
        "--service-principal",
        "-u",
        &creds.client_id,
        &password,
        "--tenant",
        "00000000-0000-0000-0000-00000000ca9e",
    ]);
    run(&["account", "set", "-s", &sub]);
    let created: serde_json::Value = serde_json::from_str(&run(&[
        "network",
        "watcher",
        "packet-capture",
        "create",
        "-g",
        "rg-az",
        "-n",
        "pc-az",
        "--vm",
        "vm-az",
        "--file-path",
        "/var/captures/az/pc-az.cap",
        "--time-limit",
        "120",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(created["provisioningState"], "Succeeded", "{created}");
    let show_status = || -> serde_json::Value {
        let args = [
            "network",
            "watcher",
            "packet-capture",
            "show-status",
            "-l",
            "eastus",
        ];
        serde_json::from_str(&run(&[&args[..], &["-n", "pc-az", "-o", "json"]].concat())).unwrap()
    };
    let status = show_status();
    assert_eq!(status["packetCaptureStatus"], "Running", "{status}");
    run(&[
        "network",
        "watcher",
        "packet-capture",
        "stop",
        "-l",
        "eastus",
        "-n",
        "pc-az",
    ]);
    let status = show_status();
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status}");
    assert_eq!(status["stopReason"], "StoppedByUser", "{status}");
    run(&[
        "network",
        "watcher",
        "packet-capture",
        "delete",
        "-l",
        "eastus",
        "-n",
        "pc-az",
    ]);
    let list = run(&[
        "network",
        "watcher",
        "packet-capture",
        "list",
        "-l",
        "eastus",
        "-o",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list).unwrap(),
        serde_json::json!([])
    );
    assert!(agent.file("/var/captures/az/pc-az.cap").exists());
    let log = server.log_text();
    assert!(!log.contains(&creds.client_secret));
    let _ = std::fs::remove_dir_all(&dir);
}
