//! What every handler shares.

use std::sync::Arc;

use crate::coalesce::Coalescer;
use crate::config::Timing;
use crate::db::models::CaptureRow;
use crate::db::{DbConn, DbPool};
use crate::error::ApiResult;
use crate::metrics::Metrics;
use crate::notify::Hub;

#[derive(Clone)]
pub struct AppState {
    pub pool: DbPool,
    pub hub: Arc<Hub>,
    pub timing: Timing,
    pub public_url: Option<String>,
    pub page_size: i64,
    pub default_location: String,
    pub metrics: Arc<Metrics>,
    pub storage: crate::storage::accounts::Registry,
    pub auth: Arc<crate::auth::Auth>,
    /// Seals storage account keys and signing keys at rest.
    pub secrets: Arc<crate::storage::secrets::SecretsKey>,
}

/// A capture as read once for many concurrent readers: the row and its serialized resource.
pub struct CaptureView {
    pub row: CaptureRow,
    pub etag: String,
    pub resource_json: actix_web::web::Bytes,
}

/// Concurrent reads of one capture share one query (one per worker thread).
pub type CaptureReads = Coalescer<CaptureView>;

impl AppState {
    pub async fn conn(&self) -> ApiResult<DbConn> {
        Ok(self.pool.get().await?)
    }

    /// Base of the absolute URLs we hand out: the configured public URL, else the request's
    /// scheme and host.
    pub fn base_url(&self, req: &actix_web::HttpRequest) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let info = req.connection_info();
                format!("{}://{}", info.scheme(), info.host())
            }
        }
    }
}
