//! Starting a service: the one way every Agora service binary connects to the
//! database, builds its API, binds and serves.

use std::{future::Future, net::SocketAddr, process::ExitCode};

use sqlx::PgPool;

use crate::{
    BindError, CommonArgs, GrpcServer, ServedApi, config::KeyConfigError, database::DatabaseError,
    tls::TlsError,
};

/// A service's configuration, which is all it takes to start the service.
pub trait ServiceConfig: clap::Parser + Sync {
    /// The binary's name, for log lines.
    const NAME: &'static str;

    /// Where it listens, and the settings every server takes.
    fn server(&self) -> (SocketAddr, &CommonArgs);

    /// The service's gRPC API on an already migrated database.
    fn served_api(
        &self,
        pool: PgPool,
    ) -> impl Future<Output = Result<ServedApi, StartupError>> + Send;
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Keys(#[from] KeyConfigError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A setting of the service's own that cannot be used.
    #[error("{0}")]
    Config(String),
}

/// Connects to the database (creating and migrating it as needed) and binds the
/// service.
pub async fn build<C: ServiceConfig>(config: &C) -> Result<GrpcServer, StartupError> {
    let pool = crate::database::connect(&config.server().1.database).await?;
    build_with_pool(config, pool).await
}

/// Binds the service on an already migrated database, serving TLS when its
/// settings say so.
pub async fn build_with_pool<C: ServiceConfig>(
    config: &C,
    pool: PgPool,
) -> Result<GrpcServer, StartupError> {
    let (listen, common) = config.server();
    // Bad TLS files stop the start before anything else is set up.
    let tls = common.tls.acceptor()?;
    let api = config.served_api(pool).await?;
    Ok(GrpcServer::bind(listen, common.limits.clone(), api)
        .await?
        .with_tls(tls))
}

/// A service binary's whole `main`: read the configuration, set up logging, then
/// serve until a shutdown signal (or check health, with `--health-check`).
pub async fn main<C: ServiceConfig>() -> ExitCode {
    run(C::parse()).await
}

/// [`main`] with a configuration already read.
pub async fn run<C: ServiceConfig>(config: C) -> ExitCode {
    let (listen, common) = config.server();
    crate::telemetry::init(common.log_format);
    crate::serve_or_check(C::NAME, listen, common, build(&config)).await
}
