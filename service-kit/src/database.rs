//! Connecting to PostgreSQL at start-up: create the database if it is missing, open
//! the pool, apply the migrations.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, MigrateError, Migrator},
    postgres::PgPoolOptions,
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
    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(Duration::from_secs(args.database_acquire_timeout_secs))
        .connect(url)
        .await
        .map_err(unreachable)?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|source| DatabaseError::Migration {
            url: args.redacted_url(),
            source,
        })?;
    Ok(pool)
}

fn is_duplicate_database(error: &sqlx::Error) -> bool {
    // 42P04 duplicate_database
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42P04")
}
