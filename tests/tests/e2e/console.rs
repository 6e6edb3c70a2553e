//! The web console (issue 13) in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core from `tests/browser`, installed by the test command), against the real server,
//! PostgreSQL, Azurite and a real agent capturing on `lo`. The browser script
//! (`tests/browser/console.mjs`) does what a person does; this test prepares the world, runs it,
//! and checks what it leaves behind independently (the downloaded file, the agent's file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e_tests::azurite::{ACCOUNT_KEY, Azurite};
use e2e_tests::pcapfile;
use e2e_tests::traffic::udp;
use serde_json::json;

use super::capture::setup;
use crate::Ctx;

const CHROMIUM: &str = "/usr/bin/chromium";

pub(super) fn browser_dir() -> PathBuf {
    e2e_tests::workspace_root().join("tests/browser")
}

/// Runs `node tests/browser/<script>` with `env`; its exit status and output.
pub(super) fn run_script(script: &str, args: &[String], env: &[(&str, String)]) -> (bool, String) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "{} is missing: run the test command (it installs playwright-core and axe-core with npm)",
        dir.join("node_modules").display()
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).args(args).current_dir(&dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Creates a user with `password` and Owner on the test's subscription; its name.
fn sign_in_user(ctx: &Ctx, name: &str, password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(e2e_tests::bin("capture-api"))
        .args(["users", "create", "--name", name])
        .args(ctx.server.options.db_args())
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("capture-api users create");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(password.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "users create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("user JSON");
    let oid = v["objectId"].as_str().expect("objectId");
    ctx.server.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        oid,
        "--role",
        "Owner",
        "--scope",
        &format!("/subscriptions/{}", ctx.sub),
    ]);
    name.to_string()
}

/// Creates a capture through the API (waiting for its create operation when `wait`).
async fn create(ctx: &Ctx, name: &str, props: serde_json::Value, wait: bool) {
    let r = ctx
        .api
        .put(&ctx.capture("nw1", name), &json!({"properties": props}))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{name}: {}", r.text);
    if wait {
        ctx.api
            .wait_operation(
                &r.header("azure-asyncoperation").expect("operation"),
                Duration::from_secs(20),
            )
            .await;
    }
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    // NotStarted must stay so while the browser looks: the machine without an agent waits long.
    let (ctx, agent) = setup(|o| o.agent_wait_seconds = 600).await;
    let azurite = Azurite::start();
    let account = crate::e2e::storage::register(&ctx, &azurite, "captures1");
    let premium = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/premium1",
        ctx.sub
    );
    let (ok, out, err) = ctx.server.storage_accounts(
        &[
            "add",
            "--id",
            &premium,
            "--blob-endpoint",
            &azurite.endpoint(),
            "--key-stdin",
            "--premium",
            "--offline",
        ],
        ACCOUNT_KEY,
    );
    assert!(ok, "premium account: {out}{err}");

    // A scale set instance with an agent too, for the Add panel's instance picker.
    let instance = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines/0",
        ctx.sub
    );
    let _instance_agent = e2e_tests::real_agent::RealAgent::start(&ctx.server.url, &instance, &[]);
    // A second instance, which the Add panel's scale set capture leaves out.
    let _instance_agent_1 = e2e_tests::real_agent::RealAgent::start(
        &ctx.server.url,
        &instance.replace("/virtualMachines/0", "/virtualMachines/1"),
        &[],
    );
    let scale_sets = format!(
        "/subscriptions/{}/providers/Microsoft.Compute/virtualMachineScaleSets?api-version=2024-07-01",
        ctx.sub
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let instances = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines?api-version=2024-07-01",
        ctx.sub
    );
    while ctx.api.get(&scale_sets).await.body["value"]
        .as_array()
        .is_none_or(|v| v.is_empty())
        || ctx.api.get(&instances).await.body["value"]
            .as_array()
            .is_none_or(|v| v.len() < 2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the scale set instances' agents never registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One capture of each status.
    let file = |name: &str| format!("/var/captures/{name}.cap");
    let udp_filter = |ip: &str| json!([{"protocol": "UDP", "localIPAddress": ip}]);
    create(
        &ctx,
        "seen-running",
        json!({"target": ctx.vm("vm1"), "storageLocation": {"filePath": file("seen-running")}, "filters": udp_filter("127.0.8.2")}),
        true,
    )
    .await;
    create(
        &ctx,
        "seen-stopped",
        json!({"target": ctx.vm("vm1"), "storageLocation": {"filePath": file("seen-stopped")}, "filters": udp_filter("127.0.8.3")}),
        true,
    )
    .await;
    udp("127.0.8.3:48000", "127.0.8.9:58000", "stopped-0", 64);
    let r = ctx
        .api
        .post(&ctx.capture_action("nw1", "seen-stopped", "stop"))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    ctx.wait_capture_status("nw1", "seen-stopped", "Stopped")
        .await;
    // A file that is there already is never overwritten: the capture ends in an error.
    let taken = agent.file(&file("seen-error"));
    std::fs::create_dir_all(taken.parent().unwrap()).unwrap();
    std::fs::write(&taken, b"not ours").unwrap();
    create(
        &ctx,
        "seen-error",
        json!({"target": ctx.vm("vm1"), "storageLocation": {"filePath": file("seen-error")}}),
        true,
    )
    .await;
    ctx.wait_capture_status("nw1", "seen-error", "Error").await;
    create(
        &ctx,
        "seen-notstarted",
        json!({"target": ctx.vm("vm2"), "storageLocation": {"filePath": file("seen-notstarted")}}),
        false,
    )
    .await;

    let (_, reader) = ctx.principal(Some(("Reader", &format!("/subscriptions/{}", ctx.sub))));
    // Reader of the subscription and Network Contributor of rg1, until the browser script
    // removes the second role (REVOKE, a command line) while its page is open: its next delete
    // gets a real 403 from the API.
    let (contributor, contributor_token) =
        ctx.principal(Some(("Reader", &format!("/subscriptions/{}", ctx.sub))));
    let assignment = ctx.server.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        &contributor,
        "--role",
        "Network Contributor",
        "--scope",
        &format!("/subscriptions/{}/resourceGroups/rg1", ctx.sub),
    ]);
    let assignment_id = assignment.split('\t').next().unwrap().to_string();
    let mut revoke = vec![e2e_tests::bin("capture-api").display().to_string()];
    revoke.extend(
        ["role-assignments", "delete", "--id", &assignment_id]
            .iter()
            .map(|s| s.to_string()),
    );
    revoke.extend(ctx.server.options.db_args());
    // A person, who signs in through the authorize page: Owner of the subscription.
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let user = sign_in_user(&ctx, "operator", &password);
    let link = ctx
        .server
        .cli(&["sign-in-link", "--user", &user, "--url", &ctx.server.url]);
    let scratch = e2e_tests::scratch().join(format!("console-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    let download = scratch.join("console-pc.cap");
    let screenshots = e2e_tests::workspace_root().join("docs/screenshots");
    let started = std::time::Instant::now();
    let (ok, output) = tokio::task::spawn_blocking({
        let env = vec![
            ("CONSOLE_URL", ctx.server.url.clone()),
            ("OWNER_TOKEN", ctx.server.credentials().owner_token.clone()),
            ("READER_TOKEN", reader),
            ("RG_CONTRIBUTOR_TOKEN", contributor_token),
            ("REVOKE", serde_json::to_string(&revoke).unwrap()),
            ("SUB", ctx.sub.clone()),
            ("VM_ID", ctx.vm("vm1")),
            ("STORAGE_ID", account.clone()),
            ("DOWNLOAD_TO", download.display().to_string()),
            ("SCREENSHOTS", screenshots.display().to_string()),
            ("SIGNIN_USER", user),
            ("SIGNIN_PASSWORD", password),
            ("SIGNIN_LINK", link.trim().to_string()),
        ];
        move || run_script("console.mjs", &[], &env)
    })
    .await
    .unwrap();
    println!("{output}");
    assert!(
        ok,
        "the browser test failed:\n{output}\nserver log:\n{}\nagent log:\n{}",
        ctx.server.log_text(),
        agent.log_text()
    );
    println!("browser test: {:.1} s", started.elapsed().as_secs_f64());

    // The downloaded bytes are a pcap file holding the browser's traffic.
    let got = pcapfile::read(&download);
    let tags = got.tags();
    for i in 0..10 {
        assert!(
            tags.contains(&format!("console-{i}")),
            "console-{i} in the download: {tags:?}"
        );
    }
    // Deleting the capture left its file on the machine.
    let kept = agent.file("/var/captures/console-pc.cap");
    assert!(kept.exists(), "{} was deleted", kept.display());
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The console checks the Add form as it is typed with the API's own rules and words: for each
/// invalid value, the message of `api/console/validate.js` (run by node) is the API's message.
#[tokio::test]
async fn the_console_validates_with_the_apis_messages() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let filter = |field: &str, value: &str| json!({"filters": [{"protocol": "Any", field: value}]});
    // (kind, value, JS path, the field as the API names it, the body's properties to merge)
    let mut cases: Vec<(&str, String, String, serde_json::Value)> = vec![];
    for name in ["-bad", "bad.", "a b", &"x".repeat(81)] {
        cases.push(("name", name.to_string(), String::new(), json!({})));
    }
    for path in [
        "/tmp/x.cap",
        "/var/captures/x.pcap",
        "/var/captures/../x.cap",
        "/var/captures//x.cap",
        "/var/captures/.cap",
        "/var/capturesx/a.cap",
        "/var/captures/a\tb.cap",
    ] {
        cases.push((
            "path",
            path.to_string(),
            "properties.storageLocation.filePath".into(),
            json!({"storageLocation": {"filePath": path}}),
        ));
    }
    for port in [
        "90-80",
        "70000",
        "80;90-95",
        "80-90;100-110",
        "a",
        "80;;90",
        "1-2-3",
        "-80",
        " 8 0 ",
    ] {
        for field in ["localPort", "remotePort"] {
            cases.push((
                "port",
                port.to_string(),
                format!("properties.filters[0].{field}"),
                filter(field, port),
            ));
        }
    }
    for address in [
        "10.0.0.300",
        "10.0.0.0/24",
        "10.0.0.5-10.0.0.1",
        "10.0.0.1-::1",
        "fe80::1%eth0",
        "::2-::1",
        "10.0.0.1;10.0.0.2-10.0.0.3",
        "010.0.0.1",
        "1:2:3:4:5:6:7:8:9",
    ] {
        for field in ["localIPAddress", "remoteIPAddress"] {
            cases.push((
                "address",
                address.to_string(),
                format!("properties.filters[0].{field}"),
                filter(field, address),
            ));
        }
    }
    let integers: [(&str, &str, u64); 4] = [
        ("timeLimitInSeconds", "18001", 18000),
        ("timeLimitInSeconds", "abc", 18000),
        ("bytesToCapturePerPacket", "4294967296", 4294967295),
        ("totalBytesPerSession", "1.5", 4294967295),
    ];
    for (field, value, _) in integers {
        cases.push((
            "integer",
            value.to_string(),
            format!("properties.{field}"),
            json!({ field: value }),
        ));
    }

    // A continuous capture's file size against the snap length (bytesToCapturePerPacket).
    let file_sizes: [(&str, &str); 5] = [
        ("1000", ""),
        ("262183", "0"),
        ("100", "128"),
        ("abc", "128"),
        ("262183", "300000"),
    ];
    for (size, per_packet) in file_sizes {
        let mut props = json!({"continuousCapture": true, "storageLocation": {"localPath": "/var/captures/ok.cap"},
            "captureSettings": {"fileSizeInBytes": size}});
        if !per_packet.is_empty() {
            props["bytesToCapturePerPacket"] = json!(per_packet.parse::<u64>().unwrap());
        }
        if let Ok(n) = size.parse::<u64>() {
            props["captureSettings"]["fileSizeInBytes"] = json!(n);
        }
        cases.push(("fileSize", size.to_string(), per_packet.to_string(), props));
    }

    // The API's messages.
    let mut api_messages = vec![];
    for (i, (kind, value, _, props)) in cases.iter().enumerate() {
        let mut body = json!({"target": ctx.vm("vm1"), "storageLocation": {"filePath": "/var/captures/ok.cap"}});
        for (k, v) in props.as_object().unwrap() {
            body[k] = v.clone();
        }
        let name = if *kind == "name" {
            value.clone()
        } else {
            format!("pc{i}")
        };
        let url = with_version_path(&ctx, &name);
        let r = ctx.api.put(&url, &json!({"properties": body})).await;
        assert_eq!(r.status.as_u16(), 400, "{kind} {value:?}: {}", r.text);
        api_messages.push(r.body["error"]["message"].as_str().unwrap().to_string());
    }

    // The console's.
    let mut input: Vec<serde_json::Value> = cases
        .iter()
        .map(|(kind, value, path, _)| json!({"kind": kind, "value": value, "path": path}))
        .collect();
    let first_integer = input.len() - integers.len() - file_sizes.len();
    for (k, (_, _, max)) in integers.iter().enumerate() {
        input[first_integer + k]["max"] = json!(max);
    }
    for case in input.iter_mut().filter(|c| c["kind"] == "fileSize") {
        case["perPacket"] = case["path"].take();
    }
    let file = e2e_tests::scratch().join(format!(
        "console-cases-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, serde_json::to_vec(&input).unwrap()).unwrap();
    let (ok, out) = run_script("messages.mjs", &[file.display().to_string()], &[]);
    let _ = std::fs::remove_file(&file);
    assert!(ok, "{out}");
    let console: Vec<Option<String>> = serde_json::from_str(out.trim()).expect(&out);
    for ((case, api), js) in cases.iter().zip(&api_messages).zip(&console) {
        assert_eq!(
            js.as_deref(),
            Some(api.as_str()),
            "{} {:?}: the console says {js:?}, the API {api:?}",
            case.0,
            case.1
        );
    }
}

fn with_version_path(ctx: &Ctx, name: &str) -> String {
    ctx.capture("nw1", &name.replace(' ', "%20"))
}

/// The console's figures with 1,000 captures (not part of the suite: `cargo test -p e2e-tests
/// --test e2e console_bench -- --ignored --nocapture`): time to the full list (with every
/// capture's status), and in-page times of rendering the sorted list and of applying a filter.
#[tokio::test]
#[ignore]
async fn console_bench() {
    // 1,000 PUTs as fast as they go: no per-principal rate limit for this set-up.
    let ctx = Ctx::with(|o| {
        o.agent_wait_seconds = 3600;
        o.extra
            .extend(["--rate-limit-per-second".to_string(), "0".to_string()]);
    })
    .await;
    ctx.create_watcher("nw1").await;
    let n = 1000;
    let body = json!({"properties": {"target": ctx.vm("vm2"), "storageLocation": {"filePath": "/var/captures/b.cap"}}});
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let puts = chunk.iter().map(|i| {
            let url = ctx.capture("nw1", &format!("pc-{i:05}"));
            let body = body.clone();
            let api = &ctx.api;
            async move { api.put(&url, &body).await.status.as_u16() }
        });
        for status in futures_util::future::join_all(puts).await {
            assert_eq!(status, 201);
        }
    }
    let env = vec![
        ("CONSOLE_URL", ctx.server.url.clone()),
        ("OWNER_TOKEN", ctx.server.credentials().owner_token.clone()),
        ("CAPTURES", n.to_string()),
        (
            "WATCHER_ID",
            format!(
                "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1",
                ctx.sub
            ),
        ),
    ];
    let (ok, out) = tokio::task::spawn_blocking(move || run_script("bench.mjs", &[], &env))
        .await
        .unwrap();
    println!("{out}");
    assert!(ok, "{out}");
}

/// A server started with `--auth-disabled` (local development): the console opens on the list
/// with no sign-in and says that authentication is off; with no capture it shows how to register
/// an agent; Add creates the region's network watcher when there is none (as the portal does),
/// then the capture, which runs.
#[tokio::test]
async fn the_console_without_authentication() {
    use e2e_tests::http::{capture_path, watcher_path, with_version};
    let db = e2e_tests::TestDb::new().await;
    let mut o = e2e_tests::ServerOptions::new(&db.url);
    o.extra.push("--auth-disabled".into());
    let server = e2e_tests::TestServer::start(o).await;
    let api = e2e_tests::Api::new(&server.url);
    let sub = e2e_tests::new_subscription();
    let vm = e2e_tests::vm_id(&sub, "rg1", "vm1");
    // A real agent, registered without an enrollment token (none is needed with auth off).
    let agent = e2e_tests::real_agent::RealAgent::start(&server.url, &vm, &[]);
    let machines = format!(
        "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.get(&machines).await.body["value"]
        .as_array()
        .is_none_or(|v| v.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never registered: {}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The registration made the region's watcher, as Azure does: gone, the console makes it.
    let watcher = with_version(&watcher_path(
        &sub,
        "NetworkWatcherRG",
        "NetworkWatcher_eastus",
    ));
    let r = api.delete(&watcher).await;
    assert!(r.status.is_success(), "{}", r.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.get(&watcher).await.status.as_u16() != 404 {
        assert!(std::time::Instant::now() < deadline, "the watcher stays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let env = vec![("CONSOLE_URL", server.url.clone()), ("SUB", sub.clone())];
    let (ok, out) = tokio::task::spawn_blocking(move || run_script("noauth.mjs", &[], &env))
        .await
        .unwrap();
    println!("{out}");
    assert!(
        ok,
        "{out}\nserver log:\n{}\nagent log:\n{}",
        server.log_text(),
        agent.log_text()
    );
    // What the console added is there, in the watcher it created, as the console asked.
    let r = api.get(&watcher).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(r.body["location"], "eastus");
    let r = api
        .get(&with_version(&capture_path(
            &sub,
            "NetworkWatcherRG",
            "NetworkWatcher_eastus",
            "added-open",
        )))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(r.body["properties"]["target"], json!(vm));
}
