//! Protocol edges (issue 10): ARM error and list shapes, a PATCH racing a DELETE, requests the
//! HTTP layer refuses, agents authenticated before their bodies are read, ES256 signatures in
//! one form only, server errors in the log and not in the answer.

use std::time::Duration;

use agent_protocol::DesiredState;
use e2e_tests::ScriptedAgent;
use e2e_tests::http::{watcher_path, with_version};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Ctx;

/// Blocks until some statement of the test database waits on a lock.
async fn wait_for_lock_wait(client: &tokio_postgres::Client) {
    // Generous: on a loaded machine the request may take seconds to reach the database.
    e2e_tests::eventually(
        "a statement waiting on a lock",
        Duration::from_secs(60),
        || async move {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0) > 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_patch_racing_a_delete_answers_404_and_one_during_a_delete_409() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    // The race, made certain: the watcher's row is deleted in a transaction that commits once
    // the PATCH waits for it.
    let db = ctx.db.client().await;
    db.batch_execute("BEGIN").await.unwrap();
    db.execute(
        "DELETE FROM network_watchers WHERE subscription_id = $1 AND name = 'nw1'",
        &[&ctx.sub],
    )
    .await
    .unwrap();
    let patch = {
        let (api, url) = (ctx.api.clone(), ctx.watcher("nw1"));
        tokio::spawn(async move {
            api.request(
                reqwest::Method::PATCH,
                &url,
                Some(&json!({"tags": {"a": "b"}})),
            )
            .await
        })
    };
    wait_for_lock_wait(&db).await;
    db.batch_execute("COMMIT").await.unwrap();
    let r = patch.await.unwrap();
    r.assert_error(404, "ResourceNotFound");

    // A watcher being deleted (its running capture is stopping) takes no PATCH, as no PUT.
    ctx.create_watcher("nw2").await;
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    let r = ctx
        .api
        .put(&ctx.capture("nw2", "pc1"), &ctx.capture_body("vm1"))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let id = crate::capture_id(&ctx, "nw2", "pc1").await;
    agent.wait_for(id, DesiredState::Running).await;
    agent.report_running(id, 1).await;
    let d = ctx.api.delete(&ctx.watcher("nw2")).await;
    assert_eq!(d.status.as_u16(), 202, "{}", d.text);
    let r = ctx
        .api
        .request(
            reqwest::Method::PATCH,
            &ctx.watcher("nw2"),
            Some(&json!({"tags": {"a": "b"}})),
        )
        .await;
    r.assert_error(409, "AnotherOperationInProgress");
    ctx.api
        .put(&ctx.watcher("nw2"), &json!({"location": "eastus"}))
        .await
        .assert_error(409, "AnotherOperationInProgress");
    let g = ctx.api.get(&ctx.watcher("nw2")).await;
    assert_eq!(g.body["tags"], json!({}), "{}", g.text);
}

#[tokio::test]
async fn error_bodies_have_target_and_details_only_when_there_are_some() {
    let ctx = Ctx::new().await;
    let r = ctx.api.get(&ctx.watcher("missing")).await;
    let e = r.assert_error(404, "ResourceNotFound").clone();
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["code", "message"], "{}", r.text);
    // Errors from outside the handlers (no route) too.
    let r = ctx
        .api
        .get(&format!("/subscriptions/{}/nothing-here", ctx.sub))
        .await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.text);
    assert!(r.body["error"].get("target").is_none(), "{}", r.text);
    assert!(r.body["error"].get("details").is_none(), "{}", r.text);
    // An error about a field names it.
    let r = ctx.api.put(&ctx.watcher("nw1"), &json!({})).await;
    let e = r.assert_error(400, "LocationRequired");
    assert_eq!(e["target"], "location", "{}", r.text);
    assert!(e.get("details").is_none(), "{}", r.text);
}

fn names(r: &e2e_tests::http::Response) -> Vec<String> {
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn lists_refuse_callers_with_no_access_at_or_below_their_scope() {
    let ctx = Ctx::new().await;
    let sub = ctx.sub.clone();
    for (rg, nw, location) in [
        ("rg1", "nw1", "eastus"),
        ("rg1", "nw2", "westus"),
        ("rg2", "nw3", "northeurope"),
    ] {
        let r = ctx
            .api
            .put(
                &with_version(&watcher_path(&sub, rg, nw)),
                &json!({ "location": location }),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    }
    let in_sub = with_version(&format!(
        "/subscriptions/{sub}/providers/Microsoft.Network/networkWatchers"
    ));
    let in_rg = |rg: &str| {
        with_version(&format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkWatchers"
        ))
    };
    let (nobody_id, nobody) = ctx.principal(None);
    let nobody = ctx.api.with_bearer(Some(&nobody));
    for (url, scope) in [
        (in_sub.clone(), format!("/subscriptions/{sub}")),
        (
            in_rg("rg1"),
            format!("/subscriptions/{sub}/resourceGroups/rg1"),
        ),
    ] {
        let r = nobody.get(&url).await;
        let m = r.assert_error(403, "AuthorizationFailed")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            m.contains(&format!(
                "The client '{nobody_id}' with object id '{nobody_id}' does not have authorization to perform action 'Microsoft.Network/networkWatchers/read' over scope '{scope}'"
            )),
            "{m}"
        );
    }
    // Reader on one watcher: its resource group and subscription list just that one; another
    // resource group is refused.
    let nw1 = watcher_path(&sub, "rg1", "nw1");
    let (_, one) = ctx.principal(Some(("Reader", &nw1)));
    let one = ctx.api.with_bearer(Some(&one));
    assert_eq!(names(&one.get(&in_rg("rg1")).await), ["nw1"]);
    assert_eq!(names(&one.get(&in_sub).await), ["nw1"]);
    one.get(&in_rg("rg2"))
        .await
        .assert_error(403, "AuthorizationFailed");
    // Reader in rg2 reads rg2 (nothing of rg1).
    let (_, rg2) = ctx.principal(Some((
        "Reader",
        &format!("/subscriptions/{sub}/resourceGroups/rg2"),
    )));
    let rg2 = ctx.api.with_bearer(Some(&rg2));
    assert_eq!(names(&rg2.get(&in_rg("rg2")).await), ["nw3"]);
    assert_eq!(names(&rg2.get(&in_sub).await), ["nw3"]);
    rg2.get(&in_rg("rg1"))
        .await
        .assert_error(403, "AuthorizationFailed");
    // The captures of a watcher: refused without access to the watcher or any of its
    // captures; a Reader of one capture lists just that one.
    nobody
        .get(&ctx.captures("nw1"))
        .await
        .assert_error(403, "AuthorizationFailed");
    for pc in ["pc1", "pc2"] {
        let body = json!({"properties": {"target": ctx.vm("vm1"),
            "storageLocation": {"filePath": format!("/var/captures/{pc}.cap")}}});
        let r = ctx.api.put(&ctx.capture("nw1", pc), &body).await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    }
    let pc1 = format!("{nw1}/packetCaptures/pc1");
    let (_, reader) = ctx.principal(Some(("Reader", &pc1)));
    let reader = ctx.api.with_bearer(Some(&reader));
    assert_eq!(names(&reader.get(&ctx.captures("nw1")).await), ["pc1"]);
    assert_eq!(
        names(&ctx.api.get(&ctx.captures("nw1")).await),
        ["pc1", "pc2"]
    );
}

/// The order n of P-256, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The same ES256 token with its signature's s replaced by n − s (a signature as valid).
fn flip_s(token: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 64);
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(sig[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        sig[32 + i] = d as u8;
    }
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn an_es256_token_is_accepted_in_one_form_only() {
    let ctx = Ctx::new().await;
    let token = ctx.server.credentials().owner_token.clone();
    let url = ctx.watcher("nw1");
    let r = ctx.api.with_bearer(Some(&token)).get(&url).await;
    r.assert_error(404, "ResourceNotFound");
    let flipped = flip_s(&token);
    assert_ne!(flipped, token);
    let r = ctx.api.with_bearer(Some(&flipped)).get(&url).await;
    r.assert_error(401, "InvalidAuthenticationToken");
    // Every token the issuer mints is in that form (half of ECDSA signatures have a high s).
    for _ in 0..8 {
        let creds = ctx.server.credentials();
        let t = ctx.server.cli(&["token", "--principal", &creds.client_id]);
        let r = ctx.api.with_bearer(Some(&t)).get(&url).await;
        r.assert_error(404, "ResourceNotFound");
        let r = ctx.api.with_bearer(Some(&flip_s(&t))).get(&url).await;
        r.assert_error(401, "InvalidAuthenticationToken");
    }
}

#[tokio::test]
async fn agents_are_authenticated_before_their_bodies_are_read() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let agent = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm1"), "eastus").await;
    let http = reqwest::Client::new();
    let base = ctx.server.url.clone();
    let post = |path: String, bearer: &'static str| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body("{not json");
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or_default();
            (status, body)
        }
    };
    let (a, some) = (agent.agent_id, uuid::Uuid::new_v4());
    for (path, bearer) in [
        ("/agent/v1/agents".to_string(), "cac_not-a-credential"),
        (
            "/agent/v1/agents".to_string(),
            "cet_00000000000000000000000000000000.x",
        ),
        ("/agent/v1/agents".to_string(), "something-else"),
        (
            format!("/agent/v1/agents/{a}/captures/{some}/report"),
            "cac_not-a-credential",
        ),
        (
            format!("/agent/v1/agents/{a}/captures/{some}/upload"),
            "cac_not-a-credential",
        ),
        (
            format!("/agent/v1/agents/{a}/transfers/{some}/failure"),
            "cac_not-a-credential",
        ),
    ] {
        let (status, body) = post(path.clone(), bearer).await;
        assert_eq!(status, 401, "{path} with {bearer}: {body}");
        assert_eq!(
            body["error"]["code"], "AgentNotAuthorized",
            "{path}: {body}"
        );
    }
    // With a good credential, the body is then read (and refused).
    let r = http
        .post(format!("{base}/agent/v1/agents"))
        .bearer_auth(&ctx.server.credentials().enrollment_token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

/// Sends `raw` on a new connection and reads until the server closes it.
async fn raw_exchange(server_url: &str, raw: &[u8]) -> String {
    let addr = server_url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = vec![];
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The status and ARM error of the last response in `text`.
fn last_response(text: &str) -> (u16, Value, String) {
    let at = text.rfind("HTTP/1.1 ").expect("a response");
    let response = &text[at..];
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, body, head.to_lowercase())
}

#[tokio::test]
async fn requests_the_http_layer_refuses_get_arm_errors() {
    let ctx = Ctx::new().await;
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "raw non-ASCII bytes in the path",
            b"GET /subscriptions/caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a control character in a header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        ("a 100k-character URI", long.into_bytes(), 414),
        (
            "both Content-Length and chunked",
            b"POST /agent/v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    let good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (what, bad, status) in cases {
        // Alone, and after a valid request on the same connection (which is answered first).
        for pipelined in [false, true] {
            let mut raw = if pipelined { good.to_vec() } else { vec![] };
            raw.extend_from_slice(&bad);
            let text = raw_exchange(&ctx.server.url, &raw).await;
            if pipelined {
                assert!(text.starts_with("HTTP/1.1 200 OK"), "{what}: {text}");
                assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{what}: {text}");
            }
            let (got, body, head) = last_response(&text);
            assert_eq!(got, status, "{what}: {text}");
            assert_eq!(body["error"]["code"], "BadRequest", "{what}: {text}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{what}: {text}"
            );
            assert!(
                head.contains("content-type: application/json"),
                "{what}: {head}"
            );
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-ms-request-id: "))
                .unwrap_or_else(|| panic!("{what}: no request id: {head}"));
            assert!(uuid::Uuid::parse_str(id.trim()).is_ok(), "{what}: {head}");
        }
    }
    // A chunked body whose framing is invalid: the body ends there, and the handler says so
    // (actix alone closes the connection without an answer).
    let token = &ctx.server.credentials().owner_token;
    let raw = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\nzz\r\n",
        ctx.watcher("nw1")
    );
    let text = raw_exchange(&ctx.server.url, raw.as_bytes()).await;
    let (got, body, head) = last_response(&text);
    assert_eq!(got, 400, "{text}");
    assert_eq!(body["error"]["code"], "InvalidRequestContent", "{text}");
    assert!(head.contains("x-ms-request-id: "), "{text}");
    ctx.api
        .get(&ctx.watcher("nw1"))
        .await
        .assert_error(404, "ResourceNotFound");
    // A first request head that does not arrive in time (5 s): an ARM 408.
    let addr = ctx.server.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
    let mut out = vec![];
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let (got, body, head) = last_response(&text);
    assert_eq!(got, 408, "{text}");
    assert_eq!(body["error"]["code"], "RequestTimeout", "{text}");
    assert!(head.contains("x-ms-request-id: "), "{text}");
    // The server is fine, and says what it refused.
    let r = reqwest::get(format!("{}/healthz", ctx.server.url))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        ctx.server
            .log_text()
            .contains("request refused before routing")
    );
}

#[tokio::test]
async fn server_errors_are_logged_with_the_request_id_and_answered_without_internals() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    // Break the table under the server: its queries of watchers now fail.
    let db = ctx.db.client().await;
    db.batch_execute("ALTER TABLE network_watchers RENAME COLUMN tags TO tags_gone")
        .await
        .unwrap();
    let r = ctx.api.get(&ctx.watcher("nw1")).await;
    let e = r.assert_error(500, "InternalServerError");
    let message = e["message"].as_str().unwrap();
    assert!(!message.contains("tags"), "{message}");
    assert!(!message.to_lowercase().contains("column"), "{message}");
    let id = r.header("x-ms-request-id").unwrap();
    let log = e2e_tests::eventually("the error in the log", Duration::from_secs(5), || {
        let log = ctx.server.log_text();
        let found = log.contains(&id);
        async move { found.then_some(log) }
    })
    .await;
    let error_line = log
        .lines()
        .find(|l| l.contains(&id) && l.contains("ERROR") && l.contains("tags"))
        .unwrap_or_else(|| panic!("no ERROR line with request id {id} and the cause:\n{log}"));
    assert!(error_line.contains("request failed"), "{error_line}");
}
