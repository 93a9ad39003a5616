//! `POST /vote/`: the course's `dir` 1 or 0 onto votes-service's Vote with
//! VOTE_DIRECTION_ADD or VOTE_DIRECTION_REMOVE.

use agora_proto::votes::v1::{self as votes, VoteDirection};
use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{
    Facade,
    errors::{ErrorBody, HttpError, ValidationErrorBody},
    extract::{Bearer, JsonBody},
};

const UPSTREAM: &str = "votes-service";

/// The body of `POST /vote/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Vote {
    #[schema(format = "uuid")]
    pub post_id: String,
    /// 1 likes the post, 0 takes the like back.
    #[schema(value_type = i32, minimum = 0, maximum = 1)]
    pub dir: Dir,
}

/// The course's `dir`. Only 0 and 1 have a meaning in the contract, so anything
/// else cannot be translated and is refused while reading the body.
#[derive(Debug, Clone, Copy)]
pub struct Dir(VoteDirection);

impl<'de> Deserialize<'de> for Dir {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // JSON does not tell 1 from 1.0; pydantic takes both as the integer.
        let number = serde_json::Number::deserialize(deserializer)?;
        match number.as_f64() {
            Some(1.0) => Ok(Self(VoteDirection::Add)),
            Some(0.0) => Ok(Self(VoteDirection::Remove)),
            _ => Err(serde::de::Error::custom(format!(
                "dir must be 1 (like) or 0 (take the like back), not {number}"
            ))),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VoteOut {
    #[schema(example = "successfully added vote")]
    pub message: String,
}

/// Like a post, or take your like back.
#[utoipa::path(
    post,
    path = "/vote/",
    operation_id = "vote",
    tag = "Vote",
    request_body = Vote,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Done", body = VoteOut),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 404, description = "No such post, or no like to take back", body = ErrorBody),
        (status = 409, description = "You already like the post", body = ErrorBody),
        (status = 422, description = "Malformed body or post id, or a dir other than 0 and 1", body = ValidationErrorBody),
    ),
)]
pub async fn vote(
    bearer: Bearer,
    State(facade): State<Facade>,
    JsonBody(body): JsonBody<Vote>,
) -> Result<(StatusCode, Json<VoteOut>), HttpError> {
    let Dir(direction) = body.dir;
    let request = votes::VoteRequest {
        post_id: body.post_id,
        direction: direction.into(),
    };
    facade
        .upstreams
        .votes()
        .vote(bearer.request(request))
        .await
        .map_err(|status| HttpError::from_status(UPSTREAM, &status))?;
    let message = match direction {
        VoteDirection::Remove => "successfully deleted vote",
        _ => "successfully added vote",
    };
    Ok((
        StatusCode::CREATED,
        Json(VoteOut {
            message: message.to_owned(),
        }),
    ))
}
