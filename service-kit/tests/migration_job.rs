//! The binaries as Kubernetes runs them: any of the four is the migration job
//! (`DATABASE_MIGRATIONS=apply-and-exit`: migrate, exit 0, never listen), and a
//! service started with `verify` waits for that job before it listens.
//!
//! Runs the binaries of `target/<profile>/` (`cargo test --workspace` builds
//! them) against the test server (`DATABASE_URL`).

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use service_kit::database::MIGRATOR;
use sqlx::{Connection, PgConnection};

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

/// A database name of a test's own, and its URL; not created.
fn scratch() -> (String, String) {
    let name = format!("agora_job_{}", uuid::Uuid::now_v7().simple());
    let mut url = admin_url();
    url.set_path(&name);
    (name, url.to_string())
}

async fn applied(url: &str) -> Vec<i64> {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("the database exists");
    sqlx::query_scalar("select version from _sqlx_migrations order by version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

fn known_versions() -> Vec<i64> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

/// One of the workspace's binaries, beside this test's folder.
fn binary(name: &str) -> PathBuf {
    let path = std::env::current_exe()
        .expect("the test knows its path")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a cargo target folder")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build -p auth-service -p \
         posts-service -p votes-service -p gateway`; `cargo test --workspace` does)",
        path.display()
    );
    path
}

fn command(name: &str, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(binary(name));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `name` to its end (at most a minute); its status and all it printed.
fn run(name: &str, env: &[(&str, String)]) -> (Output, String) {
    let mut child = command(name, env).spawn().expect("the binary starts");
    let started = Instant::now();
    while child.try_wait().expect("the child").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let output = child.wait_with_output().expect("the killed child");
            panic!(
                "{name} is still running after a minute:\n{}",
                printed(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("the child's output");
    let text = printed(&output);
    (output, text)
}

fn printed(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// A free loopback address, picked below the ephemeral range so that no
/// outgoing connection takes it meanwhile.
fn free_address() -> String {
    loop {
        let port = 20_000 + (uuid::Uuid::now_v7().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
}

#[tokio::test]
async fn every_binary_is_a_migration_job_that_migrates_and_exits_without_listening() {
    let upstream = format!("http://{}", free_address());
    for (name, listen) in [
        ("auth-service", vec!["AUTH_LISTEN_ADDR"]),
        ("posts-service", vec!["POSTS_LISTEN_ADDR"]),
        ("votes-service", vec!["VOTES_LISTEN_ADDR"]),
        ("gateway", vec!["GATEWAY_GRPC_ADDR", "GATEWAY_HTTP_ADDR"]),
    ] {
        let (database, url) = scratch();
        let mut env = vec![
            ("DATABASE_URL", url.clone()),
            ("DATABASE_MIGRATIONS", "apply-and-exit".to_owned()),
        ];
        env.extend(listen.iter().map(|&variable| (variable, free_address())));
        if name == "gateway" {
            // In front of remote services, as in Kubernetes, where it otherwise
            // never touches the database.
            for variable in ["AUTH_SERVICE_URL", "POSTS_SERVICE_URL", "VOTES_SERVICE_URL"] {
                env.push((variable, upstream.clone()));
            }
        }

        let (output, printed) = run(name, &env);

        assert!(output.status.success(), "{name} exits 0:\n{printed}");
        for expected in [
            "created the database",
            "applied database migrations",
            "migrated the database and exits",
        ] {
            assert!(
                printed.contains(expected),
                "{name} says {expected:?}:\n{printed}"
            );
        }
        assert!(
            !printed.contains("listening"),
            "{name} never listens:\n{printed}"
        );
        assert_eq!(applied(&url).await, known_versions(), "{name}");
        admin(&format!("drop database {database} with (force)")).await;
    }
}

/// A started binary whose log lines arrive on a channel; killed when dropped.
struct Started {
    child: Child,
    lines: mpsc::Receiver<String>,
    said: Vec<String>,
}

impl Started {
    fn start(name: &str, env: &[(&str, String)]) -> Self {
        let mut child = command(name, env).spawn().expect("the binary starts");
        let (send, lines) = mpsc::channel();
        for output in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            said: Vec::new(),
        }
    }

    /// Waits until a line says `needle`, for at most `within`.
    fn until_it_says(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.said.iter().any(|line| line.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.said.push(line),
                Err(_) => panic!("no line says {needle:?} in time:\n{}", self.said.join("\n")),
            }
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_service_in_verify_mode_listens_only_once_the_migration_job_has_run() {
    let (database, url) = scratch();
    admin(&format!("create database {database}")).await;
    let listen = free_address();
    let mut auth = Started::start(
        "auth-service",
        &[
            ("DATABASE_URL", url.clone()),
            ("DATABASE_MIGRATIONS", "verify".to_owned()),
            ("AUTH_LISTEN_ADDR", listen.clone()),
        ],
    );

    auth.until_it_says("waiting for the migration job", Duration::from_secs(30));
    let waiting = auth.said.join("\n");
    assert!(
        waiting.contains(&format!("missing={:?}", known_versions())),
        "it names the migrations it waits for:\n{waiting}"
    );
    assert!(
        TcpStream::connect(&listen).is_err(),
        "nothing listens while the schema is missing"
    );

    let (output, printed) = run(
        "votes-service",
        &[
            ("DATABASE_URL", url.clone()),
            ("DATABASE_MIGRATIONS", "apply-and-exit".to_owned()),
        ],
    );
    assert!(output.status.success(), "the job migrates:\n{printed}");

    auth.until_it_says("auth-service listening", Duration::from_secs(30));
    assert!(
        TcpStream::connect(&listen).is_ok(),
        "it listens once the migrations are applied"
    );
    assert!(
        auth.said
            .iter()
            .any(|line| line.contains("database schema up to date")),
        "{}",
        auth.said.join("\n")
    );
    drop(auth);
    admin(&format!("drop database {database} with (force)")).await;
}
