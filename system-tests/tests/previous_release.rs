//! The previous release's binaries keep working on the schema the current
//! migrations leave, as they must while a rolling upgrade runs both releases
//! (expand, then contract). The release is the commit that
//! `migrations/compatibility-baseline` names; `.ci/baseline-binaries` builds its
//! binaries into `target/baseline/<commit>/`, and this test runs it when they are
//! missing (minutes, the first time).

use std::path::{Path, PathBuf};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    posts::v1::{GetPostRequest, ListPostsRequest, post_service_client::PostServiceClient},
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use service_kit::DatabaseArgs;
use sqlx::{Connection, PgConnection};
use system_tests::{
    PASSWORD, bearer, new_post,
    process::{Process, ScratchDatabase, Topology, terminate_all},
};

const BASELINE: &str = include_str!("../../migrations/compatibility-baseline");
const BINARIES: [&str; 4] = ["auth-service", "posts-service", "votes-service", "gateway"];

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The baseline's binaries, built first if they are missing.
async fn baseline_binaries() -> PathBuf {
    let commit = BASELINE.trim();
    let folder = workspace().join("target/baseline").join(commit);
    if BINARIES.iter().all(|name| folder.join(name).is_file()) {
        return folder;
    }
    // A target dir of its own: building the old binaries into target/debug
    // would swap them under the tests running from there meanwhile.
    let output = tokio::process::Command::new(workspace().join(".ci/baseline-binaries"))
        .env(
            "BASELINE_TARGET_DIR",
            workspace().join("target/baseline-build"),
        )
        .output()
        .await
        .expect(".ci/baseline-binaries runs");
    assert!(
        output.status.success(),
        ".ci/baseline-binaries builds the binaries of {commit}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    folder
}

#[tokio::test]
async fn the_previous_release_serves_a_whole_flow_on_the_current_schema() {
    let binaries = baseline_binaries().await;
    let database = ScratchDatabase::new();
    // What the current release's migration job leaves.
    service_kit::database::migrate(&DatabaseArgs::new(&database.url))
        .await
        .expect("the current migrations apply");

    let topology = Topology::<1>::new(&database.url);
    let auth = Process::start_at(&binaries.join("auth-service"), &topology.auth_env()).await;
    let votes = Process::start_at(&binaries.join("votes-service"), &topology.votes_env()).await;
    let posts = Process::start_at(&binaries.join("posts-service"), &topology.posts_env(0)).await;
    let gateway = Process::start_at(&binaries.join("gateway"), &topology.gateway_env()).await;
    let edge = topology.edge();

    let user = UserServiceClient::new(edge.clone())
        .create_user(CreateUserRequest {
            email: "alice@example.com".to_owned(),
            password: PASSWORD.to_owned(),
            request_id: String::new(),
        })
        .await
        .expect("sign up")
        .into_inner()
        .user
        .expect("a user");
    let token = AuthServiceClient::new(edge.clone())
        .login(LoginRequest {
            email: "alice@example.com".to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .expect("log in")
        .into_inner()
        .access_token;
    let mut post_client = PostServiceClient::new(edge.clone());
    let post = post_client
        .create_post(bearer(
            &token,
            new_post("Still here", "Written by the previous release", None),
        ))
        .await
        .expect("create a post")
        .into_inner()
        .post
        .expect("a post");
    let like_count = VoteServiceClient::new(edge.clone())
        .vote(bearer(
            &token,
            VoteRequest {
                post_id: post.id.clone(),
                direction: VoteDirection::Add.into(),
            },
        ))
        .await
        .expect("like it")
        .into_inner()
        .like_count;
    assert_eq!(like_count, 1);

    let listed = post_client
        .list_posts(bearer(&token, ListPostsRequest::default()))
        .await
        .expect("list posts")
        .into_inner()
        .posts;
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.id.as_str(), p.title.as_str()))
            .collect::<Vec<_>>(),
        [(post.id.as_str(), "Still here")]
    );
    let got = post_client
        .get_post(bearer(
            &token,
            GetPostRequest {
                id: post.id.clone(),
            },
        ))
        .await
        .expect("get the post")
        .into_inner()
        .post
        .expect("a post");
    assert_eq!(got.owner_id, user.id);
    assert_eq!(got.like_count, Some(1));
    assert_eq!(got.liked_by_caller, Some(true));

    // What the old binaries wrote is whole in the current schema.
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    let counted: i64 =
        sqlx::query_scalar("select like_count from votes.like_counts where post_id = $1::uuid")
            .bind(&post.id)
            .fetch_one(&mut conn)
            .await
            .expect("the like is counted");
    assert_eq!(counted, 1);
    drop(conn);

    terminate_all([gateway, posts, votes, auth]).await;
    database.drop_now().await;
}
