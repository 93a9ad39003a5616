//! Issuing access tokens.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use access_token::{AUDIENCE, Claims, ISSUER, TOKEN_TYPE};
use jsonwebtoken::{Algorithm, Header};
use service_kit::ApiError;
use uuid::Uuid;

use crate::keys::KeyRing;

/// A signed access token, the session it belongs to, and when it stops being valid.
pub struct IssuedToken {
    pub token: String,
    pub session_id: Uuid,
    pub expires_in: Duration,
    pub expires_at: SystemTime,
}

/// Signs access tokens with the key that signs now.
pub struct TokenIssuer {
    keys: Arc<KeyRing>,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(keys: Arc<KeyRing>, ttl: Duration) -> Self {
        Self { keys, ttl }
    }

    /// A token for `user_id` in the login session `session_id`.
    pub fn issue(&self, user_id: Uuid, session_id: Uuid) -> Result<IssuedToken, ApiError> {
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
        let keys = self.keys.current();
        let signer = keys
            .signer(now)
            .ok_or_else(|| ApiError::internal("no signing key signs now"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(signer.kid.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, signer.encoding_key)
            .map_err(ApiError::internal)?;
        Ok(IssuedToken {
            token,
            session_id,
            expires_in: self.ttl,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

#[cfg(test)]
mod tests {
    use access_token::{StaticKeys, TokenVerifier};
    use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};

    use super::*;
    use crate::keys::SigningKeys;

    /// Signing keys from a fresh PEM file, as production loads them.
    fn signing_keys() -> Arc<KeyRing> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let path = std::env::temp_dir().join(format!("agora-signing-{}.pem", Uuid::now_v7()));
        std::fs::write(&path, pem.as_bytes()).unwrap();
        let keys = SigningKeys::from_pem_file(&path);
        std::fs::remove_file(&path).unwrap();
        KeyRing::new(keys.unwrap())
    }

    #[tokio::test]
    async fn issued_tokens_are_typed_at_jwt_and_verify() {
        let keys = signing_keys();
        let issuer = TokenIssuer::new(keys.clone(), Duration::from_secs(3600));
        let user_id = Uuid::now_v7();
        let session_id = Uuid::now_v7();

        let issued = issuer.issue(user_id, session_id).unwrap();

        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"), "RFC 9068");
        let published = keys.current().published(SystemTime::now());
        assert_eq!(header.kid, published.keys[0].common.key_id);
        let verifier = TokenVerifier::new(StaticKeys(published));
        let caller = verifier
            .verify(&issued.token)
            .await
            .expect("the longest configurable lifetime verifies");
        assert_eq!(caller.user_id, user_id);
        assert_eq!(caller.session_id, Some(session_id));
        assert_eq!(issued.session_id, session_id);
    }
}
