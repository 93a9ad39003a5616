//! The gRPC edge: every public method on one port, forwarded to the service that
//! owns it as an HTTP/2 stream (metadata, deadlines, status and error details pass
//! through untouched, since nothing is decoded); gRPC-Web for browsers; Connect
//! ([`crate::connect`]); reflection over the public API; health for the gateway
//! and each upstream.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use access_token::{PublicMethods, RequireTokenLayer, TokenVerifier};
use agora_proto::{RPCS, Rpc, errors::ErrorReason};
use prost_types::FileDescriptorSet;
use service_kit::hop::Hop;
use service_kit::retry::jitter;
use service_kit::{
    RpcLogLayer, ServerLimits, TlsAcceptor, client::Upstream, configured_server,
    health::HealthFollower, incoming, with_reflection,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Status, service::Routes, transport::server::TcpConnectInfo};
use tower::{Service, ServiceExt, limit::GlobalConcurrencyLimitLayer};

use crate::{
    clients::{Clients, forward_client, registration_refused},
    connect::ConnectLayer,
    upstreams::Upstreams,
};

/// Which service owns a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Auth,
    Posts,
    Votes,
}

impl Owner {
    const ALL: [Owner; 3] = [Owner::Auth, Owner::Posts, Owner::Votes];

    fn of(rpc: &Rpc) -> Owner {
        match rpc.service {
            service if service.starts_with("agora.auth.") => Owner::Auth,
            service if service.starts_with("agora.posts.") => Owner::Posts,
            service if service.starts_with("agora.votes.") => Owner::Votes,
            service => unreachable!("no service owns {service}"),
        }
    }
}

/// Every method served at the edge. Internal ones (batch look-ups, counts, key
/// publication, token verification) are absent, so they answer UNIMPLEMENTED here.
fn public_rpcs() -> impl Iterator<Item = &'static Rpc> {
    RPCS.iter().filter(|rpc| rpc.public)
}

/// The services with public methods, each once, and the upstream that answers
/// for their health.
fn public_services() -> Vec<(&'static str, Owner)> {
    let mut services = Vec::new();
    for rpc in public_rpcs() {
        if !services.iter().any(|(name, _)| *name == rpc.service) {
            services.push((rpc.service, Owner::of(rpc)));
        }
    }
    services
}

/// What the edge needs to serve.
pub struct Edge {
    pub upstreams: Upstreams,
    pub verifier: Arc<TokenVerifier>,
    pub limits: ServerLimits,
    pub cors_allowed_origins: Vec<String>,
    pub clients: Clients,
    /// Plaintext when `None`.
    pub tls: Option<TlsAcceptor>,
    /// The statuses `grpc.health.v1` serves, shared with the facade's `/readyz`.
    pub health: tonic_health::server::HealthReporter,
}

/// The names `grpc.health.v1` answers for: `""`, the gateway itself, and each
/// public service.
pub(crate) fn health_names() -> Vec<&'static str> {
    std::iter::once("")
        .chain(public_services().into_iter().map(|(name, _)| name))
        .collect()
}

impl Edge {
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let reporter = self.health.clone();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        // "" is the gateway itself; each public service follows its upstream.
        let mut followers = Vec::new();
        let services = public_services();
        for owner in Owner::ALL {
            let names = services
                .iter()
                .filter(|(_, o)| *o == owner)
                .map(|(name, _)| *name)
                .collect();
            // SERVING while at least one replica's own health says so.
            let upstream = self.upstreams.upstream(owner).clone();
            let probe = move || {
                let upstream = upstream.clone();
                async move { upstream.any_replica_serving().await }
            };
            followers.push(
                HealthFollower::new(owner.name(), reporter.clone(), names, probe)
                    .start()
                    .await,
            );
        }

        let mut router = axum::Router::new();
        for rpc in public_rpcs() {
            let owner = Owner::of(rpc);
            let forward = Forward {
                channel: self.upstreams.upstream(owner).hop(),
                upstream: owner.name(),
                read_only: rpc.read_only,
                max_message_bytes: self.limits.max_message_bytes,
                clients: self.clients.clone(),
                names_client: owner == Owner::Auth,
                registers: is_registration(rpc),
            };
            router = router.route_service(&rpc.path(), forward);
        }
        let router = router.fallback(|| async {
            ErrorReason::MethodNotFound
                .status("no such public method", &[], Default::default())
                .into_http::<axum::body::Body>()
        });
        let names: Vec<&'static str> = services.iter().map(|(name, _)| *name).collect();
        let descriptors = public_descriptors();
        let connect = ConnectLayer::new(descriptors.clone(), self.limits.max_message_bytes);
        let routes =
            with_reflection(Routes::from(router), descriptors, &names).add_service(health_service);

        // Anyone may register and log in; every other method needs a token, checked
        // here as well as by the owning service.
        let public = PublicMethods::tokenless(public_rpcs());
        let result = configured_server(&self.limits)
            .accept_http1(true)
            .layer(crate::http::cors::grpc_web(&self.cors_allowed_origins))
            // Before gRPC-Web's layer, which refuses HTTP/1.1 that is not gRPC-Web.
            .layer(connect)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(RpcLogLayer::edge(self.limits.request_timeout()))
            .layer(GlobalConcurrencyLimitLayer::new(
                self.limits.concurrency_limit,
            ))
            .layer(RequireTokenLayer::new(self.verifier, public))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener, self.tls), shutdown)
            .await;
        followers.iter().for_each(JoinHandle::abort);
        result
    }
}

impl Owner {
    fn name(self) -> &'static str {
        match self {
            Owner::Auth => "auth-service",
            Owner::Posts => "posts-service",
            Owner::Votes => "votes-service",
        }
    }
}

impl Upstreams {
    fn upstream(&self, owner: Owner) -> &Upstream {
        match owner {
            Owner::Auth => &self.auth,
            Owner::Posts => &self.posts,
            Owner::Votes => &self.votes,
        }
    }
}

/// Agora's descriptors with only the public methods, so `grpcurl describe` shows
/// what the edge serves and nothing internal.
fn public_descriptors() -> FileDescriptorSet {
    let mut set = agora_proto::file_descriptor_set();
    for file in &mut set.file {
        let package = file.package().to_owned();
        for service in &mut file.service {
            let prefix = format!("/{package}.{}/", service.name());
            service.method.retain(|method| {
                let path = format!("{prefix}{}", method.name());
                public_rpcs().any(|rpc| rpc.path() == path)
            });
        }
        file.service.retain(|service| !service.method.is_empty());
    }
    set
}

/// Whether `rpc` registers a user, which is limited per client address.
fn is_registration(rpc: &Rpc) -> bool {
    rpc.service == agora_proto::auth::v1::user_service_server::SERVICE_NAME
        && rpc.method == "CreateUser"
}

/// Sends a call on to its upstream as it came, except that its `x-forwarded-for`
/// is the client address for auth-service and absent for the others (see
/// [`crate::clients`]), and the answer back as it
/// comes. A read whose upstream never answered (a broken connection, a replica
/// that went away) is sent once more, after a short random pause; a write never
/// is. A registration over its address's limit is refused here.
#[derive(Clone)]
struct Forward {
    channel: Hop,
    upstream: &'static str,
    read_only: bool,
    /// The largest request a read is held in memory for, to be sent again.
    max_message_bytes: usize,
    clients: Clients,
    /// Whether the upstream is told the client address (auth-service's calls).
    names_client: bool,
    registers: bool,
}

impl Service<http::Request<axum::body::Body>> for Forward {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The channel's own readiness is awaited per call, below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<axum::body::Body>) -> Self::Future {
        let forward = self.clone();
        Box::pin(async move {
            // Only auth-service counts calls per client (logins, registrations):
            // other calls only lose what the client wrote.
            let client = if forward.names_client {
                let peer = request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr)
                    .map(|address| address.ip());
                forward.clients.client(peer, request.headers())
            } else {
                None
            };
            if forward.registers
                && let Err(wait) = forward.clients.admit_registration(client)
            {
                return Ok(registration_refused(wait).into_http());
            }
            forward_client(request.headers_mut(), client);
            if forward.read_only {
                return Ok(forward.send_read(request).await);
            }
            let request = request.map(tonic::body::Body::new);
            let outcome = forward.channel.clone().oneshot(request).await;
            Ok(match outcome {
                Ok(response) => forward.cut_off_as_unavailable(response),
                Err(error) => forward.unanswered(&*error),
            })
        })
    }
}

impl Forward {
    /// Sends a read, and once more if the upstream never answered.
    ///
    /// A server stream (WatchPosts) is a read too, and safe to send again only
    /// here: the call resolves with the answer's headers, before any message,
    /// so once it has begun its failures come in the body, passed on as they
    /// are, and the client resumes from its own cursor. Neither the server's
    /// `REQUEST_TIMEOUT_SECS` nor a channel's call timeout, both of which
    /// bound only the wait for those headers, nor a concurrency permit, held
    /// only as long, cuts it later.
    async fn send_read(
        &self,
        request: http::Request<axum::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let (parts, body) = request.into_parts();
        // One gRPC message and its 5-byte frame header, as the upstream would take.
        let body = match axum::body::to_bytes(body, self.max_message_bytes + 5).await {
            Ok(body) => body,
            Err(error) => {
                tracing::debug!(%error, "cannot read the request");
                return Status::out_of_range("the request is too large or was cut off").into_http();
            }
        };
        let copy = || {
            let mut request = http::Request::new(tonic::body::Body::new(
                http_body_util::Full::new(body.clone()),
            ));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            request
        };
        let outcome = match self.channel.clone().oneshot(copy()).await {
            Err(error) if !is_timeout(&*error) => {
                tracing::info!(upstream = self.upstream, %error, "upstream did not answer a read; sending it once more");
                tokio::time::sleep(jitter(Duration::from_millis(10), Duration::from_millis(50)))
                    .await;
                self.channel.clone().oneshot(copy()).await
            }
            outcome => outcome,
        };
        match outcome {
            Ok(response) => self.cut_off_as_unavailable(response),
            Err(error) => self.unanswered(&*error),
        }
    }

    /// The answer to a call the upstream never answered.
    fn unanswered(
        &self,
        error: &(dyn std::error::Error + 'static),
    ) -> http::Response<tonic::body::Body> {
        tracing::warn!(upstream = self.upstream, %error, "upstream call failed");
        self.failure(is_timeout(error)).into_http()
    }

    fn failure(&self, timed_out: bool) -> Status {
        let upstream = self.upstream;
        let (reason, message) = if timed_out {
            (ErrorReason::DependencyTimeout, "did not answer in time")
        } else {
            (ErrorReason::DependencyUnavailable, "unavailable, try again")
        };
        let metadata = [("dependency", upstream)];
        let retry = service_kit::error::RETRY_UNAVAILABLE_AFTER;
        reason.status(
            format!("{upstream} {message}"),
            &metadata,
            tonic_types::ErrorDetails::with_retry_info(Some(retry)),
        )
    }

    /// `response` as it comes, except that a body the upstream breaks off (a
    /// replica that died after its headers: between a unary answer's frames,
    /// or in a stream) ends with UNAVAILABLE `DEPENDENCY_UNAVAILABLE` in the
    /// trailers, as a call it never answered does, rather than with a reset
    /// stream the client sees as INTERNAL.
    fn cut_off_as_unavailable(
        &self,
        response: http::Response<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        // A trailers-only answer's headers are the status; as trailers, only
        // those.
        let headers = self.failure(false).into_http::<()>().into_parts().0.headers;
        let trailers: http::HeaderMap = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("grpc-"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let upstream = self.upstream;
        response.map(|body| {
            tonic::body::Body::new(CutOffAsUnavailable {
                body,
                trailers: Some(trailers),
                upstream,
            })
        })
    }
}

/// See [`Forward::cut_off_as_unavailable`].
struct CutOffAsUnavailable {
    body: tonic::body::Body,
    /// Sent in place of the upstream's error; `None` once sent.
    trailers: Option<http::HeaderMap>,
    upstream: &'static str,
}

impl http_body::Body for CutOffAsUnavailable {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        if self.trailers.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(upstream = self.upstream, %error, "upstream broke off its answer");
                let trailers = self.trailers.take().expect("checked above");
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tonic::TimeoutExpired>() || error.is::<tower::timeout::error::Elapsed>() {
            return true;
        }
        cause = error.source();
    }
    false
}
