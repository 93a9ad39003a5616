//! One `rpc` span per call, and one log line when it ends, with its gRPC status
//! code and latency. Some calls end without an answer: the client went away, or
//! the deadline passed and the server dropped the call. Those are logged too, as
//! CANCELLED and DEADLINE_EXCEEDED, so that an operator is never paged for an
//! INTERNAL error that was only a client leaving.
//!
//! The edge logs every call (the access log); a service behind it logs its
//! successes at debug only, since the edge already has them, and its failures at
//! info.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tower::{Layer, Service};
use tracing::{Instrument, Span};

use crate::deadline::Deadline;

/// gRPC status codes, as they travel in `grpc-status`.
const CANCELLED: &str = "1";
const DEADLINE_EXCEEDED: &str = "4";

/// Wraps a server's routes in [`RpcLog`].
#[derive(Debug, Clone, Copy)]
pub struct RpcLogLayer {
    /// The server's own limit on every call, which ends a call as its deadline
    /// would.
    request_timeout: Duration,
    /// Whether a success is logged at info (the edge) or at debug (a hop).
    successes_at_info: bool,
}

impl RpcLogLayer {
    /// For the edge: every call at info.
    pub fn edge(request_timeout: Duration) -> Self {
        Self {
            request_timeout,
            successes_at_info: true,
        }
    }

    /// For a service behind the edge: successes at debug, the rest at info.
    pub fn hop(request_timeout: Duration) -> Self {
        Self {
            request_timeout,
            successes_at_info: false,
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
        let span = tracing::info_span!("rpc", method = %request.uri().path());
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok());
        let deadline = Deadline::from_grpc_timeout(timeout, Some(self.layer.request_timeout));
        let mut ending = Ending {
            span: span.clone(),
            started: Instant::now(),
            deadline,
            successes_at_info: self.layer.successes_at_info,
            logged: false,
        };
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
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
            .instrument(span),
        )
    }
}

/// Logs how a call ended, once, even when it is dropped unanswered.
struct Ending {
    span: Span,
    started: Instant,
    deadline: Deadline,
    successes_at_info: bool,
    logged: bool,
}

impl Ending {
    fn log(&mut self, code: &str, why: Option<&str>) {
        self.logged = true;
        let latency_ms = self.started.elapsed().as_millis() as u64;
        self.span.in_scope(|| match why {
            Some(why) => tracing::info!(code, latency_ms, why, "rpc finished"),
            None if code == "0" && !self.successes_at_info => {
                tracing::debug!(code, latency_ms, "rpc finished")
            }
            None => tracing::info!(code, latency_ms, "rpc finished"),
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
