//! Connecting to PostgreSQL at start-up: create the database if it is missing,
//! apply the migrations (or wait until a migration job has), open the pool,
//! straight to PostgreSQL or through PgBouncer ([`Pooler`]).

use std::{
    collections::HashMap,
    process::ExitCode,
    time::{Duration, Instant},
};

use secrecy::ExposeSecret;
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    migrate::{AppliedMigration, Migrate, MigrateError, Migration, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::DatabaseArgs;

/// The whole schema history of all services, in order. Every service applies it
/// at start-up, unless told to leave that to a migration job
/// ([`MigrationMode`]); sqlx's advisory lock makes concurrent starts safe.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// What start-up does about the schema (`DATABASE_MIGRATIONS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrationMode {
    /// Create the database if missing and apply the migrations it lacks, then
    /// serve: one binary, docker-compose, a developer machine.
    #[default]
    Apply,
    /// Change nothing: wait until every migration this binary knows is applied
    /// (by a migration job), then serve. For Kubernetes.
    Verify,
    /// Create and migrate as `apply` does, then exit without serving: the
    /// migration job.
    ApplyAndExit,
}

/// What `DATABASE_URL` leads to (`DATABASE_POOLER`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooler {
    /// PostgreSQL itself: each pooled connection is a session of its own, given
    /// its statement and lock timeouts when it opens.
    #[default]
    None,
    /// PgBouncer with `pool_mode = transaction`, which lends a server connection
    /// to one transaction at a time, so that nothing may rest on a session. It
    /// must be 1.21 or newer, with `max_prepared_statements` above the number of
    /// statements the services prepare (200 is ample): see [`connect`]. The
    /// statement and lock timeouts must then be set on the role or the database
    /// (`alter role … set statement_timeout = '3s'`, `… lock_timeout = '1s'`),
    /// and migrations go straight to PostgreSQL: `apply` is refused.
    Pgbouncer,
}

/// How often `verify` looks at the schema again while migrations are missing.
const VERIFY_INTERVAL: Duration = Duration::from_secs(2);
/// How often `verify` says again that it still waits.
const WAITING_NOTICE_INTERVAL: Duration = Duration::from_secs(30);
/// The longest pause between two attempts at a migration that gave up on a lock.
const MAX_LOCK_RETRY_PAUSE: Duration = Duration::from_secs(30);

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
    /// Migrations asked of a binary that reaches PostgreSQL through PgBouncer.
    #[error(
        "DATABASE_MIGRATIONS={mode} cannot run through PgBouncer (DATABASE_POOLER=pgbouncer) \
         at {url}: migrations hold a session's advisory lock and settings, which transaction \
         pooling does not keep; migrate with a job of its own on a direct DATABASE_URL \
         (DATABASE_MIGRATIONS=apply-and-exit, DATABASE_POOLER=none), and start this binary \
         with DATABASE_MIGRATIONS=verify"
    )]
    MigrationsThroughPooler { url: String, mode: &'static str },
    /// Through PgBouncer, the server would let statements run without a limit.
    #[error(
        "through PgBouncer (DATABASE_POOLER=pgbouncer) at {url}, statements would run without \
         a time limit: role {role:?} in database {database:?} has statement_timeout \
         {statement_timeout}ms and lock_timeout {lock_timeout}ms (0 is none), and a pooler keeps \
         no setting a connection makes; set them on the server, as a direct connection sets \
         them itself: `alter role \"{role}\" in database \"{database}\" set statement_timeout \
         = '{}ms'` and `... set lock_timeout = '{}ms'` (or `alter database ... set`), then \
         start again",
        STATEMENT_TIMEOUT.as_millis(),
        LOCK_TIMEOUT.as_millis()
    )]
    UnboundedTimeouts {
        url: String,
        role: String,
        database: String,
        /// Milliseconds; 0 is none.
        statement_timeout: i64,
        lock_timeout: i64,
    },
    /// `verify` found applied migrations that contradict this binary's.
    #[error("cannot verify the migrations applied to {url}: {source}")]
    Verification { url: String, source: MigrateError },
    /// A migration kept waiting for a lock that a transaction held.
    #[error(
        "migration {version} gave up at {url} after {attempts} attempts, each waiting \
         {}s for a lock (DATABASE_MIGRATION_LOCK_TIMEOUT_SECS): a long transaction holds \
         a lock on a table it changes; let that transaction finish or end it \
         (pg_stat_activity shows it), then migrate again",
        .timeout.as_secs()
    )]
    LockTimeout {
        url: String,
        version: i64,
        attempts: u32,
        timeout: Duration,
    },
}

/// A pool on a database that exists and has every migration applied: applied
/// here, or by a migration job when `args` says `verify`.
///
/// Through PgBouncer in transaction mode ([`Pooler::Pgbouncer`]) the pool sets
/// nothing per session: PgBouncer refuses `options` in the startup packet (a
/// newer one, the settings there that it does not track, timeouts among them),
/// and a `SET` would stay on whichever server connection ran it, for whichever
/// client comes next. The server's own timeouts are checked instead. sqlx's
/// statements need PgBouncer to track prepared statements (1.21 or newer,
/// `max_prepared_statements`): sqlx names each statement it prepares and
/// describes it in a round trip before the one that runs it, and an older
/// PgBouncer may send the two to different server connections, where the
/// name is unknown, or belongs to another client's statement. Its unnamed
/// statements fare no better (the second round trip may bind another client's
/// unnamed statement: a wrong answer, not an error), and with its statement
/// cache off sqlx 0.9 still names every statement (leaving one behind on the
/// server per execution), so no setting of sqlx makes an older PgBouncer safe.
pub async fn connect(args: &DatabaseArgs) -> Result<PgPool, DatabaseError> {
    let url = args.redacted_url();
    let options = parse(args)?;
    match args.database_migrations {
        MigrationMode::Apply | MigrationMode::ApplyAndExit => apply(args, &options).await?,
        MigrationMode::Verify => wait_until_migrated(args, &options).await?,
    }
    let serving = match args.database_pooler {
        Pooler::None => options.options(serving_limits()),
        Pooler::Pgbouncer => options,
    };
    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        // Each acquire's wait, as an event the metrics turn into a histogram.
        .acquire_time_level(log::LevelFilter::Debug)
        .acquire_timeout(Duration::from_secs(args.database_acquire_timeout_secs))
        .connect_with(serving)
        .await
        .map_err(|source| classify(&url, source))?;
    if args.database_pooler == Pooler::Pgbouncer
        && let Err(error) = check_server_limits(&url, &pool).await
    {
        pool.close().await;
        return Err(error);
    }
    crate::metrics::watch_pool(pool.clone());
    Ok(pool)
}

/// Through a pooler the serving limits come from the server (the role's or the
/// database's settings): refuses a server that would let a statement, or a wait
/// for a lock, run without end, and says so when its limits are looser than a
/// direct connection's.
async fn check_server_limits(url: &str, pool: &PgPool) -> Result<(), DatabaseError> {
    let (role, database, statement_timeout, lock_timeout): (String, String, i64, i64) =
        sqlx::query_as(
            "select current_user::text, current_database()::text,
                    (select setting::int8 from pg_settings where name = 'statement_timeout'),
                    (select setting::int8 from pg_settings where name = 'lock_timeout')",
        )
        .fetch_one(pool)
        .await
        .map_err(|source| classify(url, source))?;
    let ms = |millis: i64| format!("{millis}ms");
    if statement_timeout == 0 || lock_timeout == 0 {
        return Err(DatabaseError::UnboundedTimeouts {
            url: url.to_owned(),
            role,
            database,
            statement_timeout,
            lock_timeout,
        });
    }
    let looser =
        |millis: i64, limit: Duration| u128::from(millis.unsigned_abs()) > limit.as_millis();
    if looser(statement_timeout, STATEMENT_TIMEOUT) || looser(lock_timeout, LOCK_TIMEOUT) {
        tracing::warn!(
            statement_timeout = ms(statement_timeout),
            lock_timeout = ms(lock_timeout),
            direct_statement_timeout = ms(STATEMENT_TIMEOUT.as_millis() as i64),
            direct_lock_timeout = ms(LOCK_TIMEOUT.as_millis() as i64),
            "the server's timeouts are looser than those of a direct connection: statements may run on after their calls gave up"
        );
    } else {
        tracing::info!(
            statement_timeout = ms(statement_timeout),
            lock_timeout = ms(lock_timeout),
            "serving through PgBouncer, with the timeouts the server sets"
        );
    }
    Ok(())
}

/// Creates the database if it is missing and applies the migrations it lacks,
/// as a migration job does; opens no pool.
pub async fn migrate(args: &DatabaseArgs) -> Result<(), DatabaseError> {
    apply(args, &parse(args)?).await
}

/// A binary's whole run with `DATABASE_MIGRATIONS=apply-and-exit`: migrate, say
/// so, and exit without serving.
pub async fn run_migration_job(name: &str, args: &DatabaseArgs) -> ExitCode {
    match migrate(args).await {
        Ok(()) => {
            tracing::info!(
                "{name} migrated the database and exits (DATABASE_MIGRATIONS=apply-and-exit)"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "{name} cannot migrate the database");
            ExitCode::FAILURE
        }
    }
}

/// Creates the database if it is missing, then migrates it on a connection of
/// its own.
async fn apply(args: &DatabaseArgs, options: &PgConnectOptions) -> Result<(), DatabaseError> {
    let url = args.redacted_url();
    if args.database_pooler == Pooler::Pgbouncer {
        let mode = match args.database_migrations {
            MigrationMode::ApplyAndExit => "apply-and-exit",
            MigrationMode::Apply | MigrationMode::Verify => "apply",
        };
        return Err(DatabaseError::MigrationsThroughPooler { url, mode });
    }
    // A migration may well be slow (an index on a big table): sqlx would log
    // its whole text as a slow statement.
    let options = &options.clone().disable_statement_logging();
    // The database usually exists: connect to it first, and only when the server
    // says it is missing, go through the maintenance database to create it.
    let mut conn = match PgConnection::connect_with(options).await {
        Ok(conn) => conn,
        Err(error) if has_code(&error, "3D000") => {
            create_database(args, options).await?;
            PgConnection::connect_with(options)
                .await
                .map_err(|source| classify(&url, source))?
        }
        Err(error) => return Err(classify(&url, error)),
    };
    // Migrations may take long (an index on a big table): they run on this
    // connection of their own, without the serving limits.
    let migrated = migrate_locked(&mut conn, args).await;
    let _ = conn.close().await;
    migrated.map_err(|failure| match failure {
        Failure::Migrate(source) => DatabaseError::Migration { url, source },
        Failure::LockTimeout(version) => DatabaseError::LockTimeout {
            url,
            version,
            attempts: args.database_migration_lock_retries.saturating_add(1),
            timeout: Duration::from_secs(args.database_migration_lock_timeout_secs),
        },
    })
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
    let options: PgConnectOptions = raw
        .parse()
        .map_err(|error: sqlx::Error| bad(error.to_string()))?;
    Ok(match args.database_pooler {
        Pooler::None => options,
        // PgBouncer refuses startup parameters it does not track, unless told to
        // ignore them; this one only shapes floats sent as text, and sqlx's
        // prepared statements send them in binary.
        Pooler::Pgbouncer => options.extra_float_digits(None),
    })
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

/// Why migrating failed.
enum Failure {
    Migrate(MigrateError),
    /// Migration `version` gave up waiting for a lock.
    LockTimeout(i64),
}

impl From<MigrateError> for Failure {
    fn from(error: MigrateError) -> Self {
        Self::Migrate(error)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Migrate(error.into())
    }
}

/// Applies every migration not yet applied, and says which, or that there were
/// none. The advisory lock is held around the whole, retries included, so what
/// is logged is what this process applied, even when several start at once.
async fn migrate_locked(conn: &mut PgConnection, args: &DatabaseArgs) -> Result<(), Failure> {
    // A migration may take long (an index on a big table), whatever statement
    // timeout the role or the database sets for the services (as they must
    // behind PgBouncer).
    set_session_timeout(conn, "statement_timeout", Duration::ZERO).await?;
    // Waiting for another process's migrations is fine, however long they take:
    // only the waits of this one's own statements are bounded.
    set_lock_timeout(conn, Duration::ZERO).await?;
    conn.lock().await?;
    let mut applied = Vec::new();
    let result = async {
        prepare_table(conn).await?;
        apply_with_retries(conn, args, &mut applied).await
    }
    .await;
    let unlocked = conn.unlock().await;
    let ahead = result?;
    unlocked?;
    let version = latest_known();
    if !applied.is_empty() {
        tracing::info!(?applied, version, "applied database migrations");
    }
    if !ahead.is_empty() {
        say_ahead(&ahead);
    } else if applied.is_empty() {
        tracing::info!(version, "database schema up to date");
    }
    Ok(())
}

/// [`apply_missing`], tried again after a pause each time a migration gave up
/// waiting for a lock; the versions the database has beyond this binary's.
async fn apply_with_retries(
    conn: &mut PgConnection,
    args: &DatabaseArgs,
    applied: &mut Vec<i64>,
) -> Result<Vec<i64>, Failure> {
    let lock_timeout = Duration::from_secs(args.database_migration_lock_timeout_secs);
    let mut pause = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match apply_missing(conn, lock_timeout, applied).await {
            Err(Failure::LockTimeout(version))
                if attempt <= args.database_migration_lock_retries =>
            {
                tracing::warn!(
                    version,
                    attempt,
                    retry_in = ?pause,
                    "migration gave up waiting for a lock held by another transaction; trying again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_LOCK_RETRY_PAUSE);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Applies, in order, the migrations the database lacks, each statement waiting
/// at most `lock_timeout` for a lock; the versions the database has beyond
/// this binary's.
async fn apply_missing(
    conn: &mut PgConnection,
    lock_timeout: Duration,
    applied: &mut Vec<i64>,
) -> Result<Vec<i64>, Failure> {
    let schema = read_schema(conn).await?;
    for migration in schema.missing {
        // CONCURRENTLY blocks no call while it waits (its lock lets reads and
        // writes through), and giving up halfway would leave an invalid index
        // behind that `if not exists` would then take for a whole one.
        let timeout = if migration.no_tx {
            Duration::ZERO
        } else {
            lock_timeout
        };
        set_lock_timeout(conn, timeout).await?;
        match conn.apply(&MIGRATOR.table_name, migration).await {
            Ok(_) => applied.push(migration.version),
            Err(MigrateError::ExecuteMigration(error, version)) if is_lock_timeout(&error) => {
                return Err(Failure::LockTimeout(version));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(schema.ahead)
}

/// Creates sqlx's table of applied migrations if it is missing (only then, or
/// PostgreSQL notices at every start that it exists), and refuses a database
/// where a migration stopped halfway.
async fn prepare_table(conn: &mut PgConnection) -> Result<(), MigrateError> {
    let table = MIGRATOR.table_name.as_ref();
    if !table_exists(conn).await? {
        conn.ensure_migrations_table(table).await?;
    }
    match conn.dirty_version(table).await? {
        Some(version) => Err(MigrateError::Dirty(version)),
        None => Ok(()),
    }
}

async fn table_exists(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(MIGRATOR.table_name.as_ref())
        .fetch_one(conn)
        .await
}

async fn set_lock_timeout(conn: &mut PgConnection, timeout: Duration) -> Result<(), sqlx::Error> {
    set_session_timeout(conn, "lock_timeout", timeout).await
}

/// Sets timeout `name` for the rest of the session; zero is none.
async fn set_session_timeout(
    conn: &mut PgConnection,
    name: &str,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query("select set_config($1, $2, false)")
        .bind(name)
        .bind(format!("{}ms", timeout.as_millis()))
        .execute(conn)
        .await
        .map(drop)
}

/// 55P03 lock_not_available: lock_timeout expired.
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    has_code(error, "55P03")
}

/// How the migrations applied to a database stand against this binary's.
struct Schema {
    /// This binary's migrations not applied yet, in order.
    missing: Vec<&'static Migration>,
    /// Applied migrations newer than any this binary knows: a later release
    /// migrated the database, and expand-then-contract keeps it usable here.
    ahead: Vec<i64>,
}

/// Compares what is applied with what this binary knows. A migration applied
/// with other contents, or one unknown here yet older than this binary's
/// latest (histories that diverged), is an error, as sqlx has it; unknown
/// newer ones are not.
fn compare(applied: &[AppliedMigration]) -> Result<Schema, MigrateError> {
    let applied: HashMap<i64, &AppliedMigration> = applied.iter().map(|m| (m.version, m)).collect();
    let mut missing = Vec::new();
    for migration in up_migrations() {
        match applied.get(&migration.version) {
            Some(done) if done.checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
            None => missing.push(migration),
        }
    }
    let latest = latest_known();
    let mut ahead = Vec::new();
    for &version in applied.keys() {
        if MIGRATOR.version_exists(version) {
            continue;
        }
        if version < latest {
            return Err(MigrateError::VersionMissing(version));
        }
        ahead.push(version);
    }
    ahead.sort_unstable();
    Ok(Schema { missing, ahead })
}

fn up_migrations() -> impl Iterator<Item = &'static Migration> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
}

fn latest_known() -> i64 {
    up_migrations().map(|m| m.version).max().unwrap_or_default()
}

fn say_ahead(ahead: &[i64]) {
    tracing::info!(
        ?ahead,
        version = latest_known(),
        "database schema is ahead of this binary, which serves on it (migrations expand before they contract)"
    );
}

/// `verify`: waits, changing nothing, until every migration this binary knows
/// is applied, saying what it waits for at first and then now and then.
async fn wait_until_migrated(
    args: &DatabaseArgs,
    options: &PgConnectOptions,
) -> Result<(), DatabaseError> {
    let url = args.redacted_url();
    let mut said: Option<Instant> = None;
    loop {
        let missing = match PgConnection::connect_with(options).await {
            Ok(mut conn) => {
                let schema = read_schema(&mut conn).await;
                let _ = conn.close().await;
                let schema = schema.map_err(|source| DatabaseError::Verification {
                    url: url.clone(),
                    source,
                })?;
                if schema.missing.is_empty() {
                    if schema.ahead.is_empty() {
                        tracing::info!(version = latest_known(), "database schema up to date");
                    } else {
                        say_ahead(&schema.ahead);
                    }
                    return Ok(());
                }
                Some(schema.missing.iter().map(|m| m.version).collect::<Vec<_>>())
            }
            // The migration job creates it.
            Err(error) if has_code(&error, "3D000") => None,
            Err(error) => return Err(classify(&url, error)),
        };
        if said.is_none_or(|at| at.elapsed() >= WAITING_NOTICE_INTERVAL) {
            match missing {
                Some(missing) => tracing::info!(
                    ?missing,
                    "database schema lacks migrations this binary needs; waiting for the migration job (DATABASE_MIGRATIONS=apply-and-exit)"
                ),
                None => tracing::info!(
                    %url,
                    "database does not exist yet; waiting for the migration job (DATABASE_MIGRATIONS=apply-and-exit)"
                ),
            }
            said = Some(Instant::now());
        }
        tokio::time::sleep(VERIFY_INTERVAL).await;
    }
}

/// What is applied, read without creating anything.
async fn read_schema(conn: &mut PgConnection) -> Result<Schema, MigrateError> {
    let applied = if table_exists(conn).await? {
        conn.list_applied_migrations(&MIGRATOR.table_name).await?
    } else {
        Vec::new()
    };
    compare(&applied)
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
