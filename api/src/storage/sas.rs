//! Shared access signatures signed with an account key (HMAC-SHA256), as documented for the
//! Blob service: a service SAS for one blob, and an account SAS for creating a container.
//!
//! The official Rust SDK signs only user-delegation SAS, which an account key (and Azurite)
//! cannot produce; these are the two documented string-to-sign layouts of version 2022-11-02.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};

/// The signed version (`sv`) of every SAS made here.
pub const SAS_VERSION: &str = "2022-11-02";

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn sign(account_key: &[u8], string_to_sign: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, account_key);
    STANDARD.encode(hmac::sign(&key, string_to_sign.as_bytes()).as_ref())
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// A service SAS for one blob.
#[derive(Debug, Clone)]
pub struct BlobSas<'a> {
    pub account: &'a str,
    pub container: &'a str,
    pub blob: &'a str,
    /// In the documented order, e.g. `cw` (create, write) or `r` (read).
    pub permissions: &'a str,
    pub start: DateTime<Utc>,
    pub expiry: DateTime<Utc>,
    /// Only HTTPS requests may use it.
    pub https_only: bool,
}

impl BlobSas<'_> {
    /// The SAS query string (no leading `?`).
    pub fn sign(&self, account_key: &[u8]) -> String {
        let (st, se) = (time(self.start), time(self.expiry));
        let spr = if self.https_only { "https" } else { "" };
        let canonical = format!("/blob/{}/{}/{}", self.account, self.container, self.blob);
        // sp, st, se, canonicalized resource, si, sip, spr, sv, sr, snapshot time, ses,
        // rscc, rscd, rsce, rscl, rsct
        let string_to_sign = [
            self.permissions,
            &st,
            &se,
            &canonical,
            "",
            "",
            spr,
            SAS_VERSION,
            "b",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let sig = sign(account_key, &string_to_sign);
        query(&[
            ("sv", SAS_VERSION),
            ("spr", spr),
            ("st", &st),
            ("se", &se),
            ("sr", "b"),
            ("sp", self.permissions),
            ("sig", &sig),
        ])
    }
}

/// An account SAS allowing only the creation of containers in the Blob service.
pub fn container_create_sas(
    account: &str,
    account_key: &[u8],
    start: DateTime<Utc>,
    expiry: DateTime<Utc>,
) -> String {
    let (st, se) = (time(start), time(expiry));
    // account name, sp, ss, srt, st, se, sip, spr, sv, ses, then a final newline
    let string_to_sign = format!("{account}\nc\nb\nc\n{st}\n{se}\n\n\n{SAS_VERSION}\n\n");
    let sig = sign(account_key, &string_to_sign);
    query(&[
        ("sv", SAS_VERSION),
        ("ss", "b"),
        ("srt", "c"),
        ("sp", "c"),
        ("st", &st),
        ("se", &se),
        ("sig", &sig),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_sas_has_the_documented_fields() {
        let t = |s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let sas = BlobSas {
            account: "acct",
            container: "network-watcher-logs",
            blob: "a/b.cap",
            permissions: "cw",
            start: t("2026-01-01T00:00:00Z"),
            expiry: t("2026-01-01T01:00:00Z"),
            https_only: true,
        }
        .sign(b"key");
        let q: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(sas.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(q["sp"], "cw");
        assert_eq!(q["sr"], "b");
        assert_eq!(q["spr"], "https");
        assert_eq!(q["se"], "2026-01-01T01:00:00Z");
        // HMAC-SHA256 of the documented 16-line string to sign, computed independently.
        let expected = {
            let s = "cw\n2026-01-01T00:00:00Z\n2026-01-01T01:00:00Z\n/blob/acct/network-watcher-logs/a/b.cap\n\n\nhttps\n2022-11-02\nb\n\n\n\n\n\n\n";
            let key = hmac::Key::new(hmac::HMAC_SHA256, b"key");
            STANDARD.encode(hmac::sign(&key, s.as_bytes()).as_ref())
        };
        assert_eq!(q["sig"], expected);
    }
}
