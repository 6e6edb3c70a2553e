//! The webhook secret of a trigger: 32 random bytes generated at create and at `rotateSecret`,
//! shown once, stored only as its SHA-256 (`sha256$<hex>`).
//!
//! A delivery presents it as `Authorization: Bearer SECRET` or as `?code=SECRET`. A random
//! 256-bit secret cannot be guessed from its SHA-256, so a slow salted hash (as for the client
//! secrets people may choose) would add cost without protection: checking one is a hash and a
//! constant-time comparison, whatever the rate of deliveries.

use crate::auth::secrets::{fast_hash, random_secret};

const SCHEME: &str = "sha256$";

/// A new secret and what is stored of it.
pub fn new_secret() -> (String, String) {
    let secret = random_secret();
    let stored = format!("{SCHEME}{}", fast_hash(&secret));
    (secret, stored)
}

/// The secret a delivery presents: the bearer token, else the `code` query parameter.
pub fn presented(req: &actix_web::HttpRequest) -> Option<String> {
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .filter(|t| !t.is_empty());
    bearer.or_else(|| {
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    })
}

/// Whether `secret` is the one `stored` was made of (compared in constant time).
pub fn verify(stored: &str, secret: &str) -> bool {
    let Some(hex) = stored.strip_prefix(SCHEME) else {
        return false;
    };
    aws_lc_rs::constant_time::verify_slices_are_equal(hex.as_bytes(), fast_hash(secret).as_bytes())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_verifies() {
        let (secret, stored) = new_secret();
        assert!(stored.starts_with("sha256$") && !stored.contains(&secret));
        assert!(verify(&stored, &secret));
        assert!(!verify(&stored, &format!("{secret}x")));
        assert!(!verify(&stored, ""));
        assert!(!verify("pbkdf2-sha256$1$x$y", &secret));
        let (other, _) = new_secret();
        assert_ne!(secret, other);
    }
}
