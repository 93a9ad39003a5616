//! A gRPC server with everything Agora serves beside its own APIs: reflection (v1
//! and v1alpha), health that follows the database, the access-token layer, one
//! span per call, explicit limits, TLS when configured, and graceful shutdown.

use std::{
    future::Future, io, net::SocketAddr, pin::Pin, process::ExitCode, sync::Arc, time::Duration,
};

use access_token::{PublicMethods, RequireTokenLayer, TokenVerifier};
use prost_types::FileDescriptorSet;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tower::{Layer as _, limit::GlobalConcurrencyLimitLayer};

use crate::{
    CommonArgs, RpcLogLayer, ServerLimits,
    health::HealthFollower,
    hop::{self, LocalEntry},
    tls::{self, Incoming, TlsAcceptor},
};

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
    /// Set to true when the server is told to stop, before it waits for the
    /// calls in flight: open streams end on it (they would hold the stop up).
    pub stopping: Option<Arc<tokio::sync::watch::Sender<bool>>>,
}

impl ServedApi {
    /// `routes`, serving `service_names`, with every method guarded as
    /// `agora_proto::RPCS` says: a token is required unless the method is listed
    /// as needing none.
    pub fn new(
        service_names: Vec<&'static str>,
        routes: Routes,
        verifier: Arc<TokenVerifier>,
        pool: PgPool,
    ) -> Self {
        Self {
            service_names,
            routes,
            token_layer: RequireTokenLayer::new(
                verifier,
                PublicMethods::tokenless(agora_proto::RPCS),
            ),
            pool,
            stopping: None,
        }
    }

    /// `stopping` is set to true when the server is told to stop.
    pub fn with_stopping(self, stopping: tokio::sync::watch::Sender<bool>) -> Self {
        Self {
            stopping: Some(Arc::new(stopping)),
            ..self
        }
    }
}

/// The listen address is taken or not ours.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: io::Error,
}

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    limits: ServerLimits,
    api: ServedApi,
    /// Shared by calls over the network and from this process.
    permits: Arc<Semaphore>,
    /// Tells this process's callers when to reach the server in-process.
    local: LocalEntry,
    /// Plaintext when `None`.
    tls: Option<TlsAcceptor>,
}

impl GrpcServer {
    /// Binds `address` (port 0 picks a free port; see [`GrpcServer::local_addr`]).
    pub async fn bind(
        address: SocketAddr,
        limits: ServerLimits,
        api: ServedApi,
    ) -> Result<Self, BindError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| BindError { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| BindError { address, source })?;
        let permits = Arc::new(Semaphore::new(limits.concurrency_limit));
        let local = hop::register(
            format!("http://{bound}"),
            api.token_layer.layer(api.routes.clone()),
            permits.clone(),
            limits.request_timeout(),
        );
        Ok(Self {
            listener,
            limits,
            api,
            permits,
            local,
            tls: None,
        })
    }

    /// What ends the served API's open streams, for a process that must end
    /// them before it stops this server (they end anyway when it does).
    pub fn streams_stopping(&self) -> Option<Arc<tokio::sync::watch::Sender<bool>>> {
        self.api.stopping.clone()
    }

    /// Serves TLS with `tls` (plaintext with `None`, as after `bind`).
    pub fn with_tls(self, tls: Option<TlsAcceptor>) -> Self {
        Self { tls, ..self }
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

    /// Serves until `shutdown` completes, then lets calls in flight finish (for at
    /// most [`SHUTDOWN_GRACE`]).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let Self {
            listener,
            limits,
            api,
            permits,
            local,
            tls,
        } = self;
        // In-process calls go where network ones can: nowhere once stopping.
        local.set_serving(true);
        let stopping = api.stopping;
        let shutdown = async move {
            shutdown.await;
            drop(local);
            if let Some(stopping) = stopping {
                stopping.send_replace(true);
            }
        };
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        // The first probe comes before serving, so health never says "unknown service".
        // The whole server ("") and each service follow the database.
        let names = std::iter::once("")
            .chain(api.service_names.iter().copied())
            .collect();
        let pool = api.pool.clone();
        let database_probe = move || {
            let pool = pool.clone();
            async move { sqlx::query("select 1").execute(&pool).await.is_ok() }
        };
        let health_probe = HealthFollower::new("database", health_reporter, names, database_probe)
            .start()
            .await;

        let routes = with_reflection(
            api.routes,
            agora_proto::file_descriptor_set(),
            &api.service_names,
        )
        .add_service(health_service);

        let serve = |shutdown| {
            configured_server(&limits)
                .layer(RpcLogLayer::hop(limits.request_timeout()))
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(permits))
                .layer(api.token_layer)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming(listener, tls), shutdown)
        };
        let result = with_grace(shutdown, serve).await.unwrap_or(Ok(()));
        health_probe.abort();
        result
    }
}

/// `routes` plus reflection (v1, and v1alpha for grpcurl 1.8) over `descriptors`
/// and the health and `google.rpc` types (so clients can decode error details),
/// listing only `service_names`, health and reflection itself.
pub fn with_reflection(
    routes: Routes,
    descriptors: FileDescriptorSet,
    service_names: &[&'static str],
) -> Routes {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(descriptors.clone())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            // Each version describes both, so that a client listing every
            // method (`buf curl --list-methods`) resolves the other one too.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for name in service_names {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let invalid = "the descriptor sets are valid";
    routes
        .add_service(builder().build_v1().expect(invalid))
        .add_service(builder().build_v1alpha().expect(invalid))
}

/// How long calls in flight may take to finish once a server is told to stop;
/// open streams (a health watch, say) would otherwise hold it up for ever.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs `serve`, which stops taking calls when the future it is given completes;
/// after `shutdown`, waits at most [`SHUTDOWN_GRACE`] for it to finish. `None`
/// when the grace ran out and the calls still open were dropped.
pub async fn with_grace<S, T>(
    shutdown: impl Future<Output = ()> + Send,
    serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> S,
) -> Option<T>
where
    S: Future<Output = T>,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
        // Keep the sender alive until the grace is over.
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let serving = serve(Box::pin(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }));
    tokio::pin!(serving, signal);
    tokio::select! {
        result = &mut serving => Some(result),
        () = &mut signal => {
            tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "calls still open after the shutdown grace; closing them");
            None
        }
    }
}

/// The connections `listener` accepts, TLS ones once their handshake is done
/// (plaintext when `tls` is `None`), with the socket options tonic applies only
/// to listeners it binds itself: without `TCP_NODELAY`, small answers wait for
/// delayed ACKs (tens of milliseconds each).
pub fn incoming(listener: TcpListener, tls: Option<TlsAcceptor>) -> Incoming {
    let tcp = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    Incoming::new(tcp, tls)
}

/// A tonic server with the limits every Agora server applies; layers and routes
/// are the caller's.
pub fn configured_server(limits: &ServerLimits) -> Server {
    Server::builder()
        .timeout(limits.request_timeout())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
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

/// A bound server that `serve_or_check` can run: a service's [`GrpcServer`], or
/// the gateway.
pub trait Serve: Sized {
    type Error: std::fmt::Display;
    /// Logs, once, where it serves.
    fn announce(&self, name: &str);
    /// Serves until SIGINT or SIGTERM, then lets calls in flight finish.
    fn run_until_stopped(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl Serve for GrpcServer {
    type Error = tonic::transport::Error;

    fn announce(&self, name: &str) {
        let transport = tls::transport(self.tls.as_ref());
        let listeners = format!("grpc {} {transport}", self.local_addr());
        tracing::info!(
            address = %self.local_addr(),
            listeners = listeners.as_str(),
            "{name} listening"
        );
    }

    fn run_until_stopped(self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        GrpcServer::run_until_stopped(self)
    }
}

/// The end of every binary's `main`. With `health_check`, asks the server already
/// running at `listen` whether it is SERVING (for container healthchecks) and exits
/// 0 only if so. Otherwise builds the server and serves until stopped, or says in
/// one log line why it could not start. The exit code tells a supervisor which.
pub async fn serve_or_check<S: Serve, E: std::fmt::Display>(
    name: &str,
    listen: SocketAddr,
    common: &CommonArgs,
    build: impl Future<Output = Result<S, E>>,
) -> ExitCode {
    if common.health_check {
        return check_health(listen, common).await;
    }
    let server = match build.await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "{name} cannot start");
            return ExitCode::FAILURE;
        }
    };
    server.announce(name);
    let stopped = server.run_until_stopped().await;
    crate::traces::flush().await;
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{name} stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Asks the gRPC server listening on `listen` for its overall health, over TLS
/// when `common` serves TLS.
pub async fn check_health(listen: SocketAddr, common: &CommonArgs) -> ExitCode {
    // A server bound to every interface answers on loopback.
    let target = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        }
        ip if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    };
    let status = async {
        // Over TLS when the server speaks it, verified against UPSTREAM_CA_FILE
        // and presenting UPSTREAM_CERT_FILE, as any caller would.
        let scheme = match common.tls.files()? {
            Some(_) => {
                crate::client::install_tls(
                    &common.upstream_tls,
                    Duration::from_secs(common.tls.tls_reload_secs),
                )?;
                "https"
            }
            None => "http",
        };
        let channel = crate::client::lazy_channel(&format!("{scheme}://{target}"))?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(response.into_inner().status())
    };
    match tokio::time::timeout(crate::health::PROBE_TIMEOUT, status).await {
        Ok(Ok(tonic_health::pb::health_check_response::ServingStatus::Serving)) => {
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            eprintln!("{target}: {}", status.as_str_name());
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("{target}: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{target}: no answer in time");
            ExitCode::FAILURE
        }
    }
}
