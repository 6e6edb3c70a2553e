//! A typed async client of the agent protocol.

use std::time::Duration;

use reqwest::StatusCode;
use url::Url;
use uuid::Uuid;

use crate::protocol::{
    AGENT_API_PREFIX, AgentCredential, Assignments, CaptureReport, ErrorResponse, RegisterRequest,
    RegisterResponse, TransferFailure, UploadResult, UploadTarget,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL: {0}")]
    Url(#[from] url::ParseError),
    /// A server URL without `http://` or `https://` (e.g. `capture.example:8480`).
    #[error(
        "the server URL '{0}' has no scheme: write http://{0} (or https://{0} if the server has a TLS certificate)"
    )]
    NoScheme(String),
    /// A server URL of another scheme than `http` or `https`.
    #[error("the server URL '{0}' is not an http:// or https:// URL")]
    UnsupportedScheme(String),
    /// The request got no HTTP answer; the message names the underlying cause.
    #[error("{}", describe_transport(.0))]
    Transport(#[from] reqwest::Error),
    #[error("server answered {status}: {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of a server-side error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What a request that got no HTTP answer came down to.
    pub fn cause(&self) -> Option<Cause> {
        match self {
            ClientError::Transport(e) => Some(cause_of(e)),
            _ => None,
        }
    }
}

/// The underlying cause of a request that got no HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// Nothing listens at the address (the server is down, or the port is wrong).
    ConnectionRefused,
    /// The host name does not resolve.
    Dns,
    /// No answer in time.
    Timeout,
    /// The TLS handshake failed on the server's certificate.
    Certificate(rustls::CertificateError),
    /// The server answered a TLS handshake with something else than TLS (a plain HTTP server).
    NotTls,
    /// The TLS handshake failed otherwise.
    Tls(rustls::Error),
    /// The connection was closed, reset, or answered with something else than HTTP (e.g. an
    /// `http://` request to a server that speaks only HTTPS).
    NotHttp,
    /// Anything else (see the message).
    Other,
}

/// The errors a reqwest error came from, outermost first.
fn sources(e: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |e| e.source())
}

/// `e`, and the errors that (possibly nested) `io::Error`s in it wrap: `io::Error::source`
/// skips them.
fn unwrapped<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static))
    })
    .take(8)
}

fn cause_of(e: &reqwest::Error) -> Cause {
    for s in sources(e) {
        if let Some(tls) = unwrapped(s).find_map(|e| e.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::InvalidCertificate(c) => Cause::Certificate(c.clone()),
                rustls::Error::InvalidMessage(_) => Cause::NotTls,
                other => Cause::Tls(other.clone()),
            };
        }
        if let Some(io) = unwrapped(s).find_map(|e| e.downcast_ref::<std::io::Error>()) {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Cause::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return Cause::Timeout,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
                    if !is_tls_url(e) =>
                {
                    return Cause::NotHttp;
                }
                _ => {}
            }
        }
        // hyper-util's resolver error ("dns error: failed to lookup address information: ...").
        if s.to_string().starts_with("dns error") {
            return Cause::Dns;
        }
    }
    if e.is_timeout() {
        return Cause::Timeout;
    }
    let text = chain(e).to_ascii_lowercase();
    if e.is_request()
        && !is_tls_url(e)
        && (text.contains("invalid http")
            || text.contains("connection closed before message completed"))
    {
        return Cause::NotHttp;
    }
    Cause::Other
}

fn is_tls_url(e: &reqwest::Error) -> bool {
    e.url().is_some_and(|u| u.scheme() == "https")
}

/// The messages of the errors a reqwest error came from, each once.
fn chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for s in sources(e) {
        let text = s.to_string();
        // hyper's wrapper ("client error (Connect)") says nothing its sources do not.
        if text.starts_with("client error (") || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// A transport error as "what happened (the underlying errors)".
fn describe_transport(e: &reqwest::Error) -> String {
    let target = e
        .url()
        .map(|u| {
            let mut u = u.clone();
            u.set_query(None);
            u.to_string()
        })
        .unwrap_or_else(|| "the server".to_string());
    let host = e
        .url()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "the server".to_string());
    let what = match cause_of(e) {
        Cause::ConnectionRefused => format!("connection refused by {host} (nothing listens there)"),
        Cause::Dns => format!("cannot resolve the host name of {host} (DNS lookup failed)"),
        Cause::Timeout => format!("no answer from {host} in time (timed out)"),
        Cause::Certificate(c) => {
            format!("TLS handshake with {host} failed: the server's certificate is refused ({c})")
        }
        Cause::NotTls => format!(
            "TLS handshake with {host} failed: the server does not speak TLS there (a plain HTTP server?)"
        ),
        Cause::Tls(t) => format!("TLS handshake with {host} failed: {t}"),
        Cause::NotHttp => format!(
            "{host} closed the connection or did not answer in HTTP (a server that speaks only HTTPS?)"
        ),
        Cause::Other => format!("request to {host} failed"),
    };
    format!("{what}; request {target}: {}", chain(e))
}

/// Client of one server for one agent. Every request carries the bearer (an enrollment token
/// until registration answers with the machine's credential, then that credential).
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: Url,
    bearer: std::sync::Arc<std::sync::RwLock<Option<String>>>,
}

impl AgentClient {
    /// A client of the server at `base` (e.g. `https://capture.example:8480`).
    pub fn new(base: &str, http: reqwest::Client) -> Result<Self, ClientError> {
        let given = base.trim();
        let mut base = match Url::parse(given) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            // `host:port` parses as a URL of scheme `host`, `127.0.0.1:port` as none at all.
            Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) if !given.contains("://") => {
                return Err(ClientError::NoScheme(given.to_string()));
            }
            Ok(_) => return Err(ClientError::UnsupportedScheme(given.to_string())),
            Err(e) => return Err(e.into()),
        };
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            http,
            base,
            bearer: Default::default(),
        })
    }

    /// Sets the bearer sent with every request.
    pub fn set_bearer(&self, bearer: Option<String>) {
        *self.bearer.write().unwrap_or_else(|p| p.into_inner()) = bearer;
    }

    pub fn bearer(&self) -> Option<String> {
        self.bearer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn authorized(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.bearer() {
            Some(b) => rb.bearer_auth(b),
            None => rb,
        }
    }

    /// Rotates the credential: the new one becomes the bearer and is returned (to be saved).
    pub async fn rotate_credential(&self, agent_id: Uuid) -> Result<AgentCredential, ClientError> {
        let url = self.url(&format!("/agents/{agent_id}/credential"))?;
        let c: AgentCredential = decode(self.authorized(self.http.post(url)).send().await?).await?;
        self.set_bearer(Some(c.credential.clone()));
        Ok(c)
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        Ok(self.base.join(&format!(
            "{}{}",
            AGENT_API_PREFIX.trim_start_matches('/'),
            path
        ))?)
    }

    /// Registers the machine; the answer carries the agent id for every further call.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        let resp = self
            .authorized(self.http.post(self.url("/agents")?))
            .json(req)
            .send()
            .await?;
        let r: RegisterResponse = decode(resp).await?;
        if let Some(c) = &r.credential {
            self.set_bearer(Some(c.clone()));
        }
        Ok(r)
    }

    /// Long-polls for the desired state: answers at once if the assignments' generation differs
    /// from `since`, otherwise when they change or after `wait`.
    pub async fn poll(
        &self,
        agent_id: Uuid,
        since: Option<i64>,
        wait: Duration,
    ) -> Result<Assignments, ClientError> {
        let mut url = self.url(&format!("/agents/{agent_id}/assignments"))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(since) = since {
                q.append_pair("since", &since.to_string());
            }
            q.append_pair("waitSeconds", &wait.as_secs().to_string());
        }
        let resp = self
            .authorized(self.http.get(url))
            .timeout(wait + Duration::from_secs(10))
            .send()
            .await?;
        decode(resp).await
    }

    /// Reports the state of one capture.
    pub async fn report(
        &self,
        agent_id: Uuid,
        capture_id: Uuid,
        report: &CaptureReport,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("/agents/{agent_id}/captures/{capture_id}/report"))?;
        let resp = self
            .authorized(self.http.post(url))
            .json(report)
            .send()
            .await?;
        expect_success(resp).await
    }
}

/// `?file=N` for one file of a continuous capture.
fn file_query(file: Option<u32>) -> String {
    file.map(|i| format!("?file={i}")).unwrap_or_default()
}

impl AgentClient {
    /// A fresh upload SAS for a capture of this agent that has a storage account.
    /// `file`: the index of one file of a continuous capture.
    pub async fn upload_sas(
        &self,
        agent_id: Uuid,
        capture_id: Uuid,
        file: Option<u32>,
    ) -> Result<UploadTarget, ClientError> {
        let url = self.url(&format!(
            "/agents/{agent_id}/captures/{capture_id}/upload-sas{}",
            file_query(file)
        ))?;
        decode(self.authorized(self.http.post(url)).send().await?).await
    }

    /// Tells the server how an upload ended. For `Uploaded`, success means the server saw the
    /// blob with this size and MD5.
    pub async fn upload_result(
        &self,
        agent_id: Uuid,
        capture_id: Uuid,
        file: Option<u32>,
        result: &UploadResult,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/agents/{agent_id}/captures/{capture_id}/upload{}",
            file_query(file)
        ))?;
        let resp = self
            .authorized(self.http.post(url))
            .json(result)
            .send()
            .await?;
        expect_success(resp).await
    }

    /// Sends a requested file (`size` bytes of `body`).
    pub async fn send_transfer(
        &self,
        agent_id: Uuid,
        transfer_id: Uuid,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("/agents/{agent_id}/transfers/{transfer_id}"))?;
        let resp = self
            .authorized(self.http.put(url))
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await?;
        expect_success(resp).await
    }

    /// Declines a requested file.
    pub async fn fail_transfer(
        &self,
        agent_id: Uuid,
        transfer_id: Uuid,
        message: &str,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/agents/{agent_id}/transfers/{transfer_id}/failure"
        ))?;
        let resp = self
            .authorized(self.http.post(url))
            .json(&TransferFailure {
                message: message.to_string(),
            })
            .send()
            .await?;
        expect_success(resp).await
    }
}

async fn expect_success(resp: reqwest::Response) -> Result<(), ClientError> {
    if resp.status().is_success() {
        return Ok(());
    }
    Err(server_error(resp).await)
}

async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    if resp.status().is_success() {
        return Ok(resp.json().await?);
    }
    Err(server_error(resp).await)
}

async fn server_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorResponse>(&text) {
        Ok(e) => ClientError::Server {
            status: status.as_u16(),
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => ClientError::Server {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR.as_str())
                .to_string(),
            message: text,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A server on 127.0.0.1 that answers every connection with `answer` and closes it.
    fn answering(answer: &'static [u8]) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for mut s in l.incoming().flatten().take(4) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut [0u8; 1024]);
                let _ = s.write_all(answer);
            }
        });
        port
    }

    async fn register_at(url: &str) -> ClientError {
        let c = AgentClient::new(url, reqwest::Client::new()).unwrap();
        c.register(&RegisterRequest {
            machine_id: "m".into(),
            location: String::new(),
            hostname: "h".into(),
            os: "linux".into(),
            agent_version: "t".into(),
            interfaces: vec![],
            running_captures: vec![],
        })
        .await
        .unwrap_err()
    }

    #[tokio::test]
    async fn transport_errors_name_their_cause() {
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = register_at(&format!("http://127.0.0.1:{refused}")).await;
        eprintln!("{e} / {e:?}");
        assert_eq!(e.cause(), Some(Cause::ConnectionRefused), "{e}");
        assert!(
            e.to_string().contains("connection refused by 127.0.0.1:"),
            "{e}"
        );
        assert!(e.to_string().contains("os error 111"), "{e}");

        let plain = answering(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        let e = register_at(&format!("https://127.0.0.1:{plain}")).await;
        eprintln!("{e} / {e:?}");
        assert_eq!(e.cause(), Some(Cause::NotTls), "{e}");
        assert!(e.to_string().contains("TLS handshake"), "{e}");

        let tls_alert = answering(b"\x15\x03\x03\x00\x02\x02\x32");
        let e = register_at(&format!("http://127.0.0.1:{tls_alert}")).await;
        eprintln!("{e} / {e:?}");
        assert_eq!(e.cause(), Some(Cause::NotHttp), "{e}");
    }

    #[test]
    fn a_server_url_without_scheme_is_refused_with_the_urls_to_write() {
        for given in ["127.0.0.1:8480", "localhost:8480", "capture.example:8480"] {
            let e = AgentClient::new(given, reqwest::Client::new()).unwrap_err();
            let m = e.to_string();
            assert!(matches!(e, ClientError::NoScheme(_)), "{m}");
            assert!(m.contains(&format!("http://{given}")), "{m}");
            assert!(m.contains(&format!("https://{given}")), "{m}");
        }
        let e = AgentClient::new("ftp://x", reqwest::Client::new()).unwrap_err();
        assert!(matches!(e, ClientError::UnsupportedScheme(_)), "{e}");
        AgentClient::new("https://x:1/base", reqwest::Client::new()).unwrap();
    }
}
