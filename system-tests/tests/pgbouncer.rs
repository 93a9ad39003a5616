//! The services behind PgBouncer in transaction mode (`DATABASE_POOLER=pgbouncer`),
//! as a deployment that outgrows PostgreSQL's connections runs them: the
//! migration job straight to PostgreSQL, the services through a PgBouncer of the
//! test's own, their pools of 10 connections each sharing two server
//! connections, their timeouts set on the database.
//!
//! That test needs PgBouncer 1.21 or newer (the first that tracks prepared
//! statements in transaction mode, `max_prepared_statements`), found as
//! `$PGBOUNCER`, on PATH, or as `/usr/sbin/pgbouncer` (Debian's package);
//! `docs/scaling.md` says why nothing older will do. Debian 12 packages 1.18,
//! so it is ignored unless asked for (`-- --ignored`) with a newer one at hand. The others need none: what
//! the setting refuses (a server that sets no timeouts, migrations through the
//! pooler), and the migration job's freedom from the services' timeout.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    posts::v1::{
        CreatePostRequest, GetPostRequest, ListPostsRequest, post_service_client::PostServiceClient,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use service_kit::database::{LOCK_TIMEOUT, STATEMENT_TIMEOUT};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use system_tests::{
    PASSWORD, bearer, new_post,
    process::{self, ScratchDatabase, Topology, free_port, terminate_all},
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// Server connections PgBouncer may open to the database: fewer than any one
/// service's pool, so that every pool shares them.
const SERVER_CONNECTIONS: usize = 2;
/// Calls of each kind made at once, more than the server connections.
const AT_ONCE: usize = 12;
/// The oldest PgBouncer that keeps prepared statements across transactions.
const OLDEST: (u32, u32) = (1, 21);

/// A PgBouncer of the test's own, in transaction mode, on a free port; killed
/// and its folder removed on drop.
struct Pgbouncer {
    port: u16,
    child: Child,
    folder: PathBuf,
}

impl Pgbouncer {
    /// Forwards every database to the server `DATABASE_URL` names.
    async fn start() -> Self {
        let program = program();
        let server: PgConnectOptions = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL names the test server, see the README")
            .parse()
            .expect("DATABASE_URL is a PostgreSQL URL");
        let server_url = url::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
        let folder =
            std::env::temp_dir().join(format!("agora-pgbouncer-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let port = free_port();
        let password = server_url
            .password()
            .map_or(String::new(), |password| format!(" password={password}"));
        let config = format!(
            "[databases]\n\
             * = host={host} port={server_port}{password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             pool_mode = transaction\n\
             max_prepared_statements = 200\n\
             default_pool_size = {SERVER_CONNECTIONS}\n\
             max_client_conn = 500\n",
            host = server.get_host(),
            server_port = server.get_port(),
            users = folder.join("users.txt").display(),
        );
        std::fs::write(folder.join("pgbouncer.ini"), config).expect("write pgbouncer.ini");
        std::fs::write(
            folder.join("users.txt"),
            format!("\"{}\" \"\"\n", server.get_username()),
        )
        .expect("write users.txt");
        let log = std::fs::File::create(folder.join("pgbouncer.log")).expect("a log file");
        let mut command = Command::new(&program);
        // PgBouncer refuses to run as root; as root, it is told whom to run as.
        if is_root() {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(folder.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{} starts: {error}", program.display()));
        let bouncer = Self {
            port,
            child,
            folder,
        };
        bouncer.wait_until_listening().await;
        bouncer
    }

    /// A URL of `database` through this PgBouncer, as the test server's user.
    fn url(&self, database_url: &str) -> String {
        let mut url = url::Url::parse(database_url).expect("a database URL");
        url.set_port(Some(self.port)).expect("a URL with a port");
        url.set_host(Some("127.0.0.1")).expect("a URL with a host");
        url.to_string()
    }

    async fn wait_until_listening(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("PgBouncer did not listen within 10 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.folder.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// PgBouncer's program, 1.21 or newer; fails the test saying what to install.
fn program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let program = std::env::var_os("PGBOUNCER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&path)
                .map(|folder| folder.join("pgbouncer"))
                .find(|candidate| candidate.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|debian| debian.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "PgBouncer is needed for this test: install the `pgbouncer` package (1.21 or \
                 newer), or name its program in PGBOUNCER"
            )
        });
    let version = version_of(&program);
    assert!(
        version >= OLDEST,
        "PgBouncer {}.{} at {} cannot pool sqlx's prepared statements by transaction: {}.{} or \
         newer is needed (max_prepared_statements); Debian 12's `pgbouncer` package is 1.18, \
         so install a newer one (apt.postgresql.org's package, or built from source as .ci/run \
         does) and put it on PATH or in PGBOUNCER",
        version.0,
        version.1,
        program.display(),
        OLDEST.0,
        OLDEST.1,
    );
    program
}

/// The version `pgbouncer --version` prints first: `PgBouncer 1.25.2`.
fn version_of(program: &Path) -> (u32, u32) {
    let output = std::process::Command::new(program)
        .arg("--version")
        .output()
        .unwrap_or_else(|error| panic!("{} --version runs: {error}", program.display()));
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let version = printed
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("a version from {}: {printed}", program.display()));
    let mut numbers = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// What a migration job leaves, with the timeouts a direct connection sets on
/// itself set on the database instead, for the connections PgBouncer opens.
async fn migrated_with_timeouts(database: &ScratchDatabase) {
    migrate_directly(database).await;
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    let name = database_name(&database.url);
    for (setting, value) in [
        ("statement_timeout", STATEMENT_TIMEOUT),
        ("lock_timeout", LOCK_TIMEOUT),
    ] {
        let set = format!(
            "alter database \"{name}\" set {setting} = '{}ms'",
            value.as_millis()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(set))
            .execute(&mut conn)
            .await
            .expect("the database takes the setting");
    }
}

/// The migration job, as Kubernetes runs it: straight to PostgreSQL.
async fn migrate_directly(database: &ScratchDatabase) {
    let (status, printed) = process::run(
        "auth-service",
        &[
            ("DATABASE_URL", database.url.clone()),
            ("DATABASE_MIGRATIONS", "apply-and-exit".to_owned()),
        ],
        &[],
    )
    .await;
    assert!(status.success(), "the migration job: {printed}");
}

fn database_name(url: &str) -> String {
    url::Url::parse(url)
        .expect("a URL")
        .path()
        .trim_start_matches('/')
        .to_owned()
}

async fn sign_up_and_log_in(edge: &Channel, email: &str) -> String {
    UserServiceClient::new(edge.clone())
        .create_user(CreateUserRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            request_id: String::new(),
        })
        .await
        .expect("sign up");
    AuthServiceClient::new(edge.clone())
        .login(LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .expect("log in")
        .into_inner()
        .access_token
}

/// One person's round: a post created with a request id (a transaction of two
/// statements) and created again with the same id, liked, read, unliked. Its
/// post's id.
async fn round(edge: Channel, token: String, n: usize) -> String {
    let mut posts = PostServiceClient::new(edge.clone());
    let mut votes = VoteServiceClient::new(edge);
    let request_id = uuid::Uuid::now_v7().to_string();
    let create = || CreatePostRequest {
        request_id: request_id.clone(),
        ..new_post(&format!("Pooled {n}"), "Through PgBouncer", None)
    };
    let created = posts
        .create_post(bearer(&token, create()))
        .await
        .unwrap_or_else(|status| panic!("create post {n}: {status:?}"))
        .into_inner()
        .post
        .expect("a post");
    let again = posts
        .create_post(bearer(&token, create()))
        .await
        .unwrap_or_else(|status| panic!("create post {n} again: {status:?}"))
        .into_inner()
        .post
        .expect("a post");
    assert_eq!(
        again.id, created.id,
        "the same request id gives post {n} once"
    );
    let vote = |direction: VoteDirection| VoteRequest {
        post_id: created.id.clone(),
        direction: direction.into(),
    };
    let liked = votes
        .vote(bearer(&token, vote(VoteDirection::Add)))
        .await
        .unwrap_or_else(|status| panic!("like post {n}: {status:?}"))
        .into_inner()
        .like_count;
    assert_eq!(liked, 1, "post {n} has one like");
    let read = posts
        .get_post(bearer(
            &token,
            GetPostRequest {
                id: created.id.clone(),
            },
        ))
        .await
        .unwrap_or_else(|status| panic!("get post {n}: {status:?}"))
        .into_inner()
        .post
        .expect("a post");
    assert_eq!(
        (read.title.as_str(), read.like_count, read.liked_by_caller),
        (format!("Pooled {n}").as_str(), Some(1), Some(true)),
        "post {n} as read back"
    );
    let unliked = votes
        .vote(bearer(&token, vote(VoteDirection::Remove)))
        .await
        .unwrap_or_else(|status| panic!("unlike post {n}: {status:?}"))
        .into_inner()
        .like_count;
    assert_eq!(unliked, 0, "post {n} has no like left");
    created.id
}

#[tokio::test]
#[ignore = "needs PgBouncer 1.21 or newer, which Debian 12 does not package: \
            PGBOUNCER=<path> cargo test -p system-tests --test pgbouncer -- --ignored"]
async fn the_services_serve_through_pgbouncer_in_transaction_mode_on_few_server_connections() {
    let bouncer = Pgbouncer::start().await;
    let database = ScratchDatabase::new();
    migrated_with_timeouts(&database).await;
    let topology = Topology::<1>::new(&bouncer.url(&database.url))
        .with("DATABASE_POOLER", "pgbouncer")
        .with("DATABASE_MIGRATIONS", "verify");
    let running = topology.start().await;
    let edge = topology.edge();

    let token = sign_up_and_log_in(&edge, "pooled@example.com").await;
    let rounds = (0..AT_ONCE).map(|n| tokio::spawn(round(edge.clone(), token.clone(), n)));
    let mut created = Vec::new();
    for finished in futures::future::join_all(rounds).await {
        created.push(finished.expect("a round runs to its end"));
    }
    let listed = PostServiceClient::new(edge.clone())
        .list_posts(bearer(
            &token,
            ListPostsRequest {
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("list posts")
        .into_inner()
        .posts;
    let mut listed: Vec<String> = listed.into_iter().map(|post| post.id).collect();
    listed.sort();
    created.sort();
    assert_eq!(listed, created, "every post once, none twice");

    // Three pools of 10, and PostgreSQL served them all on PgBouncer's two.
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    let (connections, likes): (i64, i64) = sqlx::query_as(
        "select (select count(*) from pg_stat_activity
                  where datname = current_database() and backend_type = 'client backend'
                    and pid <> pg_backend_pid()),
                (select coalesce(sum(like_count), 0)::int8 from votes.like_counts)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        connections <= SERVER_CONNECTIONS as i64,
        "PostgreSQL holds {connections} connections to the database, PgBouncer's only"
    );
    assert_eq!(likes, 0, "every like counted, and every unlike");
    drop(conn);

    let [posts] = running.posts;
    terminate_all([running.gateway, posts, running.votes, running.auth]).await;
    database.drop_now().await;
    drop(bouncer);
}

#[tokio::test]
async fn the_migration_job_is_not_bound_by_the_statement_timeout_set_for_the_services() {
    // Set before the job runs, as it is for every release after the first.
    let database = ScratchDatabase::new();
    let mut admin = PgConnection::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    let name = database_name(&database.url);
    for statement in [
        format!("create database \"{name}\""),
        format!("alter database \"{name}\" set statement_timeout = '1ms'"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    drop(admin);

    migrate_directly(&database).await;
    database.drop_now().await;
}

#[tokio::test]
async fn through_pgbouncer_a_service_refuses_a_server_that_sets_no_timeouts_and_says_how_to() {
    // What the server sets, whatever leads to it: checked here without PgBouncer.
    let database = ScratchDatabase::new();
    migrate_directly(&database).await;
    let (status, printed) = process::run(
        "posts-service",
        &[
            ("DATABASE_URL", database.url.clone()),
            ("DATABASE_POOLER", "pgbouncer".to_owned()),
            ("DATABASE_MIGRATIONS", "verify".to_owned()),
            ("POSTS_LISTEN_ADDR", format!("127.0.0.1:{}", free_port())),
        ],
        &[],
    )
    .await;
    database.drop_now().await;
    assert!(!status.success(), "it does not serve: {printed}");
    for expected in [
        "without a time limit",
        "statement_timeout 0ms",
        "alter role",
        "set statement_timeout = '3000ms'",
        "set lock_timeout = '1000ms'",
    ] {
        assert!(printed.contains(expected), "{expected:?} in: {printed}");
    }
}

#[tokio::test]
async fn through_pgbouncer_migrations_are_refused_saying_where_they_belong() {
    for mode in ["apply", "apply-and-exit"] {
        let database = ScratchDatabase::new();
        let (status, printed) = process::run(
            "auth-service",
            &[
                ("DATABASE_URL", database.url.clone()),
                ("DATABASE_POOLER", "pgbouncer".to_owned()),
                ("DATABASE_MIGRATIONS", mode.to_owned()),
                ("AUTH_LISTEN_ADDR", format!("127.0.0.1:{}", free_port())),
            ],
            &[],
        )
        .await;
        let mut admin = PgConnection::connect(&std::env::var("DATABASE_URL").unwrap())
            .await
            .unwrap();
        let created: bool =
            sqlx::query_scalar("select exists (select from pg_database where datname = $1)")
                .bind(database_name(&database.url))
                .fetch_one(&mut admin)
                .await
                .unwrap();
        database.drop_now().await;
        assert!(!status.success(), "{mode}: it does not start: {printed}");
        assert!(!created, "{mode}: nothing is created through the pooler");
        let refused = format!("DATABASE_MIGRATIONS={mode} cannot run through PgBouncer");
        for expected in [
            refused.as_str(),
            "advisory lock",
            "direct DATABASE_URL",
            "DATABASE_MIGRATIONS=verify",
        ] {
            assert!(
                printed.contains(expected),
                "{mode}: {expected:?} in: {printed}"
            );
        }
    }
}
