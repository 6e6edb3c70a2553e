//! The credentials the harness creates for each test server (auth is on, as in production): an
//! Owner service principal at the root scope and its token, and a reusable agent enrollment
//! token. They are found by server URL, so `Api::new`, `ScriptedAgent` and `RealAgent` use them
//! without each test passing them around.

use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub object_id: String,
    pub client_secret: String,
    pub owner_token: String,
    pub enrollment_token: String,
}

fn registry() -> &'static Mutex<Vec<(String, Credentials)>> {
    static R: OnceLock<Mutex<Vec<(String, Credentials)>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

pub fn register(server_url: &str, c: &Credentials) {
    registry()
        .lock()
        .unwrap()
        .push((server_url.trim_end_matches('/').to_string(), c.clone()));
}

/// The credentials of the server `url` belongs to.
pub fn for_url(url: &str) -> Option<Credentials> {
    registry()
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(base, _)| url.starts_with(base.as_str()))
        .map(|(_, c)| c.clone())
}

/// Adds the owner's bearer token of the server `url` belongs to, if it has one.
pub fn authorized(rb: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
    match for_url(url) {
        Some(c) => rb.bearer_auth(c.owner_token),
        None => rb,
    }
}

/// Runs `capture-api ARGS` with the server's database options; stdout, or a panic with stderr.
pub fn cli(db_args: &[String], args: &[&str]) -> String {
    let out = Command::new(crate::bin("capture-api"))
        .args(args)
        .args(db_args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("capture-api");
    assert!(
        out.status.success(),
        "capture-api {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Creates the Owner principal, its token and an enrollment token in the server's database.
pub fn create(db_args: &[String]) -> Credentials {
    let sp: serde_json::Value = serde_json::from_str(&cli(
        db_args,
        &["service-principals", "create", "--name", "test-owner"],
    ))
    .expect("principal JSON");
    let s = |k: &str| sp[k].as_str().expect(k).to_string();
    let (client_id, object_id, client_secret) = (s("clientId"), s("objectId"), s("clientSecret"));
    cli(
        db_args,
        &[
            "role-assignments",
            "create",
            "--assignee",
            &object_id,
            "--role",
            "Owner",
            "--scope",
            "/",
        ],
    );
    let owner_token = cli(
        db_args,
        &["token", "--principal", &client_id, "--ttl", "86400"],
    );
    let enrollment_token = cli(
        db_args,
        &[
            "agent-tokens",
            "create",
            "--scope",
            "/",
            "--ttl",
            "86400",
            "--reusable",
        ],
    );
    Credentials {
        client_id,
        object_id,
        client_secret,
        owner_token,
        enrollment_token,
    }
}
