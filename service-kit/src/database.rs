//! Connecting to PostgreSQL at start-up: create the database if it is missing, open
//! the pool, apply the migrations.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{
    Connection, PgConnection, PgPool, Postgres,
    migrate::{MigrateDatabase, MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::DatabaseArgs;

/// The whole schema history of all services, in order. Every service applies it
/// at start-up; sqlx holds an advisory lock meanwhile, so concurrent starts are safe.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Why the database could not be made ready. The messages name the URL without
/// its password.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot reach PostgreSQL at {url}: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error("cannot apply migrations to {url}: {source}")]
    Migration { url: String, source: MigrateError },
}

/// A pool on a database that exists and has every migration applied.
pub async fn connect(args: &DatabaseArgs) -> Result<PgPool, DatabaseError> {
    let url = args.database_url.expose_secret();
    let unreachable = |source| DatabaseError::Unreachable {
        url: args.redacted_url(),
        source,
    };
    if !Postgres::database_exists(url).await.map_err(unreachable)? {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(url = %args.redacted_url(), "created the database"),
            // Another service may have created it a moment ago.
            Err(error) if is_duplicate_database(&error) => {}
            Err(error) => return Err(unreachable(error)),
        }
    }
    // Migrations may take long (an index on a big table): they run on a
    // connection of their own, without the serving limits.
    let options: PgConnectOptions = url.parse().map_err(unreachable)?;
    let mut migration_conn = PgConnection::connect_with(&options)
        .await
        .map_err(unreachable)?;
    MIGRATOR
        .run(&mut migration_conn)
        .await
        .map_err(|source| DatabaseError::Migration {
            url: args.redacted_url(),
            source,
        })?;
    let _ = migration_conn.close().await;

    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(Duration::from_secs(args.database_acquire_timeout_secs))
        .connect_with(options.options(serving_limits()))
        .await
        .map_err(unreachable)?;
    Ok(pool)
}

/// Every serving connection gives up on a statement long before the calls that
/// need it would (sqlx cannot cancel a statement that is running, so the
/// database must), and on a lock sooner still.
fn serving_limits() -> [(&'static str, String); 2] {
    [
        (
            "statement_timeout",
            format!("{}ms", STATEMENT_TIMEOUT.as_millis()),
        ),
        ("lock_timeout", format!("{}ms", LOCK_TIMEOUT.as_millis())),
    ]
}

/// The longest a statement may run; calls have 30 seconds by default
/// (`REQUEST_TIMEOUT_SECS`), and a hop to another service 5.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a statement waits for a row lock another holds.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

fn is_duplicate_database(error: &sqlx::Error) -> bool {
    // 42P04 duplicate_database
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42P04")
}
