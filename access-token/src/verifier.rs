//! Checks access tokens against cached public keys.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use agora_proto::errors::ErrorReason;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use uuid::Uuid;

use crate::{AUDIENCE, Caller, Claims, ISSUER, KeySource, keys::is_eddsa};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 10;
/// A token naming an unknown key makes the verifier ask its source again, but not
/// more often than this, so forged `kid`s cannot flood auth-service.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Why a token was refused. The messages are safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing access token")]
    Missing,
    #[error("malformed access token")]
    Malformed,
    #[error("access token expired")]
    Expired,
    #[error("access token not yet valid")]
    NotYetValid,
    #[error("access token signed with an unknown key")]
    UnknownKey,
    /// The token names a key not seen yet, and the keys cannot be fetched now.
    #[error("cannot verify access tokens right now, try again")]
    KeysUnavailable,
    #[error("invalid access token")]
    Invalid,
}

impl TokenError {
    /// The reason clients branch on; it also decides the status code.
    pub fn reason(&self) -> ErrorReason {
        match self {
            TokenError::Missing => ErrorReason::TokenMissing,
            TokenError::Malformed => ErrorReason::TokenMalformed,
            TokenError::Expired => ErrorReason::TokenExpired,
            TokenError::NotYetValid => ErrorReason::TokenNotYetValid,
            TokenError::UnknownKey => ErrorReason::TokenKeyUnknown,
            TokenError::KeysUnavailable => ErrorReason::TokenKeysUnavailable,
            TokenError::Invalid => ErrorReason::TokenInvalid,
        }
    }
}

impl From<TokenError> for tonic::Status {
    fn from(error: TokenError) -> Self {
        error
            .reason()
            .status(error.to_string(), &[], Default::default())
    }
}

/// Tokens remembered as verified, at most: every caller active within a token's
/// lifetime, at well under a kilobyte each.
const MAX_VERIFIED: usize = 10_000;

/// Verifies EdDSA access tokens: signature, `exp`, `nbf`, `iss`, `aud`, `sub`, `jti`.
///
/// A token that verified is remembered until its `exp`, so the signature math is
/// done once per token in each process, however many calls carry it. It is
/// forgotten sooner when the key that signed it leaves the key set.
pub struct TokenVerifier {
    source: Box<dyn KeySource>,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    /// Verified tokens (the whole token, so a changed byte is another token) and
    /// the key that signed each.
    verified: RwLock<HashMap<Arc<str>, Verified>>,
    /// When the keys were last fetched, and whether that worked; the lock also
    /// makes concurrent refreshes one.
    last_refresh: tokio::sync::Mutex<Option<(Instant, bool)>>,
    /// [`MIN_REFRESH_INTERVAL`]; a field so that tests can shorten it.
    min_refresh_interval: Duration,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(source: impl KeySource) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Self {
            source: Box::new(source),
            keys: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
            last_refresh: tokio::sync::Mutex::new(None),
            min_refresh_interval: MIN_REFRESH_INTERVAL,
            validation,
        }
    }

    /// Checks `token` (without the `Bearer ` prefix) and returns whose it is.
    pub async fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        if let Some(caller) = self.remembered(token) {
            return Ok(caller);
        }
        let (caller, kid) = self.verify_signature(token).await?;
        self.remember(token, caller, kid);
        Ok(caller)
    }

    /// A token verified before whose `exp` has not passed.
    fn remembered(&self, token: &str) -> Option<Caller> {
        let verified = self.verified.read().expect("verified tokens lock poisoned");
        let entry = verified.get(token)?;
        (unix_now() < entry.caller.expires_at).then_some(entry.caller)
    }

    fn remember(&self, token: &str, caller: Caller, kid: String) {
        let mut verified = self
            .verified
            .write()
            .expect("verified tokens lock poisoned");
        if verified.len() >= MAX_VERIFIED {
            let now = unix_now();
            verified.retain(|_, entry| now < entry.caller.expires_at);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(token.into(), Verified { caller, kid });
    }

    async fn verify_signature(&self, token: &str) -> Result<(Caller, String), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = match self.cached_key(&kid) {
            Some(key) => key,
            None => {
                let fetched = self.refresh().await;
                match self.cached_key(&kid) {
                    Some(key) => key,
                    None if fetched => return Err(TokenError::UnknownKey),
                    None => return Err(TokenError::KeysUnavailable),
                }
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            })?
            .claims;
        let uuid = |text: &str| Uuid::parse_str(text).map_err(|_| TokenError::Invalid);
        let caller = Caller {
            user_id: uuid(&claims.sub)?,
            token_id: uuid(&claims.jti)?,
            session_id: claims.sid.as_deref().map(uuid).transpose()?,
            expires_at: claims.exp,
        };
        Ok((caller, kid))
    }

    fn cached_key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .expect("key cache lock poisoned")
            .get(kid)
            .cloned()
    }

    /// Fetches the keys unless that was tried moments ago; whether the latest
    /// fetch worked.
    async fn refresh(&self) -> bool {
        let mut last_refresh = self.last_refresh.lock().await;
        if let Some((at, worked)) = *last_refresh
            && at.elapsed() < self.min_refresh_interval
        {
            return worked;
        }
        let worked = match self.source.fetch().await {
            Ok(set) => {
                let fresh: HashMap<_, _> = set
                    .keys
                    .iter()
                    .filter(|jwk| is_eddsa(jwk))
                    .filter_map(|jwk| {
                        let kid = jwk.common.key_id.clone()?;
                        let key = DecodingKey::from_jwk(jwk).ok()?;
                        Some((kid, Arc::new(key)))
                    })
                    .collect();
                tracing::debug!(keys = fresh.len(), "token verification keys refreshed");
                // A key gone from the set takes the tokens it signed with it.
                self.verified
                    .write()
                    .expect("verified tokens lock poisoned")
                    .retain(|_, entry| fresh.contains_key(&entry.kid));
                *self.keys.write().expect("key cache lock poisoned") = fresh;
                true
            }
            // Keep the keys we have: tokens they signed stay valid while the source is down.
            Err(error) => {
                tracing::warn!(%error, "keeping cached token verification keys");
                false
            }
        };
        *last_refresh = Some((Instant::now(), worked));
        worked
    }
}

/// A token that verified, and the key that signed it.
struct Verified {
    caller: Caller,
    kid: String,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ed25519_dalek::{
        SigningKey,
        pkcs8::{EncodePrivateKey, KeypairBytes},
    };
    use jsonwebtoken::{
        EncodingKey, Header,
        jwk::{Jwk, JwkSet},
    };

    use super::*;
    use crate::{Claims, KeySourceError};

    /// A key source whose set the test changes.
    #[derive(Clone, Default)]
    struct Swappable(Arc<Mutex<JwkSet>>);

    impl KeySource for Swappable {
        fn fetch(
            &self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<JwkSet, KeySourceError>> + Send + '_>,
        > {
            let keys = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    fn new_key(kid: &str) -> (EncodingKey, Jwk) {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        // PKCS#8 v1 (the private key alone), the form jsonwebtoken reads.
        let der = KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_der()
        .unwrap();
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        (encoding, jwk)
    }

    fn token(key: &EncodingKey, kid: &str) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: Uuid::now_v7().to_string(),
            iat: now,
            exp: now + 600,
            nbf: Some(now),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: Uuid::now_v7().to_string(),
            sid: None,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    #[tokio::test]
    async fn a_remembered_token_is_forgotten_when_its_key_leaves_the_set() {
        let (old_key, old_jwk) = new_key("old");
        let (new_key, new_jwk) = new_key("new");
        let source = Swappable::default();
        *source.0.lock().unwrap() = JwkSet {
            keys: vec![old_jwk],
        };
        let mut verifier = TokenVerifier::new(source.clone());
        verifier.min_refresh_interval = Duration::ZERO;
        let old_token = token(&old_key, "old");
        let caller = verifier.verify(&old_token).await.expect("a genuine token");
        assert_eq!(verifier.verify(&old_token).await, Ok(caller), "remembered");

        let mut tampered = old_token.clone();
        tampered.pop();
        assert!(
            verifier.verify(&tampered).await.is_err(),
            "a changed byte is another token, checked anew"
        );

        // The old key is retired; a token of the new one makes the verifier look.
        *source.0.lock().unwrap() = JwkSet {
            keys: vec![new_jwk],
        };
        verifier
            .verify(&token(&new_key, "new"))
            .await
            .expect("the new key is fetched");
        assert_eq!(
            verifier.verify(&old_token).await,
            Err(TokenError::UnknownKey),
            "the old key's tokens went with it"
        );
    }
}
