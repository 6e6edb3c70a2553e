//! Trust of the server's certificate with `--ca-cert`.
//!
//! The certificates in the file are trusted as roots (next to the system's), and a certificate in
//! it is also trusted as the server's own certificate when the server presents exactly that one
//! (byte for byte), as curl and OpenSSL-based clients do. That is what the common recipe
//! `openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=host" -addext "subjectAltName=…"`
//! needs: its certificate says `CA:TRUE`, which WebPKI refuses for a server's certificate
//! (`CaUsedAsEndEntity`). Such a certificate must still be valid for the host name and at the
//! current time, and the server must prove it holds its key (the handshake signature): nothing
//! else of the verification is relaxed.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Reads the PEM certificates of `--ca-cert` (one or several).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "--ca-cert {}: not a PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "--ca-cert {}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The TLS configuration of the agent's HTTP client when `--ca-cert` is given.
pub fn client_config(
    trusted: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner =
        rustls_platform_verifier::Verifier::new_with_extra_roots(trusted.clone(), provider.clone())
            .map_err(|e| format!("--ca-cert: {e}"))?;
    let verifier = TrustedCertVerifier {
        inner: Arc::new(inner),
        trusted,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// WebPKI verification (system roots and `--ca-cert`), and a server certificate that is exactly
/// one of `trusted` accepted when valid for the name and the time.
#[derive(Debug)]
pub struct TrustedCertVerifier {
    pub inner: Arc<dyn ServerCertVerifier>,
    pub trusted: Vec<CertificateDer<'static>>,
}

impl TrustedCertVerifier {
    /// The checks of a directly trusted certificate: the host name, and the validity period.
    fn verify_trusted(
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        let (not_before, not_after) = validity(end_entity).ok_or(CertificateError::BadEncoding)?;
        let now_secs = now.as_secs();
        if now_secs < not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_before)),
            }
            .into());
        }
        if now_secs > not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after)),
            }
            .into());
        }
        Ok(())
    }
}

impl ServerCertVerifier for TrustedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e) => {
                if !self
                    .trusted
                    .iter()
                    .any(|t| t.as_ref() == end_entity.as_ref())
                {
                    return Err(e);
                }
                Self::verify_trusted(end_entity, server_name, now)?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// notBefore and notAfter of a DER certificate, in seconds since the Unix epoch.
pub fn validity(der: &[u8]) -> Option<(u64, u64)> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    for expected in [0x02, SEQUENCE, SEQUENCE] {
        let (tag, _, rest) = element(tbs)?;
        if tag != expected {
            return None;
        }
        tbs = rest;
    }
    let (SEQUENCE, validity, _) = element(tbs)? else {
        return None;
    };
    let (t1, not_before, rest) = element(validity)?;
    let (t2, not_after, _) = element(rest)?;
    Some((time(t1, not_before)?, time(t2, not_after)?))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as RFC 5280 has them.
fn time(tag: u8, value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let full = match (tag, text.len()) {
        (0x17, 13) => {
            let yy: u32 = text.get(..2)?.parse().ok()?;
            let century = if yy < 50 { 20 } else { 19 };
            format!("{century}{text}")
        }
        (0x18, 15) => text.to_string(),
        _ => return None,
    };
    let t = chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%SZ").ok()?;
    u64::try_from(t.and_utc().timestamp()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn self_signed(
        names: &[&str],
        ca: bool,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    /// A verifier that refuses everything, as WebPKI refuses a `CA:TRUE` server certificate.
    #[derive(Debug)]
    struct Refuses;

    impl ServerCertVerifier for Refuses {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Err(CertificateError::UnknownIssuer.into())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("no".into()))
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("no".into()))
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![]
        }
    }

    fn verify(
        trusted: &[CertificateDer<'static>],
        presented: &CertificateDer<'static>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let v = TrustedCertVerifier {
            inner: Arc::new(Refuses),
            trusted: trusted.to_vec(),
        };
        v.verify_server_cert(
            presented,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
    }

    #[test]
    fn validity_is_read_from_utc_and_generalized_times() {
        let c = self_signed(&["a.test"], true, (2001, 2, 3), (2060, 1, 1));
        let (nb, na) = validity(&c).unwrap();
        assert_eq!(nb, 981_158_400); // 2001-02-03T00:00:00Z (UTCTime)
        assert_eq!(na, 2_840_140_800); // 2060-01-01T00:00:00Z (GeneralizedTime)
        assert_eq!(validity(&c[..c.len() / 2]), None);
        assert_eq!(validity(b"\x30\x03\x02\x01\x00"), None);
    }

    #[test]
    fn a_trusted_ca_certificate_is_accepted_as_the_server_s_for_its_names_and_time_only() {
        let now = (2020, 1, 1);
        let later = (2090, 1, 1);
        let cert = self_signed(&["127.0.0.1", "server.test"], true, now, later);
        let trusted = [cert.clone()];
        verify(&trusted, &cert, "127.0.0.1").unwrap();
        verify(&trusted, &cert, "server.test").unwrap();
        // Another name than the certificate's.
        let e = verify(&trusted, &cert, "other.test").unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
            ),
            "{e:?}"
        );
        // Not the trusted certificate (same names): the inner verifier's refusal stands.
        let other = self_signed(&["127.0.0.1"], true, now, later);
        let e = verify(&trusted, &other, "127.0.0.1").unwrap_err();
        assert_eq!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
        // Expired, and not yet valid.
        let expired = self_signed(&["127.0.0.1"], true, (2000, 1, 1), (2001, 1, 1));
        let e = verify(std::slice::from_ref(&expired), &expired, "127.0.0.1").unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{e:?}"
        );
        let future = self_signed(&["127.0.0.1"], true, (2080, 1, 1), later);
        let e = verify(std::slice::from_ref(&future), &future, "127.0.0.1").unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { .. })
            ),
            "{e:?}"
        );
    }
}
