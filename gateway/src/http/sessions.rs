//! Sessions over HTTP, in the course API's style: `POST /refresh` for a new
//! access token, `POST /logout` (and `/logout/all`), `GET /sessions`,
//! `POST /users/me/password` and `DELETE /users/me`, onto auth-service.

use agora_proto::auth::v1 as auth;
use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::ToSchema;

use super::{
    ClientAddress, Facade,
    errors::{ErrorBody, HttpError, ValidationErrorBody},
    extract::{Bearer, JsonBody},
    login::{Token, invalid_credentials},
    users::rfc3339,
};

const UPSTREAM: &str = "auth-service";

/// The body of `POST /refresh`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The `refresh_token` of the last `POST /login` or `POST /refresh`.
    #[schema(min_length = 1)]
    pub refresh_token: String,
}

/// Get a new access token (and a new refresh token) for the session of a
/// refresh token. The refresh token presented is spent: presenting it again
/// ends the session.
#[utoipa::path(
    post,
    path = "/refresh",
    operation_id = "refresh",
    tag = "Authentication",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access token and refresh token", body = Token),
        (status = 401, description = "The refresh token is unknown, expired, or was already spent (which ends its session)", body = ErrorBody,
            example = json!({"detail": "the refresh token was already spent: its session has ended"})),
        (status = 422, description = "No refresh token", body = ValidationErrorBody),
        (status = 429, description = "Too many invalid refresh tokens from this address; try again after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ),
)]
pub async fn refresh(
    State(facade): State<Facade>,
    client: ClientAddress,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> Result<Json<Token>, HttpError> {
    // Invalid refresh tokens are counted per client address.
    let request = client.request(auth::RefreshTokenRequest {
        refresh_token: body.refresh_token,
    });
    let response = facade
        .upstreams
        .auth()
        .refresh_token(request)
        .await
        .map_err(|status| HttpError::from_status(UPSTREAM, &status))?
        .into_inner();
    Ok(Json(Token::new(
        response.access_token,
        response.token_type,
        response.expires_in,
        response.refresh_token,
    )))
}

/// End this session: its refresh token at once, its access tokens within
/// seconds everywhere.
#[utoipa::path(
    post,
    path = "/logout",
    operation_id = "logout",
    tag = "Authentication",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ),
)]
pub async fn logout(bearer: Bearer, State(facade): State<Facade>) -> Result<StatusCode, HttpError> {
    facade
        .upstreams
        .auth()
        .logout(bearer.request(auth::LogoutRequest {}))
        .await
        .map_err(|status| HttpError::from_status(UPSTREAM, &status))?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions a logout everywhere ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    pub ended_sessions: i32,
}

/// End every session of the caller, this one included.
#[utoipa::path(
    post,
    path = "/logout/all",
    operation_id = "logout_all",
    tag = "Authentication",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Logged out everywhere", body = LoggedOut),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ),
)]
pub async fn logout_all(
    bearer: Bearer,
    State(facade): State<Facade>,
) -> Result<Json<LoggedOut>, HttpError> {
    let response = facade
        .upstreams
        .auth()
        .logout_all(bearer.request(auth::LogoutAllRequest {}))
        .await
        .map_err(|status| HttpError::from_status(UPSTREAM, &status))?;
    Ok(Json(LoggedOut {
        ended_sessions: response.into_inner().ended_sessions,
    }))
}

/// One login session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOut {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "date-time")]
    pub created_at: String,
    #[schema(format = "date-time")]
    pub last_used_at: String,
    /// When it ends unless refreshed before.
    #[schema(format = "date-time")]
    pub expires_at: String,
    /// Its user agent and address, as the client said.
    pub client: String,
    /// Whether this request's access token belongs to it.
    pub current: bool,
}

/// The caller's sessions, most recently used first.
#[utoipa::path(
    get,
    path = "/sessions",
    operation_id = "list_sessions",
    tag = "Authentication",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sessions", body = [SessionOut]),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ),
)]
pub async fn list(
    bearer: Bearer,
    State(facade): State<Facade>,
) -> Result<Json<Vec<SessionOut>>, HttpError> {
    let response = facade
        .upstreams
        .auth()
        .list_sessions(bearer.request(auth::ListSessionsRequest {}))
        .await
        .map_err(|status| HttpError::from_status(UPSTREAM, &status))?;
    let sessions = response
        .into_inner()
        .sessions
        .into_iter()
        .map(|session| {
            Ok(SessionOut {
                created_at: rfc3339(UPSTREAM, session.create_time)?,
                last_used_at: rfc3339(UPSTREAM, session.last_use_time)?,
                expires_at: rfc3339(UPSTREAM, session.expire_time)?,
                id: session.id,
                client: session.client,
                current: session.current,
            })
        })
        .collect::<Result<_, HttpError>>()?;
    Ok(Json(sessions))
}

/// The body of `POST /users/me/password`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    #[schema(format = "password", min_length = 1, max_length = 128)]
    pub current_password: String,
    /// 8 to 128 characters.
    #[schema(format = "password", min_length = 8, max_length = 128)]
    pub new_password: String,
}

/// Change your password; every other session ends.
#[utoipa::path(
    post,
    path = "/users/me/password",
    operation_id = "change_password",
    tag = "Users",
    request_body = PasswordChange,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed; the other sessions have ended"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The current password is wrong", body = ErrorBody,
            example = json!({"detail": "Invalid Credentials"})),
        (status = 422, description = "A missing field, or a new password outside 8 to 128 characters", body = ValidationErrorBody),
        (status = 429, description = "Too many failed password checks; try again after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ),
)]
pub async fn change_password(
    bearer: Bearer,
    State(facade): State<Facade>,
    client: ClientAddress,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<StatusCode, HttpError> {
    let request = bearer.request_for(
        &client,
        auth::ChangePasswordRequest {
            current_password: body.current_password,
            new_password: body.new_password,
        },
    );
    facade
        .upstreams
        .users()
        .change_password(request)
        .await
        .map_err(password_refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `DELETE /users/me`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AccountDeletion {
    /// The account's password, to confirm.
    #[schema(format = "password", min_length = 1, max_length = 128)]
    pub password: String,
}

/// Delete your account, with your posts, likes and sessions.
#[utoipa::path(
    delete,
    path = "/users/me",
    operation_id = "delete_me",
    tag = "Users",
    request_body = AccountDeletion,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The password is wrong", body = ErrorBody,
            example = json!({"detail": "Invalid Credentials"})),
        (status = 422, description = "No password", body = ValidationErrorBody),
        (status = 429, description = "Too many failed password checks; try again after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ),
)]
pub async fn delete_me(
    bearer: Bearer,
    State(facade): State<Facade>,
    client: ClientAddress,
    JsonBody(body): JsonBody<AccountDeletion>,
) -> Result<StatusCode, HttpError> {
    let request = bearer.request_for(
        &client,
        auth::DeleteUserRequest {
            id: bearer.caller.user_id.to_string(),
            password: body.password,
        },
    );
    facade
        .upstreams
        .users()
        .delete_user(request)
        .await
        .map_err(password_refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A wrong password is 403, as `POST /login` answers it; the rest as usual.
fn password_refused(status: tonic::Status) -> HttpError {
    let wrong_password = status.code() == Code::Unauthenticated
        && agora_proto::errors::reason_of(&status)
            == Some(agora_proto::errors::ErrorReason::InvalidCredentials);
    if wrong_password {
        invalid_credentials()
    } else {
        HttpError::from_status(UPSTREAM, &status)
    }
}
