//! The Ed25519 keys that sign access tokens, and the public keys published to
//! verifiers as a JWK Set.
//!
//! Keys kept in the database rotate on a schedule, so no replica needs a restart:
//! each key is published from its creation, signs from its `sign_time`, and is
//! withdrawn at its `retire_time`. Every replica reloads the keys periodically
//! ([`KeyRing::reload_periodically`]) and picks the signing key by the clock, so
//! replicas switch together at the `sign_time` that [`rotate`] set in advance.
//!
//! With `SIGNING_KEYS_SECRET`, the private keys are stored sealed
//! ([`KeySeal`]): a copy of the database, a dump or a backup alone cannot sign.

use std::{
    future::Future,
    path::Path,
    pin::Pin,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use access_token::{KeySource, KeySourceError};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, AeadCore, Payload},
};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes, spki::der::SecretDocument},
};
use jsonwebtoken::{
    Algorithm, EncodingKey,
    jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash},
};
use sqlx::{Connection, PgConnection, PgPool};
use time::OffsetDateTime;

use crate::config::AuthSettings;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not an Ed25519 private key in PKCS#8 form")]
    NotEd25519 { what: String },
    #[error("cannot load or store the signing keys: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot describe the signing key as a JWK: {0}")]
    Jwk(#[from] jsonwebtoken::errors::Error),
    #[error("no signing key has the id {0}")]
    UnknownKid(String),
    #[error("the signing keys in the database are sealed: set SIGNING_KEYS_SECRET")]
    Sealed,
    #[error(
        "SIGNING_KEYS_SECRET does not open the signing key {0}: it is not the secret it was sealed with"
    )]
    WrongSecret(String),
    #[error(
        "SIGNING_KEYS_SECRET must be 32 random bytes in base64, e.g. from `openssl rand -base64 32`"
    )]
    BadSecret,
    #[error(
        "{0} is the only key that signs now; rotate first (`rotate-signing-key --sign-after-secs 0`), then retire it"
    )]
    LastSigner(String),
}

/// One key: its id (RFC 7638 thumbprint), how to sign with it, its public JWK,
/// and when it signs and when it is withdrawn.
struct RingKey {
    kid: String,
    encoding_key: EncodingKey,
    jwk: Jwk,
    sign_time: SystemTime,
    retire_time: Option<SystemTime>,
}

impl RingKey {
    fn new(
        key: &SigningKey,
        sign_time: SystemTime,
        retire_time: Option<SystemTime>,
    ) -> Result<Self, KeyError> {
        let encoding_key = EncodingKey::from_ed_der(pkcs8_v1(key)?.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&encoding_key, Algorithm::EdDSA)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            kid,
            encoding_key,
            jwk,
            sign_time,
            retire_time,
        })
    }

    fn published_at(&self, now: SystemTime) -> bool {
        self.retire_time.is_none_or(|retire| retire > now)
    }

    fn signs_at(&self, now: SystemTime) -> bool {
        self.sign_time <= now && self.published_at(now)
    }
}

/// The keys as loaded at one moment, newest `sign_time` first.
pub struct SigningKeys {
    keys: Vec<RingKey>,
}

/// The key to sign a token with now.
pub struct Signer<'a> {
    pub kid: &'a str,
    pub encoding_key: &'a EncodingKey,
}

impl SigningKeys {
    /// The key in a PKCS#8 PEM file, signing for as long as the process runs.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::NotEd25519 {
            what: path.display().to_string(),
        })?;
        Ok(Self {
            keys: vec![RingKey::new(&key, SystemTime::UNIX_EPOCH, None)?],
        })
    }

    /// The keys stored in the database, after making one that signs at once if
    /// none signs now, so a developer needs no setup and restarts keep tokens
    /// valid.
    pub async fn load_or_create(
        conn: &mut PgConnection,
        seal: Option<&KeySeal>,
    ) -> Result<Self, KeyError> {
        let mut tx = conn.begin().await?;
        // Replicas starting together must agree on one key.
        lock_keys(&mut tx).await?;
        if let Some(seal) = seal {
            seal.seal_stored(&mut tx).await?;
        }
        let signing = sqlx::query_scalar!(
            r#"select count(*) as "count!" from auth.signing_keys
                where sign_time <= now() and (retire_time is null or retire_time > now())"#
        )
        .fetch_one(&mut *tx)
        .await?;
        if signing == 0 {
            let kid = insert_key(&mut tx, Duration::ZERO, seal).await?.kid;
            tracing::info!(kid, "created a token signing key in the database");
        }
        tx.commit().await?;
        Self::load(conn, seal).await
    }

    /// The keys stored in the database that are not retired.
    pub async fn load(conn: &mut PgConnection, seal: Option<&KeySeal>) -> Result<Self, KeyError> {
        let rows = sqlx::query!(
            "select kid, private_key, sealed, sign_time, retire_time from auth.signing_keys
              where retire_time is null or retire_time > now()
              order by sign_time desc, kid desc"
        )
        .fetch_all(conn)
        .await?;
        let keys = rows
            .into_iter()
            .map(|row| {
                let der = match (row.sealed, seal) {
                    (false, _) => row.private_key,
                    (true, Some(seal)) => seal.open(&row.kid, &row.private_key)?,
                    (true, None) => return Err(KeyError::Sealed),
                };
                let key = SigningKey::from_pkcs8_der(&der).map_err(|_| KeyError::NotEd25519 {
                    what: "a stored key".to_owned(),
                })?;
                RingKey::new(
                    &key,
                    row.sign_time.into(),
                    row.retire_time.map(SystemTime::from),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// The newest key that signs at `now`.
    pub fn signer(&self, now: SystemTime) -> Option<Signer<'_>> {
        self.keys
            .iter()
            .find(|key| key.signs_at(now))
            .map(|key| Signer {
                kid: &key.kid,
                encoding_key: &key.encoding_key,
            })
    }

    /// The public keys verifiers should accept at `now`: every key not retired,
    /// including one that signs only later, so that verifiers know it before the
    /// first token it signs.
    pub fn published(&self, now: SystemTime) -> JwkSet {
        JwkSet {
            keys: self
                .keys
                .iter()
                .filter(|key| key.published_at(now))
                .map(|key| key.jwk.clone())
                .collect(),
        }
    }
}

/// The current keys, shared by the token issuer, `GetJwks` and auth-service's own
/// verifier.
pub struct KeyRing {
    keys: RwLock<Arc<SigningKeys>>,
}

impl KeyRing {
    pub fn new(keys: SigningKeys) -> Arc<Self> {
        Arc::new(Self {
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    pub fn current(&self) -> Arc<SigningKeys> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Loads the keys from the database every `every` for as long as the ring
    /// lives. A load that fails keeps the keys already loaded (and is logged):
    /// tokens keep being issued and verified while the database is away.
    pub fn reload_periodically(
        self: &Arc<Self>,
        pool: PgPool,
        seal: Option<Arc<KeySeal>>,
        every: Duration,
    ) {
        let ring = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(ring) = ring.upgrade() else {
                    return;
                };
                let loaded = match pool.acquire().await {
                    Ok(mut conn) => SigningKeys::load(&mut conn, seal.as_deref()).await,
                    Err(error) => Err(error.into()),
                };
                match loaded {
                    Ok(keys) => {
                        *ring
                            .keys
                            .write()
                            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot reload the signing keys; keeping those loaded")
                    }
                }
            }
        });
    }
}

/// The ring's published keys, for auth-service's own verifier: no network round
/// trip, and a retired key stops verifying here as it does everywhere else.
pub struct RingKeys(pub Arc<KeyRing>);

impl KeySource for RingKeys {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, KeySourceError>> + Send + '_>> {
        let keys = self.0.current().published(SystemTime::now());
        Box::pin(async move { Ok(keys) })
    }
}

/// A key made by [`rotate`], and the keys it replaces.
#[derive(Debug)]
pub struct Rotation {
    pub kid: String,
    pub sign_time: OffsetDateTime,
    /// Each key that stops signing at `sign_time`, and when it is withdrawn.
    pub retiring: Vec<(String, OffsetDateTime)>,
}

/// Makes a new key, published at once and signing `sign_after` from now, and
/// schedules every key not yet scheduled to retire `retire_after` after that,
/// when the last token it signed has expired. One transaction: replicas see all
/// of it or none.
pub async fn rotate(
    conn: &mut PgConnection,
    seal: Option<&KeySeal>,
    sign_after: Duration,
    retire_after: Duration,
) -> Result<Rotation, KeyError> {
    let mut tx = conn.begin().await?;
    lock_keys(&mut tx).await?;
    let new = insert_key(&mut tx, sign_after, seal).await?;
    let retiring = sqlx::query!(
        r#"update auth.signing_keys
              set retire_time = $2::timestamptz + make_interval(secs => $3)
            where retire_time is null and kid <> $1
        returning kid, retire_time as "retire_time!""#,
        new.kid,
        new.sign_time,
        retire_after.as_secs_f64(),
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.kid, row.retire_time))
    .collect();
    tx.commit().await?;
    Ok(Rotation {
        kid: new.kid,
        sign_time: new.sign_time,
        retiring,
    })
}

/// Withdraws the key `kid` now (a key that leaked): every verifier stops
/// trusting it within its refresh interval. Refused for the only key that signs
/// now, since logins would then fail.
pub async fn retire_now(conn: &mut PgConnection, kid: &str) -> Result<(), KeyError> {
    let mut tx = conn.begin().await?;
    lock_keys(&mut tx).await?;
    let found = sqlx::query!(
        r#"select count(*) filter (where kid = $1) as "found!",
                  count(*) filter (where kid <> $1 and sign_time <= now()
                                     and (retire_time is null or retire_time > now()))
                    as "others_signing!",
                  coalesce(bool_or(kid = $1 and sign_time <= now()
                                     and (retire_time is null or retire_time > now())), false)
                    as "signs_now!"
             from auth.signing_keys"#,
        kid,
    )
    .fetch_one(&mut *tx)
    .await?;
    if found.found == 0 {
        return Err(KeyError::UnknownKid(kid.to_owned()));
    }
    if found.signs_now && found.others_signing == 0 {
        return Err(KeyError::LastSigner(kid.to_owned()));
    }
    sqlx::query!(
        "update auth.signing_keys set retire_time = now() where kid = $1",
        kid
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Serialises every change of the key set, across replicas and commands.
async fn lock_keys(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_advisory_xact_lock(hashtext('auth.signing_keys'))")
        .execute(conn)
        .await?;
    Ok(())
}

struct NewKey {
    kid: String,
    sign_time: OffsetDateTime,
}

/// Stores a fresh key, sealed if there is a seal, that signs `sign_after` from
/// now (by the database's clock).
async fn insert_key(
    conn: &mut PgConnection,
    sign_after: Duration,
    seal: Option<&KeySeal>,
) -> Result<NewKey, KeyError> {
    // Without the secret, a key stored in the clear beside sealed ones would
    // undo the sealing.
    if seal.is_none()
        && sqlx::query_scalar!(
            r#"select exists (select from auth.signing_keys where sealed) as "sealed!""#
        )
        .fetch_one(&mut *conn)
        .await?
    {
        return Err(KeyError::Sealed);
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let der = pkcs8_v1(&key)?;
    let kid = RingKey::new(&key, SystemTime::UNIX_EPOCH, None)?.kid;
    let stored = match seal {
        Some(seal) => seal.seal(&kid, der.as_bytes()),
        None => der.as_bytes().to_vec(),
    };
    let sign_time = sqlx::query_scalar!(
        "insert into auth.signing_keys (kid, private_key, sealed, sign_time)
         values ($1, $2, $3, now() + make_interval(secs => $4))
         returning sign_time",
        kid,
        stored,
        seal.is_some(),
        sign_after.as_secs_f64(),
    )
    .fetch_one(conn)
    .await?;
    Ok(NewKey { kid, sign_time })
}

/// Seals private keys for the database with XChaCha20-Poly1305 under a key
/// from the environment. Each sealed key is a random 24-byte nonce and the
/// ciphertext; its kid is authenticated with it, so a sealed key copied onto
/// another row does not open.
pub struct KeySeal(XChaCha20Poly1305);

impl KeySeal {
    /// The seal `SIGNING_KEYS_SECRET` gives, if it is set and not empty (as
    /// `${SIGNING_KEYS_SECRET:-}` in a compose file leaves it).
    pub fn configured(settings: &AuthSettings) -> Result<Option<Arc<Self>>, KeyError> {
        settings
            .signing_keys_secret
            .as_ref()
            .filter(|secret| !secret.expose().trim().is_empty())
            .map(|secret| Self::from_base64(secret.expose()).map(Arc::new))
            .transpose()
    }

    /// From 32 bytes in base64 (`SIGNING_KEYS_SECRET`).
    pub fn from_base64(secret: &str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(secret.trim())
            .map_err(|_| KeyError::BadSecret)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| KeyError::BadSecret)?;
        Ok(Self(cipher))
    }

    fn seal(&self, kid: &str, der: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut rand_core::OsRng);
        let payload = Payload {
            msg: der,
            aad: kid.as_bytes(),
        };
        let sealed = self
            .0
            .encrypt(&nonce, payload)
            .expect("XChaCha20-Poly1305 seals any key-sized message");
        [&nonce[..], &sealed].concat()
    }

    fn open(&self, kid: &str, stored: &[u8]) -> Result<Vec<u8>, KeyError> {
        let wrong = || KeyError::WrongSecret(kid.to_owned());
        let Some((nonce, sealed)) = stored.split_first_chunk::<24>() else {
            return Err(wrong());
        };
        let payload = Payload {
            msg: sealed,
            aad: kid.as_bytes(),
        };
        self.0
            .decrypt(&XNonce::from(*nonce), payload)
            .map_err(|_| wrong())
    }

    /// Seals the keys stored before there was a secret; how many.
    async fn seal_stored(&self, conn: &mut PgConnection) -> Result<usize, KeyError> {
        let open = sqlx::query!("select kid, private_key from auth.signing_keys where not sealed")
            .fetch_all(&mut *conn)
            .await?;
        for row in &open {
            sqlx::query!(
                "update auth.signing_keys set private_key = $2, sealed = true where kid = $1",
                row.kid,
                self.seal(&row.kid, &row.private_key),
            )
            .execute(&mut *conn)
            .await?;
        }
        if !open.is_empty() {
            tracing::info!(keys = open.len(), "sealed the signing keys stored unsealed");
        }
        Ok(open.len())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "lIv+0QE5yqgHRcPLvbXuDDJ3g7RImV4OYFtojd6DG0Q=";

    #[test]
    fn a_sealed_key_opens_only_with_its_secret_and_under_its_kid() {
        let seal = KeySeal::from_base64(SECRET).unwrap();
        let der = b"a private key".to_vec();

        let sealed = seal.seal("kid-1", &der);

        assert_eq!(seal.open("kid-1", &sealed).unwrap(), der);
        assert_ne!(seal.seal("kid-1", &der), sealed, "a fresh nonce each time");
        assert!(matches!(
            seal.open("kid-2", &sealed),
            Err(KeyError::WrongSecret(_))
        ));
        let other = KeySeal::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert!(matches!(
            other.open("kid-1", &sealed),
            Err(KeyError::WrongSecret(_))
        ));
        assert!(matches!(
            seal.open("kid-1", &sealed[..10]),
            Err(KeyError::WrongSecret(_))
        ));
        assert!(matches!(
            KeySeal::from_base64("c2hvcnQ="),
            Err(KeyError::BadSecret)
        ));
    }
}
