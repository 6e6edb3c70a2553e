//! Authentication and authorization: bearer tokens (built-in issuer, JWKS file), RBAC scopes and
//! roles, operation monitors per caller, throttling, agent enrollment and confinement, secrets
//! kept out of the logs.

use std::time::Duration;

use e2e_tests::http::{capture_path, watcher_path, with_version};
use e2e_tests::{Api, ScriptedAgent, ServerOptions, TestDb, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::Ctx;

const FILE_ISSUER: &str = "https://issuer.test.invalid/";

fn fixture(name: &str) -> std::path::PathBuf {
    e2e_tests::workspace_root()
        .join("tests/fixtures")
        .join(name)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a token for `oid`, valid for an hour, for ARM.
fn claims(oid: &str) -> Value {
    json!({"iss": FILE_ISSUER, "aud": "https://management.azure.com", "oid": oid, "sub": oid,
           "iat": now(), "nbf": now() - 5, "exp": now() + 3600})
}

fn rs256(claims: &Value, kid: &str) -> String {
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-test-key.pem")).unwrap()).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_string());
    encode(&h, claims, &key).unwrap()
}

/// Form encoding of a value.
fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// A new ES256 key: (kid, encoding key, its JWK).
fn es256_key(kid: &str) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                     "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    (EncodingKey::from_ec_der(&pair.serialize_der()), jwk)
}

fn write_jwks(path: &std::path::Path, keys: &[Value]) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
}

async fn ctx_with_file_issuer() -> (Ctx, std::path::PathBuf) {
    let jwks = e2e_tests::scratch().join(format!("jwks-{}.json", uuid::Uuid::new_v4().simple()));
    let rsa: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("rsa-test-key.jwk.json")).unwrap())
            .unwrap();
    write_jwks(&jwks, &[rsa]);
    let path = jwks.clone();
    let ctx = Ctx::with(move |o| {
        o.extra.extend([
            "--jwks-file".into(),
            path.display().to_string(),
            "--jwks-issuer".into(),
            FILE_ISSUER.into(),
        ])
    })
    .await;
    (ctx, jwks)
}

fn assert_401(r: &e2e_tests::http::Response, what: &str) {
    assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
    assert!(r.body["error"]["code"].is_string(), "{what}: {}", r.text);
}

#[tokio::test]
async fn only_valid_tokens_of_trusted_issuers_get_in() {
    let (ctx, jwks) = ctx_with_file_issuer().await;
    ctx.create_watcher("nw1").await;
    let url = ctx.watcher("nw1");
    let oid = uuid::Uuid::new_v4().to_string();
    ctx.server.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        &oid,
        "--role",
        "Reader",
        "--scope",
        &format!("/subscriptions/{}", ctx.sub),
    ]);
    let as_token = |t: Option<String>| ctx.api.with_bearer(t.as_deref());

    // A valid RS256 token of the JWKS-file issuer.
    let good = rs256(&claims(&oid), "rsa-test-1");
    let r = as_token(Some(good.clone())).get(&url).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);

    let mut c = claims(&oid);
    c["exp"] = json!(now() - 120);
    let expired = rs256(&c, "rsa-test-1");
    let mut c = claims(&oid);
    c["nbf"] = json!(now() + 600);
    let not_yet = rs256(&c, "rsa-test-1");
    let mut c = claims(&oid);
    c["aud"] = json!("https://storage.azure.com");
    let wrong_aud = rs256(&c, "rsa-test-1");
    let mut c = claims(&oid);
    c["iss"] = json!("https://evil.test.invalid/");
    let wrong_iss = rs256(&c, "rsa-test-1");
    let unknown_kid = rs256(&claims(&oid), "no-such-kid");
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(&oid).to_string().as_bytes())
    );
    // Algorithm confusion: HS256 with the issuer's public key as the secret.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-test-1".into());
    let confused = encode(
        &h,
        &claims(&oid),
        &EncodingKey::from_secret(&std::fs::read(fixture("rsa-test-key.pub.pem")).unwrap()),
    )
    .unwrap();
    // A token of the built-in issuer signed by someone else's key with the right kid.
    let builtin_kid = ctx.server.cli(&["signing-keys", "list"]);
    let builtin_kid = builtin_kid
        .split('\t')
        .next()
        .unwrap_or_default()
        .to_string();
    let (forged_key, _) = es256_key(&builtin_kid);
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(builtin_kid);
    let mut c = claims(&oid);
    c["iss"] = json!(format!(
        "https://sts.capture.invalid/{}/",
        "00000000-0000-0000-0000-00000000ca9e"
    ));
    let forged = encode(&h, &c, &forged_key).unwrap();

    let r = ctx.api.with_bearer(None).get(&url).await;
    assert_401(&r, "missing");
    assert_eq!(r.body["error"]["code"], "AuthenticationFailed");
    assert!(
        r.header("x-ms-request-id").is_some(),
        "a 401 carries the request id"
    );
    // An encoded path is the same path: no way around the check.
    let r = ctx
        .api
        .with_bearer(None)
        .get(&url.replacen("/subscriptions", "/%73ubscriptions", 1))
        .await;
    assert_ne!(r.status.as_u16(), 200, "{}", r.text);
    for (what, token) in [
        ("malformed", "not.a.token".to_string()),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("wrong audience", wrong_aud),
        ("wrong issuer", wrong_iss),
        ("unknown kid", unknown_kid),
        ("alg none", alg_none),
        ("HS256 with the public key", confused),
        ("forged built-in", forged),
    ] {
        let r = as_token(Some(token)).get(&url).await;
        assert_401(&r, what);
        assert_eq!(
            r.body["error"]["code"], "InvalidAuthenticationToken",
            "{what}"
        );
    }
    // Basic auth is not a bearer.
    let r = ctx
        .api
        .with_bearer(None)
        .request_with(
            reqwest::Method::GET,
            &url,
            None,
            &[("authorization", "Basic dXNlcjpwdw==")],
        )
        .await;
    assert_401(&r, "basic");

    // Key rotation in the JWKS file: a new key is picked up without a restart, and the old
    // key's tokens stay valid.
    let (es_key, es_jwk) = es256_key("es-rotated-1");
    let rsa: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("rsa-test-key.jwk.json")).unwrap())
            .unwrap();
    write_jwks(&jwks, &[rsa, es_jwk]);
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("es-rotated-1".into());
    let es_token = encode(&h, &claims(&oid), &es_key).unwrap();
    let r = e2e_tests::eventually("the new key is trusted", Duration::from_secs(15), || {
        let api = as_token(Some(es_token.clone()));
        let url = url.clone();
        async move {
            let r = api.get(&url).await;
            (r.status.as_u16() == 200).then_some(r)
        }
    })
    .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(
        as_token(Some(good.clone())).get(&url).await.status.as_u16(),
        200
    );

    // No token or secret in the log.
    let log = ctx.server.log_text();
    assert!(!log.contains(&good) && !log.contains(&es_token));
    assert!(!log.contains(&ctx.server.credentials().owner_token));
    assert!(!log.contains(&ctx.server.credentials().client_secret));
}

#[tokio::test]
async fn roles_and_scopes_decide_and_lists_show_only_what_may_be_read() {
    let ctx = Ctx::new().await;
    let sub = ctx.sub.clone();
    for (rg, nw) in [("rg1", "nw1"), ("rg2", "nw2")] {
        let r = ctx
            .api
            .put(
                &with_version(&watcher_path(&sub, rg, nw)),
                &json!({"location": if rg == "rg1" { "eastus" } else { "westus" }}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    }
    let rg1 = format!("/subscriptions/{sub}/resourceGroups/rg1");
    let (reader_id, reader) = ctx.principal(Some(("Reader", &rg1)));
    let (_, netc) = ctx.principal(Some(("Network Contributor", &rg1)));
    let (_, nobody) = ctx.principal(None);
    let reader_api = ctx.api.with_bearer(Some(&reader));
    let netc_api = ctx.api.with_bearer(Some(&netc));
    let nobody_api = ctx.api.with_bearer(Some(&nobody));

    // Reader: reads, lists and queryStatus in rg1; cannot write.
    assert_eq!(
        reader_api
            .get(&with_version(&watcher_path(&sub, "rg1", "nw1")))
            .await
            .status
            .as_u16(),
        200
    );
    let capture = with_version(&capture_path(&sub, "rg1", "nw1", "pc1"));
    let body = json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": {"filePath": "/var/captures/a.cap"}}});
    let r = reader_api.put(&capture, &body).await;
    let e = r.assert_error(403, "AuthorizationFailed");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains(&format!("'{reader_id}'")), "{m}");
    assert!(
        m.contains("'Microsoft.Network/networkWatchers/packetCaptures/write'"),
        "{m}"
    );
    assert!(m.contains("over scope '/subscriptions/"), "{m}");
    let r = reader_api
        .put(
            &with_version(&watcher_path(&sub, "rg1", "nwx")),
            &json!({"location": "northeurope"}),
        )
        .await;
    r.assert_error(403, "AuthorizationFailed");
    // Nothing of rg2.
    reader_api
        .get(&with_version(&watcher_path(&sub, "rg2", "nw2")))
        .await
        .assert_error(403, "AuthorizationFailed");
    let list = reader_api
        .get(&with_version(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Network/networkWatchers"
        )))
        .await;
    assert_eq!(list.status.as_u16(), 200);
    let names: Vec<&str> = list.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nw1"], "{}", list.text);
    // A list where the caller may read nothing is refused, as in ARM.
    reader_api
        .get(&with_version(&format!(
            "/subscriptions/{sub}/resourceGroups/rg2/providers/Microsoft.Network/networkWatchers"
        )))
        .await
        .assert_error(403, "AuthorizationFailed");
    let subs = reader_api
        .request(
            reqwest::Method::GET,
            "/subscriptions?api-version=2022-12-01",
            None,
        )
        .await;
    assert_eq!(
        subs.body["value"].as_array().unwrap().len(),
        1,
        "{}",
        subs.text
    );

    // Capturing a machine needs the right at the machine's scope too: Network Contributor on rg1
    // may capture vm1 of rg1 from the rg1 watcher, not a VM of rg2.
    let body = |target: String| json!({"properties": {"target": target, "storageLocation": {"filePath": "/var/captures/a.cap"}}});
    let r = netc_api
        .put(
            &with_version(&capture_path(&sub, "rg1", "nw1", "other-rg")),
            &body(e2e_tests::vm_id(&sub, "rg2", "vm2")),
        )
        .await;
    let e = r.assert_error(403, "AuthorizationFailed");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/vm2"),
        "{e}"
    );
    let r = netc_api
        .put(
            &with_version(&capture_path(&sub, "rg1", "nw1", "same-rg")),
            &body(ctx.vm("vm1")),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    // Network Contributor writes network resources in rg1 only; cannot read VMs.
    let r = netc_api
        .put(
            &with_version(&watcher_path(&sub, "rg1", "nw1")),
            &json!({"location": "eastus", "tags": {"a": "b"}}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    netc_api
        .put(
            &with_version(&watcher_path(&sub, "rg2", "nw2")),
            &json!({"location": "westus"}),
        )
        .await
        .assert_error(403, "AuthorizationFailed");
    netc_api.get(&format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-07-01")).await.assert_error(403, "AuthorizationFailed");

    // No assignment at all: nothing, whether or not the resource exists.
    nobody_api
        .get(&with_version(&watcher_path(&sub, "rg1", "nw1")))
        .await
        .assert_error(403, "AuthorizationFailed");
    nobody_api
        .get(&with_version(&watcher_path(&sub, "rg1", "missing")))
        .await
        .assert_error(403, "AuthorizationFailed");
    nobody_api
        .get(&with_version(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Network/networkWatchers"
        )))
        .await
        .assert_error(403, "AuthorizationFailed");

    // A role assignment takes effect at once (every replica drops its cached assignments).
    let (_, token) = {
        let sp: Value = serde_json::from_str(&ctx.server.cli(&[
            "service-principals",
            "create",
            "--name",
            "late",
        ]))
        .unwrap();
        let client = sp["clientId"].as_str().unwrap().to_string();
        let oid = sp["objectId"].as_str().unwrap().to_string();
        let token = ctx.server.cli(&["token", "--principal", &client]);
        let api = ctx.api.with_bearer(Some(&token));
        api.get(&with_version(&watcher_path(&sub, "rg2", "nw2")))
            .await
            .assert_error(403, "AuthorizationFailed");
        ctx.server.cli(&[
            "role-assignments",
            "create",
            "--assignee",
            &oid,
            "--role",
            "Reader",
            "--scope",
            &format!("/subscriptions/{sub}/resourceGroups/rg2"),
        ]);
        (oid, token)
    };
    let api = ctx.api.with_bearer(Some(&token));
    e2e_tests::eventually("the new assignment applies", Duration::from_secs(5), || {
        let api = api.clone();
        let url = with_version(&watcher_path(&sub, "rg2", "nw2"));
        async move { (api.get(&url).await.status.as_u16() == 200).then_some(()) }
    })
    .await;

    // Operation monitors answer only the caller that started the operation.
    let (_, other_owner) = ctx.principal(Some(("Owner", "/")));
    let r = ctx
        .api
        .delete(&with_version(&watcher_path(&sub, "rg2", "nw2")))
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.text);
    let monitor = r.header("azure-asyncoperation").unwrap();
    assert_eq!(ctx.api.get(&monitor).await.status.as_u16(), 200);
    let r = ctx.api.with_bearer(Some(&other_owner)).get(&monitor).await;
    r.assert_error(404, "ResourceNotFound");
    let location = r.header("location");
    assert!(location.is_none());
}

#[tokio::test]
async fn the_built_in_issuer_hands_out_tokens_and_rotates_keys_without_restart() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let creds = ctx.server.credentials().clone();
    let tenant = "00000000-0000-0000-0000-00000000ca9e";
    let http = reqwest::Client::new();
    let base = ctx.server.url.clone();
    let disco: Value = http
        .get(format!(
            "{base}/{tenant}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        disco["token_endpoint"],
        format!("{base}/{tenant}/oauth2/v2.0/token")
    );
    let token_url = disco["token_endpoint"].as_str().unwrap().to_string();
    let get_token = |secret: String, scope: &'static str| {
        let (http, url, id) = (http.clone(), token_url.clone(), creds.client_id.clone());
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("scope", scope),
            ]
            .iter()
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect::<Vec<_>>()
            .join("&");
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap()
        }
    };
    let r = get_token(
        creds.client_secret.clone(),
        "https://management.azure.com/.default",
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let first = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        ctx.api
            .with_bearer(Some(&first))
            .get(&ctx.watcher("nw1"))
            .await
            .status
            .as_u16(),
        200
    );
    // The az-style scope works too.
    let r = get_token(
        creds.client_secret.clone(),
        "https://management.core.windows.net//.default",
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    // A wrong secret: invalid_client.
    let r = get_token("wrong".into(), "https://management.azure.com/.default").await;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let r = get_token(
        creds.client_secret.clone(),
        "https://graph.microsoft.com/.default",
    )
    .await;
    assert_eq!(r.status().as_u16(), 400);

    // Rotation: a new key signs from now on, the server picks it up without a restart, and
    // tokens of the old key stay valid.
    let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    let old_kid = kid_of(&first);
    let new_kid = ctx.server.cli(&["signing-keys", "rotate"]);
    assert_ne!(old_kid, new_kid);
    let second = e2e_tests::eventually("tokens of the new key", Duration::from_secs(15), || {
        let f = get_token(
            creds.client_secret.clone(),
            "https://management.azure.com/.default",
        );
        let new_kid = new_kid.clone();
        async move {
            let body: Value = f.await.json().await.unwrap();
            let t = body["access_token"].as_str().unwrap().to_string();
            (kid_of(&t) == new_kid).then_some(t)
        }
    })
    .await;
    assert_eq!(
        ctx.api
            .with_bearer(Some(&second))
            .get(&ctx.watcher("nw1"))
            .await
            .status
            .as_u16(),
        200
    );
    assert_eq!(
        ctx.api
            .with_bearer(Some(&first))
            .get(&ctx.watcher("nw1"))
            .await
            .status
            .as_u16(),
        200
    );
    let jwks: Value = http
        .get(disco["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{jwks}"
    );

    let log = ctx.server.log_text();
    for secret in [&first, &second, &creds.client_secret, &creds.owner_token] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }
}

#[tokio::test]
async fn requests_over_the_rate_are_throttled() {
    let ctx = Ctx::with(|o| {
        o.extra.extend([
            "--rate-limit-per-second".into(),
            "2".into(),
            "--rate-limit-burst".into(),
            "3".into(),
        ])
    })
    .await;
    let url = ctx.watcher("nw1");
    let mut throttled = None;
    for _ in 0..10 {
        let r = ctx.api.get(&url).await;
        if r.status.as_u16() == 429 {
            throttled = Some(r);
            break;
        }
    }
    let r = throttled.expect("no 429 within 10 quick requests");
    let metrics = reqwest::get(format!("{}/metrics", ctx.server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("capture_api_throttled_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    r.assert_error(429, "TooManyRequests");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another principal is not affected.
    let (_, other) = ctx.principal(Some(("Reader", "/")));
    assert_ne!(
        ctx.api
            .with_bearer(Some(&other))
            .get(&url)
            .await
            .status
            .as_u16(),
        429
    );
}

#[tokio::test]
async fn agents_are_enrolled_confined_to_their_machine_and_revocable() {
    let ctx = Ctx::new().await;
    ctx.create_watcher("nw1").await;
    let rg1 = format!("/subscriptions/{}/resourceGroups/rg1", ctx.sub);
    let one_time = ctx
        .server
        .cli(&["agent-tokens", "create", "--scope", &rg1, "--ttl", "600"]);
    let register = |machine: String, bearer: Option<String>| {
        let url = ctx.server.url.clone();
        async move {
            let client = agent_protocol::AgentClient::new(&url, reqwest::Client::new()).unwrap();
            client.set_bearer(bearer);
            let r = client
                .register(&agent_protocol::RegisterRequest {
                    machine_id: machine,
                    location: "eastus".into(),
                    hostname: "h".into(),
                    os: "Linux".into(),
                    agent_version: "t".into(),
                    interfaces: vec![],
                    running_captures: vec![],
                })
                .await;
            (client, r)
        }
    };
    // No token, or a token's scope that does not hold the machine: refused.
    let (_, r) = register(ctx.vm("vm1"), None).await;
    assert_eq!(r.unwrap_err().status(), Some(401));
    let rg2_vm = e2e_tests::vm_id(&ctx.sub, "rg2", "vm9");
    let (_, r) = register(rg2_vm, Some(one_time.clone())).await;
    let e = r.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    // The token's first use (inside its scope): a credential.
    let (a_client, r) = register(ctx.vm("vm1"), Some(one_time.clone())).await;
    let a = r.unwrap();
    let a_credential = a.credential.clone().expect("a credential");
    assert!(a_credential.starts_with("cac_"));
    // One-time: a second use is refused.
    let (_, r) = register(ctx.vm("vm2"), Some(one_time.clone())).await;
    assert_eq!(r.unwrap_err().status(), Some(401));
    // Re-registration with the machine's own credential works; another machine's does not.
    let (_, r) = register(ctx.vm("vm1"), Some(a_credential.clone())).await;
    let a = r.unwrap();
    let (_, r) = register(ctx.vm("vm2"), Some(a_credential.clone())).await;
    assert_eq!(r.unwrap_err().status(), Some(401));
    // B, enrolled with the harness's token, has a capture.
    let b = ScriptedAgent::register(&ctx.server.url, &ctx.vm("vm2"), "eastus").await;
    let r = ctx.api.put(&ctx.capture("nw1", "b-capture"), &json!({"properties": {"target": ctx.vm("vm2"), "storageLocation": {"filePath": "/var/captures/b.cap"}}})).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let b_capture = crate::capture_id(&ctx, "nw1", "b-capture").await;
    b.wait_for(b_capture, agent_protocol::DesiredState::Running)
        .await;
    // A cannot read B's assignments (with B's agent id) nor report on B's capture.
    let e = a_client
        .poll(b.agent_id, None, Duration::from_secs(0))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let report = agent_protocol::CaptureReport::Running {
        start_time: chrono::Utc::now(),
        counters: Default::default(),
    };
    let e = a_client
        .report(a.agent_id, b_capture, &report)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = a_client
        .report(b.agent_id, b_capture, &report)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    // A's credential is no key to the management API.
    let r = ctx
        .api
        .with_bearer(Some(&a_credential))
        .get(&ctx.watcher("nw1"))
        .await;
    assert_401(&r, "agent credential on the management API");
    // An old credential (still valid for a grace period) cannot rotate and take over.
    let stale = agent_protocol::AgentClient::new(&ctx.server.url, reqwest::Client::new()).unwrap();
    // Rotation: the new credential works (and the old one for a grace period).
    let rotated = a_client.rotate_credential(a.agent_id).await.unwrap();
    assert_ne!(rotated.credential, a_credential);
    a_client
        .poll(a.agent_id, None, Duration::from_secs(0))
        .await
        .unwrap();
    stale.set_bearer(Some(a_credential.clone()));
    let e = stale.rotate_credential(a.agent_id).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    // Revocation ends A's access at once, even for a poll already waiting.
    let waiting = {
        let c = a_client.clone();
        let id = a.agent_id;
        let since = c
            .poll(id, None, Duration::from_secs(0))
            .await
            .unwrap()
            .generation;
        tokio::spawn(async move { c.poll(id, Some(since), Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    ctx.server
        .cli(&["agents", "revoke", "--machine-id", &ctx.vm("vm1")]);
    let e = waiting.await.unwrap().unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let e = a_client
        .poll(a.agent_id, None, Duration::from_secs(0))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    // B is untouched.
    b.poll(None, Duration::from_secs(0)).await;
    // A revoked machine does not enroll again with a token, until an administrator allows it.
    let reusable = ctx.server.credentials().enrollment_token.clone();
    let (_, r) = register(ctx.vm("vm1"), Some(reusable.clone())).await;
    let e = r.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    ctx.server
        .cli(&["agents", "re-enroll", "--machine-id", &ctx.vm("vm1")]);
    let (_, r) = register(ctx.vm("vm1"), Some(reusable)).await;
    assert!(r.unwrap().credential.is_some());

    let log = ctx.server.log_text();
    for secret in [&one_time, &a_credential, &rotated.credential] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }
}

#[tokio::test]
async fn without_auth_disabled_nothing_is_open_and_the_dev_flag_opens_everything() {
    let db = TestDb::new().await;
    let mut o = ServerOptions::new(&db.url);
    o.extra.push("--auth-disabled".into());
    let open = TestServer::start(o).await;
    let api = Api::new(&open.url);
    assert!(api.bearer.is_none());
    let sub = e2e_tests::new_subscription();
    let r = api
        .put(
            &with_version(&watcher_path(&sub, "rg1", "nw1")),
            &json!({"location": "eastus"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    assert!(open.log_text().contains("authentication is DISABLED"));
    // The same database behind a default server: 401 without a token.
    let mut o = ServerOptions::new(&db.url);
    o.secrets_key_file = open.options.secrets_key_file.clone();
    let closed = TestServer::start(o).await;
    let r = Api::new(&closed.url)
        .with_bearer(None)
        .get(&with_version(&watcher_path(&sub, "rg1", "nw1")))
        .await;
    assert_401(&r, "default server");
    // Health and the issuer's documents stay open.
    let r = reqwest::get(format!("{}/healthz", closed.url))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn an_openid_issuer_is_trusted_through_its_discovery_document() {
    let tenant = "00000000-0000-0000-0000-00000000ca9e";
    // Server A issues tokens with its own URL as the issuer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}/{tenant}/v2.0");
    let db_a = TestDb::new().await;
    let mut o = ServerOptions::new(&db_a.url);
    o.listen = format!("127.0.0.1:{port}");
    o.extra.extend(["--issuer".into(), issuer.clone()]);
    let a = TestServer::start(o).await;
    let a_owner = a.credentials().clone();
    // Server B, on another database, trusts A as an OpenID issuer.
    let db_b = TestDb::new().await;
    let mut o = ServerOptions::new(&db_b.url);
    o.extra.extend(["--oidc-issuer".into(), issuer.clone()]);
    let b = TestServer::start(o).await;
    let sub = e2e_tests::new_subscription();
    b.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        &a_owner.object_id,
        "--role",
        "Owner",
        "--scope",
        &format!("/subscriptions/{sub}"),
    ]);
    let url = with_version(&watcher_path(&sub, "rg1", "nw1"));
    let a_token = a.cli(&[
        "token",
        "--principal",
        &a_owner.client_id,
        "--issuer",
        &issuer,
    ]);
    let as_a = Api::new(&b.url).with_bearer(Some(&a_token));
    let r = as_a.put(&url, &json!({"location": "eastus"})).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    // A rotates its key: B fetches A's keys again for the unknown kid.
    a.cli(&["signing-keys", "rotate"]);
    let fresh = a.cli(&[
        "token",
        "--principal",
        &a_owner.client_id,
        "--issuer",
        &issuer,
    ]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = Api::new(&b.url).with_bearer(Some(&fresh)).get(&url).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    // B's own principals still work; a token of B is no good at A's scope it has no role in.
    assert_eq!(Api::new(&b.url).get(&url).await.status.as_u16(), 200);
}

#[tokio::test]
async fn the_real_agent_keeps_its_credential_private_rotates_it_and_survives_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = Ctx::with(|o| {
        o.extra
            .extend(["--agent-credential-seconds".into(), "15".into()])
    })
    .await;
    ctx.create_watcher("nw1").await;
    let scope = format!("/subscriptions/{}/resourceGroups/rg1", ctx.sub);
    let one_time = ctx
        .server
        .cli(&["agent-tokens", "create", "--scope", &scope, "--ttl", "600"]);
    let mut agent = e2e_tests::real_agent::RealAgent::start(
        &ctx.server.url,
        &ctx.vm("vm1"),
        &["--enrollment-token", &one_time],
    );
    let vm = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2026-04-01",
        ctx.sub
    );
    ctx.api
        .wait_http_status(&vm, 200, Duration::from_secs(20))
        .await;
    let file = agent.state_dir().join("credential.json");
    e2e_tests::eventually("the saved credential", Duration::from_secs(10), || {
        let f = file.clone();
        async move { f.exists().then_some(()) }
    })
    .await;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // Rotated before it expires (a third of its 15 s life left), and the agent keeps working.
    let rotated = e2e_tests::eventually("a rotated credential", Duration::from_secs(30), || {
        let file = file.clone();
        let first = first["credential"].clone();
        async move {
            let now: Value = serde_json::from_str(&std::fs::read_to_string(&file).ok()?).ok()?;
            (now["credential"] != first).then_some(now)
        }
    })
    .await;
    // A restart uses the stored credential: the one-time token is spent, and no longer needed.
    agent.kill();
    agent.restart();
    let r = ctx.api.put(&ctx.capture("nw1", "pc1"), &json!({"properties": {"target": ctx.vm("vm1"), "storageLocation": {"filePath": "/var/captures/x/pc1.cap"}}})).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let op = ctx
        .api
        .wait_operation(
            &r.header("azure-asyncoperation").unwrap(),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    let log = agent.log_text() + &ctx.server.log_text();
    for secret in [
        &one_time,
        first["credential"].as_str().unwrap(),
        rotated["credential"].as_str().unwrap(),
    ] {
        assert!(!log.contains(secret), "a secret is in a log");
    }
    // A revoked enrollment token enrolls nobody.
    let token = ctx
        .server
        .cli(&["agent-tokens", "create", "--scope", &scope, "--reusable"]);
    let list = ctx.server.cli(&["agent-tokens", "list"]);
    let id = list
        .lines()
        .find(|l| l.contains("reusable") && l.contains(&scope))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    ctx.server.cli(&["agent-tokens", "revoke", "--id", &id]);
    let client = agent_protocol::AgentClient::new(&ctx.server.url, reqwest::Client::new()).unwrap();
    client.set_bearer(Some(token));
    let e = client
        .register(&agent_protocol::RegisterRequest {
            machine_id: ctx.vm("vm3"),
            location: "eastus".into(),
            hostname: "h".into(),
            os: "Linux".into(),
            agent_version: "t".into(),
            interfaces: vec![],
            running_captures: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
}

#[tokio::test]
async fn hs256_tokens_need_the_explicit_development_flag() {
    let secret = e2e_tests::scratch().join(format!("hs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&secret, b"development secret of at least 32 bytes!").unwrap();
    let path = secret.clone();
    let ctx = Ctx::with(move |o| {
        o.extra.extend([
            "--dev-hs256-secret-file".into(),
            path.display().to_string(),
            "--dev-hs256-issuer".into(),
            "https://dev.test.invalid/".into(),
        ])
    })
    .await;
    ctx.create_watcher("nw1").await;
    let oid = uuid::Uuid::new_v4().to_string();
    ctx.server.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        &oid,
        "--role",
        "Reader",
        "--scope",
        "/",
    ]);
    let mut c = claims(&oid);
    c["iss"] = json!("https://dev.test.invalid/");
    let t = encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(&std::fs::read(&secret).unwrap()),
    )
    .unwrap();
    assert_eq!(
        ctx.api
            .with_bearer(Some(&t))
            .get(&ctx.watcher("nw1"))
            .await
            .status
            .as_u16(),
        200
    );
    assert!(
        ctx.server
            .log_text()
            .contains("HS256 development tokens are accepted")
    );
    // The same token at a server without the flag: refused.
    let other = Ctx::new().await;
    let r = other
        .api
        .with_bearer(Some(&t))
        .get(&other.watcher("nw1"))
        .await;
    assert_401(&r, "HS256 without the flag");
}
