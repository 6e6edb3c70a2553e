//! Captures stored in a storage account (a real Azurite), and downloads of capture files: blob
//! path and bytes, SAS scope, storage outages, a large capture with bounded agent memory.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e_tests::azurite::{ACCOUNT_KEY, Azurite};
use e2e_tests::credentials::authorized;
use e2e_tests::pcapfile;
use e2e_tests::real_agent::RealAgent;
use e2e_tests::traffic::udp;
use serde_json::{Value, json};

use crate::Ctx;

fn storage_id(ctx: &Ctx, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/{name}",
        ctx.sub
    )
}

/// Registers Azurite's account as `name` (key given on stdin, so stored sealed).
pub(crate) fn register(ctx: &Ctx, azurite: &Azurite, name: &str) -> String {
    let id = storage_id(ctx, name);
    let (ok, out, err) = ctx.server.storage_accounts(
        &[
            "add",
            "--id",
            &id,
            "--blob-endpoint",
            &azurite.endpoint(),
            "--key-stdin",
        ],
        ACCOUNT_KEY,
    );
    assert!(ok, "storage-accounts add failed: {out}{err}");
    id
}

pub(crate) struct World {
    pub(crate) ctx: Ctx,
    pub(crate) agent: RealAgent,
    pub(crate) azurite: Azurite,
    pub(crate) account: String,
}

pub(crate) async fn setup(
    agent_flags: &[&str],
    configure: impl FnOnce(&mut e2e_tests::ServerOptions),
) -> World {
    setup_on(Azurite::start(), agent_flags, configure).await
}

/// [`setup`] on a given Azurite.
pub(crate) async fn setup_on(
    azurite: Azurite,
    agent_flags: &[&str],
    configure: impl FnOnce(&mut e2e_tests::ServerOptions),
) -> World {
    let ctx = Ctx::with(configure).await;
    ctx.create_watcher("nw1").await;
    let account = register(&ctx, &azurite, "captures1");
    let agent = RealAgent::start(&ctx.server.url, &ctx.vm("vm1"), agent_flags);
    let vm = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2026-04-01",
        ctx.sub
    );
    ctx.api
        .wait_http_status(&vm, 200, Duration::from_secs(20))
        .await;
    World {
        ctx,
        agent,
        azurite,
        account,
    }
}

/// Creates a capture with `storage_location` and waits until it runs; returns the resource.
pub(crate) async fn start(w: &World, name: &str, storage_location: Value, extra: Value) -> Value {
    let mut props = json!({"target": w.ctx.vm("vm1"), "storageLocation": storage_location});
    for (k, v) in extra.as_object().unwrap() {
        props[k] = v.clone();
    }
    let r = w
        .ctx
        .api
        .put(&w.ctx.capture("nw1", name), &json!({"properties": props}))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let op = w
        .ctx
        .api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    r.body
}

pub(crate) async fn stop(ctx: &Ctx, name: &str) {
    let r = ctx.api.post(&ctx.capture_action("nw1", name, "stop")).await;
    assert!(r.status.is_success(), "{}", r.text);
}

/// Polls queryStatus until `done` holds (up to `timeout`).
pub(crate) async fn wait_status(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let url = ctx.capture_action("nw1", name, "queryStatus");
    let deadline = Instant::now() + timeout;
    loop {
        let s = ctx.api.post(&url).await;
        if done(&s.body) {
            return s.body;
        }
        assert!(Instant::now() < deadline, "capture {name}: {}", s.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn has_file(status: &Value, file: &str) -> bool {
    status["captureFiles"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == file))
}

/// The capture's download answer.
pub(crate) async fn download(w: &World, name: &str) -> Value {
    let r = w
        .ctx
        .api
        .post(&w.ctx.capture_action("nw1", name, "download"))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    r.body
}

/// `download` with `Accept: application/octet-stream`: the file itself.
async fn download_file(w: &World, name: &str) -> (u16, Vec<u8>) {
    let url = format!(
        "{}{}",
        w.ctx.server.url,
        w.ctx.capture_action("nw1", name, "download")
    );
    let r = authorized(reqwest::Client::new().post(&url), &url)
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// A GET of the server, with the harness's token.
async fn server_get(url: &str) -> reqwest::Response {
    authorized(reqwest::Client::new().get(url), url)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(url)
        .header("x-ms-version", "2025-11-05")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

pub(crate) fn tags_of(bytes: &[u8]) -> BTreeSet<String> {
    let path = e2e_tests::scratch().join(format!("blob-{}.cap", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, bytes).unwrap();
    let file = pcapfile::read(&path);
    std::fs::remove_file(&path).unwrap();
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

fn send_tagged(port: u16, tags: &[&str]) {
    for t in tags {
        udp("127.0.0.1:0", &format!("127.0.0.1:{port}"), t, 64);
    }
}

pub(crate) fn spool_files(agent: &RealAgent) -> Vec<String> {
    std::fs::read_dir(agent.captures_root.join(".uploads"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn storage_only_capture_lands_at_the_azure_path_and_leaves_nothing_on_the_machine() {
    let w = setup(&[], |_| {}).await;
    let created = start(
        &w,
        "pc1",
        json!({"storageId": w.account}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9301"}]}),
    )
    .await;
    // storagePath is there from the moment of creation, at Azure's path under our endpoint.
    let storage_path = created["properties"]["storageLocation"]["storagePath"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = format!(
        "{}/network-watcher-logs/subscriptions/{}/resourcegroups/rg1/providers/microsoft.compute/virtualmachines/vm1/",
        w.azurite.endpoint(),
        w.ctx.sub.to_lowercase()
    );
    let rest = storage_path
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{storage_path} does not start with {prefix}"));
    let parts: Vec<&str> = rest.split('/').collect();
    assert_eq!(parts.len(), 4, "{rest}");
    assert!(
        parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2,
        "{rest}"
    );
    let file = parts[3];
    assert!(
        file.starts_with("packetcapture_") && file.ends_with(".cap"),
        "{file}"
    );
    let stamp: Vec<&str> = file["packetcapture_".len()..file.len() - 4]
        .split('_')
        .collect();
    assert_eq!(
        stamp.iter().map(|s| s.len()).collect::<Vec<_>>(),
        [2, 2, 2, 3],
        "{file}"
    );

    send_tagged(9301, &["s-1", "s-2", "s-3"]);
    send_tagged(9302, &["noise"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&w.ctx, "pc1").await;
    let status = wait_status(&w.ctx, "pc1", Duration::from_secs(30), |s| {
        has_file(s, &storage_path)
    })
    .await;
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status}");
    assert_eq!(status["captureFiles"], json!([storage_path]), "{status}");

    let d = download(&w, "pc1").await;
    assert_eq!(d["source"], "StorageAccount", "{d}");
    let url = d["downloadUrl"].as_str().unwrap();
    assert!(url.starts_with(&format!("{storage_path}?")), "{url}");
    let (code, bytes) = fetch(url).await;
    assert_eq!(code, 200);
    assert_eq!(
        tags_of(&bytes),
        ["s-1", "s-2", "s-3"].map(String::from).into()
    );
    // The spool file is gone once the server confirmed the upload.
    assert!(
        spool_files(&w.agent).is_empty(),
        "{:?}",
        spool_files(&w.agent)
    );
    // Nothing of the key in the logs.
    assert!(!w.ctx.server.log_text().contains(ACCOUNT_KEY));
    assert!(!w.agent.log_text().contains(ACCOUNT_KEY));
    // Deleting the capture deletes neither the blob nor anything else.
    let r = w.ctx.api.delete(&w.ctx.capture("nw1", "pc1")).await;
    assert!(r.status.is_success(), "{}", r.text);
    w.ctx
        .api
        .wait_http_status(&w.ctx.capture("nw1", "pc1"), 404, Duration::from_secs(15))
        .await;
    let (code, again) = fetch(url).await;
    assert_eq!((code, again.len()), (200, bytes.len()));
}

#[tokio::test]
async fn both_keeps_the_local_file_and_uploads_the_same_bytes_and_file_only_downloads_through_the_agent()
 {
    let w = setup(&[], |_| {}).await;
    let both = format!("/var/captures/{}/both.cap", uuid::Uuid::new_v4().simple());
    let created = start(
        &w,
        "both",
        json!({"storageId": w.account, "filePath": both}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9311"}]}),
    )
    .await;
    let storage_path = created["properties"]["storageLocation"]["storagePath"]
        .as_str()
        .unwrap()
        .to_string();
    let local_only = format!("/var/captures/{}/local.cap", uuid::Uuid::new_v4().simple());
    start(
        &w,
        "local",
        json!({"filePath": local_only}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9312"}]}),
    )
    .await;
    send_tagged(9311, &["b-1", "b-2"]);
    send_tagged(9312, &["l-1", "l-2", "l-3"]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A running file-only capture can be downloaded too: what was written so far.
    let (code, partial) = download_file(&w, "local").await;
    assert_eq!(code, 200);
    assert!(partial.len() >= 24, "{}", partial.len());

    stop(&w.ctx, "both").await;
    stop(&w.ctx, "local").await;
    let status = wait_status(&w.ctx, "both", Duration::from_secs(30), |s| {
        has_file(s, &storage_path)
    })
    .await;
    assert_eq!(
        status["captureFiles"],
        json!([storage_path, both]),
        "{status}"
    );
    let d = download(&w, "both").await;
    assert_eq!(d["source"], "StorageAccount");
    let (code, blob) = fetch(d["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(code, 200);
    let local = std::fs::read(w.agent.file(&both)).unwrap();
    assert_eq!(blob, local, "the blob differs from the local file");
    assert_eq!(tags_of(&blob), ["b-1", "b-2"].map(String::from).into());

    // File only: the agent sends its file through the server, byte for byte.
    w.ctx.wait_capture_status("nw1", "local", "Stopped").await;
    let d = download(&w, "local").await;
    assert_eq!(d["source"], "Agent", "{d}");
    let url = d["downloadUrl"].as_str().unwrap();
    let r = server_get(url).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/vnd.tcpdump.pcap"
    );
    let streamed = r.bytes().await.unwrap().to_vec();
    let local = std::fs::read(w.agent.file(&local_only)).unwrap();
    assert_eq!(streamed, local);
    assert_eq!(
        tags_of(&streamed),
        ["l-1", "l-2", "l-3"].map(String::from).into()
    );
    // And with Accept: application/octet-stream, the action answers with the file itself.
    assert_eq!(download_file(&w, "local").await, (200, local));
}

#[tokio::test]
async fn unknown_and_premium_accounts_are_refused_and_keys_never_show() {
    let azurite = Azurite::start();
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let premium = storage_id(&ctx, "premium1");
    let key_file = azurite.dir.join("key");
    std::fs::write(&key_file, ACCOUNT_KEY).unwrap();
    let (ok, out, err) = ctx.server.storage_accounts(
        &[
            "add",
            "--id",
            &premium,
            "--blob-endpoint",
            &azurite.endpoint(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--premium",
        ],
        "",
    );
    assert!(ok, "{out}{err}");
    // A wrong key is found out at registration (the container cannot be created).
    let (ok, _, err) = ctx.server.storage_accounts(
        &[
            "add",
            "--id",
            &storage_id(&ctx, "wrongkey"),
            "--blob-endpoint",
            &azurite.endpoint(),
            "--key-stdin",
        ],
        "d3Jvbmcga2V5",
    );
    assert!(!ok);
    assert!(err.contains("403"), "{err}");
    assert!(err.contains("was not registered"), "{err}");
    // An unreachable endpoint and a key that is not base64: refused too, each saying why.
    let (ok, _, err) = ctx.server.storage_accounts(
        &[
            "add",
            "--id",
            &storage_id(&ctx, "unreachable"),
            "--blob-endpoint",
            "http://127.0.0.1:1/devstoreaccount1",
            "--key-stdin",
        ],
        "d3Jvbmcga2V5",
    );
    assert!(!ok);
    assert!(
        err.contains("unreachable") && err.contains("--blob-endpoint"),
        "{err}"
    );
    let notbase64 = storage_id(&ctx, "notbase64");
    let (ok, _, err) = ctx
        .server
        .storage_accounts(&["add", "--id", &notbase64, "--key-stdin"], "not base64!");
    assert!(!ok);
    assert!(
        err.contains("not valid base64") && err.contains(&notbase64),
        "{err}"
    );
    let (ok, out, _) = ctx.server.storage_accounts(&["list"], "");
    assert!(ok);
    assert!(out.contains(&premium) && out.contains("premium"), "{out}");
    for refused in ["wrongkey", "unreachable", "notbase64"] {
        assert!(!out.contains(refused), "{refused} was registered: {out}");
    }
    assert!(!out.contains(ACCOUNT_KEY), "{out}");

    let body = |storage_id: &str| json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": {"storageId": storage_id}}});
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &body(&storage_id(&ctx, "nosuch")),
        )
        .await;
    let e = r.assert_error(400, "StorageAccountNotFound");
    assert_eq!(e["target"], "properties.storageLocation.storageId");
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &body(&premium))
        .await;
    let e = r.assert_error(400, "PremiumStorageAccountNotSupported");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("premium storage accounts are not supported for packet captures"),
        "{e}"
    );
    // Nothing was stored.
    ctx.api
        .wait_http_status(&ctx.capture("nw1", "pc1"), 404, Duration::from_secs(1))
        .await;
    let (ok, out, _) = ctx
        .server
        .storage_accounts(&["remove", "--id", &premium.to_uppercase()], "");
    assert!(ok, "{out}");
}

#[tokio::test]
async fn upload_sas_can_create_and_write_its_blob_only_and_expires() {
    use e2e_tests::agent::ScriptedAgent;
    let azurite = Azurite::start();
    let ctx = Ctx::with(|o| o.extra.extend(["--upload-sas-seconds".into(), "4".into()])).await;
    ctx.create_watcher("nw1").await;
    let account = register(&ctx, &azurite, "captures1");
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": {"storageId": account}}}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let id = crate::capture_id(&ctx, "nw1", "pc1").await;
    let a = agent
        .wait_for(id, agent_protocol::DesiredState::Running)
        .await;
    let target = a.captures[0].upload.clone().expect("an upload SAS");
    let sas = target.blob_url.clone();
    let q: std::collections::HashMap<String, String> = reqwest::Url::parse(&sas)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!((q["sp"].as_str(), q["sr"].as_str()), ("cw", "b"), "{sas}");

    let http = reqwest::Client::new();
    let put = |url: String, body: &'static str| {
        http.put(url)
            .header("x-ms-version", "2025-11-05")
            .header("x-ms-blob-type", "BlockBlob")
            .body(body)
            .send()
    };
    // Create and write: yes.
    let r = put(sas.clone(), "pcap bytes").await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Read: no.
    let (code, _) = fetch(&sas).await;
    assert_eq!(code, 403);
    // Another blob with the same signature: no.
    let (base, query) = sas.split_once('?').unwrap();
    let other = format!("{}/other.cap?{query}", base.rsplit_once('/').unwrap().0);
    let r = put(other, "x").await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // After expiry: no.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = put(sas.clone(), "late").await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A renewal gives a working one, to the agent of the machine only.
    let fresh = agent
        .client
        .upload_sas(agent.agent_id, id, None)
        .await
        .unwrap();
    assert_eq!(
        put(fresh.blob_url.clone(), "renewed")
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let other_agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm2"), "eastus").await;
    let e = other_agent
        .client
        .upload_sas(other_agent.agent_id, id, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

#[tokio::test]
async fn upload_survives_a_storage_restart_and_gives_up_after_the_retry_period() {
    let mut w = setup(&["--upload-retry-seconds", "60"], |_| {}).await;
    let path = format!("/var/captures/{}/big.cap", uuid::Uuid::new_v4().simple());
    let created = start(
        &w,
        "pc1",
        json!({"storageId": w.account, "filePath": path}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9321"}]}),
    )
    .await;
    let storage_path = created["properties"]["storageLocation"]["storagePath"]
        .as_str()
        .unwrap()
        .to_string();
    // Enough data that the upload takes a while (~130 MiB).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = vec![b'x'; 1400];
    for _ in 0..96_000 {
        let _ = sock.send_to(&payload, "127.0.0.1:9321");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&w.ctx, "pc1").await;
    w.ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    // Stop the blob store in the middle of the upload: once some blocks have arrived.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir_size(&w.azurite.dir.join("data")) < 24 << 20 {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.azurite.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.azurite.restart();
    let status = wait_status(&w.ctx, "pc1", Duration::from_secs(60), |s| {
        has_file(s, &storage_path)
    })
    .await;
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status}");
    let (code, blob) = fetch(download(&w, "pc1").await["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(code, 200);
    let local = std::fs::read(w.agent.file(&path)).unwrap();
    assert!(local.len() > 10_000_000, "{}", local.len());
    assert!(
        blob == local,
        "the blob ({} bytes) differs from the file ({} bytes)",
        blob.len(),
        local.len()
    );
    assert!(
        w.agent
            .log_text()
            .contains("upload attempt failed; retrying")
            || w.agent.log_text().contains("upload starts over"),
        "the upload was not interrupted"
    );
    drop(w);

    // Storage down for longer than the retry period: StorageFailed, and the file is kept.
    let mut w = setup(&["--upload-retry-seconds", "3"], |_| {}).await;
    start(
        &w,
        "pc2",
        json!({"storageId": w.account}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9322"}]}),
    )
    .await;
    send_tagged(9322, &["kept-1", "kept-2"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.azurite.stop();
    stop(&w.ctx, "pc2").await;
    let status = wait_status(&w.ctx, "pc2", Duration::from_secs(30), |s| {
        s["packetCaptureStatus"] == "Error"
    })
    .await;
    assert_eq!(
        status["packetCaptureError"],
        json!(["StorageFailed"]),
        "{status}"
    );
    let kept = status["captureFiles"][0].as_str().unwrap().to_string();
    assert!(
        status["errorMessage"].as_str().unwrap().contains(&kept),
        "{status}"
    );
    let bytes = std::fs::read(&kept).unwrap();
    assert_eq!(
        tags_of(&bytes),
        ["kept-1", "kept-2"].map(String::from).into()
    );
    // And it can still be downloaded, through the agent.
    let d = download(&w, "pc2").await;
    assert_eq!(d["source"], "Agent", "{d}");
    let r = server_get(d["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_restarted_agent_resumes_the_uploads_it_had_not_finished() {
    let mut w = setup(&[], |_| {}).await;
    let created = start(
        &w,
        "pc1",
        json!({"storageId": w.account}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9341"}]}),
    )
    .await;
    let storage_path = created["properties"]["storageLocation"]["storagePath"]
        .as_str()
        .unwrap()
        .to_string();
    send_tagged(9341, &["r-1", "r-2"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.azurite.stop();
    stop(&w.ctx, "pc1").await;
    w.ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    // The agent dies while its upload retries; the blob store comes back while it is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.agent.kill();
    w.azurite.restart();
    w.agent.restart();
    let status = wait_status(&w.ctx, "pc1", Duration::from_secs(30), |s| {
        has_file(s, &storage_path)
    })
    .await;
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status}");
    let (code, blob) = fetch(download(&w, "pc1").await["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(code, 200);
    assert_eq!(tags_of(&blob), ["r-1", "r-2"].map(String::from).into());
    assert!(w.agent.log_text().contains("resuming an upload"));
    assert!(spool_files(&w.agent).is_empty());
}

#[tokio::test]
async fn storage_failures_keep_their_cause_and_removed_accounts_end_uploads() {
    // A capture that cannot start keeps its own error, not a storage one.
    let w = setup(&["--interface", "nosuchif0"], |_| {}).await;
    let r = w
        .ctx
        .api
        .put(
            &w.ctx.capture("nw1", "bad"),
            &json!({"properties": {"target": w.ctx.vm("vm1"), "storageLocation": {"storageId": w.account}}}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let status = wait_status(&w.ctx, "bad", Duration::from_secs(20), |s| {
        s["packetCaptureStatus"] == "Error"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status2 = w
        .ctx
        .api
        .post(&w.ctx.capture_action("nw1", "bad", "queryStatus"))
        .await
        .body;
    assert_eq!(
        status2["packetCaptureError"],
        json!(["CaptureFailed"]),
        "{status} {status2}"
    );
    drop(w);

    // The account is removed while an upload waits: StorageFailed, the file kept and named.
    let w = setup(&["--upload-retry-seconds", "600"], |_| {}).await;
    start(
        &w,
        "pc1",
        json!({"storageId": w.account}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9351"}]}),
    )
    .await;
    send_tagged(9351, &["gone-1"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut azurite = w.azurite;
    azurite.stop();
    stop(&w.ctx, "pc1").await;
    w.ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    let (ok, out, err) = w
        .ctx
        .server
        .storage_accounts(&["remove", "--id", &w.account], "");
    assert!(ok, "{out}{err}");
    azurite.restart();
    let status = wait_status(&w.ctx, "pc1", Duration::from_secs(40), |s| {
        s["packetCaptureStatus"] == "Error"
    })
    .await;
    assert_eq!(
        status["packetCaptureError"],
        json!(["StorageFailed"]),
        "{status}"
    );
    let message = status["errorMessage"].as_str().unwrap();
    assert!(message.contains("no longer registered"), "{message}");
    let kept = status["captureFiles"][0].as_str().unwrap();
    assert!(message.contains(kept), "{message}");
    assert_eq!(
        tags_of(&std::fs::read(kept).unwrap()),
        ["gone-1"].map(String::from).into()
    );
}

#[tokio::test]
async fn a_caller_going_away_ends_the_transfer_and_leaves_nothing_behind() {
    let w = setup(&[], |_| {}).await;
    let path = format!("/var/captures/{}/big.cap", uuid::Uuid::new_v4().simple());
    start(
        &w,
        "pc1",
        json!({"filePath": path}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9361"}]}),
    )
    .await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = vec![b'y'; 1400];
    for _ in 0..20_000 {
        let _ = sock.send_to(&payload, "127.0.0.1:9361");
    }
    stop(&w.ctx, "pc1").await;
    w.ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    let url = format!(
        "{}{}",
        w.ctx.server.url,
        w.ctx.capture_action("nw1", "pc1", "content")
    );
    // Read the first bytes only, then hang up.
    let mut r = server_get(&url).await;
    assert_eq!(r.status().as_u16(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(r);
    let db = w.ctx.db.client().await;
    e2e_tests::eventually(
        "the transfer is removed",
        Duration::from_secs(20),
        || async {
            let t: i64 = db
                .query_one("SELECT count(*) FROM file_transfers", &[])
                .await
                .unwrap()
                .get(0);
            let c: i64 = db
                .query_one("SELECT count(*) FROM transfer_chunks", &[])
                .await
                .unwrap()
                .get(0);
            (t == 0 && c == 0).then_some(())
        },
    )
    .await;
    // And a whole download still works afterwards.
    let local = std::fs::read(w.agent.file(&path)).unwrap();
    let r = server_get(&url).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), local);
}

#[tokio::test]
async fn a_download_through_another_replica_streams_the_agents_file() {
    let w = setup(&[], |_| {}).await;
    let path = format!("/var/captures/{}/r.cap", uuid::Uuid::new_v4().simple());
    start(
        &w,
        "pc1",
        json!({"filePath": path}),
        json!({"filters": [{"protocol": "UDP", "localPort": "9371"}]}),
    )
    .await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = vec![b'r'; 1400];
    for _ in 0..8_000 {
        let _ = sock.send_to(&payload, "127.0.0.1:9371");
    }
    stop(&w.ctx, "pc1").await;
    w.ctx.wait_capture_status("nw1", "pc1", "Stopped").await;
    // Replica B shares the database; the agent talks to replica A only.
    let mut options = w.ctx.server.options.clone();
    options.listen = "127.0.0.1:0".into();
    let b = e2e_tests::TestServer::start(options).await;
    let r = server_get(&format!(
        "{}{}",
        b.url,
        w.ctx.capture_action("nw1", "pc1", "content")
    ))
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let local = std::fs::read(w.agent.file(&path)).unwrap();
    assert!(local.len() > 8 << 20, "{}", local.len());
    assert_eq!(r.bytes().await.unwrap().to_vec(), local);
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test]
async fn a_512_mib_capture_uploads_with_bounded_agent_memory() {
    let w = setup(&[], |_| {}).await;
    let limit: u64 = 512 * 1024 * 1024;
    let created = start(
        &w,
        "big",
        json!({"storageId": w.account}),
        json!({"totalBytesPerSession": limit + 4096,
               "filters": [{"protocol": "UDP", "localPort": "9331"}]}),
    )
    .await;
    let storage_path = created["properties"]["storageLocation"]["storagePath"]
        .as_str()
        .unwrap()
        .to_string();
    // Send until the byte limit stops the capture.
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop_flag.clone();
    let sender = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = vec![b'z'; 8000];
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..1000 {
                let _ = sock.send_to(&payload, "127.0.0.1:9331");
            }
        }
    });
    let status = wait_status(&w.ctx, "big", Duration::from_secs(120), |s| {
        s["packetCaptureStatus"] != "Running"
    })
    .await;
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    assert_eq!(status["stopReason"], "TotalBytesExceeded", "{status}");
    let bytes = status["bytesCaptured"].as_u64().unwrap();
    assert!(bytes >= limit - 16 * 1024, "{status}");
    let status = wait_status(&w.ctx, "big", Duration::from_secs(240), |s| {
        has_file(s, &storage_path)
    })
    .await;
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status}");
    // The blob is the whole file: its size is the pcap header plus each record's header and data.
    let d = download(&w, "big").await;
    let r = reqwest::Client::new()
        .head(d["downloadUrl"].as_str().unwrap())
        .header("x-ms-version", "2025-11-05")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let blob_size: u64 = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let packets = status["packetsCaptured"].as_u64().unwrap();
    assert_eq!(blob_size, 24 + 16 * packets + bytes, "{status}");
    assert!(blob_size > limit, "{blob_size}");
    let rss = peak_rss(w.agent.pid());
    println!(
        "agent peak RSS during a {blob_size}-byte upload: {} MiB",
        rss >> 20
    );
    assert!(rss < 160 * 1024 * 1024, "agent peak RSS {} MiB", rss >> 20);
    assert!(spool_files(&w.agent).is_empty());
}
