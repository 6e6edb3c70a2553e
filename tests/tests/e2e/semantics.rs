//! ARM semantics: paging, case-insensitive identity, idempotent and conditional PUT.

use std::collections::HashSet;

use serde_json::json;

use crate::Ctx;

/// A server with list pages of 2, and captures pc0, pc1, … of nw1.
async fn paged_captures(n: usize) -> Ctx {
    let ctx = Ctx::with(|o| o.page_size = 2).await;
    ctx.create_watcher("nw1").await;
    for i in 0..n {
        let r = ctx
            .api
            .put(
                &ctx.capture("nw1", &format!("pc{i}")),
                &ctx.capture_body("vm1"),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201);
    }
    ctx
}

/// `$expand=status` (this server's extension): each listed capture carries its queryStatus
/// result, on every page; without it the list is ARM's; any other `$expand` is a 400.
#[tokio::test]
async fn a_list_with_expand_status_carries_each_capture_status() {
    let ctx = paged_captures(3).await;
    let mut url = format!("{}&$expand=status", ctx.captures("nw1"));
    let mut seen = 0;
    loop {
        let r = ctx.api.get(&url).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        for c in r.body["value"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let status = ctx
                .api
                .post(&ctx.capture_action("nw1", name, "queryStatus"))
                .await;
            assert_eq!(
                c["properties"]["captureStatus"], status.body,
                "{name}: the list's status is queryStatus's"
            );
            seen += 1;
        }
        match r.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("$expand=status"), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen, 3);
    let plain = ctx.api.get(&ctx.captures("nw1")).await;
    assert!(
        plain.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["properties"].get("captureStatus").is_none()),
        "{}",
        plain.text
    );
    for bad in ["$expand=files", "$expand=status&$expand=status", "$expand="] {
        let r = ctx.api.get(&format!("{}&{bad}", ctx.captures("nw1"))).await;
        assert_eq!(r.status.as_u16(), 400, "{bad}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "InvalidParameter", "{bad}");
        assert_eq!(r.body["error"]["target"], "$expand", "{bad}");
    }
}

#[tokio::test]
async fn list_pages_follow_next_link_verbatim() {
    let ctx = paged_captures(5).await;
    let mut names = vec![];
    let mut url = ctx.captures("nw1");
    let mut pages = 0;
    loop {
        let r = ctx.api.get(&url).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        pages += 1;
        for c in r.body["value"].as_array().unwrap() {
            names.push(c["name"].as_str().unwrap().to_string());
        }
        match r.body["nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with("http") && next.contains("api-version=2026-03-01"),
                    "{next}"
                );
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, vec!["pc0", "pc1", "pc2", "pc3", "pc4"]);

    // Watchers page the same way.
    ctx.api
        .put(&ctx.watcher("nw2"), &json!({"location": "westus"}))
        .await;
    ctx.api
        .put(&ctx.watcher("nw3"), &json!({"location": "northeurope"}))
        .await;
    let all = ctx
        .api
        .get(&format!(
            "/subscriptions/{}/providers/Microsoft.Network/networkWatchers?api-version=2026-03-01",
            ctx.sub
        ))
        .await;
    assert_eq!(all.body["value"].as_array().unwrap().len(), 2);
    let next = all.body["nextLink"].as_str().unwrap();
    let rest = ctx.api.get(next).await;
    assert_eq!(rest.body["value"].as_array().unwrap().len(), 1);
    assert!(rest.body.get("nextLink").is_none());
}

#[tokio::test]
async fn identity_is_case_insensitive_and_keeps_creation_casing() {
    let ctx = Ctx::new().await;
    let r = ctx
        .api
        .put(&format!("/subscriptions/{}/resourceGroups/MyRG/providers/Microsoft.Network/networkWatchers/MyWatcher?api-version=2026-03-01", ctx.sub), &json!({"location": "eastus"}))
        .await;
    assert_eq!(r.status.as_u16(), 201);
    let upper_sub = ctx.sub.to_uppercase();
    let g = ctx
        .api
        .get(&format!("/SUBSCRIPTIONS/{upper_sub}/resourcegroups/myrg/PROVIDERS/microsoft.network/NETWORKWATCHERS/mywatcher?api-version=2026-03-01"))
        .await;
    assert_eq!(g.status.as_u16(), 200, "{}", g.text);
    assert_eq!(g.body["name"], "MyWatcher");
    assert!(
        g.body["id"]
            .as_str()
            .unwrap()
            .contains("/resourceGroups/MyRG/")
    );
    let body = json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": {"filePath": "/var/captures/a.cap"}}});
    let c = ctx
        .api
        .put(&format!("/subscriptions/{}/resourceGroups/MYRG/providers/Microsoft.Network/networkWatchers/MYWATCHER/packetCaptures/CapOne?api-version=2026-03-01", ctx.sub), &body)
        .await;
    assert_eq!(c.status.as_u16(), 201, "{}", c.text);
    let g = ctx
        .api
        .get(&format!("/subscriptions/{}/resourcegroups/myrg/providers/Microsoft.Network/networkWatchers/mywatcher/packetcaptures/capone?api-version=2026-03-01", ctx.sub))
        .await;
    assert_eq!(g.status.as_u16(), 200);
    assert_eq!(g.body["name"], "CapOne");
    // A second watcher of another casing is the same watcher.
    let again = ctx
        .api
        .put(&format!("/subscriptions/{}/resourceGroups/myrg/providers/Microsoft.Network/networkWatchers/MYWATCHER?api-version=2026-03-01", ctx.sub), &json!({"location": "EastUS"}))
        .await;
    assert_eq!(again.status.as_u16(), 200);
    assert_eq!(again.body["name"], "MyWatcher");
}

#[tokio::test]
async fn put_is_idempotent_conditional_and_race_free() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let first = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(first.status.as_u16(), 201);
    // Same parameters again: 201 with the same resource and the same operation.
    let retry = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(retry.status.as_u16(), 201);
    assert_eq!(retry.body["etag"], first.body["etag"]);
    assert_eq!(
        retry.header("azure-asyncoperation"),
        first.header("azure-asyncoperation")
    );
    // Different parameters: 409.
    let mut other = ctx.capture_body("vm1");
    other["properties"]["timeLimitInSeconds"] = json!(30);
    ctx.api
        .put(&ctx.capture("nw1", "pc1"), &other)
        .await
        .assert_error(409, "PacketCaptureParametersConflict");
    // Conditional requests.
    let etag = first.body["etag"].as_str().unwrap().to_string();
    let put_with = |name: &str, headers: Vec<(&'static str, String)>| {
        let api = ctx.api.clone();
        let url = ctx.capture("nw1", name);
        let body = ctx.capture_body("vm1");
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            api.request_with(reqwest::Method::PUT, &url, Some(&body), &h)
                .await
        }
    };
    put_with("pc1", vec![("If-None-Match", "*".into())])
        .await
        .assert_error(412, "PreconditionFailed");
    put_with("pc1", vec![("If-Match", "W/\"nope\"".into())])
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(
        put_with("pc1", vec![("If-Match", etag.clone())])
            .await
            .status
            .as_u16(),
        201
    );
    put_with("pc2", vec![("If-Match", etag.clone())])
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(
        put_with("pc2", vec![("If-None-Match", "*".into())])
            .await
            .status
            .as_u16(),
        201
    );

    // Concurrent PUTs of one name create exactly one capture.
    let mut tasks = vec![];
    for _ in 0..16 {
        let api = ctx.api.clone();
        let url = ctx.capture("nw1", "racy");
        let body = ctx.capture_body("vm1");
        tasks.push(tokio::spawn(async move { api.put(&url, &body).await }));
    }
    let mut etags = HashSet::new();
    let mut ops = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        etags.insert(r.body["etag"].as_str().unwrap().to_string());
        ops.insert(r.header("azure-asyncoperation").unwrap());
    }
    assert_eq!(etags.len(), 1);
    assert_eq!(ops.len(), 1);
    let client = ctx.db.client().await;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM packet_captures WHERE name_key = 'racy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let n: i64 = client
        .query_one("SELECT count(*) FROM operations o JOIN packet_captures c ON c.id = o.capture_id WHERE c.name_key = 'racy'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn public_url_is_the_base_of_monitor_and_next_links() {
    let ctx = Ctx::with(|o| {
        o.page_size = 1;
        o.extra = vec![
            "--public-url".into(),
            "https://capture.example.test/".into(),
        ];
    })
    .await;
    ctx.create_watcher("nw1").await;
    let r = ctx
        .api
        .put(&ctx.capture("nw1", "pc1"), &ctx.capture_body("vm1"))
        .await;
    let prefix = format!(
        "https://capture.example.test/subscriptions/{}/providers/Microsoft.Network/locations/eastus/",
        ctx.sub
    );
    assert!(
        r.header("azure-asyncoperation")
            .unwrap()
            .starts_with(&format!("{prefix}operations/"))
    );
    assert!(
        r.header("location")
            .unwrap()
            .starts_with(&format!("{prefix}operationResults/"))
    );
    ctx.api
        .put(&ctx.capture("nw1", "pc2"), &ctx.capture_body("vm1"))
        .await;
    let list = ctx.api.get(&ctx.captures("nw1")).await;
    assert!(
        list.body["nextLink"]
            .as_str()
            .unwrap()
            .starts_with("https://capture.example.test/subscriptions/")
    );
}
