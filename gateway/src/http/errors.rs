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
//! | FAILED_PRECONDITION, OUT_OF_RANGE | 400; **410** from `GET /posts/stream` for an expired cursor (see `feed.rs`) |
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
//!
//! A 422 answers as FastAPI does, `{"detail": [{"loc": [...], "msg": "...",
//! "type": "..."}]}` ([`ValidationErrorBody`]), so course front ends can read
//! `detail[0].msg`: `loc` says where (`body`, `query` or `path`, then the field by
//! its HTTP name), `type` is pydantic v2's name for what is wrong (`missing`,
//! `string_type`, `string_too_long`, `json_invalid`, `value_error`…). A service's
//! INVALID_ARGUMENT becomes one entry per `google.rpc.BadRequest` field violation.
//! Every other error is `{"detail": "..."}`.

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

/// The body of every error answer but 422, as FastAPI's `HTTPException` sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in a short sentence.
    #[schema(example = "post not found")]
    pub detail: String,
}

/// The body of a 422, as FastAPI sends a request validation error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    /// Each thing wrong with the request, at least one.
    pub detail: Vec<ValidationError>,
}

/// One thing wrong with a request, in pydantic v2's shape.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ValidationError {
    /// Where: `body`, `query` or `path`, then the field; for JSON that cannot be
    /// parsed, the offset where parsing failed.
    #[schema(example = json!(["body", "title"]))]
    pub loc: Vec<Loc>,
    /// What is wrong, for people.
    #[schema(example = "String should have at most 200 characters")]
    pub msg: String,
    /// What is wrong, for programs: pydantic's error type.
    #[serde(rename = "type")]
    #[schema(example = "string_too_long")]
    pub kind: &'static str,
}

/// A step of a [`ValidationError`]'s `loc`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Loc {
    Name(String),
    Index(usize),
}

impl From<&str> for Loc {
    fn from(name: &str) -> Self {
        Self::Name(name.to_owned())
    }
}

impl ValidationError {
    pub fn new(loc: Vec<Loc>, kind: &'static str, msg: impl Into<String>) -> Self {
        Self {
            loc,
            kind,
            msg: msg.into(),
        }
    }

    /// `description`, a service's or serde's words for what is wrong with the
    /// field at `loc`, as pydantic would say it.
    pub fn described(loc: Vec<Loc>, description: &str) -> Self {
        let (kind, msg) = pydantic_words(description);
        Self::new(loc, kind, msg)
    }
}

/// pydantic's type and message for a service's field violation (see
/// `service_kit::fields`) or a serde error; anything else is a `value_error`.
fn pydantic_words(description: &str) -> (&'static str, String) {
    let chars = |rest: &str| rest.strip_suffix(" characters").map(str::to_owned);
    if description == "required" || description.starts_with("missing field") {
        return ("missing", "Field required".to_owned());
    }
    if let Some(limit) = description.strip_prefix("at most ").and_then(chars) {
        return (
            "string_too_long",
            format!("String should have at most {limit} characters"),
        );
    }
    if let Some(limit) = description.strip_prefix("at least ").and_then(chars) {
        return (
            "string_too_short",
            format!("String should have at least {limit} characters"),
        );
    }
    let simple = match description {
        "must be a UUID" => Some(("uuid_parsing", "Input should be a valid UUID")),
        "must not be negative" => Some((
            "greater_than_equal",
            "Input should be greater than or equal to 0",
        )),
        "not a valid email address" => Some(("value_error", "value is not a valid email address")),
        _ if description.ends_with("expected a string") => {
            Some(("string_type", "Input should be a valid string"))
        }
        _ if description.ends_with("expected a boolean") => {
            Some(("bool_type", "Input should be a valid boolean"))
        }
        _ if description.contains("expected i32")
            || description.contains("expected i64")
            || description.ends_with("expected a JSON number") =>
        {
            Some(("int_type", "Input should be a valid integer"))
        }
        _ if description.starts_with("invalid digit")
            || description.starts_with("cannot parse integer")
            || description.starts_with("number too") =>
        {
            Some((
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ))
        }
        _ => None,
    };
    match simple {
        Some((kind, msg)) => (kind, msg.to_owned()),
        None => ("value_error", format!("Value error, {description}")),
    }
}

/// Where a service's field, named by its path in the gRPC request, is in the
/// facade's request: the id is the path's, paging, search and a watch's filter
/// and cursor are the query's (`page_size` is the course's `limit`), the rest
/// the body's (`direction` is the course's `dir`; a post's fields are the
/// body's own).
fn loc_of(field: &str) -> Vec<Loc> {
    let field = field.strip_prefix("post.").unwrap_or(field);
    let (place, name) = match field {
        "id" => ("path", Some("id")),
        "page_size" => ("query", Some("limit")),
        "skip" | "search" | "owner_id" | "cursor" => ("query", Some(field)),
        "direction" => ("body", Some("dir")),
        "" | "post" | "update_mask" => ("body", None),
        field => ("body", Some(field)),
    };
    std::iter::once(place).chain(name).map(Loc::from).collect()
}

/// What an error answer says: a sentence, or for a 422 what is wrong where.
#[derive(Debug)]
pub enum Detail {
    Message(String),
    Invalid(Vec<ValidationError>),
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(message) => f.write_str(message),
            Self::Invalid(errors) => {
                let parts: Vec<String> = errors
                    .iter()
                    .map(|error| format!("{:?}: {}", error.loc, error.msg))
                    .collect();
                f.write_str(&parts.join("; "))
            }
        }
    }
}

/// An error answer: a status code and its `detail`.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub detail: Detail,
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
            detail: Detail::Message(detail.into()),
            retry_after: None,
        }
    }

    /// Input that cannot be used: 422, as FastAPI answers.
    pub fn invalid(errors: Vec<ValidationError>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: Detail::Invalid(errors),
            retry_after: None,
        }
    }

    /// The same error, with the body field `from` called `to` in its `loc`:
    /// where the facade's name for a field is not the service's.
    pub fn renaming(mut self, from: &str, to: &str) -> Self {
        if let Detail::Invalid(errors) = &mut self.detail {
            for step in errors.iter_mut().flat_map(|error| error.loc.iter_mut()) {
                if *step == Loc::from(from) {
                    *step = Loc::from(to);
                }
            }
        }
        self
    }

    /// The same error, with the field at `from` in its `loc` moved to `to`:
    /// where the facade read a field from elsewhere than usual (a header for
    /// what is otherwise a query parameter).
    pub fn relocating(mut self, from: &[&str], to: &[&str]) -> Self {
        let from: Vec<Loc> = from.iter().copied().map(Loc::from).collect();
        if let Detail::Invalid(errors) = &mut self.detail {
            for error in errors.iter_mut().filter(|error| error.loc == from) {
                error.loc = to.iter().copied().map(Loc::from).collect();
            }
        }
        self
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
        if status.code() == Code::InvalidArgument {
            return Self::invalid(validation_errors(status));
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

/// One entry per field violation of an INVALID_ARGUMENT; without any, the message
/// about the whole body.
fn validation_errors(status: &tonic::Status) -> Vec<ValidationError> {
    let violations = status
        .get_details_bad_request()
        .map(|bad_request| bad_request.field_violations)
        .unwrap_or_default();
    if violations.is_empty() {
        return vec![ValidationError::new(
            vec![Loc::from("body")],
            "value_error",
            format!("Value error, {}", status.message()),
        )];
    }
    violations
        .iter()
        .map(|violation| {
            ValidationError::described(loc_of(&violation.field), &violation.description)
        })
        .collect()
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
        let mut response = match self.detail {
            Detail::Message(detail) => (self.status, Json(ErrorBody { detail })).into_response(),
            Detail::Invalid(detail) => {
                (self.status, Json(ValidationErrorBody { detail })).into_response()
            }
        };
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
            (error.status.as_u16(), error.detail.to_string().as_str()),
            (404, "post not found")
        );
    }

    #[test]
    fn field_violations_become_fastapi_validation_errors() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid",
            tonic_types::ErrorDetails::with_bad_request(vec![
                tonic_types::FieldViolation::new("post.title", "at most 200 characters"),
                tonic_types::FieldViolation::new("post.content", "required"),
                tonic_types::FieldViolation::new("post.id", "must be a UUID"),
                tonic_types::FieldViolation::new("page_size", "must not be negative"),
                tonic_types::FieldViolation::new("search", "must not contain control characters"),
                tonic_types::FieldViolation::new("direction", "must be ADD or REMOVE"),
            ]),
        );
        let error = HttpError::from_status("posts-service", &status);
        let Detail::Invalid(errors) = &error.detail else {
            panic!("not a validation error: {error:?}");
        };
        let shown: Vec<(String, &str, &str)> = errors
            .iter()
            .map(|e| {
                (
                    serde_json::to_string(&e.loc).unwrap(),
                    e.kind,
                    e.msg.as_str(),
                )
            })
            .collect();
        let expected = [
            (
                r#"["body","title"]"#,
                "string_too_long",
                "String should have at most 200 characters",
            ),
            (r#"["body","content"]"#, "missing", "Field required"),
            (
                r#"["path","id"]"#,
                "uuid_parsing",
                "Input should be a valid UUID",
            ),
            (
                r#"["query","limit"]"#,
                "greater_than_equal",
                "Input should be greater than or equal to 0",
            ),
            (
                r#"["query","search"]"#,
                "value_error",
                "Value error, must not contain control characters",
            ),
            (
                r#"["body","dir"]"#,
                "value_error",
                "Value error, must be ADD or REMOVE",
            ),
        ];
        for (shown, (loc, kind, msg)) in shown.iter().zip(expected) {
            assert_eq!((shown.0.as_str(), shown.1, shown.2), (loc, kind, msg));
        }
        assert_eq!(shown.len(), expected.len());
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn invalid_argument_without_field_violations_is_about_the_body() {
        let error =
            HttpError::from_status("votes-service", &tonic::Status::invalid_argument("bad"));
        let Detail::Invalid(errors) = &error.detail else {
            panic!("not a validation error: {error:?}");
        };
        assert_eq!(
            errors,
            &[ValidationError::new(
                vec![Loc::from("body")],
                "value_error",
                "Value error, bad"
            )]
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
