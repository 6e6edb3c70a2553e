//! Hostile input: control characters and oversized values are refused with an ARM 4xx (never a
//! 500, never a half-committed change), every caller-controlled size is bounded, and the server's
//! memory stays bounded under concurrent big bodies and lists.

use std::time::{Duration, Instant};

use e2e_tests::http::{Response, watcher_path, with_version};
use e2e_tests::{Api, ServerOptions};
use serde_json::{Value, json};

use crate::Ctx;

/// Bounds the server documents (README "Limits").
const MAX_FILTERS: usize = 100;
const MAX_FILTER_VALUE_CHARS: usize = 512;
const MAX_SCOPE_INSTANCES: usize = 1000;
const MAX_LIST_PAGE_BYTES: usize = 1024 * 1024;
/// The RSS bound the memory test holds the server to.
const MAX_RSS_BYTES: u64 = 256 * 1024 * 1024;

/// Asserts an ARM error with `status` and `code`, and `target` when given.
fn refused(r: &Response, status: u16, code: &str, target: Option<&str>, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.text);
    if let Some(t) = target {
        assert_eq!(r.body["error"]["target"], t, "{what}: {}", r.text);
    }
    assert!(r.header("retry-after").is_none(), "{what}: no Retry-After");
}

/// Sends `body` as is (any JSON text, any size) with the owner's token.
async fn put_raw(api: &Api, path: &str, body: Vec<u8>) -> Response {
    let url = format!("{}{path}", api.base);
    let mut req = api
        .http
        .put(&url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(b) = &api.bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Response {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
        text,
    }
}

/// Registers an agent with `body`'s fields over `base`'s registration (enrollment token).
async fn register(ctx: &Ctx, fields: Value) -> Response {
    let creds = e2e_tests::credentials::for_url(&ctx.server.url).unwrap();
    let mut body = json!({
        "machineId": ctx.vm("agentvm"),
        "location": "eastus",
        "hostname": "host",
        "os": "Linux",
        "agentVersion": "1",
        "interfaces": ["lo"],
        "runningCaptures": [],
    });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    ctx.api
        .with_bearer(Some(&creds.enrollment_token))
        .request(reqwest::Method::POST, "/agent/v1/agents", Some(&body))
        .await
}

/// A service principal with `role` at `scope`, and its token.
fn principal(ctx: &Ctx, role: &str, scope: &str) -> String {
    let sp: Value = serde_json::from_str(&ctx.server.cli(&[
        "service-principals",
        "create",
        "--name",
        "hostile-input",
    ]))
    .unwrap();
    let (client, oid) = (
        sp["clientId"].as_str().unwrap(),
        sp["objectId"].as_str().unwrap(),
    );
    ctx.server.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        oid,
        "--role",
        role,
        "--scope",
        scope,
    ]);
    ctx.server.cli(&["token", "--principal", client])
}

/// A filter whose four values are each close to the longest allowed.
fn long_filter(i: usize) -> Value {
    let ports: Vec<String> = (1000..1100).map(|p| p.to_string()).collect();
    let addresses: Vec<String> = (0..34).map(|a| format!("10.{i}.0.{a}")).collect();
    let fit = |parts: Vec<String>| {
        let mut s = String::new();
        for p in parts {
            if s.len() + p.len() + 1 > MAX_FILTER_VALUE_CHARS {
                break;
            }
            if !s.is_empty() {
                s.push(';');
            }
            s.push_str(&p);
        }
        s
    };
    json!({
        "protocol": "TCP",
        "localIPAddress": fit(addresses.clone()),
        "remoteIPAddress": fit(addresses),
        "localPort": fit(ports.clone()),
        "remotePort": fit(ports),
    })
}

/// A valid capture body of `filters` long filters (about 2 KB each).
fn big_capture(ctx: &Ctx, filters: usize) -> Value {
    json!({"properties": {
        "target": ctx.vm("vm1"),
        "storageLocation": {"filePath": "/var/captures/big.cap"},
        "filters": (0..filters).map(long_filter).collect::<Vec<_>>(),
    }})
}

/// `count` filters of `item` (raw JSON text) in a capture body.
fn many_filters(ctx: &Ctx, item: &str, count: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"properties": {{"target": "{}", "storageLocation": {{"filePath": "/var/captures/a.cap"}}, "filters": ["#,
        ctx.vm("vm1")
    );
    body.reserve(count * (item.len() + 1) + 8);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}}");
    body.into_bytes()
}

#[tokio::test]
async fn hostile_nul_characters_get_4xx_and_never_reach_the_database() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let sub = ctx.sub.clone();
    let nul_vm = format!(
        "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/v\u{0}m"
    );
    let file = json!({"filePath": "/var/captures/a.cap"});
    for (target, what) in [
        (nul_vm.clone(), "NUL in the VM name"),
        (
            format!(
                "/subscriptions/{sub}/resourceGroups/r\u{0}g/providers/Microsoft.Compute/virtualMachines/vm"
            ),
            "NUL in the resource group",
        ),
    ] {
        let r = ctx
            .api
            .put(
                &ctx.capture("nw1", "pc1"),
                &json!({"properties": {"target": target, "storageLocation": file}}),
            )
            .await;
        refused(&r, 400, "InvalidParameter", Some("properties.target"), what);
    }
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": {"storageId": format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/a\u{0}b")}}}),
        )
        .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.storageLocation.storageId"),
        "NUL in the storage id",
    );
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": file, "filters": [{"localIPAddress": "10.0.0.1\u{0}"}]}}),
        )
        .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.filters[0].localIPAddress"),
        "NUL in a filter",
    );

    // Watchers: location and tags.
    let r = ctx
        .api
        .put(&ctx.watcher("nw2"), &json!({"location": "east\u{0}us"}))
        .await;
    refused(
        &r,
        400,
        "LocationNotAvailableForResourceType",
        Some("location"),
        "NUL in a location",
    );
    let r = ctx
        .api
        .put(
            &ctx.watcher("nw2"),
            &json!({"location": "westus", "tags": {"k": "v\u{0}"}}),
        )
        .await;
    refused(&r, 400, "InvalidTagNameOrValue", None, "NUL in a tag value");
    let r = ctx
        .api
        .request(
            reqwest::Method::PATCH,
            &ctx.watcher("nw1"),
            Some(&json!({"tags": {"k\u{0}": "v"}})),
        )
        .await;
    refused(&r, 400, "InvalidTagNameOrValue", None, "NUL in a tag name");
    ctx.api
        .get(&ctx.watcher("nw2"))
        .await
        .assert_error(404, "ResourceNotFound");

    // $skiptoken of both lists.
    for list in [
        ctx.captures("nw1"),
        with_version(&format!(
            "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers"
        )),
        with_version(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Network/networkWatchers"
        )),
    ] {
        let r = ctx.api.get(&format!("{list}&$skiptoken=a%00b")).await;
        refused(
            &r,
            400,
            "InvalidParameter",
            Some("$skiptoken"),
            "NUL in $skiptoken",
        );
    }

    // Names in the path: reads find nothing (404), writes are refused (400).
    let nw = |name: &str| with_version(&watcher_path(&sub, "rg1", name));
    let pc = |name: &str| ctx.capture("nw1", name);
    let vm = with_version(&format!(
        "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/v%00m"
    ));
    refused(
        &ctx.api.get(&pc("a%00b")).await,
        404,
        "ResourceNotFound",
        None,
        "GET capture a%00b",
    );
    refused(
        &ctx.api
            .post(&ctx.capture_action("nw1", "a%00b", "queryStatus"))
            .await,
        404,
        "ResourceNotFound",
        None,
        "queryStatus a%00b",
    );
    refused(
        &ctx.api.put(&pc("a%00b"), &ctx.capture_body("vm1")).await,
        400,
        "InvalidResourceName",
        None,
        "PUT capture a%00b",
    );
    refused(
        &ctx.api.delete(&pc("a%00b")).await,
        400,
        "InvalidResourceName",
        None,
        "DELETE capture a%00b",
    );
    refused(
        &ctx.api.get(&ctx.capture("n%00w", "pc1")).await,
        404,
        "ResourceNotFound",
        None,
        "GET capture under n%00w",
    );
    refused(
        &ctx.api.get(&nw("a%00b")).await,
        404,
        "ResourceNotFound",
        None,
        "GET watcher a%00b",
    );
    refused(
        &ctx.api
            .put(&nw("a%00b"), &json!({"location": "westus"}))
            .await,
        400,
        "InvalidResourceName",
        None,
        "PUT watcher a%00b",
    );
    refused(
        &ctx.api.delete(&nw("n%00w")).await,
        400,
        "InvalidResourceName",
        None,
        "DELETE watcher n%00w",
    );
    refused(
        &ctx.api.get(&vm).await,
        404,
        "ResourceNotFound",
        None,
        "GET virtual machine v%00m",
    );

    // Agent registration fields.
    for (fields, target) in [
        (json!({"os": "Lin\u{0}ux"}), "os"),
        (json!({"hostname": "h\u{0}"}), "hostname"),
        (json!({"agentVersion": "1\u{0}"}), "agentVersion"),
        (json!({"interfaces": ["e\u{0}th0"]}), "interfaces[0]"),
        (json!({"location": "east\u{0}us"}), "location"),
        (json!({"machineId": nul_vm}), "machineId"),
    ] {
        let r = register(&ctx, fields.clone()).await;
        refused(
            &r,
            400,
            "InvalidParameter",
            Some(target),
            &format!("registration {fields}"),
        );
    }
    // Nothing was registered, and a valid registration still works.
    assert_eq!(register(&ctx, json!({})).await.status.as_u16(), 200);

    // Nothing above was stored: the one capture PUT that is valid still creates.
    let ok = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.text);
}

#[tokio::test]
async fn hostile_names_and_locations_are_refused_before_anything_is_committed() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    // A target VM name of 8,000 characters: 400, quickly, and nothing saved.
    let started = Instant::now();
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &json!({"properties": {"target": ctx.vm(&"v".repeat(8000)), "storageLocation": {"filePath": "/var/captures/a.cap"}}}),
        )
        .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.target"),
        "8,000-character VM name",
    );
    assert!(r.text.len() < 2000, "the error echoes the whole name");
    assert!(started.elapsed() < Duration::from_secs(5));
    ctx.api
        .get(&ctx.capture("nw1", "pc1"))
        .await
        .assert_error(404, "ResourceNotFound");
    // Scope instances and storage ids are ids too.
    let vmss = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1",
        ctx.sub
    );
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &json!({"properties": {"target": vmss, "targetType": "AzureVMSS", "scope": {"include": [format!("{vmss}/virtualMachines/{}", "1".repeat(5000))]}, "storageLocation": {"filePath": "/var/captures/a.cap"}}}),
        )
        .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.scope.include[0]"),
        "5,000-digit instance",
    );

    // Locations: a control character, 70,000 characters, a shape no region has.
    for (location, what) in [
        ("east\u{14}us".to_string(), "control character"),
        ("e".repeat(70_000), "70,000 characters"),
        ("east-us/../x".to_string(), "not a region name"),
    ] {
        let r = ctx
            .api
            .put(&ctx.watcher("nw2"), &json!({"location": location}))
            .await;
        refused(
            &r,
            400,
            "LocationNotAvailableForResourceType",
            Some("location"),
            what,
        );
        assert!(r.text.len() < 2000, "the error echoes the whole location");
        ctx.api
            .get(&ctx.watcher("nw2"))
            .await
            .assert_error(404, "ResourceNotFound");
        let r = register(&ctx, json!({"location": location})).await;
        refused(&r, 400, "InvalidParameter", Some("location"), what);
    }
    // Region names as ARM spells them are fine, and every long-running answer under the watcher
    // carries short, valid monitor headers.
    let created = ctx
        .api
        .put(&ctx.watcher("nw2"), &json!({"location": "East US 2"}))
        .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.text);
    let r = ctx
        .api
        .put(&ctx.capture("nw2", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let monitor = r.header("azure-asyncoperation").unwrap();
    assert!(monitor.contains("/locations/eastus2/"), "{monitor}");
    let r = ctx.api.delete(&ctx.capture("nw2", "pc1")).await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.text);
    assert!(r.header("location").unwrap().len() < 512);
    let r = ctx.api.delete(&ctx.watcher("nw2")).await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.text);
}

#[tokio::test]
async fn hostile_sizes_get_400_before_any_work() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let file = json!({"filePath": "/var/captures/a.cap"});
    // One filter too many; one character too many.
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &big_capture(&ctx, MAX_FILTERS + 1),
        )
        .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.filters"),
        "101 filters",
    );
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": file, "filters": [{"localPort": format!("{}80", " ".repeat(MAX_FILTER_VALUE_CHARS - 1))}]}}),
        )
        .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.filters[0].localPort"),
        "513-character filter value",
    );
    let vmss = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1",
        ctx.sub
    );
    let instances: Vec<String> = (0..=MAX_SCOPE_INSTANCES).map(|i| i.to_string()).collect();
    let r = ctx
        .api
        .put(
            &ctx.capture("nw1", "pc1"),
            &json!({"properties": {"target": vmss, "targetType": "AzureVMSS", "scope": {"exclude": instances}, "storageLocation": file}}),
        )
        .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.scope.exclude"),
        "1,001 instances",
    );
    let tags: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("t{i}"), json!("v"))).collect();
    let r = ctx
        .api
        .put(
            &ctx.watcher("nw2"),
            &json!({"location": "westus", "tags": tags}),
        )
        .await;
    refused(&r, 400, "InvalidTagsCount", Some("tags"), "51 tags");

    // 200,000 filters: in 600 KB, 400 naming the filters; in 4 MB, 413 before the body is read.
    let started = Instant::now();
    let r = put_raw(
        &ctx.api,
        &ctx.capture("nw1", "pc1"),
        many_filters(&ctx, "{}", 200_000),
    )
    .await;
    refused(
        &r,
        400,
        "InvalidParameter",
        Some("properties.filters"),
        "200,000 filters in 600 KB",
    );
    let r = put_raw(
        &ctx.api,
        &ctx.capture("nw1", "pc1"),
        many_filters(&ctx, r#"{"protocol":"TCP"}"#, 200_000),
    )
    .await;
    refused(
        &r,
        413,
        "RequestEntityTooLarge",
        None,
        "200,000 filters in 4 MB",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "hostile sizes took {:?}",
        started.elapsed()
    );
    ctx.api
        .get(&ctx.capture("nw1", "pc1"))
        .await
        .assert_error(404, "ResourceNotFound");

    // The largest valid capture still goes through, and its answer is bounded.
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &big_capture(&ctx, MAX_FILTERS))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    assert!(r.text.len() < 300_000, "{} bytes", r.text.len());
}

#[tokio::test]
async fn hostile_lists_are_paged_by_bytes() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    // 12 captures of about 200 KB: 2.4 MB, more than two pages' worth of bytes.
    for i in 0..12 {
        let r = ctx
            .api
            .put(
                &ctx.capture("nw1", &format!("pc{i:02}")),
                &big_capture(&ctx, MAX_FILTERS),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    }
    let mut url = ctx.captures("nw1");
    let mut names = vec![];
    let mut pages = 0;
    loop {
        let r = ctx.api.get(&url).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        pages += 1;
        let items = r.body["value"].as_array().unwrap();
        assert!(!items.is_empty());
        // At most the byte bound, plus the one item that may pass it.
        assert!(
            r.text.len() <= MAX_LIST_PAGE_BYTES + 300_000,
            "page of {} bytes",
            r.text.len()
        );
        names.extend(
            items
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string()),
        );
        match r.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("api-version="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
        assert!(pages < 20, "nextLink loops");
    }
    let want: Vec<String> = (0..12).map(|i| format!("pc{i:02}")).collect();
    assert_eq!(names, want);
    assert!(pages >= 3, "{pages} pages");
}

/// Resident and peak resident memory of `pid`, in bytes (Linux).
fn rss(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn hostile_load_keeps_memory_bounded_and_small_reads_fast() {
    // No throttling: the bounds alone must hold the memory.
    let ctx = Ctx::with(|o: &mut ServerOptions| {
        o.extra
            .extend(["--rate-limit-per-second".to_string(), "0".to_string()]);
    })
    .await;
    ctx.create_watcher("nw1").await;
    for i in 0..6 {
        let r = ctx
            .api
            .put(
                &ctx.capture("nw1", &format!("pc{i}")),
                &big_capture(&ctx, MAX_FILTERS),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    }
    let sub_scope = format!("/subscriptions/{}", ctx.sub);
    let reader = ctx
        .api
        .with_bearer(Some(&principal(&ctx, "Reader", &sub_scope)));
    let other_token = principal(&ctx, "Reader", &sub_scope);
    let pid = ctx.server.pid();
    let (rss_before, _) = rss(pid);

    let huge = many_filters(&ctx, r#"{"protocol":"TCP"}"#, 200_000);
    let dense = {
        // Just under the body limit, as many tiny objects as fit.
        let item = r#"{"a":0}"#;
        let n = (1024 * 1024 - 400) / (item.len() + 1);
        many_filters(&ctx, item, n)
    };
    let pc = ctx.capture("nw1", "hostile");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (api, pc) = (ctx.api.clone(), pc.clone());
        let body = if i % 2 == 0 {
            huge.clone()
        } else {
            dense.clone()
        };
        tasks.spawn(async move {
            let mut answers = vec![];
            for _ in 0..6 {
                answers.push(put_raw(&api, &pc, body.clone()).await.status.as_u16());
            }
            answers
        });
    }
    for _ in 0..8 {
        let (api, first) = (reader.clone(), ctx.captures("nw1"));
        tasks.spawn(async move {
            let mut answers = vec![];
            for _ in 0..3 {
                let mut url = first.clone();
                loop {
                    let r = api.get(&url).await;
                    answers.push(r.status.as_u16());
                    match r.body["nextLink"].as_str() {
                        Some(next) if r.status.is_success() => url = next.to_string(),
                        _ => break,
                    }
                }
            }
            answers
        });
    }
    // Meanwhile, another principal's small GETs, timed on a thread of their own (not behind
    // the load's client work).
    let small = {
        let (base, url) = (ctx.server.url.clone(), ctx.watcher("nw1"));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let other = Api::new(&base).with_bearer(Some(&other_token));
                let mut slowest = Duration::ZERO;
                let mut peak_rss = 0;
                for _ in 0..40 {
                    let started = Instant::now();
                    let r = other.get(&url).await;
                    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
                    slowest = slowest.max(started.elapsed());
                    peak_rss = peak_rss.max(rss(pid).0);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (slowest, peak_rss)
            })
        })
    };
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(answers) = tasks.join_next().await {
        for s in answers.unwrap() {
            *statuses.entry(s).or_default() += 1;
        }
    }
    let load_time = started.elapsed();
    let (slowest, sampled_peak) = small.join().unwrap();
    let (rss_after, hwm) = rss(pid);
    eprintln!(
        "hostile load: {load_time:?}, answers {statuses:?}; RSS before {} MiB, after {} MiB, peak {} MiB (sampled {} MiB); slowest small GET {slowest:?}",
        rss_before >> 20,
        rss_after >> 20,
        hwm >> 20,
        sampled_peak >> 20
    );
    // Every hostile body was refused (413 unread, 400 parsed up to the bound) or told to come
    // back (503); every list page was answered.
    for (status, n) in &statuses {
        assert!(
            matches!(status, 200 | 400 | 413 | 503),
            "{n} answers {status}: {statuses:?}"
        );
    }
    // The load was real: most listings completed and most hostile bodies were answered.
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= 8 * 3,
        "{statuses:?}"
    );
    assert!(
        statuses.get(&413).copied().unwrap_or(0) + statuses.get(&400).copied().unwrap_or(0)
            >= 8 * 6 / 2,
        "{statuses:?}"
    );
    assert!(hwm < MAX_RSS_BYTES, "peak RSS {} MiB", hwm >> 20);
    assert!(
        slowest < Duration::from_secs(5),
        "small GET took {slowest:?}"
    );
    ctx.api.get(&pc).await.assert_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn hostile_agent_reports_with_nul_characters_get_400() {
    use agent_protocol::{CaptureCounters, CaptureErrorCode, CaptureReport};
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let body = json!({"properties": {"target": ctx.vm("vm1"),
        "storageLocation": {"filePath": "/var/captures/nul.cap"}}});
    let r = ctx.api.put(&ctx.capture("nw1", "pc1"), &body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let agent = e2e_tests::ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    let assignments = agent.poll(None, Duration::from_secs(5)).await;
    let capture = assignments.captures[0].capture_id;
    let report = CaptureReport::Failed {
        code: CaptureErrorCode::CaptureFailed,
        message: "bad\0message".into(),
        counters: CaptureCounters {
            files: vec!["/var/captures/a\0b.cap".into()],
            ..Default::default()
        },
    };
    let refused = agent.client.report(agent.agent_id, capture, &report).await;
    let e = refused.expect_err("a report with NUL characters is refused");
    assert!(
        e.to_string().contains("400") || e.to_string().contains("NUL"),
        "{e}"
    );
    // Nothing was stored, and the capture still reads.
    let path = e2e_tests::http::capture_path(&ctx.sub, "rg1", "nw1", "pc1");
    let r = ctx
        .api
        .post(&with_version(&format!("{path}/queryStatus")))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(r.body["packetCaptureStatus"], "NotStarted", "{}", r.text);
}
