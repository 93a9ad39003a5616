//! Every binary reads `.env` from its working directory at start-up, as
//! `.env.example` says: the real environment wins over the file, a missing file
//! is fine, and a malformed one stops the start naming the line.

use std::{path::PathBuf, process::Stdio, time::Duration};

use system_tests::process::{ScratchDatabase, binary, free_port};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// A fresh directory holding `.env` with `contents`, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn with_env_file(contents: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("agora-env-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), contents).unwrap();
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `name` started in `dir` with only PATH and `env` in its environment.
fn command(name: &str, dir: &Dir, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary(name));
    command
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts `name`, returns its line saying it listens, and stops it.
async fn listening_line(name: &str, dir: &Dir, env: &[(&str, &str)]) -> String {
    let mut child = command(name, dir, env).spawn().expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = format!("{name} listening");
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        let mut said = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(&ready) {
                return line;
            }
            said.push(line);
        }
        panic!("{name} exited before listening:\n{}", said.join("\n"));
    })
    .await
    .expect("starts in time");
    child.kill().await.unwrap();
    line
}

#[tokio::test]
async fn dot_env_in_the_working_directory_is_read_and_the_environment_wins() {
    let database = ScratchDatabase::new();
    let port = free_port();
    let dir = Dir::with_env_file(&format!(
        "# settings of my own\n\
         AUTH_LISTEN_ADDR=127.0.0.1:{port}\n\
         LOG_FORMAT=json\n\
         DATABASE_URL={}\n",
        database.url
    ));

    let line = listening_line("auth-service", &dir, &[("RUST_LOG", "info")]).await;
    let json: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("LOG_FORMAT=json from .env: {line}"));
    assert_eq!(
        json["address"],
        format!("127.0.0.1:{port}"),
        "AUTH_LISTEN_ADDR from .env: {line}"
    );

    // The real environment overrides the file, variable by variable.
    let line = listening_line(
        "auth-service",
        &dir,
        &[("RUST_LOG", "info"), ("LOG_FORMAT", "text")],
    )
    .await;
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_err(),
        "LOG_FORMAT=text from the environment wins: {line}"
    );
    assert!(
        line.contains(&format!("127.0.0.1:{port}")),
        "the rest still comes from .env: {line}"
    );
    database.drop_now().await;
}

#[tokio::test]
async fn a_malformed_dot_env_stops_every_binary_naming_the_line() {
    let dir = Dir::with_env_file("LOG_FORMAT=json\nthis is not a setting\nRUST_LOG=info\n");
    for name in ["gateway", "auth-service", "posts-service", "votes-service"] {
        let output = command(name, &dir, &[]).output().await.unwrap();
        let printed = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: {printed}");
        assert!(
            printed.contains(".env line 2") && printed.contains("this is not a setting"),
            "{name} names the line: {printed}"
        );
        assert_eq!(printed.lines().count(), 1, "{name}: one line: {printed}");
    }
}
