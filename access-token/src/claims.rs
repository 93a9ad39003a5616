//! What an access token says, on the wire and once verified.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `iss` of every access token.
pub const ISSUER: &str = "agora-auth";
/// The `aud` of every access token: all Agora services accept the same tokens.
pub const AUDIENCE: &str = "agora";
/// The JOSE header `typ` of every access token (RFC 9068), so that no other kind
/// of JWT can be passed off as one.
pub const TOKEN_TYPE: &str = "at+jwt";

/// The registered JWT claims of an access token (RFC 7519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    pub aud: String,
    /// The token's unique id.
    pub jti: String,
    /// The login session the token belongs to (OpenID Connect's `sid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The verified identity behind a call, put into the request extensions by
/// [`crate::RequireTokenLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub token_id: Uuid,
    /// The login session, for tokens that name one.
    pub session_id: Option<Uuid>,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}
