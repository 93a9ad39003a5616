//! Which browser origins may call the gateway (`CORS_ALLOWED_ORIGINS`), and what
//! they may send and read: one policy per port, from the one setting.

use std::time::Duration;

use axum::{
    http::{HeaderName, HeaderValue, Method, header::ACCESS_CONTROL_ALLOW_ORIGIN},
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may remember a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// gRPC-Web and Connect on the gRPC port: browsers may call from the allowed
/// origins, and read the gRPC status.
pub(crate) fn grpc_web(allowed_origins: &[String]) -> CorsLayer {
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(origins(allowed_origins))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header("authorization"),
            header("connect-protocol-version"),
            header("connect-timeout-ms"),
            header("content-type"),
            header("grpc-timeout"),
            header("x-grpc-web"),
            header("x-user-agent"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// The HTTP/JSON facade: what a browser front end for the course API sends, and
/// the headers of its answers it needs to read (when to try again, which
/// authentication scheme a 401 asks for).
pub(crate) fn facade(allowed_origins: &[String]) -> CorsLayer {
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(origins(allowed_origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        // `last-event-id`: a script resuming `/posts/stream` itself (one that
        // sends a token cannot use `EventSource`) sends it.
        .allow_headers([
            header("authorization"),
            header("content-type"),
            header("last-event-id"),
        ])
        .expose_headers([header("retry-after"), header("www-authenticate")])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Removes every `access-control-*` header from an answer that allows no
/// origin: [`CorsLayer`] still lists the exposed headers there, which tells a
/// caller from another origin nothing it may use, and reads as a permission.
pub(crate) async fn only_for_allowed_origins(mut response: Response) -> Response {
    if !response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) {
        let headers = response.headers_mut();
        let granted: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in granted {
            headers.remove(name);
        }
    }
    response
}

/// `*` allows any origin; otherwise exactly those listed (an entry that is not a
/// valid header value can match no origin, so it is dropped).
fn origins(allowed_origins: &[String]) -> AllowOrigin {
    if allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok()),
        )
    }
}
