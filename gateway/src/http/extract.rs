//! Reading requests: the caller's token, JSON and form bodies, path and query,
//! each failing with the course's status codes instead of axum's.
//!
//! Handlers take [`Bearer`] first: axum runs the extractors in argument order and
//! the body last, so a request without a token gets 401 before its body is read.

use access_token::bearer_token;
use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, header::CONTENT_TYPE, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use tonic::metadata::AsciiMetadataValue;

use super::{
    Facade,
    errors::{HttpError, Loc, ValidationError},
};

/// A verified access token, passed on to the services as `authorization` metadata.
/// The services check it again and take the caller from it, never from the body.
pub struct Bearer {
    authorization: AsciiMetadataValue,
    /// Whose the token is.
    pub caller: access_token::Caller,
}

impl Bearer {
    /// `message` as a gRPC request carrying the caller's token, and the
    /// deadline of one hop (HTTP callers name none).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request.set_timeout(service_kit::deadline::PER_HOP_TIMEOUT);
        request
    }

    /// `message` as a gRPC request carrying the caller's token and no deadline:
    /// for a stream, which lasts as long as its caller wants it to. Its start
    /// is bounded by whoever waits for it.
    pub fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// [`Bearer::request`] on behalf of `client` (its `x-forwarded-for`), for
    /// calls that count failures per client address.
    pub fn request_for<T>(&self, client: &super::ClientAddress, message: T) -> tonic::Request<T> {
        let mut request = self.request(message);
        crate::clients::forward_client(request.metadata_mut().as_mut(), client.0);
        request
    }
}

impl FromRequestParts<Facade> for Bearer {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, facade: &Facade) -> Result<Self, HttpError> {
        let token = bearer_token(&parts.headers).map_err(HttpError::from)?;
        let caller = facade
            .verifier
            .verify(token)
            .await
            .map_err(HttpError::from)?;
        let authorization = format!("Bearer {token}")
            .parse()
            .map_err(|_| HttpError::unauthenticated("malformed access token"))?;
        Ok(Self {
            authorization,
            caller,
        })
    }
}

/// A JSON object body. Unknown fields are ignored, as pydantic does by default.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        // FastAPI reads a body without a content type as JSON too; any other
        // type is not the object it wants.
        if let Some(content_type) = request.headers().get(CONTENT_TYPE)
            && !is_json(content_type.to_str().unwrap_or_default())
        {
            return Err(not_an_object());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|error| {
            // At the end of the input serde points at the last character read,
            // Python past it.
            let offset = match error.classify() {
                serde_json::error::Category::Eof => String::from_utf8_lossy(&bytes).chars().count(),
                _ => offset_of(&bytes, error.line(), error.column()),
            };
            HttpError::invalid(vec![ValidationError::new(
                vec![Loc::from("body"), Loc::Index(offset)],
                "json_invalid",
                "JSON decode error",
            )])
        })?;
        // serde would also read a struct from an array; pydantic, and so the course, do not.
        if !value.is_object() {
            return Err(not_an_object());
        }
        serde_path_to_error::deserialize(value)
            .map(Self)
            .map_err(|error| field_error("body", error))
    }
}

/// What pydantic says of a body that is not a JSON object.
fn not_an_object() -> HttpError {
    HttpError::invalid(vec![ValidationError::new(
        vec![Loc::from("body")],
        "model_attributes_type",
        "Input should be a valid dictionary or object to extract fields from",
    )])
}

/// The character offset of serde_json's 1-based `line` and `column` (a byte
/// count) in `bytes`, as Python's JSON decoder reports where it failed.
fn offset_of(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = bytes
        .split(|byte| *byte == b'\n')
        .take(line.saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum();
    let end = (line_start + column.saturating_sub(1)).min(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).chars().count()
}

/// A 422 for the field serde failed on, under `place` (`body` or `query`).
fn field_error<E: std::fmt::Display>(
    place: &str,
    error: serde_path_to_error::Error<E>,
) -> HttpError {
    let mut loc = vec![Loc::from(place)];
    for segment in error.path().iter() {
        match segment {
            Segment::Seq { index } => loc.push(Loc::Index(*index)),
            Segment::Map { key } => loc.push(Loc::Name(key.clone())),
            Segment::Enum { variant } => loc.push(Loc::Name(variant.clone())),
            Segment::Unknown => {}
        }
    }
    let description = error.inner().to_string();
    // serde names a missing field in its message, on the object that lacks it.
    if let Some(field) = description
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        loc.push(Loc::from(field));
    }
    HttpError::invalid(vec![ValidationError::described(loc, &description)])
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// An `application/x-www-form-urlencoded` body. A body of another type holds no
/// form fields, so its required ones are missing, as FastAPI answers.
pub struct FormBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for FormBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        let is_form = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|essence| {
                essence
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))?;
        let fields: &[u8] = if is_form { &bytes } else { &[] };
        from_urlencoded("body", fields).map(Self)
    }
}

/// `T` from a form or query string, or a 422 naming the field under `place`.
fn from_urlencoded<T: DeserializeOwned>(place: &str, input: &[u8]) -> Result<T, HttpError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(input));
    serde_path_to_error::deserialize(deserializer).map_err(|error| field_error(place, error))
}

/// 413 stays 413 (the body limit); anything else wrong with a body is 422.
fn body_error(status: StatusCode, text: String) -> HttpError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => HttpError::new(status, "request body too large"),
        _ => HttpError::invalid(vec![ValidationError::described(
            vec![Loc::from("body")],
            &text,
        )]),
    }
}

/// The query string, 422 when it does not fit `T`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        let query = parts.uri.query().unwrap_or_default();
        from_urlencoded("query", query.as_bytes()).map(Self)
    }
}

/// The path's one parameter, an id. Whether it is a valid UUID is the service's
/// call (INVALID_ARGUMENT, so 422 as well).
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Self(id))
            .map_err(|rejection| {
                HttpError::invalid(vec![ValidationError::described(
                    vec![Loc::from("path"), Loc::from("id")],
                    &rejection.body_text(),
                )])
            })
    }
}

/// Deserializes a field that may be absent (`None`) but, when present, must not be
/// `null`: pydantic refuses `null` for `title: str` or `published: bool = True`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[test]
    fn json_offsets_count_characters_from_the_start() {
        assert_eq!(offset_of(b"{\"a\": ", 1, 7), 6);
        assert_eq!(offset_of(b"{\n  \"\xc3\xa9\": x", 2, 8), 8);
    }
}
