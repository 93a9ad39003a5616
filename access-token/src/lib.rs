//! Agora's access tokens, shared by every service and the gateway.
//!
//! auth-service alone signs tokens (EdDSA over Ed25519). Everyone else verifies them
//! with [`TokenVerifier`], which caches the public keys it gets from a [`KeySource`]
//! and keeps using them while the source is unreachable, and enforces them on gRPC
//! calls with [`RequireTokenLayer`]. Handlers read the caller from the request with
//! [`caller`].
//!
//! A verifier given a [`RevocationSource`] also refuses the tokens of sessions
//! that have ended (logout, password change, deleted account), within
//! [`REVOCATION_REFRESH_INTERVAL`] and a fetch: it polls the source and checks
//! every call against the sessions it knows ended, without a call per request.
//! Services learn them from auth-service ([`AuthServiceRevocations`]) over the
//! channel that serves them the keys; a verifier reading a JWK Set file has no
//! such source and refuses no ended session.

mod claims;
mod keys;
mod layer;
mod revocations;
mod verifier;

pub use claims::{AUDIENCE, Caller, Claims, ISSUER, TOKEN_TYPE};
pub use keys::{
    AuthServiceKeys, KeySource, KeySourceError, KeysFile, StaticKeys, jwk_from_proto, jwk_to_proto,
};
pub use layer::{PublicMethods, RequireTokenLayer, RequireTokenService, bearer_token, caller};
pub use revocations::{AuthServiceRevocations, RevocationSource, RevocationSourceError, Revoked};
pub use verifier::{
    DEFAULT_MAX_LIFETIME, KEY_REFRESH_INTERVAL, REVOCATION_REFRESH_INTERVAL, TokenError,
    TokenVerifier,
};
