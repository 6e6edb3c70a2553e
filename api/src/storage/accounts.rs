//! The registry of storage accounts (ARM id → blob endpoint and key), and what the server does
//! with a key: sign SAS, create the container, check a blob. Keys are sealed at rest or read from
//! a file or variable when needed; they are never returned by an API nor logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::sas::{BlobSas, container_create_sas};
use super::secrets::SecretsKey;
use super::{CONTAINER, StorageError, blob_url};
use crate::arm::ids;
use crate::db::models::{NewStorageAccount, StorageAccountRow};
use crate::db::schema::storage_accounts;

/// Signs SAS for registered accounts and makes the server's own storage calls.
#[derive(Clone)]
pub struct Registry {
    secrets: Arc<SecretsKey>,
    /// Lifetime of an upload SAS.
    pub upload_ttl: Duration,
    /// Lifetime of a download SAS.
    pub download_ttl: Duration,
    http: reqwest::Client,
    /// Decoded keys for a short while, so that a poll does not read a key file every time.
    keys: Arc<std::sync::Mutex<KeyCache>>,
}

/// Account id → when its key was read, and the decoded key.
type KeyCache = HashMap<Uuid, (std::time::Instant, Vec<u8>)>;

/// How long a decoded key is reused before it is read again (a rotated key file is picked up
/// within this time).
const KEY_CACHE: Duration = Duration::from_secs(30);

/// A SAS URL and when it stops working.
#[derive(Debug, Clone)]
pub struct SasUrl {
    pub url: String,
    pub expires_on: DateTime<Utc>,
}

/// How the key of an account being registered is given.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The key itself: stored sealed with the secrets key.
    Value(String),
    /// A file the server reads when it signs.
    File(String),
    /// An environment variable of the server.
    Env(String),
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    resource_id: &str,
) -> QueryResult<Option<StorageAccountRow>> {
    storage_accounts::table
        .filter(storage_accounts::resource_key.eq(ids::key(resource_id)))
        .select(StorageAccountRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn by_ids(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<Vec<StorageAccountRow>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    storage_accounts::table
        .filter(storage_accounts::id.eq_any(ids))
        .select(StorageAccountRow::as_select())
        .load(conn)
        .await
}

pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<StorageAccountRow>> {
    storage_accounts::table
        .order(storage_accounts::resource_key)
        .select(StorageAccountRow::as_select())
        .load(conn)
        .await
}

/// What a list of storage accounts shows of one: never a key, nor where a key is kept.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = storage_accounts)]
pub struct AccountSummary {
    pub resource_key: String,
    pub resource_id: String,
    pub account_name: String,
    pub blob_endpoint: String,
    pub premium: bool,
    pub created_at: DateTime<Utc>,
}

/// A page of the accounts registered in a subscription, or in one of its resource groups (any
/// casing), in key order after `after`: at most `limit` rows.
pub async fn list_page(
    conn: &mut AsyncPgConnection,
    subscription: &str,
    resource_group: Option<&str>,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<AccountSummary>> {
    use crate::db::machines::like_literal;
    let sub = like_literal(&ids::key(subscription));
    let rg = resource_group
        .map(|rg| like_literal(&ids::key(rg)))
        .unwrap_or_else(|| "%".to_string());
    let pattern = format!(
        "/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.storage/storageaccounts/%"
    );
    storage_accounts::table
        .filter(storage_accounts::resource_key.like(pattern))
        .filter(storage_accounts::resource_key.gt(after))
        .order(storage_accounts::resource_key)
        .limit(limit)
        .select(AccountSummary::as_select())
        .load(conn)
        .await
}

/// Removes an account; captures that named it can no longer get upload credentials.
pub async fn remove(conn: &mut AsyncPgConnection, resource_id: &str) -> QueryResult<bool> {
    let n = diesel::delete(
        storage_accounts::table.filter(storage_accounts::resource_key.eq(ids::key(resource_id))),
    )
    .execute(conn)
    .await?;
    Ok(n > 0)
}

fn decode_key(account: &str, text: &str) -> Result<Vec<u8>, StorageError> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| StorageError::KeyUnavailable {
            account: account.to_string(),
            reason: "the account key is not base64".to_string(),
        })
}

impl Registry {
    pub fn new(secrets: Arc<SecretsKey>, upload_ttl: Duration, download_ttl: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Registry {
            secrets,
            upload_ttl,
            download_ttl,
            http,
            keys: Arc::default(),
        }
    }

    /// Registers (or replaces) an account. With [`KeySource::Value`] the key is sealed.
    pub async fn add(
        &self,
        conn: &mut AsyncPgConnection,
        resource_id: &str,
        blob_endpoint: &str,
        premium: bool,
        key: &KeySource,
    ) -> Result<StorageAccountRow, crate::error::ApiError> {
        let rid = ids::ResourceId::parse(resource_id)
            .filter(|r| r.is_type("Microsoft.Storage", &["storageAccounts"]))
            .ok_or_else(|| {
                crate::error::ApiError::new(
                    crate::error::ErrorCode::InvalidStorageId,
                    format!("'{resource_id}' is not a storage account resource id"),
                )
            })?;
        let account_name = account_name_of(&rid, blob_endpoint);
        let resource_key = ids::key(resource_id);
        let (sealed, file, env) = match key {
            KeySource::Value(v) => {
                decode_key(&account_name, v)?;
                (
                    Some(self.secrets.seal(v.trim().as_bytes(), &resource_key)?),
                    None,
                    None,
                )
            }
            KeySource::File(f) => (None, Some(f.as_str()), None),
            KeySource::Env(e) => (None, None, Some(e.as_str())),
        };
        let row = NewStorageAccount {
            id: Uuid::new_v4(),
            resource_id,
            resource_key: resource_key.clone(),
            account_name: &account_name,
            blob_endpoint: blob_endpoint.trim_end_matches('/'),
            premium,
            key_sealed: sealed,
            key_file: file,
            key_env: env,
        };
        Ok(diesel::insert_into(storage_accounts::table)
            .values(&row)
            .on_conflict(storage_accounts::resource_key)
            .do_update()
            .set((
                storage_accounts::resource_id.eq(row.resource_id),
                storage_accounts::account_name.eq(row.account_name),
                storage_accounts::blob_endpoint.eq(row.blob_endpoint),
                storage_accounts::premium.eq(row.premium),
                storage_accounts::key_sealed.eq(&row.key_sealed),
                storage_accounts::key_file.eq(row.key_file),
                storage_accounts::key_env.eq(row.key_env),
            ))
            .returning(StorageAccountRow::as_returning())
            .get_result(conn)
            .await?)
    }

    /// The account key (decoded), from wherever it is kept; cached for [`KEY_CACHE`].
    fn account_key(&self, a: &StorageAccountRow) -> Result<Vec<u8>, StorageError> {
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, key)) = cache.get(&a.id)
            && at.elapsed() < KEY_CACHE
        {
            return Ok(key.clone());
        }
        let key = self.read_account_key(a)?;
        cache.insert(a.id, (std::time::Instant::now(), key.clone()));
        Ok(key)
    }

    fn read_account_key(&self, a: &StorageAccountRow) -> Result<Vec<u8>, StorageError> {
        let unavailable = |reason: String| StorageError::KeyUnavailable {
            account: a.account_name.clone(),
            reason,
        };
        let text = if let Some(sealed) = &a.key_sealed {
            let plain = self.secrets.open(sealed, &ids::key(&a.resource_id))?;
            String::from_utf8(plain).map_err(|_| unavailable("not text".into()))?
        } else if let Some(f) = &a.key_file {
            std::fs::read_to_string(f).map_err(|e| unavailable(format!("key file {f}: {e}")))?
        } else if let Some(v) = &a.key_env {
            std::env::var(v).map_err(|_| unavailable(format!("variable {v} is not set")))?
        } else {
            return Err(unavailable("no key is registered".into()));
        };
        decode_key(&a.account_name, &text)
    }

    fn blob_sas(
        &self,
        a: &StorageAccountRow,
        blob: &str,
        permissions: &str,
        ttl: Duration,
    ) -> Result<SasUrl, StorageError> {
        let key = self.account_key(a)?;
        let now = Utc::now();
        let expires_on = now + ttl;
        let sas = BlobSas {
            account: &a.account_name,
            container: CONTAINER,
            blob,
            permissions,
            // Clock skew between us and the storage service.
            start: now - chrono::Duration::minutes(5),
            expiry: expires_on,
            https_only: a.blob_endpoint.starts_with("https://"),
        }
        .sign(&key);
        Ok(SasUrl {
            url: format!("{}?{sas}", blob_url(&a.blob_endpoint, blob)),
            expires_on,
        })
    }

    /// Create and write one blob, nothing else: what an agent gets to upload a capture.
    pub fn upload_sas(&self, a: &StorageAccountRow, blob: &str) -> Result<SasUrl, StorageError> {
        self.blob_sas(a, blob, "cw", self.upload_ttl)
    }

    /// Read one blob: what a caller gets to download a capture.
    pub fn download_sas(&self, a: &StorageAccountRow, blob: &str) -> Result<SasUrl, StorageError> {
        self.blob_sas(a, blob, "r", self.download_ttl)
    }

    /// Creates the captures container if it does not exist (and so checks the key).
    pub async fn ensure_container(&self, a: &StorageAccountRow) -> Result<(), StorageError> {
        let key = self.account_key(a)?;
        let now = Utc::now();
        let sas = container_create_sas(
            &a.account_name,
            &key,
            now - chrono::Duration::minutes(5),
            now + chrono::Duration::minutes(5),
        );
        let url = format!(
            "{}/{CONTAINER}?restype=container&{sas}",
            a.blob_endpoint.trim_end_matches('/')
        );
        let resp = self
            .http
            .put(url)
            .header("x-ms-version", super::sas::SAS_VERSION)
            .header("content-length", "0")
            .send()
            .await
            .map_err(|e| self.unreachable(a, &e))?;
        let status = resp.status().as_u16();
        let code = error_code(&resp);
        match (status, code.as_str()) {
            (201, _) | (409, "ContainerAlreadyExists") => Ok(()),
            _ => Err(StorageError::Refused {
                account: a.account_name.clone(),
                status,
                code,
            }),
        }
    }

    /// Reads a blob: the response, whose body streams it.
    pub async fn read_blob(
        &self,
        a: &StorageAccountRow,
        blob: &str,
    ) -> Result<reqwest::Response, StorageError> {
        let sas = self.blob_sas(a, blob, "r", Duration::from_secs(3600))?;
        let resp = self
            .http
            .get(&sas.url)
            .header("x-ms-version", super::sas::SAS_VERSION)
            .send()
            .await
            .map_err(|e| self.unreachable(a, &e))?;
        match resp.status().as_u16() {
            200 => Ok(resp),
            status => Err(StorageError::Refused {
                account: a.account_name.clone(),
                status,
                code: error_code(&resp),
            }),
        }
    }

    /// Deletes a blob with the server's own credentials (a continuous capture's file that left
    /// its ring); a blob that is already gone is fine.
    pub async fn delete_blob(&self, a: &StorageAccountRow, blob: &str) -> Result<(), StorageError> {
        let sas = self.blob_sas(a, blob, "d", Duration::from_secs(300))?;
        let resp = self
            .http
            .delete(&sas.url)
            .header("x-ms-version", super::sas::SAS_VERSION)
            .send()
            .await
            .map_err(|e| self.unreachable(a, &e))?;
        match resp.status().as_u16() {
            202 | 404 => Ok(()),
            status => Err(StorageError::Refused {
                account: a.account_name.clone(),
                status,
                code: error_code(&resp),
            }),
        }
    }

    /// Size and Content-MD5 (base64) of a blob; `None` when there is no such blob.
    pub async fn blob_properties(
        &self,
        a: &StorageAccountRow,
        blob: &str,
    ) -> Result<Option<(u64, Option<String>)>, StorageError> {
        let sas = self.blob_sas(a, blob, "r", Duration::from_secs(300))?;
        let resp = self
            .http
            .head(&sas.url)
            .header("x-ms-version", super::sas::SAS_VERSION)
            .send()
            .await
            .map_err(|e| self.unreachable(a, &e))?;
        match resp.status().as_u16() {
            200 => {
                let header = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let size = header("content-length")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                Ok(Some((size, header("content-md5"))))
            }
            404 => Ok(None),
            status => Err(StorageError::Refused {
                account: a.account_name.clone(),
                status,
                code: error_code(&resp),
            }),
        }
    }

    fn unreachable(&self, a: &StorageAccountRow, e: &reqwest::Error) -> StorageError {
        // reqwest errors carry the URL, and so the SAS: keep only the kind of failure.
        let reason = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        StorageError::Unreachable {
            account: a.account_name.clone(),
            reason: reason.to_string(),
        }
    }
}

fn error_code(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The account name: from the endpoint's host (`acct.blob.core.windows.net`), from its first
/// path segment for emulator-style endpoints (`http://127.0.0.1:10000/devstoreaccount1`), else
/// the resource's name.
fn account_name_of(rid: &ids::ResourceId, endpoint: &str) -> String {
    if let Ok(u) = url::Url::parse(endpoint) {
        let first_segment = u
            .path_segments()
            .and_then(|mut s| s.next().map(str::to_string))
            .filter(|s| !s.is_empty());
        if let Some(seg) = first_segment {
            return seg;
        }
        if let Some(host) = u.host_str()
            && host.parse::<std::net::IpAddr>().is_err()
            && let Some((first, _)) = host.split_once('.')
        {
            return first.to_string();
        }
    }
    rid.name().to_string()
}
