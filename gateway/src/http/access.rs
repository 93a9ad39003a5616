//! What the gRPC edge does per call, the facade does per request: a span in the
//! request's trace (its parent from the `traceparent` header, when the client
//! sends one), one log line at info, and the request counted and timed in the
//! metrics. Health probes are merged outside it: they are not traffic.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use opentelemetry::context::FutureExt as _;
use tracing::Instrument as _;

/// Route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// Serves `request` within its span, then logs and counts how it ended.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let path = request.uri().path().to_owned();
    let trace =
        service_kit::traces::start_server_span(format!("{method} {route}"), request.headers());
    let span = tracing::info_span!("http", method = %method, path = %path);
    let response = next
        .run(request)
        .instrument(span.clone())
        .with_context(trace.clone())
        .await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    service_kit::traces::end_http_span(&trace, status);
    service_kit::metrics::record_http(&method, &route, status, elapsed);
    let _attached = trace.attach();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_millis() as u64,
            "http finished"
        );
    });
    response
}
