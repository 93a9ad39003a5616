//! Starting a service: the one way every Agora service binary connects to the
//! database, builds its API, binds and serves.

use std::{future::Future, net::SocketAddr, process::ExitCode};

use sqlx::PgPool;

use crate::{
    BindError, CommonArgs, GrpcServer, ServedApi,
    config::KeyConfigError,
    database::{DatabaseError, MigrationMode},
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
    if let Err(error) = load_env_file() {
        eprintln!("{}: {error}", C::NAME);
        return ExitCode::FAILURE;
    }
    run(C::parse()).await
}

/// The file of settings every binary reads at start-up, from its working directory.
pub const ENV_FILE: &str = ".env";

/// Why [`ENV_FILE`] could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read {ENV_FILE}: {0}")]
    Unreadable(std::io::Error),
    #[error("{ENV_FILE} line {number} is not `NAME=value`: {line}")]
    Malformed { number: usize, line: String },
}

/// Sets the variables of `.env` in the working directory (if there is one) that
/// the environment does not already set: the real environment wins, as dotenv
/// users expect. A missing file is no error. Call first thing in `main`, before
/// the settings are parsed and before any other thread reads the environment.
pub fn load_env_file() -> Result<(), EnvFileError> {
    let text = match std::fs::read_to_string(ENV_FILE) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(EnvFileError::Unreadable(error)),
    };
    match dotenvy::from_read(text.as_bytes()) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::LineParse(line, _)) => {
            // dotenvy names the line by its text; a person wants its number. A
            // value continued over several lines is reported by its first.
            let first = line.lines().next().unwrap_or_default().trim_end();
            let number = text
                .lines()
                .position(|candidate| candidate.trim_end() == first)
                .map_or(0, |index| index + 1);
            Err(EnvFileError::Malformed {
                number,
                line: first.to_owned(),
            })
        }
        Err(dotenvy::Error::Io(error)) => Err(EnvFileError::Unreadable(error)),
        Err(other) => Err(EnvFileError::Unreadable(std::io::Error::other(
            other.to_string(),
        ))),
    }
}

/// [`main`] with a configuration already read.
pub async fn run<C: ServiceConfig>(config: C) -> ExitCode {
    let (listen, common) = config.server();
    if let Err(error) = crate::telemetry::init(C::NAME, common.log_format) {
        tracing::error!(%error, "{} cannot start", C::NAME);
        return ExitCode::FAILURE;
    }
    if common.database.database_migrations == MigrationMode::ApplyAndExit && !common.health_check {
        return crate::database::run_migration_job(C::NAME, &common.database).await;
    }
    if !common.health_check
        && let Err(error) = crate::metrics::install(C::NAME, &common.metrics)
    {
        tracing::error!(%error, "{} cannot serve its metrics", C::NAME);
        return ExitCode::FAILURE;
    }
    crate::serve_or_check(C::NAME, listen, common, build(&config)).await
}
