//! `POST /login`: an OAuth2 password form exchanged for an access token (and a
//! refresh token) through auth-service's AuthService.

use agora_proto::auth::v1 as auth;
use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::ToSchema;

use super::{
    ClientAddress, Facade,
    errors::{ErrorBody, HttpError, ValidationErrorBody},
    extract::FormBody,
};

const UPSTREAM: &str = "auth-service";

/// The fields of FastAPI's `OAuth2PasswordRequestForm` that matter; the others
/// (`grant_type`, `scope`, `client_id`, `client_secret`) are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginForm {
    /// The email address.
    #[schema(example = "alice@example.com", min_length = 1, max_length = 254)]
    pub username: String,
    #[schema(format = "password", min_length = 1, max_length = 128)]
    pub password: String,
}

/// An access token, as OAuth2's token endpoint answers, with the refresh token
/// that gets the next one (`POST /refresh`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds the access token is valid from now.
    #[schema(example = 1800)]
    pub expires_in: i64,
    /// Exchanged at `POST /refresh` for a new access token without the password;
    /// keep it secret, as the password.
    pub refresh_token: String,
}

impl Token {
    pub fn new(
        access_token: String,
        token_type: String,
        expires_in: Option<prost_types::Duration>,
        refresh_token: String,
    ) -> Self {
        Self {
            access_token,
            token_type,
            expires_in: expires_in.map_or(0, |duration| duration.seconds),
            refresh_token,
        }
    }
}

/// A wrong email or password: 403, as the course answers it, not 401.
pub(super) fn invalid_credentials() -> HttpError {
    HttpError::new(StatusCode::FORBIDDEN, "Invalid Credentials")
}

/// Log in with email and password for an access token.
#[utoipa::path(
    post,
    path = "/login",
    operation_id = "login",
    tag = "Authentication",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Logged in", body = Token),
        (status = 403, description = "Unknown email or wrong password", body = ErrorBody,
            example = json!({"detail": "Invalid Credentials"})),
        (status = 422, description = "A missing or empty field", body = ValidationErrorBody),
        (status = 429, description = "Too many failed logins from this address, or for this email from this address; try again after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ),
)]
pub async fn login(
    State(facade): State<Facade>,
    client: ClientAddress,
    FormBody(form): FormBody<LoginForm>,
) -> Result<Json<Token>, HttpError> {
    // Failed logins are counted per client address too.
    let request = client.request(auth::LoginRequest {
        email: form.username,
        password: form.password,
    });
    let response = facade
        .upstreams
        .auth()
        .login(request)
        .await
        .map_err(|status| match status.code() {
            // The course answers bad credentials with 403, not 401.
            Code::Unauthenticated => invalid_credentials(),
            // The course's form calls the email `username`.
            _ => HttpError::from_status(UPSTREAM, &status).renaming("email", "username"),
        })?
        .into_inner();
    Ok(Json(Token::new(
        response.access_token,
        response.token_type,
        response.expires_in,
        response.refresh_token,
    )))
}
