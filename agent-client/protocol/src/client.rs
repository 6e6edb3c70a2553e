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
    #[error("transport error: {0}")]
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
        let mut base = Url::parse(base)?;
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

impl AgentClient {
    /// A fresh upload SAS for a capture of this agent that has a storage account.
    pub async fn upload_sas(
        &self,
        agent_id: Uuid,
        capture_id: Uuid,
    ) -> Result<UploadTarget, ClientError> {
        let url = self.url(&format!(
            "/agents/{agent_id}/captures/{capture_id}/upload-sas"
        ))?;
        decode(self.authorized(self.http.post(url)).send().await?).await
    }

    /// Tells the server how an upload ended. For `Uploaded`, success means the server saw the
    /// blob with this size and MD5.
    pub async fn upload_result(
        &self,
        agent_id: Uuid,
        capture_id: Uuid,
        result: &UploadResult,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("/agents/{agent_id}/captures/{capture_id}/upload"))?;
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
