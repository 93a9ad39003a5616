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
use tonic::metadata::AsciiMetadataValue;

use super::{Facade, errors::HttpError};

/// A verified access token, passed on to the services as `authorization` metadata.
/// The services check it again and take the caller from it, never from the body.
pub struct Bearer {
    authorization: AsciiMetadataValue,
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
}

impl FromRequestParts<Facade> for Bearer {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, facade: &Facade) -> Result<Self, HttpError> {
        let token = bearer_token(&parts.headers).map_err(HttpError::from)?;
        facade
            .verifier
            .verify(token)
            .await
            .map_err(HttpError::from)?;
        let authorization = format!("Bearer {token}")
            .parse()
            .map_err(|_| HttpError::unauthenticated("malformed access token"))?;
        Ok(Self { authorization })
    }
}

/// A JSON object body. Unknown fields are ignored, as pydantic does by default.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        // FastAPI reads a body without a content type as JSON too, and refuses others.
        if let Some(content_type) = request.headers().get(CONTENT_TYPE)
            && !is_json(content_type.to_str().unwrap_or_default())
        {
            return Err(HttpError::invalid("the body must be JSON"));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|error| HttpError::invalid(format!("invalid JSON body: {error}")))?;
        // serde would also read a struct from an array; pydantic, and so the course, do not.
        if !value.is_object() {
            return Err(HttpError::invalid("the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|error| HttpError::invalid(format!("invalid JSON body: {error}")))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// An `application/x-www-form-urlencoded` body.
pub struct FormBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for FormBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        axum::Form::from_request(request, state)
            .await
            .map(|axum::Form(form)| Self(form))
            .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))
    }
}

/// 413 stays 413 (the body limit); anything else wrong with a body is 422.
fn body_error(status: StatusCode, text: String) -> HttpError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => HttpError::new(status, "request body too large"),
        _ => HttpError::invalid(text),
    }
}

/// The query string, 422 when it does not fit `T`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| Self(query))
            .map_err(|rejection| HttpError::invalid(rejection.body_text()))
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
            .map_err(|rejection| HttpError::invalid(rejection.body_text()))
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
}
