//! One `rpc` span per call, and one log line when it ends, with its gRPC status
//! code and latency. Some calls end without an answer: the client went away, or
//! the deadline passed and the server dropped the call. Those are logged too, as
//! CANCELLED and DEADLINE_EXCEEDED, so that an operator is never paged for an
//! INTERNAL error that was only a client leaving.
//!
//! The edge logs every call at info: that is the access log, one line per call.
//! A service behind it logs a call at info only when the fault is its own
//! (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS), since that line
//! says which process failed; the rest (successes, and the caller's mistakes,
//! which the edge's line already shows) at debug, so that one call is not two
//! lines at info. Health checks and reflection are housekeeping (a container
//! healthcheck every few seconds, grpcurl's `list`): at debug everywhere.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use opentelemetry::context::FutureExt as _;
use tower::{Layer, Service};
use tracing::{Instrument, Span};

use crate::deadline::Deadline;

/// gRPC status codes, as they travel in `grpc-status`.
const CANCELLED: &str = "1";
const DEADLINE_EXCEEDED: &str = "4";

/// gRPC status codes that say the server failed, not the caller: UNKNOWN,
/// DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS.
const SERVER_FAULTS: [&str; 5] = ["2", DEADLINE_EXCEEDED, "13", "14", "15"];

/// Services whose calls are housekeeping, not traffic: health and reflection.
const HOUSEKEEPING: [&str; 2] = ["/grpc.health.v1.", "/grpc.reflection."];

/// Whether the method at `path` is health or reflection.
pub(crate) fn is_housekeeping(path: &str) -> bool {
    HOUSEKEEPING.iter().any(|prefix| path.starts_with(prefix))
}

/// Wraps a server's routes in [`RpcLog`].
#[derive(Debug, Clone, Copy)]
pub struct RpcLogLayer {
    /// The server's own limit on every call, which ends a call as its deadline
    /// would.
    request_timeout: Duration,
    /// Whether every call is logged at info (the edge) or only server faults (a
    /// hop).
    edge: bool,
}

impl RpcLogLayer {
    /// For the edge: every call at info, but housekeeping.
    pub fn edge(request_timeout: Duration) -> Self {
        Self {
            request_timeout,
            edge: true,
        }
    }

    /// For a service behind the edge: its own faults at info, the rest at debug.
    pub fn hop(request_timeout: Duration) -> Self {
        Self {
            request_timeout,
            edge: false,
        }
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> RpcLog<S> {
        RpcLog {
            inner,
            layer: *self,
        }
    }
}

/// The service [`RpcLogLayer`] makes.
#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
    layer: RpcLogLayer,
}

impl<S, B, R> Service<http::Request<B>> for RpcLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let housekeeping = is_housekeeping(path);
        let span = tracing::info_span!("rpc", method = %path);
        // Housekeeping is not traced: a probe every few seconds is no request.
        let trace = (!housekeeping).then(|| {
            crate::traces::start_server_span(
                path.trim_start_matches('/').to_owned(),
                request.headers(),
            )
        });
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok());
        let deadline = Deadline::from_grpc_timeout(timeout, Some(self.layer.request_timeout));
        let mut ending = Ending {
            span: span.clone(),
            started: Instant::now(),
            deadline,
            edge: self.layer.edge && !housekeeping,
            housekeeping,
            logged: false,
            method: crate::metrics::labels(path),
            edge_role: self.layer.edge,
            trace: trace.clone(),
        };
        let future = span.in_scope(|| self.inner.call(request));
        let call = async move {
            let result = future.await;
            // An error here is the transport's; tonic answers it as UNKNOWN.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    // An error comes back trailers-only: its status is a header.
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("0"),
                Err(_) => "2",
            };
            ending.log(code, None);
            result
        }
        .instrument(span);
        match trace {
            Some(trace) => Box::pin(call.with_context(trace)),
            None => Box::pin(call),
        }
    }
}

/// Logs how a call ended, once, even when it is dropped unanswered.
struct Ending {
    span: Span,
    started: Instant,
    deadline: Deadline,
    /// Every ending at info.
    edge: bool,
    /// Health or reflection: every ending at debug.
    housekeeping: bool,
    logged: bool,
    /// The method's service and name, as metric labels.
    method: (&'static str, &'static str),
    /// Whether this server is the edge (its calls are counted as such).
    edge_role: bool,
    /// The call's span in its trace; none for housekeeping.
    trace: Option<opentelemetry::Context>,
}

impl Ending {
    fn log(&mut self, code: &str, why: Option<&str>) {
        self.logged = true;
        let elapsed = self.started.elapsed();
        let role = if self.edge_role { "edge" } else { "service" };
        crate::metrics::record_call(self.method, code, role, elapsed);
        let latency_ms = elapsed.as_millis() as u64;
        let fault = SERVER_FAULTS.contains(&code);
        let at_info = !self.housekeeping && (self.edge || fault);
        // A call dropped unanswered ends outside its future: its trace is
        // attached again, so its line carries the trace id.
        let _attached = self.trace.as_ref().map(|trace| trace.clone().attach());
        if let Some(trace) = &self.trace {
            crate::traces::end_rpc_span(trace, code, fault);
        }
        self.span.in_scope(|| match (at_info, why) {
            (true, Some(why)) => tracing::info!(code, latency_ms, why, "rpc finished"),
            (true, None) => tracing::info!(code, latency_ms, "rpc finished"),
            (false, Some(why)) => tracing::debug!(code, latency_ms, why, "rpc finished"),
            (false, None) => tracing::debug!(code, latency_ms, "rpc finished"),
        });
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if self.logged {
            return;
        }
        // Dropped before answering: the server ended it at its deadline, or the
        // client reset the stream or closed the connection.
        if self.deadline.has_passed() {
            self.log(DEADLINE_EXCEEDED, Some("the deadline passed"));
        } else {
            self.log(CANCELLED, Some("the client went away"));
        }
    }
}
