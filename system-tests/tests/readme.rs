//! The README's grpcurl sessions work verbatim against the services on the ports
//! the README names. Needs `grpcurl` and `jq` on PATH, and ports 50052 to 50054
//! free.

use std::process::Command;

use sqlx::PgPool;
use system_tests::{Addresses, spawn_system_at};

/// The shell commands of the README block `<!-- readme-example:NAME -->`.
fn readme_example(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("<!-- readme-example:{name} -->"))
        .expect("the example is in the README");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").expect("a sh block") + 6..];
    block[..block.find("```").expect("a closed block")].to_owned()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_readme_grpcurl_sessions_work_verbatim(pool: PgPool) {
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
    let addresses = Addresses {
        auth: "127.0.0.1:50052".parse().unwrap(),
        posts: "127.0.0.1:50053".parse().unwrap(),
        votes: "127.0.0.1:50054".parse().unwrap(),
    };
    let system = spawn_system_at(pool, addresses).await;
    let script = readme_example("auth") + &readme_example("posts");

    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
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
        "\"title\": \"Hello, Agora\"",
        "\"title\": \"Later\"",
        "\"likeCount\": \"1\"",
        "\"likedByCaller\": true",
        "\"title\": \"Hello again\"",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }
    let left: Vec<String> = sqlx::query_scalar("select title from posts.posts")
        .fetch_all(&system.pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        ["Later"],
        "the session deleted its post and kept the draft"
    );
    let likes: i64 = sqlx::query_scalar("select count(*) from votes.votes")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(likes, 0, "the like went with the post");
}
