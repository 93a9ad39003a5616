//! The gateway: Agora's one public endpoint.
//!
//! It serves every public gRPC method (and gRPC-Web) on one port, forwarding each
//! call to the service that owns it without decoding it; reflection and health for
//! the whole system; and, on a second port, the course API's HTTP/JSON facade,
//! which translates onto the same gRPC services. Without upstream URLs it runs the
//! three services in its own process ([`embedded`]).

mod clients;
pub mod config;
mod connect;
mod edge;
pub mod embedded;
pub mod http;
pub mod upstreams;

use std::{future::Future, net::SocketAddr};

use axum::serve::{Listener, ListenerExt};
use service_kit::{
    Serve, TlsAcceptor, TlsError, TokenKeysArgs,
    config::KeyConfigError,
    database::{DatabaseError, MigrationMode},
    incoming,
    tls::{self, Incoming, ServerIo},
    with_grace,
};
use tokio::{net::TcpListener, sync::watch};

pub use config::Config;
use embedded::{EmbeddedError, EmbeddedServices};
use upstreams::{UpstreamError, Upstreams};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Says itself what to set when the server is elsewhere.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Keys(#[from] KeyConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    UpstreamTls(#[from] service_kit::client::UpstreamTlsError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The `gateway` binary: reads the configuration from flags and environment, then
/// serves until a shutdown signal (or answers `--health-check`).
pub async fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    if let Err(error) = service_kit::service::load_env_file() {
        eprintln!("gateway: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let config = Config::parse();
    if let Err(error) = service_kit::telemetry::init("gateway", config.common.log_format) {
        tracing::error!(%error, "gateway cannot start");
        return std::process::ExitCode::FAILURE;
    }
    // The migration job: also in front of remote services, where the gateway
    // otherwise never connects to the database.
    let database = &config.common.database;
    if database.database_migrations == MigrationMode::ApplyAndExit && !config.common.health_check {
        return service_kit::database::run_migration_job("gateway", database).await;
    }
    if !config.common.health_check
        && let Err(error) = service_kit::metrics::install("gateway", &config.common.metrics)
    {
        tracing::error!(%error, "gateway cannot serve its metrics");
        return std::process::ExitCode::FAILURE;
    }
    service_kit::serve_or_check(
        "gateway",
        config.grpc_listen,
        &config.common,
        build(&config),
    )
    .await
}

/// A bound gateway, not yet serving.
pub struct Gateway {
    grpc: TcpListener,
    http: TcpListener,
    edge: edge::Edge,
    http_router: axum::Router,
    embedded: Option<EmbeddedServices>,
    /// Both ports serve TLS with it; plaintext when `None`. Embedded services
    /// stay plaintext on loopback (and are called in-process).
    tls: Option<TlsAcceptor>,
    /// Tells the facade's streams that the gateway is shutting down.
    stopping: watch::Sender<bool>,
}

/// Binds both ports; without upstream URLs, first starts the three services on the
/// configured database (creating and migrating it as needed).
pub async fn build(config: &Config) -> Result<Gateway, StartupError> {
    // Bad TLS files stop the start before anything else is set up.
    let tls = config.common.tls.acceptor()?;
    let (urls, embedded) = match config.upstream_urls() {
        Some(urls) => (urls, None),
        None => {
            let pool = service_kit::database::connect(&config.common.database).await?;
            let services = EmbeddedServices::bind(
                &pool,
                config.auth.clone(),
                config.quotas.clone(),
                config.feed.clone(),
                &config.common.limits,
            )
            .await?;
            (services.urls.clone(), Some(services))
        }
    };
    // The CA and client certificate for https:// upstreams, from flags too.
    service_kit::install_tls(
        &config.common.upstream_tls,
        std::time::Duration::from_secs(config.common.tls.tls_reload_secs),
    )?;
    let upstreams = Upstreams::connect(&urls)?;
    let token_keys = TokenKeysArgs {
        auth_service_url: urls.auth.clone(),
        jwks_file: config.jwks_file.clone(),
        token_keys_refresh_secs: config.token_keys_refresh_secs,
        token_revocations_refresh_secs: config.token_revocations_refresh_secs,
    };
    let verifier = token_keys.verifier()?;
    let clients = clients::Clients::new(
        config.trusted_proxies.clone(),
        config.registrations_per_address_per_hour,
    );
    // "" SERVING from the start; the edge follows the upstreams into it, and the
    // facade's /readyz reads it.
    let health = tonic_health::server::HealthReporter::new();
    let (stopping, stopping_seen) = watch::channel(false);
    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| StartupError::Bind { address, source })
    };
    Ok(Gateway {
        grpc: bind(config.grpc_listen).await?,
        http: bind(config.http_listen).await?,
        http_router: http::router(
            upstreams.clone(),
            verifier.clone(),
            config.http_show_emails,
            clients.clone(),
            &config.cors_allowed_origins,
            health.clone(),
            stopping_seen,
        ),
        edge: edge::Edge {
            clients,
            upstreams,
            verifier,
            limits: config.common.limits.clone(),
            cors_allowed_origins: config.cors_allowed_origins.clone(),
            tls: tls.clone(),
            health,
        },
        embedded,
        tls,
        stopping,
    })
}

impl Gateway {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Whether the gateway runs the services itself.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Serves until `shutdown` completes. Then the gateway stops taking calls and
    /// lets those in flight finish (within [`service_kit::server::SHUTDOWN_GRACE`]),
    /// and only after that do embedded services stop, since those calls need them.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let (stop_edge, edge_stopped) = watch::channel(false);
        let (stop_services, services_stopped) = watch::channel(false);
        let mut services = self
            .embedded
            .map(|services| services.spawn(services_stopped, self.stopping.subscribe()));
        let stopped = |mut receiver: watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        };
        let stop_streams = self.stopping;
        tokio::spawn(async move {
            shutdown.await;
            // Open streams never end by themselves: without being told, they
            // would hold the shutdown for its whole grace and then be cut.
            stop_streams.send_replace(true);
            let _ = stop_edge.send(true);
        });

        let grpc = with_grace(stopped(edge_stopped.clone()), |stop| {
            self.edge.serve(self.grpc, stop)
        });
        let http = with_grace(stopped(edge_stopped), |stop| {
            // `incoming` sets TCP_NODELAY (small JSON answers must not wait for
            // delayed ACKs); `tap_io` is what lets axum give any listener's peer
            // address to `ConnectInfo`.
            let listener = HttpListener(incoming(self.http, self.tls)).tap_io(|_| {});
            // The peer's address, for the client address of logins and
            // registrations.
            let app = self
                .http_router
                .into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .into_future()
        });
        let (grpc, http) = tokio::join!(grpc, http);

        let _ = stop_services.send(true);
        if let Some(services) = services.as_mut() {
            while let Some(result) = services.join_next().await {
                if let Ok(Err(error)) = result {
                    tracing::error!(%error, "an embedded service stopped with an error");
                }
            }
        }
        grpc.unwrap_or(Ok(())).map_err(std::io::Error::other)?;
        http.unwrap_or(Ok(()))
    }
}

impl Serve for Gateway {
    type Error = std::io::Error;

    fn announce(&self, name: &str) {
        let transport = tls::transport(self.tls.as_ref());
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut listeners = format!(
            "grpc {} {transport}, http {} {transport}",
            self.grpc_addr(),
            self.http_addr()
        );
        // The services it runs itself listen too: on loopback, in plaintext
        // (the gateway calls them in-process).
        if let Some(embedded) = &self.embedded {
            for (service, url) in [
                ("auth-service", &embedded.urls.auth),
                ("posts-service", &embedded.urls.posts),
                ("votes-service", &embedded.urls.votes),
            ] {
                let address = url.trim_start_matches("http://");
                listeners += &format!(", {service} {address} plaintext");
            }
        }
        tracing::info!(
            listeners = listeners.as_str(),
            http = %format!("{scheme}://{}", self.http_addr()),
            docs = %format!("{scheme}://{}/docs", self.http_addr()),
            services = if self.is_embedded() { "embedded" } else { "upstream" },
            "{name} listening"
        );
    }

    fn run_until_stopped(self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run_until(service_kit::shutdown_signal())
    }
}

/// The HTTP port's connections, plaintext or TLS, for `axum::serve`.
struct HttpListener(Incoming);

impl Listener for HttpListener {
    type Io = ServerIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let error = match self.0.accept().await {
                Ok(io) => match io.remote_addr() {
                    Ok(peer) => return (io, peer),
                    // Gone already.
                    Err(_) => continue,
                },
                Err(error) => error,
            };
            // As axum does for its own listener: a connection that failed before
            // it was accepted is the client's business; anything else (too many
            // open files, say) needs a moment before accepting again.
            use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
            if !matches!(
                error.kind(),
                ConnectionAborted | ConnectionRefused | ConnectionReset
            ) {
                tracing::error!(%error, "cannot accept an http connection");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
