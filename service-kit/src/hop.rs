//! How a client reaches another service: over HTTP/2, or, when that service's
//! server runs in this very process (the gateway's all-in-one mode, the system
//! tests), by calling its routes directly.
//!
//! A call within the process skips everything the network adds (HTTP/2 framing,
//! loopback TCP, a task per request on the server side) and nothing the service
//! does: the call still passes the server's token check, its concurrency limit,
//! its deadline and its log line, exactly as one that came over the wire. While
//! that server is not serving (not started yet, shutting down, stopped), calls go
//! over the network as before, so a stopped service is as unreachable in-process
//! as it is remotely.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, LazyLock, Mutex, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use access_token::RequireTokenService;
use tokio::sync::{Semaphore, watch};
use tonic::{body::Body, service::Routes, transport::Channel};
use tower::{Service, ServiceExt};

use crate::{RpcLogLayer, calls::RpcLog, deadline::Deadline};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A call the network would also give up on after this long (as the channels do).
const CALL_TIMEOUT: Duration = crate::client::CALL_TIMEOUT;

/// The transport of every generated client talking to another Agora service.
#[derive(Clone)]
pub struct Hop {
    channel: Channel,
    local: Option<Arc<LocalServer>>,
}

impl Hop {
    /// Over `channel`, or in-process while `local` serves.
    pub(crate) fn new(channel: Channel, local: Option<Arc<LocalServer>>) -> Self {
        Self { channel, local }
    }
}

impl Service<http::Request<Body>> for Hop {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Either path is made ready per call, below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path();
        let method = crate::metrics::labels(path);
        // Health probes every few seconds would each be a trace of their own.
        let name =
            (!crate::calls::is_housekeeping(path)).then(|| path.trim_start_matches('/').to_owned());
        let trace = name.map(|name| crate::traces::start_client_span(name, request.headers_mut()));
        let response: Self::Future = match &self.local {
            Some(local) if local.is_serving() => Box::pin(local.clone().call(request)),
            _ => {
                let channel = self.channel.clone();
                Box::pin(async move { channel.oneshot(request).await.map_err(Into::into) })
            }
        };
        Box::pin(async move {
            let result = response.await;
            // A status in the headers is an error answered trailers-only; an
            // answer's own status follows its messages.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("0"),
                Err(_) => "14",
            };
            if let Some(trace) = &trace {
                crate::traces::end_rpc_span(trace, code, code != "0");
            }
            // By the service called: the gateway's and posts-service's view of
            // each upstream.
            crate::metrics::record_call(method, code, "client", started.elapsed());
            result
        })
    }
}

/// A server of this process, as its in-process callers reach it: the same layers
/// as its network side, sharing its concurrency limit.
pub(crate) struct LocalServer {
    routes: RpcLog<RequireTokenService<Routes>>,
    permits: Arc<Semaphore>,
    request_timeout: Duration,
    serving: watch::Receiver<bool>,
}

impl LocalServer {
    fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    async fn call(
        self: Arc<Self>,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        // Only headers and body cross to another server; what the caller's own
        // layers attached (its verified caller, say) must not.
        request.extensions_mut().clear();
        // The caller's deadline, the server's own limit and the client's: the
        // first to pass ends the call, as over the network.
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok());
        let limit = self.request_timeout.min(CALL_TIMEOUT);
        let deadline = Deadline::from_grpc_timeout(timeout, Some(limit));
        let call = async {
            let _permit = self.permits.acquire().await?;
            Ok::<_, BoxError>(self.routes.clone().oneshot(request).await?)
        };
        let remaining = deadline.remaining().unwrap_or(limit);
        match tokio::time::timeout(remaining, call).await {
            Ok(answer) => answer,
            Err(_) => Err(tonic::TimeoutExpired(()).into()),
        }
    }
}

/// A server's place in this process's registry, kept while the server lives: it
/// tells in-process callers when the server serves, and leaves the registry when
/// dropped.
pub(crate) struct LocalEntry {
    url: String,
    server: Arc<LocalServer>,
    serving: watch::Sender<bool>,
}

impl LocalEntry {
    pub(crate) fn set_serving(&self, serving: bool) {
        self.serving.send_replace(serving);
    }
}

impl Drop for LocalEntry {
    /// A server that stops (or is never run) is reached over the network, which
    /// answers for it as a stopped server does.
    fn drop(&mut self) {
        self.set_serving(false);
        let mut servers = local_servers();
        let ours = servers
            .get(&self.url)
            .is_some_and(|server| std::ptr::eq(server.as_ptr(), Arc::as_ptr(&self.server)));
        if ours {
            servers.remove(&self.url);
        }
    }
}

/// The servers of this process, by the URL their clients are configured with.
/// Weak, so that a server which has stopped, and its database pool, go away with
/// their last caller.
static LOCAL_SERVERS: LazyLock<Mutex<HashMap<String, Weak<LocalServer>>>> =
    LazyLock::new(Default::default);

/// Makes the server bound at `url` reachable in-process (once it says it serves).
/// A server bound later at the same address takes the entry over.
pub(crate) fn register(
    url: String,
    routes: RequireTokenService<Routes>,
    permits: Arc<Semaphore>,
    request_timeout: Duration,
) -> LocalEntry {
    let (serving, receiver) = watch::channel(false);
    let server = Arc::new(LocalServer {
        routes: tower::Layer::layer(&RpcLogLayer::hop(request_timeout), routes),
        permits,
        request_timeout,
        serving: receiver,
    });
    local_servers().insert(url.clone(), Arc::downgrade(&server));
    LocalEntry {
        url,
        server,
        serving,
    }
}

/// The server of this process bound at `url`, if there is one. Servers register
/// their plain `http://` address; an `https://` URL names the same server, and a
/// call within the process has no wire to encrypt.
pub(crate) fn find(url: &str) -> Option<Arc<LocalServer>> {
    let plain = url
        .strip_prefix("https://")
        .map(|rest| format!("http://{rest}"));
    local_servers()
        .get(plain.as_deref().unwrap_or(url))
        .and_then(Weak::upgrade)
}

fn local_servers() -> std::sync::MutexGuard<'static, HashMap<String, Weak<LocalServer>>> {
    // A panic while holding the map leaves it intact: a plain insert or read.
    LOCAL_SERVERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use access_token::{PublicMethods, RequireTokenLayer, StaticKeys, TokenVerifier};
    use tonic::Code;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tower::Layer as _;

    use super::*;

    /// A server of this process at `url`, with only health, and the token check
    /// that `public` allows.
    fn local_health_server(url: &str, public: PublicMethods) -> LocalEntry {
        let (_, health) = tonic_health::server::health_reporter();
        let verifier = Arc::new(TokenVerifier::new(StaticKeys(jsonwebtoken::jwk::JwkSet {
            keys: Vec::new(),
        })));
        let routes = RequireTokenLayer::new(verifier, public).layer(Routes::new(health));
        register(
            url.to_owned(),
            routes,
            Arc::new(Semaphore::new(8)),
            Duration::from_secs(5),
        )
    }

    async fn check(url: &str) -> Result<(), tonic::Status> {
        // Nothing listens on the channel's port: only an in-process call answers.
        let channel = crate::client::lazy_channel("http://127.0.0.1:1").unwrap();
        let mut client = HealthClient::new(Hop::new(channel, find(url)));
        client.check(HealthCheckRequest::default()).await.map(drop)
    }

    #[tokio::test]
    async fn a_serving_server_of_this_process_is_called_in_process_and_a_stopped_one_is_not() {
        let url = "http://in-process.test:1";
        let entry = local_health_server(url, PublicMethods::infrastructure());
        let before_serving = check(url).await.unwrap_err();
        assert_eq!(
            before_serving.code(),
            Code::Unavailable,
            "{before_serving:?}"
        );

        entry.set_serving(true);
        check(url).await.expect("answered in-process");

        drop(entry);
        let stopped = check(url).await.unwrap_err();
        assert_eq!(stopped.code(), Code::Unavailable, "{stopped:?}");
    }

    #[tokio::test]
    async fn a_server_of_this_process_is_called_in_process_when_its_url_says_https() {
        let entry = local_health_server(
            "http://in-process-tls.test:1",
            PublicMethods::infrastructure(),
        );
        entry.set_serving(true);
        check("https://in-process-tls.test:1")
            .await
            .expect("answered in-process");
    }

    #[tokio::test]
    async fn an_in_process_call_passes_the_servers_token_check() {
        let url = "http://in-process-guarded.test:1";
        let entry = local_health_server(url, PublicMethods::default());
        entry.set_serving(true);
        let refused = check(url).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
}
