//! Migrations fit a rolling upgrade: a binary serves on a schema a later release
//! has migrated further, `verify` waits for a migration job without changing
//! anything, and a migration that waits for a lock gives up quickly, tries again,
//! and says why when it never gets it.
//!
//! Runs against the test server (`DATABASE_URL`), each test on databases of its
//! own.

use std::{
    future::Future,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use service_kit::{
    DatabaseArgs,
    database::{self, DatabaseError, MIGRATOR, MigrationMode},
};
use sqlx::{Connection, PgConnection, PgPool};
use tracing::instrument::WithSubscriber;

/// A version no release will reach for a long time: a later release's migration.
const NEWER: i64 = 99990101000000;

fn admin_url() -> url::Url {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
    url::Url::parse(&url).expect("DATABASE_URL is a URL")
}

async fn admin(sql: &str) {
    let mut conn = PgConnection::connect(admin_url().as_str())
        .await
        .expect("the test server answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// A database name of a test's own, not created yet.
struct Scratch {
    name: String,
    url: String,
}

impl Scratch {
    fn new() -> Self {
        let name = format!("agora_upgrade_{}", uuid::Uuid::now_v7().simple());
        let mut url = admin_url();
        url.set_path(&name);
        Self {
            name,
            url: url.to_string(),
        }
    }

    /// The database, created and migrated up to `version` (all of it with
    /// `i64::MAX`).
    async fn migrated_to(version: i64) -> Self {
        let scratch = Self::new();
        admin(&format!("create database {}", scratch.name)).await;
        MIGRATOR
            .run_to(version, &mut scratch.conn().await)
            .await
            .expect("the migrations apply");
        scratch
    }

    fn args(&self, mode: MigrationMode) -> DatabaseArgs {
        DatabaseArgs {
            database_migrations: mode,
            database_migration_lock_timeout_secs: 1,
            ..DatabaseArgs::new(&self.url)
        }
    }

    async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("the scratch database answers")
    }

    async fn exists(&self) -> bool {
        let mut conn = PgConnection::connect(admin_url().as_str()).await.unwrap();
        sqlx::query_scalar("select exists (select from pg_database where datname = $1)")
            .bind(&self.name)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    async fn applied(&self) -> Vec<i64> {
        sqlx::query_scalar("select version from _sqlx_migrations order by version")
            .fetch_all(&mut self.conn().await)
            .await
            .unwrap()
    }

    async fn has_relation(&self, name: &str) -> bool {
        sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(name)
            .fetch_one(&mut self.conn().await)
            .await
            .unwrap()
    }

    async fn drop_now(self) {
        admin(&format!(
            "drop database if exists {} with (force)",
            self.name
        ))
        .await;
    }
}

fn known_versions() -> Vec<i64> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

/// What a future logged at info and above, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Runs `future` on a task of its own, logging here.
    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let log = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || log.clone())
            .finish();
        tokio::spawn(future.with_subscriber(subscriber))
    }

    /// Waits until the log says `needle`, for at most `within`.
    async fn until_it_says(&self, needle: &str, within: Duration) {
        tokio::time::timeout(within, async {
            while !self.text().contains(needle) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the log says {needle:?} in time:\n{}", self.text()));
    }
}

impl io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn serves(pool: &PgPool) {
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_schema_ahead_of_the_binary_is_served_in_apply_and_verify_mode() {
    let scratch = Scratch::migrated_to(i64::MAX).await;
    // As sqlx records a migration that a later release applied.
    sqlx::query(
        "insert into _sqlx_migrations (version, description, success, checksum, execution_time)
         values ($1, 'from a later release', true, '\\x00', 0)",
    )
    .bind(NEWER)
    .execute(&mut scratch.conn().await)
    .await
    .unwrap();

    for mode in [MigrationMode::Apply, MigrationMode::Verify] {
        let log = Log::default();
        let args = scratch.args(mode);
        let connected = log.spawn(async move { database::connect(&args).await });
        let pool = tokio::time::timeout(Duration::from_secs(10), connected)
            .await
            .unwrap_or_else(|_| panic!("{mode:?} does not wait"))
            .unwrap()
            .unwrap_or_else(|error| panic!("{mode:?}: {error}"));
        serves(&pool).await;
        pool.close().await;
        let said = log.text();
        assert!(
            said.contains("database schema is ahead of this binary")
                && said.contains(&NEWER.to_string()),
            "{mode:?} says the schema is ahead, naming the version:\n{said}"
        );
    }
    let mut expected = known_versions();
    expected.push(NEWER);
    assert_eq!(
        scratch.applied().await,
        expected,
        "nothing applied or removed"
    );
    scratch.drop_now().await;
}

#[tokio::test]
async fn an_applied_migration_whose_contents_changed_stays_an_error() {
    let scratch = Scratch::migrated_to(i64::MAX).await;
    sqlx::query("update _sqlx_migrations set checksum = '\\x00' where version = 4")
        .execute(&mut scratch.conn().await)
        .await
        .unwrap();

    for mode in [MigrationMode::Apply, MigrationMode::Verify] {
        let error = database::connect(&scratch.args(mode))
            .await
            .expect_err("a modified migration stops the start");
        let message = error.to_string();
        assert!(
            matches!(
                error,
                DatabaseError::Migration { .. } | DatabaseError::Verification { .. }
            ),
            "{mode:?}: {message}"
        );
        assert!(
            message.contains("migration 4 was previously applied but has been modified"),
            "{mode:?}: {message}"
        );
    }
    scratch.drop_now().await;
}

#[tokio::test]
async fn verify_creates_nothing_and_serves_once_a_migration_job_has_run() {
    let scratch = Scratch::new();
    let log = Log::default();
    let args = scratch.args(MigrationMode::Verify);
    let connected = log.spawn(async move { database::connect(&args).await });

    log.until_it_says(
        "database does not exist yet; waiting for the migration job",
        Duration::from_secs(10),
    )
    .await;
    assert!(!scratch.exists().await, "verify creates no database");

    admin(&format!("create database {}", scratch.name)).await;
    // Longer than verify takes to look again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!connected.is_finished(), "an empty database is not served");
    assert!(
        !scratch.has_relation("_sqlx_migrations").await,
        "verify runs no DDL, not even sqlx's own table"
    );

    database::migrate(&scratch.args(MigrationMode::ApplyAndExit))
        .await
        .expect("the migration job migrates");
    let pool = tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("verify notices the migrations within seconds")
        .unwrap()
        .expect("verify serves");
    serves(&pool).await;
    pool.close().await;
    assert!(
        log.text().contains("database schema up to date"),
        "{}",
        log.text()
    );
    scratch.drop_now().await;
}

/// A connection holding, until it ends its transaction, the lock a transaction
/// that writes to `table` holds.
async fn writing_to(scratch: &Scratch, table: &str) -> PgConnection {
    let mut conn = scratch.conn().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "begin; lock table {table} in row exclusive mode"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn
}

async fn commit(mut conn: PgConnection) {
    sqlx::raw_sql("commit").execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_migration_blocked_by_a_lock_gives_up_tries_again_and_applies_once_it_is_free() {
    // 0010 adds a trigger to votes.votes, which waits for transactions writing
    // likes to end.
    let scratch = Scratch::migrated_to(9).await;
    let writer = writing_to(&scratch, "votes.votes").await;

    let log = Log::default();
    let args = scratch.args(MigrationMode::Apply);
    let connected = log.spawn(async move { database::connect(&args).await });
    log.until_it_says(
        "migration gave up waiting for a lock",
        Duration::from_secs(10),
    )
    .await;
    assert!(log.text().contains("version=10"), "{}", log.text());
    commit(writer).await;

    let pool = tokio::time::timeout(Duration::from_secs(15), connected)
        .await
        .expect("the next attempt applies it")
        .unwrap()
        .expect("the start succeeds");
    serves(&pool).await;
    pool.close().await;
    assert_eq!(scratch.applied().await, known_versions());
    assert!(scratch.has_relation("votes.like_counts").await);
    // Every migration from 10 on, as the one line of the start that applied them.
    let from_ten: Vec<String> = known_versions()
        .into_iter()
        .filter(|version| *version >= 10)
        .map(|version| version.to_string())
        .collect();
    let applied = format!(
        "applied database migrations applied=[{}]",
        from_ten.join(", ")
    );
    assert!(
        log.text().contains(&applied),
        "every migration of every attempt is reported ({applied}):\n{}",
        log.text()
    );
    scratch.drop_now().await;
}

#[tokio::test]
async fn a_migration_whose_lock_is_never_free_fails_saying_what_to_do() {
    let scratch = Scratch::migrated_to(9).await;
    let writer = writing_to(&scratch, "votes.votes").await;

    let args = DatabaseArgs {
        database_migration_lock_retries: 1,
        ..scratch.args(MigrationMode::Apply)
    };
    let error = tokio::time::timeout(Duration::from_secs(15), database::connect(&args))
        .await
        .expect("it gives up in time")
        .expect_err("the start fails");
    let message = error.to_string();
    assert!(
        matches!(
            error,
            DatabaseError::LockTimeout {
                version: 10,
                attempts: 2,
                ..
            }
        ),
        "{message}"
    );
    for expected in [
        "migration 10 gave up",
        "2 attempts",
        "DATABASE_MIGRATION_LOCK_TIMEOUT_SECS",
        "long transaction",
    ] {
        assert!(message.contains(expected), "{expected:?} in: {message}");
    }
    assert_eq!(
        scratch.applied().await.last(),
        Some(&9),
        "nothing of 0010 is left"
    );
    assert!(!scratch.has_relation("votes.like_counts").await);
    // The transaction in the way never noticed.
    commit(writer).await;
    scratch.drop_now().await;
}

#[tokio::test]
async fn a_concurrent_index_build_waits_for_writers_without_a_lock_timeout_and_blocks_no_call() {
    let scratch = Scratch::migrated_to(10).await;
    let writer = writing_to(&scratch, "posts.posts").await;

    // No retry: a lock timeout would fail the start at once.
    let args = DatabaseArgs {
        database_migration_lock_retries: 0,
        ..scratch.args(MigrationMode::Apply)
    };
    let log = Log::default();
    let connected = log.spawn(async move { database::connect(&args).await });
    let mut observer = scratch.conn().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let waiting: bool = sqlx::query_scalar(
                "select exists (select from pg_stat_activity
                  where datname = current_database() and wait_event_type = 'Lock'
                    and query ilike '%create index concurrently%')",
            )
            .fetch_one(&mut observer)
            .await
            .unwrap();
            if waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the index build waits for the writer");

    // Calls read and write meanwhile, as quickly as ever.
    sqlx::raw_sql(
        "set lock_timeout = '200ms';
         select count(*) from posts.posts;
         update posts.posts set title = title;",
    )
    .execute(&mut observer)
    .await
    .expect("the waiting build blocks no call");
    // Well past the migration lock timeout, it still waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!connected.is_finished(), "{}", log.text());

    commit(writer).await;
    let pool = tokio::time::timeout(Duration::from_secs(15), connected)
        .await
        .expect("the build ends once the writer has")
        .unwrap()
        .expect("the start succeeds");
    pool.close().await;
    let valid: bool = sqlx::query_scalar(
        "select indisvalid from pg_index where indexrelid = 'posts.posts_listing_idx'::regclass",
    )
    .fetch_one(&mut observer)
    .await
    .unwrap();
    assert!(valid, "the index is whole");
    assert_eq!(scratch.applied().await, known_versions());
    drop(observer);
    scratch.drop_now().await;
}

/// The migration connection lifts its lock timeout for `-- no-transaction`
/// migrations, which is safe only for CONCURRENTLY statements.
#[test]
fn every_no_transaction_migration_is_one_concurrently_statement() {
    for migration in MIGRATOR.iter().filter(|m| m.no_tx) {
        let code: String = migration
            .sql
            .as_str()
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let statements = code.split(';').filter(|s| !s.trim().is_empty()).count();
        assert_eq!(
            statements, 1,
            "{} {} holds one statement",
            migration.version, migration.description
        );
        assert!(
            code.to_lowercase().contains(" concurrently "),
            "{} {} is CONCURRENTLY",
            migration.version,
            migration.description
        );
    }
}
