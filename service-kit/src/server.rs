//! A gRPC server with everything Agora serves beside its own APIs: reflection (v1
//! and v1alpha), health that follows the database, the access-token layer, one
//! span per call, explicit limits and graceful shutdown.

use std::{future::Future, io, net::SocketAddr, time::Duration};

use access_token::RequireTokenLayer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::ServerLimits;

/// How often health follows the database, and how long one probe may take.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(5);
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one server offers: its gRPC services and what they depend on.
pub struct ServedApi {
    /// Fully qualified names of the services in `routes`, as reflection lists them
    /// and health reports them (`agora.auth.v1.UserService`, …).
    pub service_names: Vec<&'static str>,
    pub routes: Routes,
    /// Checks access tokens before any protected method runs.
    pub token_layer: RequireTokenLayer,
    /// Health reports NOT_SERVING while this pool cannot reach the database.
    pub pool: PgPool,
}

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    limits: ServerLimits,
    api: ServedApi,
}

impl GrpcServer {
    /// Binds `addr` (port 0 picks a free port; see [`GrpcServer::local_addr`]).
    pub async fn bind(addr: SocketAddr, limits: ServerLimits, api: ServedApi) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            limits,
            api,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until SIGINT or SIGTERM, then lets calls in flight finish.
    pub async fn run_until_stopped(self) -> Result<(), tonic::transport::Error> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then lets calls in flight finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let Self {
            listener,
            limits,
            api,
        } = self;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        // The first probe comes before serving, so health never says "unknown service".
        let mut health = DatabaseHealth {
            pool: api.pool.clone(),
            reporter: health_reporter,
            service_names: api.service_names.clone(),
            last: None,
        };
        health.probe().await;
        let health_probe = tokio::spawn(health.follow());

        let reflection_v1 = reflection_builder(&api.service_names)
            .build_v1()
            .expect("the embedded descriptor sets are valid");
        let reflection_v1alpha = reflection_builder(&api.service_names)
            .build_v1alpha()
            .expect("the embedded descriptor sets are valid");

        let routes = api
            .routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let result = Server::builder()
            .timeout(limits.request_timeout())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(|request: &http::Request<_>| {
                        tracing::info_span!("rpc", method = %request.uri().path())
                    })
                    .on_request(())
                    .on_response(|response: &http::Response<_>, latency: Duration, _: &Span| {
                        // Errors come back trailers-only, so their status is in the headers.
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or("0");
                        tracing::info!(code, latency_ms = latency.as_millis() as u64, "rpc finished");
                    })
                    .on_failure(()),
            )
            .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency_limit))
            .layer(api.token_layer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
            .await;
        health_probe.abort();
        result
    }
}

/// Reflection over Agora's contracts plus the health and `google.rpc` types (so
/// clients can decode error details), listing only the services this server has.
fn reflection_builder(
    service_names: &[&'static str],
) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agora_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection");
    for name in service_names {
        builder = builder.with_service_name(*name);
    }
    builder
}

/// Keeps health in step with the database: SERVING while a trivial query answers.
struct DatabaseHealth {
    pool: PgPool,
    reporter: HealthReporter,
    service_names: Vec<&'static str>,
    last: Option<ServingStatus>,
}

impl DatabaseHealth {
    async fn follow(mut self) {
        loop {
            tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
            self.probe().await;
        }
    }

    async fn probe(&mut self) {
        let query = sqlx::query("select 1").execute(&self.pool);
        let status = match tokio::time::timeout(HEALTH_PROBE_TIMEOUT, query).await {
            Ok(Ok(_)) => ServingStatus::Serving,
            _ => ServingStatus::NotServing,
        };
        if self.last == Some(status) {
            return;
        }
        if status == ServingStatus::NotServing {
            tracing::warn!("database unreachable; health is NOT_SERVING");
        }
        for name in std::iter::once("").chain(self.service_names.iter().copied()) {
            self.reporter.set_service_status(name, status).await;
        }
        self.last = Some(status);
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what container runtimes send).
pub async fn shutdown_signal() {
    let interrupt = async {
        tokio::signal::ctrl_c()
            .await
            .expect("cannot listen for Ctrl-C");
    };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot listen for SIGTERM")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down; letting calls in flight finish");
}

/// The end of every service's `main`: serve until stopped, or say in one log line
/// why the service could not start. The exit code tells a supervisor which.
pub async fn run_until_stopped(
    name: &str,
    server: Result<GrpcServer, impl std::fmt::Display>,
) -> std::process::ExitCode {
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "{name} cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %server.local_addr(), "{name} listening");
    match server.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{name} stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}
