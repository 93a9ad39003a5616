//! Sessions across the real binaries: a logout, a refresh token used twice, a
//! password change and a deleted account each end access tokens in every
//! service, called straight, within the revocation bound; in the split topology
//! and in the all-in-one gateway.

use std::time::{Duration, Instant};

use agora_proto::{
    auth::v1::{
        self as auth, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::{ErrorReason, reason_of},
    posts::v1::{
        CreatePostRequest, ListPostsRequest, Post, post_service_client::PostServiceClient,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use system_tests::{
    PASSWORD,
    process::{Process, Running, ScratchDatabase, Topology, all_in_one_gateway, terminate_all},
};
use tonic::{Request, Status, transport::Channel};

/// How often verifiers ask for ended sessions in these tests, and how long a
/// revocation may take to reach every service: two polls and some slack.
const REFRESH_SECS: &str = "1";
const BOUND: Duration = Duration::from_secs(5);

fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A call every service makes with a token: posts-service's ListPosts, and
/// votes-service's Vote on a post that does not exist (answered NOT_FOUND once
/// the token passes).
async fn posts_call(posts: &Channel, token: &str) -> Result<(), Status> {
    PostServiceClient::new(posts.clone())
        .list_posts(bearer(token, ListPostsRequest::default()))
        .await
        .map(drop)
}

async fn votes_call(votes: &Channel, token: &str) -> Result<(), Status> {
    let request = VoteRequest {
        post_id: uuid::Uuid::now_v7().to_string(),
        direction: VoteDirection::Add.into(),
    };
    match VoteServiceClient::new(votes.clone())
        .vote(bearer(token, request))
        .await
    {
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        other => other.map(drop),
    }
}

/// Waits until `call` with `token` is refused as revoked; panics with what it
/// answered if that takes longer than [`BOUND`].
async fn refused_within_bound<F, Fut>(what: &str, token: &str, call: F) -> Duration
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), Status>>,
{
    let started = Instant::now();
    loop {
        let answer = call(token.to_owned()).await;
        match &answer {
            Err(status) if reason_of(status) == Some(ErrorReason::TokenRevoked) => {
                return started.elapsed();
            }
            _ if started.elapsed() > BOUND => {
                panic!("{what}: still {answer:?} after {BOUND:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[derive(Debug)]
struct Session {
    access: String,
    refresh: String,
}

async fn log_in(edge: &Channel, email: &str, password: &str) -> Result<Session, Status> {
    let answer = AuthServiceClient::new(edge.clone())
        .login(auth::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner();
    assert!(!answer.refresh_token.is_empty(), "a refresh token");
    Ok(Session {
        access: answer.access_token,
        refresh: answer.refresh_token,
    })
}

async fn sign_up(edge: &Channel, email: &str) -> String {
    UserServiceClient::new(edge.clone())
        .create_user(auth::CreateUserRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            request_id: String::new(),
        })
        .await
        .expect("signed up")
        .into_inner()
        .user
        .expect("a user")
        .id
}

#[tokio::test]
async fn ended_sessions_are_refused_by_every_service_in_the_split_topology() {
    let database = ScratchDatabase::new();
    let topology =
        Topology::<1>::new(&database.url).with("TOKEN_REVOCATIONS_REFRESH_SECS", REFRESH_SECS);
    let auth = Process::start("auth-service", &topology.auth_env()).await;
    let votes = Process::start("votes-service", &topology.votes_env()).await;
    let posts = Process::start("posts-service", &topology.posts_env(0)).await;
    let gateway = Process::start("gateway", &topology.gateway_env()).await;
    let edge = topology.edge();
    let (posts_channel, votes_channel) = (
        topology.service("posts-service"),
        topology.service("votes-service"),
    );
    let everywhere = |token: String| {
        let (posts_channel, votes_channel) = (posts_channel.clone(), votes_channel.clone());
        async move {
            posts_call(&posts_channel, &token).await?;
            votes_call(&votes_channel, &token).await
        }
    };

    // Logout ends one session, in posts- and votes-service alike; the other
    // session goes on.
    let email = "alice@example.com";
    sign_up(&edge, email).await;
    let first = log_in(&edge, email, PASSWORD).await.unwrap();
    let second = log_in(&edge, email, PASSWORD).await.unwrap();
    everywhere(first.access.clone())
        .await
        .expect("a live token works");
    AuthServiceClient::new(edge.clone())
        .logout(bearer(&first.access, auth::LogoutRequest {}))
        .await
        .expect("logged out");
    refused_within_bound("posts-service after logout", &first.access, |token| {
        let channel = posts_channel.clone();
        async move { posts_call(&channel, &token).await }
    })
    .await;
    refused_within_bound("votes-service after logout", &first.access, |token| {
        let channel = votes_channel.clone();
        async move { votes_call(&channel, &token).await }
    })
    .await;
    let refused = AuthServiceClient::new(edge.clone())
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: first.refresh.clone(),
        })
        .await
        .expect_err("a logged-out session's refresh token is dead");
    assert_eq!(reason_of(&refused), Some(ErrorReason::RefreshTokenInvalid));
    everywhere(second.access.clone())
        .await
        .expect("the other session goes on");

    // A refresh token used twice ends its session: the new tokens die too.
    let mut auth_client = AuthServiceClient::new(edge.clone());
    let renewed = auth_client
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: second.refresh.clone(),
        })
        .await
        .expect("refreshed")
        .into_inner();
    assert_ne!(renewed.refresh_token, second.refresh);
    everywhere(renewed.access_token.clone())
        .await
        .expect("the new token works");
    let reused = auth_client
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: second.refresh.clone(),
        })
        .await
        .expect_err("a spent refresh token");
    assert_eq!(reason_of(&reused), Some(ErrorReason::RefreshTokenReused));
    refused_within_bound(
        "the renewed token after reuse",
        &renewed.access_token,
        everywhere,
    )
    .await;
    let dead = auth_client
        .refresh_token(auth::RefreshTokenRequest {
            refresh_token: renewed.refresh_token.clone(),
        })
        .await
        .expect_err("the session has ended");
    assert_eq!(reason_of(&dead), Some(ErrorReason::RefreshTokenInvalid));

    // A password change ends every other session and keeps the caller's.
    let keeper = log_in(&edge, email, PASSWORD).await.unwrap();
    let other = log_in(&edge, email, PASSWORD).await.unwrap();
    let new_password = "a much better passphrase";
    let changed = UserServiceClient::new(edge.clone())
        .change_password(bearer(
            &keeper.access,
            auth::ChangePasswordRequest {
                current_password: PASSWORD.to_owned(),
                new_password: new_password.to_owned(),
            },
        ))
        .await
        .expect("changed")
        .into_inner();
    assert!(changed.ended_sessions >= 1, "{changed:?}");
    refused_within_bound(
        "another session after a password change",
        &other.access,
        everywhere,
    )
    .await;
    everywhere(keeper.access.clone())
        .await
        .expect("the caller's session goes on");
    let old = log_in(&edge, email, PASSWORD)
        .await
        .expect_err("the old password");
    assert_eq!(reason_of(&old), Some(ErrorReason::InvalidCredentials));
    log_in(&edge, email, new_password)
        .await
        .expect("the new password");

    terminate_all([gateway, posts, votes, auth]).await;
    database.drop_now().await;
}

#[tokio::test]
async fn a_deleted_account_leaves_no_row_and_its_tokens_are_refused() {
    let database = ScratchDatabase::new();
    let topology =
        Topology::<1>::new(&database.url).with("TOKEN_REVOCATIONS_REFRESH_SECS", REFRESH_SECS);
    let running = topology.start().await;
    let edge = topology.edge();
    let email = "leaver@example.com";
    let id = sign_up(&edge, email).await;
    let session = log_in(&edge, email, PASSWORD).await.unwrap();
    // Something of theirs in every schema: a post, a like, a request id.
    let post = PostServiceClient::new(edge.clone())
        .create_post(bearer(
            &session.access,
            CreatePostRequest {
                post: Some(Post {
                    title: "going".to_owned(),
                    content: "soon".to_owned(),
                    ..Default::default()
                }),
                request_id: uuid::Uuid::now_v7().to_string(),
            },
        ))
        .await
        .expect("posted")
        .into_inner()
        .post
        .expect("a post");
    VoteServiceClient::new(edge.clone())
        .vote(bearer(
            &session.access,
            VoteRequest {
                post_id: post.id.clone(),
                direction: VoteDirection::Add.into(),
            },
        ))
        .await
        .expect("liked");
    // A failed login, counted against the account.
    log_in(&edge, email, "not the password at all")
        .await
        .expect_err("a wrong password");

    let mut users = UserServiceClient::new(edge.clone());
    let someone_else = users
        .delete_user(bearer(
            &session.access,
            auth::DeleteUserRequest {
                id: uuid::Uuid::now_v7().to_string(),
                password: PASSWORD.to_owned(),
            },
        ))
        .await
        .expect_err("another account");
    assert_eq!(reason_of(&someone_else), Some(ErrorReason::NotAccountOwner));
    let wrong = users
        .delete_user(bearer(
            &session.access,
            auth::DeleteUserRequest {
                id: id.clone(),
                password: "not the password at all".to_owned(),
            },
        ))
        .await
        .expect_err("a wrong password");
    assert_eq!(reason_of(&wrong), Some(ErrorReason::InvalidCredentials));
    users
        .delete_user(bearer(
            &session.access,
            auth::DeleteUserRequest {
                id: id.clone(),
                password: PASSWORD.to_owned(),
            },
        ))
        .await
        .expect("deleted");

    let (posts_channel, votes_channel) = (
        topology.service("posts-service"),
        topology.service("votes-service"),
    );
    refused_within_bound("posts-service after deletion", &session.access, |token| {
        let channel = posts_channel.clone();
        async move { posts_call(&channel, &token).await }
    })
    .await;
    refused_within_bound("votes-service after deletion", &session.access, |token| {
        let channel = votes_channel.clone();
        async move { votes_call(&channel, &token).await }
    })
    .await;
    // WatchPosts keeps that the post went, for its watchers, and nothing more:
    // not whose it was, nor its title.
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    let deletion: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "delete from posts.post_events where post_id = $1::uuid and kind = 'deleted'
         returning owner_id::text, old_title",
    )
    .bind(&post.id)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        deletion,
        [(None, None)],
        "the post's deletion, for watchers"
    );
    // Besides, no row anywhere names the user, their email or their post.
    let left = rows_naming(&mut conn, &[&id, email, &post.id]).await;
    assert!(left.is_empty(), "rows left of the account: {left:#?}");
    // A login for the email from now on is a failed login for an unknown
    // email, counted as any is.
    let gone = log_in(&edge, email, PASSWORD)
        .await
        .expect_err("no account");
    assert_eq!(reason_of(&gone), Some(ErrorReason::InvalidCredentials));

    let Running {
        auth,
        votes,
        posts,
        gateway,
    } = running;
    terminate_all([gateway].into_iter().chain(posts).chain([votes, auth])).await;
    database.drop_now().await;
}

/// `schema.table` of every row in Agora's schemas whose text holds one of
/// `needles` (case-insensitively).
async fn rows_naming(conn: &mut PgConnection, needles: &[&str]) -> Vec<String> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "select table_schema::text, table_name::text from information_schema.tables
          where table_schema in ('auth', 'posts', 'votes') and table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (schema, table) in tables {
        for needle in needles {
            // Names from the catalogue, not from input.
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select count(*) from {schema}.{table} as row where row::text ilike '%' || $1 || '%'"
            )))
            .bind(needle)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            if count > 0 {
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "select row::text from {schema}.{table} as row where row::text ilike '%' || $1 || '%'"
                )))
                .bind(needle)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
                found.push(format!("{schema}.{table} naming {needle}: {rows:?}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_all_in_one_gateway_refuses_a_logged_out_token_and_serves_sessions_over_http() {
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, http_port) = all_in_one_gateway(
        &database.url,
        vec![("TOKEN_REVOCATIONS_REFRESH_SECS", REFRESH_SECS.to_owned())],
    )
    .await;
    let facade = format!("http://127.0.0.1:{http_port}");
    let edge = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect_lazy();
    let http = reqwest::Client::new();
    let email = "http@example.com";
    let signed_up = http
        .post(format!("{facade}/users"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 201);
    let login = |password: &'static str| {
        http.post(format!("{facade}/login"))
            .form(&[("username", email), ("password", password)])
            .send()
    };
    let token: Value = login(PASSWORD).await.unwrap().json().await.unwrap();
    let refresh = token["refresh_token"].as_str().unwrap().to_owned();
    assert!(token["expires_in"].as_i64().unwrap() > 0, "{token}");

    // POST /refresh: a new pair; the old refresh token is spent.
    let renewed = http
        .post(format!("{facade}/refresh"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 200);
    let renewed: Value = renewed.json().await.unwrap();
    let access = renewed["access_token"].as_str().unwrap().to_owned();
    let missing = http
        .post(format!("{facade}/refresh"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 422);

    // GET /sessions and /users/me.
    let sessions: Value = http
        .get(format!("{facade}/sessions"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["current"], true);
    let me: Value = http
        .get(format!("{facade}/users/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], email);

    // POST /users/me/password with a wrong password is 403, as a bad login.
    let wrong = http
        .post(format!("{facade}/users/me/password"))
        .bearer_auth(&access)
        .json(&json!({"current_password": "nope nope nope", "new_password": "another passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);

    // POST /logout: the token is refused at the edge within the bound, over
    // gRPC and HTTP alike.
    let out = http
        .post(format!("{facade}/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let edge_channel = edge.clone();
    refused_within_bound("the edge after an HTTP logout", &access, |token| {
        let channel = edge_channel.clone();
        async move { posts_call(&channel, &token).await }
    })
    .await;
    let page = http
        .get(format!("{facade}/posts"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);

    // DELETE /users/me with the password, from a new session.
    let token: Value = login(PASSWORD).await.unwrap().json().await.unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();
    let deleted = http
        .delete(format!("{facade}/users/me"))
        .bearer_auth(&access)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(login(PASSWORD).await.unwrap().status(), 403);

    gateway.terminate().await;
    database.drop_now().await;
}
