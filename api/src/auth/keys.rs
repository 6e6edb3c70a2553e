//! The built-in issuer's signing keys: ES256 (P-256), kept in the database with the private key
//! sealed by the server's secrets key, so every replica signs and verifies with the same keys.
//! The newest key signs; older ones stay published in the JWKS so that their tokens remain
//! valid until they expire. `capture-api signing-keys rotate` adds a key.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use jsonwebtoken::EncodingKey;

use crate::db::schema::signing_keys;
use crate::error::{ApiError, ApiResult};
use crate::storage::secrets::SecretsKey;

pub const ALG: &str = "ES256";

/// A key that can sign.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    pub key: EncodingKey,
}

/// Adds a new signing key (it signs from now on); returns its kid.
pub async fn rotate(conn: &mut AsyncPgConnection, secrets: &SecretsKey) -> ApiResult<String> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| ApiError::internal("cannot generate a signing key"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| ApiError::internal("cannot read the generated key"))?;
    let public = pair.public_key().as_ref();
    // Uncompressed point: 0x04, X (32 bytes), Y (32 bytes).
    if public.len() != 65 {
        return Err(ApiError::internal("unexpected public key shape"));
    }
    let kid = crate::auth::secrets::fast_hash(&URL_SAFE_NO_PAD.encode(public))[..16].to_string();
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": ALG, "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    });
    let sealed = secrets.seal(pkcs8.as_ref(), &format!("signing-key:{kid}"))?;
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(&kid),
            signing_keys::alg.eq(ALG),
            signing_keys::private_sealed.eq(sealed),
            signing_keys::public_jwk.eq(jwk),
        ))
        .execute(conn)
        .await?;
    Ok(kid)
}

/// The newest key, creating the first one if there is none.
pub async fn current(conn: &mut AsyncPgConnection, secrets: &SecretsKey) -> ApiResult<Signer> {
    let newest: Option<(String, Vec<u8>)> = signing_keys::table
        .order(signing_keys::created_at.desc())
        .select((signing_keys::kid, signing_keys::private_sealed))
        .first(conn)
        .await
        .optional()?;
    let (kid, sealed) = match newest {
        Some(k) => k,
        None => {
            rotate(conn, secrets).await?;
            return Box::pin(current(conn, secrets)).await;
        }
    };
    let pkcs8 = secrets.open(&sealed, &format!("signing-key:{kid}"))?;
    Ok(Signer {
        kid,
        key: EncodingKey::from_ec_der(&pkcs8),
    })
}

/// Every published public key (the JWKS `keys`).
pub async fn public_keys(conn: &mut AsyncPgConnection) -> ApiResult<Vec<serde_json::Value>> {
    Ok(signing_keys::table
        .order(signing_keys::created_at.desc())
        .select(signing_keys::public_jwk)
        .load(conn)
        .await?)
}
