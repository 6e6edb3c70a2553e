//! A small ARM client for assertions on status codes, headers and bodies.

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const API_VERSION: &str = "2026-03-01";

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer` (by default the harness's Owner token for the server).
    pub bearer: Option<String>,
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Asserts an ARM error with this status and code; returns the error object.
    pub fn assert_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.body["error"]["code"], code,
            "unexpected error; body: {}",
            self.text
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        &self.body["error"]
    }
}

impl Api {
    /// The same client with another bearer token (or none).
    pub fn with_bearer(&self, bearer: Option<&str>) -> Api {
        Api {
            bearer: bearer.map(str::to_string),
            ..self.clone()
        }
    }

    pub fn new(base: &str) -> Api {
        Api {
            bearer: crate::credentials::for_url(base).map(|c| c.owner_token),
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                // Below the server's 5 s keep-alive: never reuse a connection it is closing.
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("client"),
        }
    }

    /// `path` may be absolute (a monitor or nextLink URL) or a path under the server.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        self.request_with(method, path, body, &[]).await
    }

    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut req = self.http.request(method, url);
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path, Some(body)).await
    }
    pub async fn post(&self, path: &str) -> Response {
        self.request(Method::POST, path, None).await
    }
    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path, None).await
    }

    /// Polls `url` with GET until it answers `status` (e.g. a Location monitor's final 204).
    pub async fn wait_http_status(
        &self,
        url: &str,
        status: u16,
        timeout: std::time::Duration,
    ) -> Response {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.get(url).await;
            if r.status.as_u16() == status {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{url} never answered {status}; last: {} {}",
                r.status,
                r.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Follows an Azure-AsyncOperation URL until the operation leaves InProgress.
    pub async fn wait_operation(&self, url: &str, timeout: std::time::Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.get(url).await;
            assert_eq!(r.status, StatusCode::OK, "monitor: {}", r.text);
            if r.body["status"] != "InProgress" {
                return r.body;
            }
            assert!(
                r.header("retry-after").is_some(),
                "InProgress without Retry-After"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "operation still in progress: {url}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// ARM paths.
pub fn watcher_path(sub: &str, rg: &str, nw: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkWatchers/{nw}"
    )
}

pub fn with_version(path: &str) -> String {
    format!("{path}?api-version={API_VERSION}")
}

pub fn capture_path(sub: &str, rg: &str, nw: &str, pc: &str) -> String {
    format!("{}/packetCaptures/{pc}", watcher_path(sub, rg, nw))
}
