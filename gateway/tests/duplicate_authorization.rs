//! A call must carry exactly one `authorization` value. With two (a valid token and
//! garbage, in either order, or the same token twice) which one counts would depend
//! on who reads them, so every reader refuses: each service over gRPC, the
//! gateway's gRPC edge, and its HTTP/JSON facade.

use agora_proto::{
    auth::v1::{GetUserRequest, user_service_client::UserServiceClient},
    errors::ErrorReason,
    posts::v1::{ListPostsRequest, post_service_client::PostServiceClient},
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use reqwest::{StatusCode, header::AUTHORIZATION};
use sqlx::PgPool;
use system_tests::{Person, System, assert_reason, spawn_system};
use tonic::{Request, Status, transport::Channel};

const REFUSAL: &str = "more than one authorization value; send exactly one access token";

/// The gateway in front of `system`, serving; its gRPC edge and HTTP base URL.
async fn spawn_gateway(system: &System) -> (Channel, String) {
    let gateway = system.spawn_gateway(|_| {}).await;
    let edge = Channel::from_shared(format!("http://{}", gateway.grpc))
        .unwrap()
        .connect_lazy();
    (edge, format!("http://{}", gateway.http))
}

/// Pairs of `authorization` values, each with its name.
fn pairs(person: &Person) -> Vec<(&'static str, [String; 2])> {
    let valid = format!("Bearer {}", person.token);
    vec![
        (
            "valid, then garbage",
            [valid.clone(), "Bearer garbage".to_owned()],
        ),
        (
            "garbage, then valid",
            ["Bearer garbage".to_owned(), valid.clone()],
        ),
        (
            "valid, then another scheme",
            [valid.clone(), "Basic YWxpY2U6c2VjcmV0".to_owned()],
        ),
        ("the same token twice", [valid.clone(), valid]),
    ]
}

/// `message` with each of `values` as its own `authorization` metadata entry.
fn with_authorization<T>(values: &[String], message: T) -> Request<T> {
    let mut request = Request::new(message);
    for value in values {
        request
            .metadata_mut()
            .append("authorization", value.parse().unwrap());
    }
    request
}

fn assert_refused<T: std::fmt::Debug>(answer: Result<T, Status>, case: &str) {
    let status = answer.expect_err(case);
    assert_reason(&status, ErrorReason::TokenMalformed, case);
    assert_eq!(status.message(), REFUSAL, "{case}");
}

/// A protected method of each service and of the edge, with `values`.
async fn call_everywhere(
    system: &System,
    edge: &Channel,
    person: &Person,
    post_id: &str,
    values: &[String],
) -> Vec<(&'static str, Result<(), Status>)> {
    let get_user = || GetUserRequest {
        id: person.id.clone(),
    };
    // A like, then taking it back: both succeed when the token is accepted.
    let vote = |direction: VoteDirection| VoteRequest {
        post_id: post_id.to_owned(),
        direction: direction.into(),
    };
    vec![
        (
            "auth-service",
            system
                .user_client
                .clone()
                .get_user(with_authorization(values, get_user()))
                .await
                .map(drop),
        ),
        (
            "posts-service",
            system
                .post_client
                .clone()
                .list_posts(with_authorization(values, ListPostsRequest::default()))
                .await
                .map(drop),
        ),
        (
            "votes-service",
            system
                .vote_client
                .clone()
                .vote(with_authorization(values, vote(VoteDirection::Add)))
                .await
                .map(drop),
        ),
        (
            "the edge, to auth-service",
            UserServiceClient::new(edge.clone())
                .get_user(with_authorization(values, get_user()))
                .await
                .map(drop),
        ),
        (
            "the edge, to posts-service",
            PostServiceClient::new(edge.clone())
                .list_posts(with_authorization(values, ListPostsRequest::default()))
                .await
                .map(drop),
        ),
        (
            "the edge, to votes-service",
            VoteServiceClient::new(edge.clone())
                .vote(with_authorization(values, vote(VoteDirection::Remove)))
                .await
                .map(drop),
        ),
    ]
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn two_authorization_values_are_unauthenticated_over_grpc(pool: PgPool) {
    let system = spawn_system(pool).await;
    let (edge, _) = spawn_gateway(&system).await;
    let alice = system.sign_up("alice@example.com").await;
    let post = system
        .create_post(&alice, "Hello", "The first post", None)
        .await
        .unwrap();

    let one = [format!("Bearer {}", alice.token)];
    for (called, answer) in call_everywhere(&system, &edge, &alice, &post.id, &one).await {
        answer.unwrap_or_else(|status| panic!("{called}: one valid value is enough: {status:?}"));
    }

    for (case, values) in pairs(&alice) {
        for (called, answer) in call_everywhere(&system, &edge, &alice, &post.id, &values).await {
            assert_refused(answer, &format!("{called}, {case}"));
        }
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn two_authorization_headers_are_401_over_http(pool: PgPool) {
    let system = spawn_system(pool).await;
    let (_, http) = spawn_gateway(&system).await;
    let alice = system.sign_up("alice@example.com").await;
    let client = reqwest::Client::new();
    let get = |values: &[String]| {
        let mut request = client.get(format!("{http}/users/{}", alice.id));
        for value in values {
            request = request.header(AUTHORIZATION, value);
        }
        request.send()
    };

    let response = get(&[format!("Bearer {}", alice.token)]).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "one valid value is enough"
    );

    for (case, values) in pairs(&alice) {
        let response = get(&values).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer",
            "{case}: a 401 challenges for a bearer token"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["detail"], REFUSAL, "{case}");
    }
}
