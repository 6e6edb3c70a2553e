//! Sign-in of people at the built-in issuer: users on the command line, the authorization code
//! flow with PKCE over HTTP (no browser: the form is read and posted as a browser would), the
//! tokens at the ARM API with RBAC, refresh token rotation, sign-out, refusals, throttling of
//! failed sign-ins, one-time sign-in links (also the one printed at the embedded default's
//! start), and the console's configuration.

use std::net::IpAddr;
use std::process::{Command, Stdio};

use e2e_tests::{Api, ServerOptions, TestServer};
use serde_json::{Value, json};

use crate::Ctx;

const CONSOLE: &str = "00000000-0000-0000-0000-000000c0501e";
const TENANT: &str = "00000000-0000-0000-0000-00000000ca9e";
/// RFC 7636 appendix B: a verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const SCOPE: &str = "openid profile offline_access https://management.azure.com/user_impersonation";

/// Runs `capture-api ARGS` with `stdin`: success, stdout, stderr.
fn cli_stdin(server: &TestServer, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(e2e_tests::bin("capture-api"))
        .args(args)
        .args(server.options.db_args())
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn create_user(server: &TestServer, name: &str, password: &str) -> String {
    let (ok, out, err) = cli_stdin(server, &["users", "create", "--name", name], password);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], name);
    v["objectId"].as_str().unwrap().to_string()
}

/// A browser without JavaScript: no redirects followed, cookies kept by hand, from `from`.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

/// A page or redirect.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The value of the form's hidden field `name`.
    fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.text.find(&marker)? + marker.len();
        let end = self.text[start..].find('"')?;
        Some(
            self.text[start..start + end]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    }

    /// The query parameter `name` of the redirect.
    fn location_param(&self, name: &str) -> Option<String> {
        let loc = self.header("location")?;
        let url = reqwest::Url::parse(&loc).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

impl Browser {
    fn new(base: &str, from: Option<IpAddr>) -> Browser {
        let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ip) = from {
            b = b.local_address(ip);
        }
        Browser {
            http: b.build().unwrap(),
            base: base.to_string(),
            cookie: None,
        }
    }

    fn redirect_uri(&self) -> String {
        format!("{}/", self.base)
    }

    fn authorize_query(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let redirect = self.redirect_uri();
        let mut q: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", CONSOLE),
            ("redirect_uri", redirect.as_str()),
            ("scope", SCOPE),
            ("state", "st<&>\"1"),
            ("nonce", "n-1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            q.retain(|(x, _)| x != k);
            q.push((k.to_string(), v.to_string()));
        }
        q
    }

    async fn page(&mut self, rb: reqwest::RequestBuilder) -> Page {
        let rb = match &self.cookie {
            Some(c) => rb.header("cookie", c),
            None => rb,
        };
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let pair = c.split(';').next().unwrap().to_string();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        Page {
            status,
            headers,
            text: r.text().await.unwrap(),
        }
    }

    /// GET of the authorization endpoint with the default request, changed by `extra`.
    async fn authorize(&mut self, extra: &[(&str, &str)]) -> Page {
        let url = format!("{}/{TENANT}/oauth2/v2.0/authorize", self.base);
        let rb = self.http.get(url).query(&self.authorize_query(extra));
        self.page(rb).await
    }

    /// Posts the sign-in form of `form` with a user name and password.
    async fn post_form(&mut self, form: &Page, username: &str, password: &str) -> Page {
        let mut fields: Vec<(String, String)> = [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "csrf",
        ]
        .iter()
        .filter_map(|n| form.hidden(n).map(|v| (n.to_string(), v)))
        .collect();
        fields.push(("username".into(), username.into()));
        fields.push(("password".into(), password.into()));
        self.post_fields(&fields).await
    }

    async fn post_fields(&mut self, fields: &[(String, String)]) -> Page {
        let url = format!("{}/{TENANT}/oauth2/v2.0/authorize", self.base);
        let rb = self.http.post(url).form_body(form(fields));
        self.page(rb).await
    }

    /// The whole sign-in: the form, then its post; the redirect.
    async fn sign_in(&mut self, username: &str, password: &str) -> Page {
        let form = self.authorize(&[]).await;
        assert_eq!(form.status, 200, "{}", form.text);
        self.post_form(&form, username, password).await
    }

    async fn token(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", self.base))
            .form_body(form(fields))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn redeem(&self, code: &str, verifier: &str) -> (u16, Value) {
        let redirect = self.redirect_uri();
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", CONSOLE),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", &redirect),
        ])
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", CONSOLE),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn logout(&self, refresh_token: &str) -> u16 {
        self.http
            .post(format!("{}/{TENANT}/oauth2/v2.0/logout", self.base))
            .form_body(form(&[
                ("client_id", CONSOLE),
                ("refresh_token", refresh_token),
            ]))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// `application/x-www-form-urlencoded` of `fields`.
fn form<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let enc = |v: &str| -> String {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

trait FormExt {
    fn form_body(self, body: String) -> Self;
}

impl FormExt for reqwest::RequestBuilder {
    fn form_body(self, body: String) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

/// The claims of a JWT (not verified).
fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn users_sign_in_with_the_code_flow_and_pkce_and_their_roles_apply() {
    let ctx = Ctx::new().await;
    let server = &ctx.server;
    // Users on the command line: passwords from standard input, never shown.
    let oid = create_user(server, "alice", "correct horse battery");
    let (ok, _, err) = cli_stdin(
        server,
        &["users", "create", "--name", "ALICE"],
        "another password",
    );
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = cli_stdin(server, &["users", "create", "--name", "bob"], "short");
    assert!(!ok && err.contains("at least 8"), "{err}");
    let (ok, _, err) = cli_stdin(
        server,
        &["users", "create", "--name", "bad name"],
        "long enough",
    );
    assert!(!ok, "{err}");
    let list = server.cli(&["users", "list"]);
    assert!(list.contains("alice") && list.contains(&oid), "{list}");
    assert!(!list.contains("correct horse"));
    let scope = format!("/subscriptions/{}", ctx.sub);
    let assigned = server.cli(&[
        "role-assignments",
        "create",
        "--user",
        "alice",
        "--role",
        "Reader",
        "--scope",
        &scope,
    ]);
    assert!(assigned.contains(&oid), "{assigned}");
    assert!(
        server
            .cli(&["role-assignments", "list", "--user", "alice"])
            .contains("Reader")
    );
    // Something for alice to read.
    ctx.create_watcher("nw1").await;

    // The sign-in page: accessible, no script, a strict CSP, a CSRF token bound to a cookie.
    let mut browser = Browser::new(&server.url, None);
    let form = browser.authorize(&[("login_hint", "alice")]).await;
    assert_eq!(form.status, 200, "{}", form.text);
    let csp = form.header("content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!form.text.contains("<script"), "{}", form.text);
    assert!(form.text.contains("<label for=\"username\">"));
    assert!(form.text.contains("<label for=\"password\">"));
    assert!(form.text.contains("value=\"alice\""), "the login hint");
    let cookie = browser.cookie.clone().expect("a CSRF cookie");
    assert!(cookie.starts_with("capture_signin_csrf="));
    let set_cookie = form.header("set-cookie").unwrap();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(form.hidden("csrf").is_some());
    assert_eq!(form.hidden("state").as_deref(), Some("st<&>\"1"));
    let css = reqwest::get(format!("{}/{TENANT}/oauth2/v2.0/signin.css", server.url))
        .await
        .unwrap();
    assert_eq!(css.status().as_u16(), 200);

    // A wrong password: the form again, with a generic message, the same as for an unknown user.
    let wrong = browser.post_form(&form, "alice", "wrong password").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(
        wrong
            .text
            .contains("The user name or password is incorrect.")
    );
    let form = browser.authorize(&[]).await;
    let unknown = browser.post_form(&form, "nobody", "wrong password").await;
    assert_eq!(unknown.status, 401);
    assert!(
        unknown
            .text
            .contains("The user name or password is incorrect.")
    );

    // The right one: back to the console with a code and the state.
    let form = browser.authorize(&[]).await;
    let back = browser
        .post_form(&form, "alice", "correct horse battery")
        .await;
    assert_eq!(back.status, 302, "{}", back.text);
    assert!(
        back.header("location")
            .unwrap()
            .starts_with(&format!("{}/?", server.url))
    );
    assert_eq!(back.location_param("state").as_deref(), Some("st<&>\"1"));
    let code = back.location_param("code").expect("a code");

    // The code for tokens, with the verifier.
    let (status, tokens) = browser.redeem(&code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();
    let c = claims(&access);
    assert_eq!(c["oid"], oid.as_str());
    assert_eq!(c["sub"], oid.as_str());
    assert_eq!(c["name"], "alice");
    assert_eq!(c["aud"], "https://management.azure.com");
    let id = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(
        (id["aud"].as_str(), id["nonce"].as_str()),
        (Some(CONSOLE), Some("n-1"))
    );
    assert!(tokens["expires_in"].as_u64().unwrap() >= 3000);
    let session = tokens["refresh_token_expires_in"].as_i64().unwrap();
    assert!((43000..=43200).contains(&session), "{session}");
    // A code works once.
    let (status, again) = browser.redeem(&code, VERIFIER).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The ARM API: a Reader lists, and may not create.
    let alice = Api::new(&server.url).with_bearer(Some(&access));
    let list = alice
        .get(&format!(
            "/subscriptions/{}/providers/Microsoft.Network/networkWatchers?api-version=2026-03-01",
            ctx.sub
        ))
        .await;
    assert_eq!(list.status.as_u16(), 200, "{}", list.text);
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);
    let create = alice
        .put(&ctx.watcher("nw2"), &json!({"location": "westus"}))
        .await;
    create.assert_error(403, "AuthorizationFailed");
    assert!(create.text.contains(&oid), "{}", create.text);

    // Refresh: a new pair; the old refresh token works no more.
    let (status, refreshed) = browser.refresh(&refresh1).await;
    assert_eq!(status, 200, "{refreshed}");
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    let access2 = refreshed["access_token"].as_str().unwrap();
    assert_eq!(claims(access2)["oid"], oid.as_str());
    assert!(
        refreshed["refresh_token_expires_in"].as_i64().unwrap() <= session,
        "the session does not slide"
    );

    // Sign-out: the session's refresh token no longer works.
    assert_eq!(browser.logout(&refresh2).await, 200);
    let (status, out) = browser.refresh(&refresh2).await;
    assert_eq!(
        (status, out["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Signing out twice, or with an unknown token, answers the same.
    assert_eq!(browser.logout(&refresh2).await, 200);
    assert_eq!(browser.logout("unknown").await, 200);

    // A replayed refresh token ends its session: the thief's and the owner's next refreshes fail.
    let back = browser.sign_in("alice", "correct horse battery").await;
    let (_, t) = browser
        .redeem(&back.location_param("code").unwrap(), VERIFIER)
        .await;
    let r1 = t["refresh_token"].as_str().unwrap().to_string();
    let (_, t) = browser.refresh(&r1).await;
    let r2 = t["refresh_token"].as_str().unwrap().to_string();
    let (status, _) = browser.refresh(&r1).await;
    assert_eq!(status, 400);
    let (status, _) = browser.refresh(&r2).await;
    assert_eq!(status, 400, "the session survived a replayed refresh token");

    // A new password ends the sessions; deleting the user ends everything.
    let back = browser.sign_in("alice", "correct horse battery").await;
    let (_, t) = browser
        .redeem(&back.location_param("code").unwrap(), VERIFIER)
        .await;
    let r = t["refresh_token"].as_str().unwrap().to_string();
    let (ok, _, err) = cli_stdin(
        server,
        &["users", "set-password", "--name", "alice"],
        "a new password\n",
    );
    assert!(ok, "{err}");
    assert_eq!(browser.refresh(&r).await.0, 400);
    let back = browser.sign_in("alice", "correct horse battery").await;
    assert_eq!(back.status, 401);
    let back = browser.sign_in("alice", "a new password").await;
    assert_eq!(back.status, 302, "{}", back.text);
    server.cli(&["users", "delete", "--name", "alice"]);
    assert!(!server.cli(&["users", "list"]).contains("alice"));
    assert!(
        !server.cli(&["role-assignments", "list"]).contains(&oid),
        "the user's role assignments are gone"
    );

    // Nothing secret in the logs.
    let log = server.log_text();
    for secret in [
        "correct horse battery",
        "a new password",
        access.as_str(),
        refresh1.as_str(),
        code.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}

#[tokio::test]
async fn malformed_or_foreign_requests_are_refused() {
    let ctx = Ctx::new().await;
    let server = &ctx.server;
    create_user(server, "carol", "carol's password");
    let mut browser = Browser::new(&server.url, None);

    // A foreign redirect URI: a page saying so, never a redirect.
    for foreign in [
        "https://evil.example/",
        "http://127.0.0.1:1/",
        "//evil.example/",
        "/relative",
    ] {
        let p = browser.authorize(&[("redirect_uri", foreign)]).await;
        assert_eq!(p.status, 400, "{foreign}: {}", p.text);
        assert!(p.header("location").is_none());
        assert!(p.text.contains("redirect_uri"), "{}", p.text);
    }
    // An unknown client: a page.
    let p = browser.authorize(&[("client_id", "someone-else")]).await;
    assert_eq!(p.status, 400);
    assert!(p.header("location").is_none());
    // PKCE is required, and only S256: the error goes back to the console.
    for (k, v) in [
        ("code_challenge_method", "plain"),
        ("code_challenge", "short"),
    ] {
        let p = browser.authorize(&[(k, v)]).await;
        assert_eq!(p.status, 302, "{k}={v}");
        assert_eq!(
            p.location_param("error").as_deref(),
            Some("invalid_request")
        );
        assert_eq!(p.location_param("state").as_deref(), Some("st<&>\"1"));
    }
    let mut q = browser.authorize_query(&[]);
    q.retain(|(k, _)| k != "code_challenge_method" && k != "code_challenge");
    let rb = browser
        .http
        .get(format!("{}/{TENANT}/oauth2/v2.0/authorize", server.url))
        .query(&q);
    let p = browser.page(rb).await;
    assert_eq!(
        p.location_param("error").as_deref(),
        Some("invalid_request")
    );
    let p = browser.authorize(&[("response_type", "token")]).await;
    assert_eq!(
        p.location_param("error").as_deref(),
        Some("unsupported_response_type")
    );

    // The form without its CSRF token, or without the cookie: refused.
    let form = browser.authorize(&[]).await;
    let mut fields: Vec<(String, String)> = browser
        .authorize_query(&[])
        .into_iter()
        .chain([
            ("username".to_string(), "carol".to_string()),
            ("password".to_string(), "carol's password".to_string()),
        ])
        .collect();
    let p = browser.post_fields(&fields).await;
    assert_eq!(p.status, 400, "{}", p.text);
    assert!(p.header("location").is_none());
    fields.push(("csrf".into(), form.hidden("csrf").unwrap()));
    browser.cookie = None;
    let p = browser.post_fields(&fields).await;
    assert_eq!(p.status, 400, "{}", p.text);
    // A tampered token.
    let form = browser.authorize(&[]).await;
    fields.pop();
    fields.push(("csrf".into(), format!("x{}", form.hidden("csrf").unwrap())));
    let p = browser.post_fields(&fields).await;
    assert_eq!(p.status, 400, "{}", p.text);

    // The code: only with its verifier, its redirect URI and its client.
    let code = browser
        .sign_in("carol", "carol's password")
        .await
        .location_param("code")
        .unwrap();
    let wrong_verifier = "A".repeat(43);
    let (status, e) = browser.redeem(&code, &wrong_verifier).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    // The failed attempt used the code up.
    assert_eq!(browser.redeem(&code, VERIFIER).await.0, 400);
    let code = browser
        .sign_in("carol", "carol's password")
        .await
        .location_param("code")
        .unwrap();
    let (status, e) = browser
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", CONSOLE),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", &format!("{}/elsewhere", server.url)),
        ])
        .await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    let code = browser
        .sign_in("carol", "carol's password")
        .await
        .location_param("code")
        .unwrap();
    let redirect = browser.redirect_uri();
    let (status, e) = browser
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "another-client"),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", &redirect),
        ])
        .await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_client")));
    let (status, e) = browser.refresh("not-a-refresh-token").await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));

    // A token of a user without role assignments opens nothing.
    let code = browser
        .sign_in("carol", "carol's password")
        .await
        .location_param("code")
        .unwrap();
    let (_, t) = browser.redeem(&code, VERIFIER).await;
    let carol = Api::new(&server.url).with_bearer(Some(t["access_token"].as_str().unwrap()));
    carol
        .get(&ctx.watcher("nw1"))
        .await
        .assert_error(403, "AuthorizationFailed");
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_user_and_per_address() {
    let ctx = Ctx::new().await;
    let server = &ctx.server;
    create_user(server, "dave", "dave's password");
    create_user(server, "erin", "erin's password");
    let mut here = Browser::new(&server.url, Some("127.0.0.1".parse().unwrap()));
    for _ in 0..5 {
        let p = here.sign_in("dave", "guess").await;
        assert_eq!(p.status, 401, "{}", p.text);
    }
    // The sixth attempt, even with the right password, waits.
    let p = here.sign_in("dave", "dave's password").await;
    assert_eq!(p.status, 429, "{}", p.text);
    let retry: u64 = p.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(p.text.contains("Too many failed sign-ins"), "{}", p.text);
    assert!(p.header("content-type").unwrap().starts_with("text/html"));
    // From this address, for anyone.
    assert_eq!(here.sign_in("erin", "erin's password").await.status, 429);
    // From another address: erin signs in; dave's name is still throttled.
    let mut there = Browser::new(&server.url, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(there.sign_in("erin", "erin's password").await.status, 302);
    assert_eq!(there.sign_in("dave", "dave's password").await.status, 429);
    // Concurrent guesses cannot slip past the count: at most 5 are checked.
    create_user(server, "gina", "gina's password");
    let mut forms = vec![];
    for _ in 0..10 {
        let mut b = Browser::new(&server.url, Some("127.0.0.3".parse().unwrap()));
        let form = b.authorize(&[]).await;
        forms.push((b, form));
    }
    let statuses = futures_util::future::join_all(
        forms
            .iter_mut()
            .map(|(b, form)| async move { b.post_form(form, "gina", "guess").await.status }),
    )
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    // Sign-in links are not passwords: they still work.
    let link = server.cli(&["sign-in-link", "--user", "dave", "--url", &server.url]);
    let token = link.split("signin=").nth(1).unwrap();
    let p = here.authorize(&[("signin", token)]).await;
    assert_eq!(p.status, 302, "{}", p.text);
    assert!(p.location_param("code").is_some());
}

#[tokio::test]
async fn one_time_sign_in_links_work_once_and_expire() {
    let ctx = Ctx::new().await;
    let server = &ctx.server;
    // A user without a password: links only.
    let (ok, out, err) = cli_stdin(
        server,
        &["users", "create", "--name", "frank", "--no-password"],
        "",
    );
    assert!(ok, "{err}");
    let oid = serde_json::from_str::<Value>(&out).unwrap()["objectId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(server.cli(&["users", "list"]).contains("no password"));
    server.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        &oid,
        "--role",
        "Owner",
        "--scope",
        &format!("/subscriptions/{}", ctx.sub),
    ]);
    let mut browser = Browser::new(&server.url, None);
    // No password signs frank in.
    assert_eq!(browser.sign_in("frank", "").await.status, 401);

    let link = server.cli(&["sign-in-link", "--user", "frank", "--url", &server.url]);
    let prefix = format!("{}/?signin=", server.url);
    assert!(link.starts_with(&prefix), "{link}");
    let token = link.strip_prefix(&prefix).unwrap().to_string();
    let p = browser.authorize(&[("signin", &token)]).await;
    assert_eq!(p.status, 302, "{}", p.text);
    let (status, t) = browser
        .redeem(&p.location_param("code").unwrap(), VERIFIER)
        .await;
    assert_eq!(status, 200, "{t}");
    let frank = Api::new(&server.url).with_bearer(Some(t["access_token"].as_str().unwrap()));
    let r = frank
        .put(&ctx.watcher("nw1"), &json!({"location": "eastus"}))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    // Once only: then the form, saying why.
    let p = browser.authorize(&[("signin", &token)]).await;
    assert_eq!(p.status, 401);
    assert!(p.text.contains("sign-in link is not valid"), "{}", p.text);
    assert!(p.text.contains("<form"));

    // Expired after 15 minutes (here: moved into the past).
    let link = server.cli(&["sign-in-link", "--user", "frank", "--url", &server.url]);
    let token = link.strip_prefix(&prefix).unwrap().to_string();
    let db = ctx.db.client().await;
    let moved = db
        .execute(
            "UPDATE sign_in_links SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let p = browser.authorize(&[("signin", &token)]).await;
    assert_eq!(p.status, 401);
    let fresh: i64 = db
        .query_one(
            "SELECT extract(epoch FROM max(expires_at) - max(created_at))::bigint FROM sign_in_links",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(fresh <= 15 * 60, "{fresh}");
    assert!(!server.log_text().contains(&token));
    // A link with a foreign redirect is refused before the link is used.
    let link = server.cli(&["sign-in-link", "--user", "frank", "--url", &server.url]);
    let token = link.strip_prefix(&prefix).unwrap().to_string();
    let p = browser
        .authorize(&[
            ("signin", &token),
            ("redirect_uri", "https://evil.example/"),
        ])
        .await;
    assert_eq!(p.status, 400);
    assert_eq!(browser.authorize(&[("signin", &token)]).await.status, 302);
}

#[tokio::test]
async fn the_console_learns_how_to_sign_in() {
    let ctx = Ctx::new().await;
    let base = &ctx.server.url;
    let config: Value = reqwest::get(format!("{base}/console/config.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["mode"], "builtIn");
    assert_eq!(config["clientId"], CONSOLE);
    assert_eq!(config["redirectUri"], format!("{base}/"));
    assert_eq!(
        config["authorizationEndpoint"],
        format!("{base}/{TENANT}/oauth2/v2.0/authorize")
    );
    assert_eq!(
        config["tokenEndpoint"],
        format!("{base}/{TENANT}/oauth2/v2.0/token")
    );
    assert!(
        config["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("https://management.azure.com/user_impersonation"))
    );
    for path in [
        format!("{base}/{TENANT}/v2.0/.well-known/openid-configuration"),
        format!("{base}/.well-known/openid-configuration"),
    ] {
        let d: Value = reqwest::get(&path).await.unwrap().json().await.unwrap();
        assert_eq!(
            d["code_challenge_methods_supported"],
            json!(["S256"]),
            "{d}"
        );
        assert_eq!(
            d["grant_types_supported"],
            json!(["client_credentials", "authorization_code", "refresh_token"])
        );
        assert_eq!(
            d["end_session_endpoint"],
            format!("{base}/{TENANT}/oauth2/v2.0/logout")
        );
        assert_eq!(
            d["revocation_endpoint"],
            format!("{base}/{TENANT}/oauth2/v2.0/revoke")
        );
        assert_eq!(d["console_client_id"], CONSOLE);
    }

    // With an external provider and --console-client-id, the console signs in there.
    let mut opts = ServerOptions::new(&ctx.db.url);
    opts.extra = vec![
        "--oidc-issuer".into(),
        "https://login.example.invalid/tenant/v2.0".into(),
        "--console-client-id".into(),
        "console-app".into(),
    ];
    let external = TestServer::start(opts).await;
    let config: Value = reqwest::get(format!("{}/console/config.json", external.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["mode"], "external");
    assert_eq!(
        config["authority"],
        "https://login.example.invalid/tenant/v2.0"
    );
    assert_eq!(config["clientId"], "console-app");
    assert_eq!(
        config["discoveryUrl"],
        "https://login.example.invalid/tenant/v2.0/.well-known/openid-configuration"
    );
}

#[tokio::test]
async fn the_embedded_default_prints_a_one_time_sign_in_link_for_the_demo_owner() {
    let dir =
        e2e_tests::scratch().join(format!("capture-signin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut opts = ServerOptions::new("");
    opts.database_url = None;
    opts.data_dir = Some(dir.clone());
    let mut server = TestServer::start(opts.clone()).await;
    let out = server.stdout_text();
    let line = out
        .lines()
        .find(|l| l.contains("?signin="))
        .unwrap_or_else(|| panic!("no sign-in link: {out}"));
    assert!(!line.to_lowercase().contains("password"), "{line}");
    let link = line
        .split_whitespace()
        .find(|w| w.contains("?signin="))
        .unwrap();
    assert!(
        link.starts_with(&format!("{}/?signin=", server.url)),
        "{link}"
    );
    let token = link.split("signin=").nth(1).unwrap().to_string();
    assert!(out.contains("sign-in-link --user demo"), "{out}");

    let mut browser = Browser::new(&server.url, None);
    let p = browser.authorize(&[("signin", &token)]).await;
    assert_eq!(p.status, 302, "{}", p.text);
    let (status, t) = browser
        .redeem(&p.location_param("code").unwrap(), VERIFIER)
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(claims(t["access_token"].as_str().unwrap())["name"], "demo");
    // The demo user is Owner of the demo subscription.
    let demo = Api::new(&server.url).with_bearer(Some(t["access_token"].as_str().unwrap()));
    let w = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1?api-version=2026-03-01";
    let r = demo.put(w, &json!({"location": "eastus"})).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    // Used once.
    assert_eq!(browser.authorize(&[("signin", &token)]).await.status, 401);
    assert!(!server.log_text().contains(&token));
    assert!(server.cli(&["users", "list"]).contains("no password"));

    // Each start prints a fresh link for the same user.
    assert!(server.terminate(std::time::Duration::from_secs(30)));
    let mut server = TestServer::start(opts).await;
    let out = server.stdout_text();
    let again = out
        .lines()
        .find(|l| l.contains("?signin="))
        .expect("a link at the second start");
    assert!(!again.contains(&token));
    assert_eq!(
        server
            .cli(&["users", "list"])
            .lines()
            .filter(|l| l.starts_with("demo\t"))
            .count(),
        1
    );
    assert!(server.terminate(std::time::Duration::from_secs(30)));
    let _ = std::fs::remove_dir_all(&dir);
}
