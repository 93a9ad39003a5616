//! Issuing access tokens.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use access_token::{AUDIENCE, Claims, ISSUER};
use jsonwebtoken::{Algorithm, Header};
use service_kit::ApiError;
use uuid::Uuid;

use crate::keys::SigningKeys;

/// A signed access token, the session it belongs to, and when it stops being valid.
pub struct IssuedToken {
    pub token: String,
    pub session_id: Uuid,
    pub expires_in: Duration,
    pub expires_at: SystemTime,
}

/// Signs access tokens with auth-service's current key.
pub struct TokenIssuer {
    keys: Arc<SigningKeys>,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(keys: Arc<SigningKeys>, ttl: Duration) -> Self {
        Self { keys, ttl }
    }

    /// A token for `user_id` in a new login session.
    pub fn issue(&self, user_id: Uuid) -> Result<IssuedToken, ApiError> {
        let session_id = Uuid::now_v7();
        let now = SystemTime::now();
        let issued_at = now
            .duration_since(UNIX_EPOCH)
            .map_err(ApiError::internal)?
            .as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            iat: issued_at,
            exp: issued_at + self.ttl.as_secs(),
            nbf: Some(issued_at),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: Uuid::now_v7().to_string(),
            sid: Some(session_id.to_string()),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.keys.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, self.keys.encoding_key())
            .map_err(ApiError::internal)?;
        Ok(IssuedToken {
            token,
            session_id,
            expires_in: self.ttl,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}
