//! The web console (issue 13) signing people in at an external OpenID provider, in a real
//! headless Chromium: the provider is panva's certified `oidc-provider` (pinned in
//! `tests/browser`, run by `tests/browser/oidc-provider.mjs` on 127.0.0.1), the server trusts it
//! with `--oidc-issuer http://127.0.0.1:PORT --console-client-id ID` and validates its JWT access
//! tokens with the keys of its discovery document. The browser script
//! (`tests/browser/external.mjs`) signs in at the provider's login and consent pages, sees the
//! list, refreshes, signs out (revoking at the provider), and signs in as a person with no role.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::capture::setup;
use super::console::{browser_dir, run_script};

const CLIENT_ID: &str = "packet-capture-console";

fn check_provider() {
    let package = browser_dir().join("node_modules/oidc-provider");
    assert!(
        package.exists(),
        "{} is missing: run the test command (it installs tests/browser's packages with npm ci)",
        package.display()
    );
}

/// The OpenID provider (node), killed when dropped; its output is kept for failure messages.
struct OidcProvider {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl OidcProvider {
    fn start(port: u16, redirect_uri: &str, users: &serde_json::Value) -> OidcProvider {
        let mut child = Command::new("node")
            .arg(browser_dir().join("oidc-provider.mjs"))
            .current_dir(browser_dir())
            .env("PORT", port.to_string())
            .env("REDIRECT_URI", redirect_uri)
            .env("CLIENT_ID", CLIENT_ID)
            .env("USERS", users.to_string())
            // Its standard input closing (this process gone) ends it too.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node oidc-provider.mjs");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.starts_with("listening ") {
                        let _ = ready_tx.send(());
                    }
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        let provider = OidcProvider { child, log };
        assert!(
            ready_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "the OpenID provider did not start:\n{}",
            provider.log_text()
        );
        provider
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn user(username: &str, name: &str) -> serde_json::Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "username": username,
        "password": format!("pw-{}", uuid::Uuid::new_v4().simple()),
        "name": name,
    })
}

#[tokio::test]
async fn the_console_signs_in_at_an_external_openid_provider() {
    check_provider();
    let port = e2e_tests::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let (ctx, agent) = setup(|o| {
        o.extra.extend([
            "--oidc-issuer".into(),
            issuer.clone(),
            "--console-client-id".into(),
            CLIENT_ID.into(),
        ])
    })
    .await;
    let alice = user("alice", "Alice Example");
    let stranger = user("bob", "Bob Stranger");
    let provider = OidcProvider::start(
        port,
        &format!("{}/", ctx.server.url),
        &json!([alice, stranger]),
    );

    // A capture made through the API beforehand (the harness's Owner token), running on vm1.
    let capture = "external-pc";
    ctx.create_capture(
        capture,
        &json!({"properties": {
            "target": ctx.vm("vm1"),
            "storageLocation": {"filePath": "/var/captures/external-pc.cap"},
            "timeLimitInSeconds": 600,
            "filters": [{"protocol": "UDP", "localIPAddress": "127.0.9.2"}]
        }}),
    )
    .await;
    // The provider's subject (its `sub`; the tokens carry no `oid`) is what the role names.
    ctx.server.cli(&[
        "role-assignments",
        "create",
        "--assignee",
        alice["id"].as_str().unwrap(),
        "--role",
        "Reader",
        "--scope",
        &format!("/subscriptions/{}", ctx.sub),
    ]);

    let started = std::time::Instant::now();
    let (ok, output) = tokio::task::spawn_blocking({
        let env = vec![
            ("CONSOLE_URL", ctx.server.url.clone()),
            ("ISSUER", issuer.clone()),
            ("CLIENT_ID", CLIENT_ID.to_string()),
            ("SUB", ctx.sub.clone()),
            ("CAPTURE_NAME", capture.to_string()),
            ("SIGNIN_USER", alice.to_string()),
            ("STRANGER_USER", stranger.to_string()),
        ];
        move || run_script("external.mjs", &[], &env)
    })
    .await
    .unwrap();
    println!("{output}");
    assert!(
        ok,
        "the browser test failed:\n{output}\nOpenID provider log:\n{}\nserver log:\n{}\nagent log:\n{}",
        provider.log_text(),
        ctx.server.log_text(),
        agent.log_text()
    );
    println!(
        "external sign-in browser test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // What the provider saw: both people signed in, and the sign-out revoked a grant.
    let log = provider.log_text();
    for line in ["login alice", "login bob", "event grant.revoked"] {
        assert!(log.contains(line), "'{line}' in the provider's log:\n{log}");
    }
}
