//! Connecting to PostgreSQL at start-up: create the database if it is missing, open
//! the pool, apply the migrations.

use std::{collections::HashSet, time::Duration};

use secrecy::ExposeSecret;
use sqlx::{
    Connection, PgConnection, PgPool,
    migrate::{Migrate, MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::DatabaseArgs;

/// The whole schema history of all services, in order. Every service applies it
/// at start-up; sqlx holds an advisory lock meanwhile, so concurrent starts are safe.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The form a database URL must have.
pub const URL_FORM: &str = "postgres://user[:password]@host:port/database";

/// What to do when the server is elsewhere.
const ELSEWHERE: &str = "set DATABASE_URL (or --database-url) to use another PostgreSQL";

/// Why the database could not be made ready, one variant per thing a person
/// would do about it. The messages name the URL without its password.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// Not a PostgreSQL URL at all (`localhost:5432`, a typo in the scheme).
    #[error("DATABASE_URL {url:?} is not a PostgreSQL URL: it must be {URL_FORM} ({reason})")]
    BadUrl { url: String, reason: String },
    /// Nothing answered at the host and port, or the connection broke.
    #[error("cannot reach PostgreSQL at {url}: {}; is it running there? {ELSEWHERE}", describe(.source))]
    Unreachable { url: String, source: sqlx::Error },
    /// The server answered but would not let the role in.
    #[error(
        "PostgreSQL at {url} refused the login: {}; check the user and password in the URL, \
         or {ELSEWHERE}",
        describe(.source)
    )]
    Authentication { url: String, source: sqlx::Error },
    /// The database is missing and the role may not create it.
    #[error(
        "the database {database:?} does not exist at {url}, and role {role:?} cannot create it: \
         {}; create it (`create database {database} owner {role}`) or let the role \
         create databases (`alter role {role} createdb`)",
        describe(.source)
    )]
    CannotCreate {
        url: String,
        database: String,
        role: String,
        source: sqlx::Error,
    },
    /// Connected, but something else went wrong on the way.
    #[error("PostgreSQL at {url} failed: {}", describe(.source))]
    Failed { url: String, source: sqlx::Error },
    #[error("cannot apply migrations to {url}: {source}")]
    Migration { url: String, source: MigrateError },
}

/// A pool on a database that exists and has every migration applied.
pub async fn connect(args: &DatabaseArgs) -> Result<PgPool, DatabaseError> {
    let url = args.redacted_url();
    let options = parse(args)?;
    // The database usually exists: connect to it first, and only when the server
    // says it is missing, go through the maintenance database to create it.
    let mut conn = match PgConnection::connect_with(&options).await {
        Ok(conn) => conn,
        Err(error) if has_code(&error, "3D000") => {
            create_database(args, &options).await?;
            PgConnection::connect_with(&options)
                .await
                .map_err(|source| classify(&url, source))?
        }
        Err(error) => return Err(classify(&url, error)),
    };
    // Migrations may take long (an index on a big table): they run on this
    // connection of their own, without the serving limits.
    migrate(&mut conn)
        .await
        .map_err(|source| DatabaseError::Migration {
            url: url.clone(),
            source,
        })?;
    let _ = conn.close().await;

    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(Duration::from_secs(args.database_acquire_timeout_secs))
        .connect_with(options.options(serving_limits()))
        .await
        .map_err(|source| classify(&url, source))?;
    crate::metrics::watch_pool(pool.clone());
    Ok(pool)
}

/// Checks the URL's shape before anything is sent, so that `localhost:5432`
/// is not taken for a URL with the scheme `localhost`.
fn parse(args: &DatabaseArgs) -> Result<PgConnectOptions, DatabaseError> {
    let raw = args.database_url.expose_secret();
    let bad = |reason: String| DatabaseError::BadUrl {
        url: args.redacted_url(),
        reason,
    };
    let parsed = url::Url::parse(raw).map_err(|error| bad(error.to_string()))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(bad(format!(
            "it starts with {:?}, not postgres://",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) && !raw.contains("host=") {
        return Err(bad("it names no host".to_owned()));
    }
    raw.parse()
        .map_err(|error: sqlx::Error| bad(error.to_string()))
}

/// Creates the database `options` names, through the maintenance database, as
/// `createdb` does.
async fn create_database(
    args: &DatabaseArgs,
    options: &PgConnectOptions,
) -> Result<(), DatabaseError> {
    let url = args.redacted_url();
    let database = options
        .get_database()
        .unwrap_or(options.get_username())
        .to_owned();
    let maintenance = if database == "postgres" {
        "template1"
    } else {
        "postgres"
    };
    let mut conn = PgConnection::connect_with(&options.clone().database(maintenance))
        .await
        .map_err(|source| classify(&url, source))?;
    let create = format!("create database \"{}\"", database.replace('"', "\"\""));
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    match created {
        Ok(_) => {
            tracing::info!(%url, "created the database");
            Ok(())
        }
        // Another service may have created it a moment ago.
        Err(error) if has_code(&error, "42P04") => Ok(()),
        // 42501 insufficient_privilege: the role lacks CREATEDB.
        Err(source) if has_code(&source, "42501") => Err(DatabaseError::CannotCreate {
            url,
            database,
            role: options.get_username().to_owned(),
            source,
        }),
        Err(source) => Err(classify(&url, source)),
    }
}

/// Applies every migration not yet applied, and says which, or that there were
/// none. The advisory lock is held around the whole, so what is logged is what
/// this process applied, even when several start at once.
async fn migrate(conn: &mut PgConnection) -> Result<(), MigrateError> {
    conn.lock().await?;
    let result = async {
        let before = applied_versions(conn).await?;
        // Takes the same lock again (advisory locks nest within a session).
        MIGRATOR.run(&mut *conn).await?;
        Ok::<_, MigrateError>(before)
    }
    .await;
    let unlocked = conn.unlock().await;
    let before = result?;
    unlocked?;
    let applied: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !before.contains(&m.version))
        .map(|m| m.version)
        .collect();
    let latest = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .max()
        .unwrap_or_default();
    if applied.is_empty() {
        tracing::info!(version = latest, "database schema up to date");
    } else {
        tracing::info!(applied = ?applied, version = latest, "applied database migrations");
    }
    Ok(())
}

/// The migrations already applied, none when the table is not there yet.
async fn applied_versions(conn: &mut PgConnection) -> Result<HashSet<i64>, MigrateError> {
    let table = MIGRATOR.table_name.as_ref();
    let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(HashSet::new());
    }
    Ok(conn
        .list_applied_migrations(table)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect())
}

/// Which of the failures a person tells apart `error` is.
fn classify(url: &str, source: sqlx::Error) -> DatabaseError {
    let url = url.to_owned();
    let code = source
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned());
    match code.as_deref() {
        // 28000 invalid_authorization_specification (no such role, not
        // permitted to log in, no pg_hba.conf entry), 28P01 invalid_password.
        Some("28000" | "28P01") => DatabaseError::Authentication { url, source },
        // 08xxx connection exceptions; 57P03 cannot_connect_now (starting up).
        Some(code) if code.starts_with("08") || code == "57P03" => {
            DatabaseError::Unreachable { url, source }
        }
        Some(_) => DatabaseError::Failed { url, source },
        None => match source {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
                DatabaseError::Unreachable { url, source }
            }
            _ => DatabaseError::Failed { url, source },
        },
    }
}

/// What the server said, without sqlx's framing ("error returned from database",
/// the line of PostgreSQL's own source); anything else as sqlx says it.
fn describe(error: &sqlx::Error) -> String {
    match error.as_database_error() {
        Some(database) => database.message().to_owned(),
        None => error.to_string(),
    }
}

fn has_code(error: &sqlx::Error, expected: &str) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == expected)
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
