//! The all-in-one gateway takes the services' quota settings as its own flags and
//! gives them to the services it runs: past a quota, a call through its edge is
//! refused with QUOTA_EXCEEDED.

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::ErrorReason,
    posts::v1::{ListPostsRequest, post_service_client::PostServiceClient},
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use clap::Parser as _;
use service_kit::{CommonArgs, DatabaseArgs};
use sqlx::{ConnectOptions as _, PgPool};
use system_tests::{PASSWORD, assert_reason, bearer, new_post};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_types::StatusExt;

fn assert_quota_exceeded(status: &tonic::Status, quota: &str) {
    assert_reason(status, ErrorReason::QuotaExceeded, quota);
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.metadata["quota"], quota);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_all_in_one_gateway_applies_the_quotas_its_flags_set(pool: PgPool) {
    let mut config = gateway::Config::try_parse_from([
        "gateway",
        "--posts-per-minute=1",
        "--searches-per-minute=1",
        "--votes-per-minute=1",
        "--grpc-listen=127.0.0.1:0",
        "--http-listen=127.0.0.1:0",
    ])
    .expect("the quota flags parse");
    // The services it runs use the test's database.
    config.common = CommonArgs {
        database: DatabaseArgs::new(pool.connect_options().to_url_lossy()),
        ..CommonArgs::default()
    };
    let gateway = gateway::build(&config).await.expect("the gateway starts");
    assert!(gateway.is_embedded());
    let edge = Channel::from_shared(format!("http://{}", gateway.grpc_addr()))
        .unwrap()
        .connect_lazy();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.run_until(async {
        let _ = stopped.await;
    }));

    let email = "alice@example.com";
    UserServiceClient::new(edge.clone())
        .create_user(CreateUserRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            request_id: String::new(),
        })
        .await
        .expect("registration succeeds");
    let token = AuthServiceClient::new(edge.clone())
        .login(LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .expect("login succeeds")
        .into_inner()
        .access_token;
    let mut posts = PostServiceClient::new(edge.clone());
    let mut votes = VoteServiceClient::new(edge);
    let create = || bearer(&token, new_post("Hello", "once a minute", None));
    let search = || {
        let request = ListPostsRequest {
            search: "hello".to_owned(),
            ..Default::default()
        };
        bearer(&token, request)
    };

    let post = posts
        .create_post(create())
        .await
        .expect("the first post")
        .into_inner()
        .post
        .expect("a post");
    let refused = posts
        .create_post(create())
        .await
        .expect_err("a second post");
    assert_quota_exceeded(&refused, "create_post");

    posts.list_posts(search()).await.expect("the first search");
    let refused = posts
        .list_posts(search())
        .await
        .expect_err("a second search");
    assert_quota_exceeded(&refused, "search");

    let vote = |direction: VoteDirection| {
        let request = VoteRequest {
            post_id: post.id.clone(),
            direction: direction.into(),
        };
        bearer(&token, request)
    };
    votes
        .vote(vote(VoteDirection::Add))
        .await
        .expect("the first vote");
    let refused = votes
        .vote(vote(VoteDirection::Remove))
        .await
        .expect_err("a second vote");
    assert_quota_exceeded(&refused, "vote");

    let _ = stop.send(());
    serving
        .await
        .expect("the gateway's task")
        .expect("the gateway stops cleanly");
}
