//! What a person reads at the default level (info): start-up facts, one line per
//! call at the edge, state changes, and nothing while idle; every line names the
//! binary that wrote it.

use std::time::Duration;

use agora_proto::auth::v1::{CreateUserRequest, user_service_client::UserServiceClient};
use system_tests::process::{Process, ScratchDatabase, Topology, free_port, run, run_script};

/// Lines at info or above (text format: `<binary> <time>  INFO <target>: ...`).
fn loud(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|line| {
            [" INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|l| line.contains(l))
        })
        .collect()
}

#[tokio::test]
async fn an_idle_gateway_says_its_start_up_facts_then_nothing() {
    let database = ScratchDatabase::new();
    let grpc = format!("127.0.0.1:{}", free_port());
    let env = [
        ("DATABASE_URL", database.url.clone()),
        ("GATEWAY_GRPC_ADDR", grpc.clone()),
        ("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
    ];
    let gateway = Process::start_keeping_default_log("gateway", &env).await;
    let started = gateway.log_lines();
    assert!(
        started
            .iter()
            .any(|line| line.contains("applied database migrations")),
        "says which migrations it applied: {started:#?}"
    );
    assert!(
        started.iter().all(|line| line.starts_with("gateway ")),
        "every line names the binary: {started:#?}"
    );

    // Housekeeping while idle: container healthchecks, a reflection listing, and
    // more than one interval of the internal probes.
    for _ in 0..3 {
        let (status, printed) = run("gateway", &env, &["--health-check"]).await;
        assert!(status.success(), "{printed}");
    }
    if which("grpcurl") {
        run_script(&format!("grpcurl -plaintext {grpc} list >/dev/null")).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;

    let lines = gateway.log_lines();
    let idle = loud(&lines[started.len()..]);
    assert!(idle.is_empty(), "nothing at info while idle: {idle:#?}");
    assert!(gateway.terminate().await.success());
    database.drop_now().await;
}

fn which(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn split_one_line_per_call_at_the_edge_and_a_recovery_is_said() {
    let database = ScratchDatabase::new();
    // The database exists and is migrated before the four start.
    let topology = Topology::<1>::new(&database.url).with("LOG_FORMAT", "json");
    let auth = Process::start_keeping_default_log("auth-service", &topology.auth_env()).await;
    let votes = Process::start("votes-service", &topology.votes_env()).await;
    let posts = Process::start("posts-service", &topology.posts_env(0)).await;
    let gateway = Process::start_keeping_default_log("gateway", &topology.gateway_env()).await;

    for (process, name) in [(&auth, "auth-service"), (&gateway, "gateway")] {
        for line in process.log_lines() {
            let json: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("{name} writes JSON: {line}"));
            assert_eq!(json["service"], name, "{line}");
        }
    }

    let create = CreateUserRequest {
        email: "logs@example.com".into(),
        password: "correct horse battery".into(),
        request_id: String::new(),
    };
    UserServiceClient::new(topology.edge())
        .create_user(create)
        .await
        .expect("CreateUser through the gateway");
    let created = ["CreateUser", "rpc finished"];
    assert_eq!(
        gateway.log_lines_containing(&created),
        1,
        "the edge logs the call once: {:#?}",
        gateway.log_lines()
    );
    assert_eq!(
        auth.log_lines_containing(&created),
        0,
        "auth-service logs a success behind the edge at debug: {:#?}",
        auth.log_lines()
    );

    // votes-service goes away and comes back: the gateway says both.
    assert!(votes.kill().await.code().is_none());
    let down = ["votes-service", "NOT_SERVING"];
    wait_for(&gateway, &down).await;
    let votes = Process::start("votes-service", &topology.votes_env()).await;
    wait_for(&gateway, &["votes-service", "reachable again"]).await;

    for process in [gateway, posts, votes, auth] {
        assert!(process.terminate().await.success());
    }
    database.drop_now().await;
}

async fn wait_for(process: &Process, needles: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while process.log_lines_containing(needles) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needles:?} in time: {:#?}",
            process.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
