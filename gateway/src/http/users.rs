//! `POST /users/` (registration) and `GET /users/{id}`, onto auth-service's
//! UserService; also the user JSON shape that posts embed as their owner.

use agora_proto::auth::v1 as auth;
use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use service_kit::{deadline::Deadline, retry::read_once_more_if_unavailable};
use utoipa::ToSchema;

use crate::clients::registration_refused;

use super::{
    ClientAddress, Facade,
    errors::{ErrorBody, HttpError, ValidationErrorBody},
    extract::{Bearer, JsonBody, PathId},
};

pub const UPSTREAM: &str = "auth-service";

/// The body of `POST /users/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserCreate {
    #[schema(format = "email", example = "alice@example.com", max_length = 254)]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(
        format = "password",
        example = "correct horse battery",
        min_length = 8,
        max_length = 128
    )]
    pub password: String,
}

/// A registered user. Never carries the password.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    #[schema(format = "uuid")]
    pub id: String,
    /// Shown to everyone by default, as in the course API; with
    /// `HTTP_SHOW_EMAILS=false`, only to the user themself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[schema(format = "date-time")]
    pub created_at: String,
}

impl UserOut {
    pub fn from_proto(upstream: &str, user: Option<auth::User>) -> Result<Self, HttpError> {
        let user = user.ok_or_else(|| HttpError::incomplete_answer(upstream, "a user"))?;
        Ok(Self {
            created_at: rfc3339(upstream, user.create_time)?,
            id: user.id,
            // auth-service leaves out the email of anyone but the caller.
            email: Some(user.email).filter(|email| !email.is_empty()),
        })
    }
}

impl Facade {
    /// The users with `ids`, emails included, when the facade shows every email
    /// (`HTTP_SHOW_EMAILS`); none otherwise. Users missing by now are left out.
    pub(crate) async fn users_with_emails(
        &self,
        bearer: &Bearer,
        ids: Vec<String>,
    ) -> Result<Vec<auth::User>, HttpError> {
        if !self.show_emails || ids.is_empty() {
            return Ok(Vec::new());
        }
        let request = auth::BatchGetUsersRequest {
            ids,
            allow_missing: true,
        };
        let response = read_once_more_if_unavailable(Deadline::none(), || {
            let mut users = self.upstreams.users();
            let request = bearer.request(request.clone());
            async move { users.batch_get_users(request).await }
        })
        .await
        .map_err(|status| HttpError::from_status(UPSTREAM, &status))?;
        Ok(response.into_inner().users)
    }
}

/// A protobuf timestamp in RFC 3339 (`2026-11-26T22:01:00.123456Z`).
pub fn rfc3339(upstream: &str, time: Option<prost_types::Timestamp>) -> Result<String, HttpError> {
    time.map(|time| time.to_string())
        .ok_or_else(|| HttpError::incomplete_answer(upstream, "a timestamp"))
}

/// Register a user.
#[utoipa::path(
    post,
    path = "/users/",
    operation_id = "create_user",
    tag = "Users",
    request_body = UserCreate,
    responses(
        (status = 201, description = "Registered", body = UserOut),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 422, description = "Malformed body, invalid email, or a password outside 8 to 128 characters", body = ValidationErrorBody),
        (status = 429, description = "Too many registrations from this address; try again after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ),
)]
pub async fn create(
    State(facade): State<Facade>,
    client: ClientAddress,
    JsonBody(body): JsonBody<UserCreate>,
) -> Result<(StatusCode, Json<UserOut>), HttpError> {
    // Limited per client address here, as at the gRPC edge.
    if let Err(wait) = facade.clients.admit_registration(client.0) {
        let refused = registration_refused(wait);
        return Err(HttpError::from_status(UPSTREAM, &refused));
    }
    let request = client.request(auth::CreateUserRequest {
        email: body.email,
        password: body.password,
        request_id: String::new(),
    });
    let response = facade
        .upstreams
        .users()
        .create_user(request)
        .await
        .map_err(|status| HttpError::from_status(UPSTREAM, &status))?;
    let user = UserOut::from_proto(UPSTREAM, response.into_inner().user)?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Look a user up. Needs a token, unlike the course, which showed any user's email
/// to anyone; with `HTTP_SHOW_EMAILS=false` the email is shown only to its owner.
#[utoipa::path(
    get,
    path = "/users/{id}",
    operation_id = "get_user",
    tag = "Users",
    params(("id" = String, Path, format = Uuid, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserOut),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ValidationErrorBody),
    ),
)]
pub async fn get(
    bearer: Bearer,
    State(facade): State<Facade>,
    PathId(id): PathId,
) -> Result<Json<UserOut>, HttpError> {
    Ok(Json(facade.user(&bearer, id).await?))
}

/// The caller's own user.
#[utoipa::path(
    get,
    path = "/users/me",
    operation_id = "get_me",
    tag = "Users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Your user, with your email", body = UserOut),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ),
)]
pub async fn me(bearer: Bearer, State(facade): State<Facade>) -> Result<Json<UserOut>, HttpError> {
    let id = bearer.caller.user_id.to_string();
    Ok(Json(facade.user(&bearer, id).await?))
}

impl Facade {
    /// The user `id`, with the email when the facade shows every email or the
    /// user is the caller.
    async fn user(&self, bearer: &Bearer, id: String) -> Result<UserOut, HttpError> {
        let facade = self;
        let user = if facade.show_emails {
            // The course shows anyone's email: ask for the whole user.
            let users = facade.users_with_emails(bearer, vec![id]).await?;
            match users.into_iter().next() {
                Some(user) => user,
                None => return Err(HttpError::new(StatusCode::NOT_FOUND, "user not found")),
            }
        } else {
            let response = read_once_more_if_unavailable(Deadline::none(), || {
                let mut users = facade.upstreams.users();
                let request = bearer.request(auth::GetUserRequest { id: id.clone() });
                async move { users.get_user(request).await }
            })
            .await
            .map_err(|status| HttpError::from_status(UPSTREAM, &status))?;
            response
                .into_inner()
                .user
                .ok_or_else(|| HttpError::incomplete_answer(UPSTREAM, "a user"))?
        };
        UserOut::from_proto(UPSTREAM, Some(user))
    }
}
