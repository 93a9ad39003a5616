//! The real `auth-service` binary, run the way the README says, driven by grpcurl.
//!
//! Needs `grpcurl` and `jq` on PATH (see the README), and port 50052 free, because
//! the README's examples name it.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use sqlx::{
    Connection, PgConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command as AsyncCommand},
};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A database of its own on the test server, dropped at the end.
struct ScratchDatabase {
    url: String,
    name: String,
    admin: PgConnectOptions,
}

impl ScratchDatabase {
    fn new() -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL names the test server, see the README");
        let admin: PgConnectOptions = admin_url.parse().expect("DATABASE_URL is a PostgreSQL URL");
        let name = format!("agora_binary_test_{}", uuid::Uuid::now_v7().simple());
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            admin,
        }
    }

    async fn drop_now(self) {
        let mut conn = PgConnection::connect_with(&self.admin).await.unwrap();
        let drop = format!("drop database if exists {} with (force)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

fn auth_service(database_url: &str) -> AsyncCommand {
    let mut command = AsyncCommand::new(env!("CARGO_BIN_EXE_auth-service"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("AUTH_LISTEN_ADDR", "127.0.0.1:50052")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Reads the child's log until it says it listens.
async fn wait_until_listening(child: &mut Child) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let listening = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("auth-service listening") {
                return;
            }
        }
        panic!("auth-service exited before listening");
    };
    tokio::time::timeout(STARTUP_TIMEOUT, listening)
        .await
        .expect("auth-service starts in time");
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

/// The shell commands of the README block `<!-- readme-example:NAME -->`.
fn readme_example(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("<!-- readme-example:{name} -->"))
        .expect("the example is in the README");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    block[..block.find("```").unwrap()].to_owned()
}

fn require_tools() {
    for tool in ["grpcurl", "jq"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is needed on PATH for this test; see the README"
        );
    }
}

#[tokio::test]
async fn the_readme_examples_work_verbatim_and_sigterm_stops_cleanly() {
    require_tools();
    let database = ScratchDatabase::new();
    let mut child = auth_service(&database.url)
        .spawn()
        .expect("the binary starts");
    wait_until_listening(&mut child).await;

    let output = AsyncCommand::new("bash")
        .args(["-euo", "pipefail", "-c", &readme_example("auth")])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README's commands fail:\n{stdout}\n{stderr}"
    );
    for expected in [
        "agora.auth.v1.UserService",
        "agora.auth.v1.AuthService",
        "\"email\": \"alice@example.com\"",
        "\"userId\"",
        "\"kty\": \"OKP\"",
        "\"status\": \"SERVING\"",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops in time")
        .unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    // The database was created by the binary and is migrated.
    let pool = PgPoolOptions::new().connect(&database.url).await.unwrap();
    let users: i64 = sqlx::query_scalar("select count(*) from auth.users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    pool.close().await;
    database.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_database_is_one_clear_error() {
    let output = auth_service("postgres://agora:s3cret@127.0.0.1:1/agora")
        .output()
        .await
        .unwrap();

    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("cannot reach PostgreSQL at postgres://agora:***@127.0.0.1:1/agora"),
        "{log}"
    );
    assert!(
        !log.contains("s3cret"),
        "the password is never printed: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
