//! The server's secrets key: seals storage account keys at rest with AES-256-GCM.
//!
//! The key is 32 random bytes in a file (created 0600 on first use). Replicas sharing one
//! database must share the file (`--secrets-key-file`).

use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use super::StorageError;
use crate::error::StartupError;

pub struct SecretsKey(LessSafeKey);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// Reads the key file, creating it with a new random key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<SecretsKey, StartupError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| StartupError("no randomness for the secrets key".into()))?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StartupError(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                use std::os::unix::fs::OpenOptionsExt;
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()));
                match written {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "created the secrets key");
                        key.to_vec()
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path)
                        .map_err(|e| StartupError(format!("{}: {e}", path.display())))?,
                    Err(e) => {
                        return Err(StartupError(format!(
                            "cannot write the secrets key {}: {e}",
                            path.display()
                        )));
                    }
                }
            }
            Err(e) => {
                return Err(StartupError(format!(
                    "cannot read the secrets key {}: {e}",
                    path.display()
                )));
            }
        };
        Self::from_bytes(&bytes)
            .ok_or_else(|| StartupError(format!("{}: not a 32-byte key", path.display())))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<SecretsKey> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(SecretsKey(LessSafeKey::new(key)))
    }

    /// Nonce followed by ciphertext and tag; `context` (e.g. the row it belongs to) must be given
    /// again to open it.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, StorageError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StorageError::Crypto("no randomness".into()))?;
        let mut data = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| StorageError::Crypto("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, StorageError> {
        if sealed.len() < NONCE_LEN {
            return Err(StorageError::Crypto("sealed key too short".into()));
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StorageError::Crypto("bad nonce".into()))?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| {
                StorageError::Crypto(
                    "the stored key does not open with this server's secrets key".into(),
                )
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let k = SecretsKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = k.seal(b"account key", "row-a").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"account key"));
        assert_eq!(k.open(&sealed, "row-a").unwrap(), b"account key");
        // Bound to its row, and to the key.
        assert!(k.open(&sealed, "row-b").is_err());
        let other = SecretsKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed, "row-a").is_err());
    }
}
