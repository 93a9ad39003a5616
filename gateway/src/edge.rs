//! The gRPC edge: every public method on one port, forwarded to the service that
//! owns it as an HTTP/2 stream (metadata, deadlines, status and error details pass
//! through untouched, since nothing is decoded); gRPC-Web for browsers;
//! reflection over the public API; health for the gateway and each upstream.

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
use http::{HeaderName, HeaderValue};
use prost_types::FileDescriptorSet;
use service_kit::{
    ServerLimits, configured_server, health::HealthFollower, incoming, rpc_trace_layer,
    with_reflection,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{service::Routes, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response, health_client::HealthClient};
use tower::{Service, ServiceExt, limit::GlobalConcurrencyLimitLayer};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::upstreams::Upstreams;

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
}

impl Edge {
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // "" is the gateway itself; each public service follows its upstream.
        let mut followers = Vec::new();
        let services = public_services();
        for owner in Owner::ALL {
            let names = services
                .iter()
                .filter(|(_, o)| *o == owner)
                .map(|(name, _)| *name)
                .collect();
            let client = HealthClient::new(self.upstreams.channel(owner));
            let probe = move || {
                let mut client = client.clone();
                async move {
                    let answer = client
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await;
                    answer.is_ok_and(|answer| {
                        answer.get_ref().status() == health_check_response::ServingStatus::Serving
                    })
                }
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
                channel: self.upstreams.channel(owner),
                upstream: owner.name(),
            };
            router = router.route_service(&rpc.path(), forward);
        }
        let router = router.fallback(|| async {
            ErrorReason::MethodNotFound
                .status("no such public method", &[], Default::default())
                .into_http::<axum::body::Body>()
        });
        let names: Vec<&'static str> = services.iter().map(|(name, _)| *name).collect();
        let routes = with_reflection(Routes::from(router), public_descriptors(), &names)
            .add_service(health_service);

        // Anyone may register and log in; every other method needs a token, checked
        // here as well as by the owning service.
        let public = PublicMethods::tokenless(public_rpcs());
        let result = configured_server(&self.limits)
            .accept_http1(true)
            .layer(cors(&self.cors_allowed_origins))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(rpc_trace_layer())
            .layer(GlobalConcurrencyLimitLayer::new(
                self.limits.concurrency_limit,
            ))
            .layer(RequireTokenLayer::new(self.verifier, public))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
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
    fn channel(&self, owner: Owner) -> Channel {
        match owner {
            Owner::Auth => self.auth.clone(),
            Owner::Posts => self.posts.clone(),
            Owner::Votes => self.votes.clone(),
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

/// Browsers may call from the allowed origins, and read the gRPC status.
fn cors(allowed_origins: &[String]) -> CorsLayer {
    let origins = if allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers([
            header("authorization"),
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
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// Sends a call on to its upstream as it came, and the answer back as it comes.
#[derive(Clone)]
struct Forward {
    channel: Channel,
    upstream: &'static str,
}

impl Service<http::Request<axum::body::Body>> for Forward {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The channel's own readiness is awaited per call, below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<axum::body::Body>) -> Self::Future {
        let channel = self.channel.clone();
        let upstream = self.upstream;
        Box::pin(async move {
            let request = request.map(tonic::body::Body::new);
            Ok(channel.oneshot(request).await.unwrap_or_else(|error| {
                tracing::warn!(upstream, %error, "upstream call failed");
                let (reason, message) = if is_timeout(&error) {
                    (ErrorReason::DependencyTimeout, "did not answer in time")
                } else {
                    (ErrorReason::DependencyUnavailable, "unavailable, try again")
                };
                let metadata = [("dependency", upstream)];
                reason
                    .status(
                        format!("{upstream} {message}"),
                        &metadata,
                        Default::default(),
                    )
                    .into_http()
            }))
        })
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
