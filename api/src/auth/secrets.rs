//! Generated secrets and their stored hashes.
//!
//! Service principal secrets are stored only as a slow hash (PBKDF2-HMAC-SHA256). Agent
//! credentials and enrollment tokens are 256 random bits, for which a SHA-256 is enough and
//! lets every agent request be checked with one indexed lookup.

use std::num::NonZeroU32;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

const ITERATIONS: u32 = 210_000;

/// 32 random bytes, base64url.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The system generator does not fail on Linux; an all-zero secret would be caught by tests.
    let _ = SystemRandom::new().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
pub fn slow_hash(secret: &str) -> String {
    let mut salt = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut salt);
    let mut out = [0u8; 32];
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        secret.as_bytes(),
        &mut out,
    );
    format!(
        "pbkdf2-sha256${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

pub fn verify_slow_hash(secret: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, iterations, salt, hash] = parts.as_slice() else {
        return false;
    };
    if *scheme != "pbkdf2-sha256" {
        return false;
    }
    let (Some(iterations), Ok(salt), Ok(hash)) = (
        iterations.parse().ok().and_then(NonZeroU32::new),
        STANDARD.decode(salt),
        STANDARD.decode(hash),
    ) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        secret.as_bytes(),
        &hash,
    )
    .is_ok()
}

/// SHA-256 of a high-entropy token, hex.
pub fn fast_hash(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_secret() {
        let s = random_secret();
        assert_eq!(s.len(), 43);
        let h = slow_hash(&s);
        assert!(!h.contains(&s));
        assert!(verify_slow_hash(&s, &h));
        assert!(!verify_slow_hash("other", &h));
        assert!(!verify_slow_hash(&s, "plain"));
        assert_eq!(fast_hash("a"), fast_hash("a"));
        assert_ne!(fast_hash("a"), fast_hash("b"));
    }
}
