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

/// Verifies EdDSA access tokens: signature, `exp`, `nbf`, `iss`, `aud`, `sub`, `jti`.
pub struct TokenVerifier {
    source: Box<dyn KeySource>,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    /// When the keys were last fetched, and whether that worked; the lock also
    /// makes concurrent refreshes one.
    last_refresh: tokio::sync::Mutex<Option<(Instant, bool)>>,
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
            last_refresh: tokio::sync::Mutex::new(None),
            validation,
        }
    }

    /// Checks `token` (without the `Bearer ` prefix) and returns whose it is.
    pub async fn verify(&self, token: &str) -> Result<Caller, TokenError> {
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
        Ok(Caller {
            user_id: uuid(&claims.sub)?,
            token_id: uuid(&claims.jti)?,
            session_id: claims.sid.as_deref().map(uuid).transpose()?,
            expires_at: claims.exp,
        })
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
            && at.elapsed() < MIN_REFRESH_INTERVAL
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
