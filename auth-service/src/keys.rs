//! The Ed25519 key that signs access tokens, and the public keys published to
//! verifiers as a JWK Set.

use std::path::Path;

use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes, spki::der::SecretDocument},
};
use jsonwebtoken::{
    Algorithm, EncodingKey,
    jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash},
};
use sqlx::{Connection, PgConnection};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not an Ed25519 private key in PKCS#8 form")]
    NotEd25519 { what: String },
    #[error("cannot load or store the signing key: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot describe the signing key as a JWK: {0}")]
    Jwk(#[from] jsonwebtoken::errors::Error),
}

/// The key tokens are signed with, and every public key verifiers should accept.
pub struct SigningKeys {
    kid: String,
    encoding_key: EncodingKey,
    published: JwkSet,
}

impl SigningKeys {
    /// The key in a PKCS#8 PEM file: production's choice, kept in a secret store.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let what = || KeyError::NotEd25519 {
            what: path.display().to_string(),
        };
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| what())?;
        let (kid, encoding_key, jwk) = describe(&key)?;
        Ok(Self {
            kid,
            encoding_key,
            published: JwkSet { keys: vec![jwk] },
        })
    }

    /// The newest key stored in the database, made and stored first if there is
    /// none, so a developer needs no setup and restarts keep tokens valid. Every
    /// stored key is published, so tokens signed before a rotation stay valid.
    pub async fn load_or_create(conn: &mut PgConnection) -> Result<Self, KeyError> {
        let mut tx = conn.begin().await?;
        // Replicas starting together must agree on one key.
        sqlx::query!("select pg_advisory_xact_lock(hashtext('auth.signing_keys'))")
            .execute(&mut *tx)
            .await?;
        let mut stored: Vec<Vec<u8>> = sqlx::query_scalar!(
            "select private_key from auth.signing_keys order by create_time desc, kid desc"
        )
        .fetch_all(&mut *tx)
        .await?;
        if stored.is_empty() {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            let der = pkcs8_v1(&key)?;
            let (kid, _, _) = describe(&key)?;
            sqlx::query!(
                "insert into auth.signing_keys (kid, private_key) values ($1, $2)",
                kid,
                der.as_bytes()
            )
            .execute(&mut *tx)
            .await?;
            tracing::info!(kid, "created a token signing key in the database");
            stored.push(der.as_bytes().to_vec());
        }
        tx.commit().await?;

        let mut published = JwkSet {
            keys: Vec::with_capacity(stored.len()),
        };
        let mut newest = None;
        for der in &stored {
            let key = SigningKey::from_pkcs8_der(der).map_err(|_| KeyError::NotEd25519 {
                what: "a stored key".to_owned(),
            })?;
            let (kid, encoding_key, jwk) = describe(&key)?;
            published.keys.push(jwk);
            newest.get_or_insert((kid, encoding_key));
        }
        let (kid, encoding_key) = newest.expect("at least one key was loaded or made");
        Ok(Self {
            kid,
            encoding_key,
            published,
        })
    }

    /// The id of the signing key, for the tokens' `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding_key
    }

    /// The public keys, newest first.
    pub fn published(&self) -> &JwkSet {
        &self.published
    }
}

/// A signing key as its key id (RFC 7638 thumbprint), encoding key, and public JWK.
fn describe(key: &SigningKey) -> Result<(String, EncodingKey, Jwk), KeyError> {
    let encoding_key = EncodingKey::from_ed_der(pkcs8_v1(key)?.as_bytes());
    let mut jwk = Jwk::from_encoding_key(&encoding_key, Algorithm::EdDSA)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((kid, encoding_key, jwk))
}

/// PKCS#8 v1 DER (the private key alone), the form jsonwebtoken reads; `openssl`
/// and ed25519-dalek may also write v2, which adds the public key.
fn pkcs8_v1(key: &SigningKey) -> Result<SecretDocument, KeyError> {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_der()
    .map_err(|_| KeyError::NotEd25519 {
        what: "a generated key".to_owned(),
    })
}
