//! What an error of the server's API means for the agent, and what the operator can do about it:
//! which errors end the agent (retrying cannot fix them), which it retries for a bounded time at
//! its first registration (a server being deployed), and which it retries for as long as it runs.

use agent_protocol::{AGENT_API_PREFIX, Cause, ClientError};
use rustls::CertificateError;

use crate::config::RunArgs;

/// What the agent does about a failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Retrying cannot fix it: exit non-zero with this message.
    Fatal(String),
    /// Permanent unless the server is being deployed: retried for `--startup-retry-seconds` at
    /// the first registration, then fatal; retried with backoff once the agent has registered.
    Startup(String),
    /// Transient: retried with backoff.
    Transient(String),
}

/// The bearer a registration was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer {
    None,
    /// The enrollment token; `credential_refused` if the stored credential was refused before.
    Token {
        credential_refused: bool,
    },
    Credential,
}

const TOKEN_HOWTO: &str = "create one with `capture-api agent-tokens create --scope /subscriptions/<subscription>[/resourceGroups/<group>]` (a scope that covers --machine-id; add --reusable for several machines)";

/// The message and verdict of a failed registration.
pub fn registration(e: &ClientError, args: &RunArgs, bearer: Bearer) -> Verdict {
    let machine = &args.machine_id;
    let credential_file = args.state_dir.join("credential.json");
    match e {
        ClientError::Server {
            status: 401,
            message,
            ..
        } => Verdict::Fatal(match bearer {
            Bearer::None => format!(
                "the server requires an enrollment token: none was given (--enrollment-token or --enrollment-token-file) and no credential of this machine is stored in {}. {}, and restart the agent with --enrollment-token <token>. (The server said: {message})",
                credential_file.display(),
                capitalized(TOKEN_HOWTO)
            ),
            Bearer::Token {
                credential_refused: false,
            } => format!(
                "the server refused the enrollment token of --enrollment-token/--enrollment-token-file: {message} A one-time token works once only. Make a new token: {TOKEN_HOWTO}; then restart the agent with --enrollment-token <new token>."
            ),
            Bearer::Token {
                credential_refused: true,
            } => format!(
                "the server refused this machine's credential (kept in {}; it expired, or the agent was revoked with `capture-api agents revoke`) and then the enrollment token too: {message} Re-enroll the machine: if it was revoked, an administrator runs `capture-api agents re-enroll --machine-id {machine}`; make a new enrollment token ({TOKEN_HOWTO}) and restart the agent with --enrollment-token <new token>.",
                credential_file.display()
            ),
            Bearer::Credential => format!(
                "the server refused this machine's credential (kept in {}): {message} It expired, or the agent was revoked (`capture-api agents revoke`). Re-enroll the machine: if it was revoked, an administrator runs `capture-api agents re-enroll --machine-id {machine}`; make a new enrollment token ({TOKEN_HOWTO}) and restart the agent with --enrollment-token <new token>.",
                credential_file.display()
            ),
        }),
        ClientError::Server {
            status: 403,
            code,
            message,
        } => Verdict::Fatal(match code.as_str() {
            "AgentRevoked" => format!(
                "this machine's agent was revoked: {message} An administrator runs `capture-api agents re-enroll --machine-id {machine}`; then restart the agent with a new enrollment token (--enrollment-token; {TOKEN_HOWTO})."
            ),
            "MachineOutsideTokenScope" => format!(
                "{message} Check --machine-id ({machine}), or use an enrollment token whose scope covers this machine: {TOKEN_HOWTO}."
            ),
            _ => format!("the server refused the registration ({code}): {message}"),
        }),
        ClientError::Server {
            status: status @ (404 | 405),
            code,
            ..
        } => Verdict::Startup(format!(
            "POST {} answered {status} {code}: there is no capture-api agent API at --server {}. --server must be the server's base URL, without a path (e.g. https://capture.example:8480).",
            agents_url(&args.server),
            args.server
        )),
        ClientError::Server {
            status: 408 | 429, ..
        } => Verdict::Transient(e.to_string()),
        ClientError::Server { status, .. } if *status >= 500 => Verdict::Transient(e.to_string()),
        ClientError::Server { code, message, .. } => Verdict::Fatal(format!(
            "the server refused the registration ({code}): {message} Check --machine-id, --location and --interface."
        )),
        ClientError::Transport(_) => transport(e, args),
        ClientError::Url(_) | ClientError::NoScheme(_) | ClientError::UnsupportedScheme(_) => {
            Verdict::Fatal(format!("--server: {e}"))
        }
    }
}

/// A transport error with what to do about it.
pub fn transport(e: &ClientError, args: &RunArgs) -> Verdict {
    let server = &args.server;
    let with = |what: String| format!("{e}. {what}");
    match e.cause() {
        Some(Cause::ConnectionRefused) => Verdict::Startup(with(format!(
            "Is capture-api running and listening there? Check the host and port of --server {server}."
        ))),
        Some(Cause::Dns) => {
            Verdict::Startup(with(format!("Check the host name of --server {server}.")))
        }
        Some(Cause::Timeout) => Verdict::Transient(with(format!(
            "Check that --server {server} is reachable from this machine (firewall, routing)."
        ))),
        Some(Cause::NotHttp) => Verdict::Startup(with(match server.strip_prefix("http://") {
            Some(rest) => format!(
                "If the server has a TLS certificate (--tls-cert), use --server https://{rest}."
            ),
            None => format!("Check --server {server}."),
        })),
        Some(Cause::NotTls) => Verdict::Fatal(with(match server.strip_prefix("https://") {
            Some(rest) => format!(
                "The server serves plain HTTP there: use --server http://{rest} (or give the server a certificate with --tls-cert/--tls-key)."
            ),
            None => format!("Check --server {server}."),
        })),
        Some(Cause::Certificate(c)) => Verdict::Fatal(with(certificate_hint(&c, args))),
        Some(Cause::Tls(_)) => Verdict::Fatal(with(format!(
            "Check the TLS setup of the server (--tls-cert/--tls-key) and --server {server}."
        ))),
        Some(Cause::Other) | None => Verdict::Transient(e.to_string()),
    }
}

fn certificate_hint(c: &CertificateError, args: &RunArgs) -> String {
    match c {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "The certificate is not valid for the host of --server {}: use a host name or IP address that its subjectAltName lists, or reissue it with subjectAltName=DNS:<host> or IP:<address>.",
                args.server
            )
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            "Renew the server's certificate (--tls-cert), or set this machine's clock right."
                .to_string()
        }
        // WebPKI refuses a CA certificate as a server's before asking whether anything trusts
        // it; with --ca-cert holding exactly it, the agent accepts it (see `tls`).
        CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            match &args.ca_cert {
                None => "The server presents a CA certificate (CA:TRUE, as `openssl req -x509` makes them) as its own, which is trusted only when given: pass that certificate (the file of the server's --tls-cert) with --ca-cert <file>.".to_string(),
                Some(f) => format!(
                    "The server presents a CA certificate (CA:TRUE) as its own, and it is not one in --ca-cert {}: --ca-cert must hold the server's certificate (the file of its --tls-cert) or the CA that signed it.",
                    f.display()
                ),
            }
        }
        _ => match &args.ca_cert {
            None => "The server's certificate is not signed by a CA this machine trusts: pass the server's certificate (the file of its --tls-cert), or the CA that signed it, with --ca-cert <file>.".to_string(),
            Some(f) => format!(
                "Neither --ca-cert {} nor the system's CAs vouch for the server's certificate: --ca-cert must hold the server's certificate (the file of its --tls-cert) or the CA that signed it.",
                f.display()
            ),
        },
    }
}

fn agents_url(server: &str) -> String {
    format!("{}{AGENT_API_PREFIX}/agents", server.trim_end_matches('/'))
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
