//! The facade's error answers, `{"detail": "…"}`, and how a gRPC status becomes one.
//!
//! Status codes follow the usual gRPC→HTTP table (google.rpc.Code), except where the
//! course API answers otherwise:
//!
//! | gRPC code | HTTP |
//! |---|---|
//! | INVALID_ARGUMENT | **422** (the course, i.e. FastAPI, answers 422 for any invalid input) |
//! | UNAUTHENTICATED | 401 with `WWW-Authenticate: Bearer`; **403** `Invalid Credentials` from `POST /login` (see `login.rs`) |
//! | NOT_FOUND | 404 |
//! | ALREADY_EXISTS, ABORTED | 409 |
//! | PERMISSION_DENIED | 403 |
//! | RESOURCE_EXHAUSTED | 429 |
//! | FAILED_PRECONDITION, OUT_OF_RANGE | 400 |
//! | CANCELLED | 499 |
//! | DEADLINE_EXCEEDED | 504 |
//! | UNIMPLEMENTED | 501 |
//! | UNAVAILABLE | 503 |
//! | UNKNOWN, INTERNAL, DATA_LOSS | 500 |
//!
//! An answer whose status carries `google.rpc.RetryInfo` (429 for throttled
//! logins and registrations and for quotas, 503) says when to try again in
//! `Retry-After`, in whole seconds rounded up.
//!
//! Successes use the course's codes: 201 for creates, 204 for a delete, else 200.
//! Calls that never got an answer from the upstream (the status was made by the
//! local channel) say which service failed instead of echoing transport internals:
//! 503 when it cannot be reached, 504 when it did not answer in time, 502 otherwise.
//! Bad request shapes the facade itself finds (malformed JSON or form, a missing
//! field, a wrong type) are 422 as well; a body over the size limit is 413.

use std::time::Duration;

use axum::{
    Json,
    http::{
        HeaderValue, StatusCode,
        header::{RETRY_AFTER, WWW_AUTHENTICATE},
    },
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt as _;
use utoipa::ToSchema;

/// The body of every error answer, as FastAPI's `HTTPException` sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in a short sentence.
    #[schema(example = "post not found")]
    pub detail: String,
}

/// An error answer: a status code and its `detail`.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub detail: String,
    /// When to try again, sent as `Retry-After`.
    pub retry_after: Option<Duration>,
}

/// A refused token is 401; keys that cannot be fetched right now are 503.
impl From<access_token::TokenError> for HttpError {
    fn from(error: access_token::TokenError) -> Self {
        match error {
            access_token::TokenError::KeysUnavailable => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            _ => Self::unauthenticated(error.to_string()),
        }
    }
}

impl HttpError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Input that cannot be used: 422, as FastAPI answers.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// The upstream answered, but without something its contract promises.
    pub fn incomplete_answer(upstream: &str, what: &str) -> Self {
        tracing::error!(upstream, what, "upstream answer lacks a required field");
        Self::new(
            StatusCode::BAD_GATEWAY,
            format!("{upstream} answered without {what}"),
        )
    }

    /// The answer to a failed call to `upstream`.
    pub fn from_status(upstream: &str, status: &tonic::Status) -> Self {
        // A status with a source was made by our own channel (connect failure,
        // timeout, broken stream): the upstream never answered.
        if std::error::Error::source(status).is_some() {
            tracing::warn!(upstream, code = ?status.code(), error = %status.message(), "upstream call failed");
            return match status.code() {
                Code::Unavailable => Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{upstream} unavailable, try again"),
                ),
                Code::Cancelled | Code::DeadlineExceeded => Self::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{upstream} did not answer in time"),
                ),
                _ => Self::new(StatusCode::BAD_GATEWAY, format!("{upstream} failed")),
            };
        }
        let http = http_status(status.code());
        if http.is_server_error() {
            tracing::warn!(upstream, code = ?status.code(), message = %status.message(), "upstream error");
        }
        let retry_after = status
            .get_details_retry_info()
            .and_then(|retry| retry.retry_delay);
        Self {
            retry_after,
            ..Self::new(http, status.message())
        }
    }
}

/// The table in the module comment.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // OK never arrives as an error; if it did, something is broken.
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            detail: self.detail,
        });
        let mut response = (self.status, body).into_response();
        // RFC 6750: a 401 names the scheme the client should use.
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Unknown paths, as FastAPI answers them.
pub async fn not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "Not Found")
}

/// A known path with a method it does not serve, as FastAPI answers it.
pub async fn method_not_allowed() -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table_with_the_course_exceptions() {
        let expected = [
            (Code::Ok, 500),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 422),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::Unauthenticated, 401),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
        ];
        for (code, http) in expected {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn answered_statuses_keep_their_message() {
        let error =
            HttpError::from_status("posts-service", &tonic::Status::not_found("post not found"));
        assert_eq!(
            (error.status.as_u16(), error.detail.as_str()),
            (404, "post not found")
        );
    }

    #[test]
    fn retry_info_becomes_retry_after_in_whole_seconds() {
        let status = agora_proto::errors::ErrorReason::LoginThrottled.status(
            "too many failed logins",
            &[],
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(2_100))),
        );
        let response = HttpError::from_status("auth-service", &status).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3", "rounded up");
    }

    #[test]
    fn a_401_challenges_for_a_bearer_token() {
        let response = HttpError::unauthenticated("missing access token").into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }
}
