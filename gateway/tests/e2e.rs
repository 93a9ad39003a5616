//! The real binaries, started as a person or docker-compose.yml starts them, driven
//! by real clients: grpcurl, buf curl, curl, a Python client generated from
//! `proto/`, and gRPC-Web over HTTP/1.1.
//!
//! Needs the tools the README lists. The README's examples name ports 50051 and
//! 8080; they run here against a gateway on free ports, with the ports rewritten,
//! so a gateway of one's own may keep running. Run with `cargo test --workspace`,
//! which builds every binary.

use std::time::Duration;

use agora_proto::{
    auth::v1::{
        BatchGetUsersRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::ErrorReason,
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use prost::Message;
use system_tests::{
    assert_reason, bearer,
    process::{
        Env, Running, ScratchDatabase, Topology, all_in_one_gateway, free_port, on_ports,
        readme_example, require_tools, run, run_script, terminate_all,
    },
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const TOOLS: &[&str] = &["grpcurl", "buf", "jq", "curl", "python3"];

fn python_client() -> String {
    format!(
        "{}/../system-tests/python/agora_client.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn assert_contains_all(text: &str, expected: &[&str], what: &str) {
    for needle in expected {
        assert!(
            text.contains(needle),
            "{what}: {needle:?} missing from:\n{text}"
        );
    }
}

/// An access token for `email`, logged in through the gateway at `edge`.
async fn login_at(edge: &Channel, email: &str) -> String {
    let login = LoginRequest {
        email: email.into(),
        password: "correct horse battery".into(),
    };
    AuthServiceClient::new(edge.clone())
        .login(login)
        .await
        .expect("login at the edge")
        .into_inner()
        .access_token
}

#[tokio::test]
async fn all_in_one_serves_the_readme_examples_and_every_kind_of_client() {
    require_tools(TOOLS);
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, http_port) = all_in_one_gateway(&database.url, Env::new()).await;
    let example = |name: &str| on_ports(&readme_example(name), grpc_port, http_port);

    let grpc = run_script(&example("grpc")).await;
    assert_contains_all(
        &grpc,
        &[
            "agora.posts.v1.PostService",
            "\"email\": \"alice@example.com\"",
            "\"title\": \"Later\"",
            "\"likeCount\": \"1\"",
            "\"likedByCaller\": true",
            "\"title\": \"Hello again\"",
            "\"etag\": \"2\"",
            "\"status\": \"SERVING\"",
        ],
        "the README's grpcurl session",
    );
    assert_eq!(
        grpc.matches("\"email\"").count(),
        1,
        "only CreateUser shows an email; a post's owner never does:\n{grpc}"
    );
    let http = run_script(&example("http")).await;
    assert_contains_all(
        &http,
        &[
            "\"email\":\"carol@example.com\"",
            "successfully added vote",
            "\"votes\":1",
            "204",
        ],
        "the README's curl session",
    );
    let buf = run_script(&example("buf")).await;
    assert_contains_all(
        &buf,
        &["\"email\": \"bob@example.com\""],
        "the README's buf curl",
    );
    let sessions = run_script(&example("sessions")).await;
    assert_contains_all(
        &sessions,
        &["\"current\": true", "\"endedSessions\": 1", "TOKEN_REVOKED"],
        "the README's sessions",
    );

    // Only the public API is visible at the edge.
    let described = run_script(&format!(
        "grpcurl -plaintext localhost:{grpc_port} describe agora.auth.v1.AuthService
         grpcurl -plaintext localhost:{grpc_port} describe agora.auth.v1.UserService",
    ))
    .await;
    assert_contains_all(
        &described,
        &["rpc Login", "rpc CreateUser", "rpc GetUser"],
        "describe",
    );
    for internal in [
        "rpc VerifyToken",
        "rpc GetJwks",
        "rpc BatchGetUsers",
        "rpc ListRevokedSessions",
    ] {
        assert!(
            !described.contains(internal),
            "{internal} is internal:\n{described}"
        );
    }
    let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .expect("a valid URL")
        .connect_lazy();
    let token = login_at(&channel, "alice@example.com").await;
    let internal = UserServiceClient::new(channel.clone())
        .batch_get_users(bearer(
            &token,
            BatchGetUsersRequest {
                ids: vec![],
                allow_missing: false,
            },
        ))
        .await
        .unwrap_err();
    assert_reason(
        &internal,
        ErrorReason::MethodNotFound,
        "internal RPCs are not served at the edge",
    );

    let python = run_script(&format!(
        "python3 {} 127.0.0.1:{grpc_port}",
        python_client()
    ))
    .await;
    assert!(
        python.contains(" passed, 0 failed"),
        "the generated Python client:\n{python}"
    );

    // A browser: CORS preflight, then a gRPC-Web call over HTTP/1.1.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{grpc_port}/agora.auth.v1.UserService/CreateUser");
    let url = url.as_str();
    let preflight = http
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(
        preflight.status().is_success(),
        "preflight: {}",
        preflight.status()
    );
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let create = agora_proto::auth::v1::CreateUserRequest {
        email: "web@example.com".into(),
        password: "correct horse battery".into(),
        request_id: String::new(),
    };
    let payload = create.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let response = http
        .post(url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://app.example")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_contains_all(
        &exposed,
        &["grpc-status", "grpc-message", "grpc-status-details-bin"],
        "exposed headers",
    );
    let body = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_contains_all(
        &text,
        &["web@example.com", "grpc-status:0"],
        "the gRPC-Web answer and its trailers",
    );

    let status = gateway.terminate().await;
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    database.drop_now().await;
}

async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel.clone());
    let check = client.check(HealthCheckRequest {
        service: service.to_owned(),
    });
    check.await.expect("health answers").into_inner().status()
}

#[tokio::test]
async fn the_split_topology_works_as_docker_compose_wires_it() {
    require_tools(&["python3"]);
    let database = ScratchDatabase::new();
    let topology = Topology::<1>::new(&database.url);
    let Running {
        auth,
        votes,
        posts: [posts],
        gateway,
    } = topology.start().await;
    for (binary, env) in [
        ("auth-service", topology.auth_env()),
        ("votes-service", topology.votes_env()),
        ("posts-service", topology.posts_env(0)),
        ("gateway", topology.gateway_env()),
    ] {
        let (status, printed) = run(binary, &env, &["--health-check"]).await;
        assert!(
            status.success(),
            "{binary} --health-check, as the compose healthcheck runs it: {printed}"
        );
    }

    let python = run_script(&format!(
        "python3 {} {}",
        python_client(),
        topology.edge_address()
    ))
    .await;
    assert!(
        python.contains(" passed, 0 failed"),
        "the generated Python client through the gateway:\n{python}"
    );
    let created = reqwest::Client::new()
        .post(format!("{}/users/", topology.http_url()))
        .json(
            &serde_json::json!({"email": "http@example.com", "password": "correct horse battery"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        201,
        "the HTTP facade in front of remote services"
    );

    // An upstream goes down: its health turns, and its calls fail fast.
    let edge = topology.edge();
    assert_eq!(
        health(&edge, "agora.votes.v1.VoteService").await,
        ServingStatus::Serving
    );
    assert!(votes.terminate().await.success());
    let mut watch = HealthClient::new(edge.clone())
        .watch(HealthCheckRequest {
            service: "agora.votes.v1.VoteService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let update = tokio::time::timeout(Duration::from_secs(15), watch.message())
            .await
            .expect("health notices in time");
        if update.unwrap().unwrap().status() == ServingStatus::NotServing {
            break;
        }
    }
    drop(watch);
    assert_eq!(
        health(&edge, "agora.posts.v1.PostService").await,
        ServingStatus::Serving,
        "the others stay up"
    );
    assert_eq!(
        health(&edge, "").await,
        ServingStatus::Serving,
        "the gateway itself stays up"
    );
    let token = login_at(&edge, "http@example.com").await;
    let vote = VoteRequest {
        post_id: uuid::Uuid::now_v7().to_string(),
        direction: VoteDirection::Add.into(),
    };
    let mut votes_at_edge = VoteServiceClient::new(edge.clone());
    let call = votes_at_edge.vote(bearer(&token, vote));
    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("fails instead of hanging")
        .unwrap_err();
    assert_reason(
        &status,
        ErrorReason::DependencyUnavailable,
        "votes-service down",
    );

    terminate_all([gateway, posts, auth]).await;
    database.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_database_is_one_clear_line_from_every_binary() {
    let env = [
        (
            "DATABASE_URL",
            "postgres://agora:s3cret@127.0.0.1:1/agora".to_owned(),
        ),
        ("AUTH_LISTEN_ADDR", format!("127.0.0.1:{}", free_port())),
        ("POSTS_LISTEN_ADDR", format!("127.0.0.1:{}", free_port())),
        ("VOTES_LISTEN_ADDR", format!("127.0.0.1:{}", free_port())),
        ("GATEWAY_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
        ("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
    ];
    for binary in ["gateway", "auth-service", "posts-service", "votes-service"] {
        let (status, printed) = run(binary, &env, &[]).await;
        assert!(!status.success(), "{binary} exits non-zero");
        assert!(
            printed.contains("cannot reach PostgreSQL at postgres://agora:***@127.0.0.1:1/agora"),
            "{binary}: {printed}"
        );
        assert!(
            !printed.contains("s3cret"),
            "{binary} never prints the password: {printed}"
        );
        assert!(
            !printed.contains("panicked") && !printed.contains("backtrace"),
            "{binary}: {printed}"
        );
        assert_eq!(
            printed
                .lines()
                .filter(|line| line.contains("ERROR"))
                .count(),
            1,
            "{binary}: one line: {printed}"
        );
    }
    let (_, printed) = run("gateway", &env, &[]).await;
    assert!(
        printed.contains("DATABASE_URL"),
        "the gateway says how to point elsewhere: {printed}"
    );
}
