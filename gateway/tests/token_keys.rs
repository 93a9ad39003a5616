//! Token keys in the split topology. A key removed from the set the verifiers
//! read stops being trusted within their refresh interval: posts- and
//! votes-service read a JWK Set file (`JWKS_FILE`) again every
//! `TOKEN_KEYS_REFRESH_SECS`, and forget the tokens they remembered from that
//! key, though no token names an unknown key. And the documented rotation runs
//! end to end against two auth-service replicas, none of them restarted.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, GetJwksRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::ErrorReason,
    posts::v1::{ListPostsRequest, post_service_client::PostServiceClient},
    votes::v1::{CountVotesRequest, vote_service_client::VoteServiceClient},
};
use sqlx::{Connection, PgConnection};
use system_tests::{
    assert_reason, bearer,
    process::{Env, Process, ScratchDatabase, Topology, free_port, run, terminate_all},
};
use tonic::{Code, Status, transport::Channel};

const REFRESH_SECS: u64 = 5;
/// Time for a fetch, and for the tick to come round, beyond the interval.
const MARGIN: Duration = Duration::from_secs(3);

fn var(env: &Env, name: &str) -> String {
    env.iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("{name} is set"))
}

fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy()
}

/// What posts- and votes-service answer a call with `token`: `Ok` or the status.
async fn answers(posts: &Channel, votes: &Channel, token: &str) -> [Result<(), Status>; 2] {
    let listed = PostServiceClient::new(posts.clone())
        .list_posts(bearer(token, ListPostsRequest::default()))
        .await
        .map(drop);
    let counted = VoteServiceClient::new(votes.clone())
        .count_votes(bearer(
            token,
            CountVotesRequest {
                post_ids: vec![uuid::Uuid::now_v7().to_string()],
            },
        ))
        .await
        .map(drop);
    [listed, counted]
}

/// Waits until both posts- and votes-service refuse `token` as signed by a key
/// they do not know, failing after `within`.
async fn refused_by_both_within(posts: &Channel, votes: &Channel, token: &str, within: Duration) {
    let start = Instant::now();
    let refused = loop {
        let [listed, counted] = answers(posts, votes, token).await;
        if let (Err(listed), Err(counted)) = (&listed, &counted)
            && listed.code() == Code::Unauthenticated
            && counted.code() == Code::Unauthenticated
        {
            break [listed.clone(), counted.clone()];
        }
        assert!(
            start.elapsed() < within,
            "still accepted {:?} after the key left the set: {listed:?}, {counted:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (service, status) in ["posts-service", "votes-service"].iter().zip(&refused) {
        assert_reason(status, ErrorReason::TokenKeyUnknown, service);
    }
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_file_is_refused_by_posts_and_votes_service_within_the_interval()
 {
    let database = ScratchDatabase::new();
    let topology = Topology::<1>::new(&database.url);
    let auth = Process::start("auth-service", &topology.auth_env()).await;
    let auth_channel = channel(&var(&topology.auth_env(), "AUTH_LISTEN_ADDR"));

    // The set auth-service publishes, as a file the other two read.
    let published = AuthServiceClient::new(auth_channel.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .expect("auth-service publishes its keys")
        .into_inner();
    let keys: Vec<_> = published
        .keys
        .iter()
        .map(|jwk| {
            serde_json::json!({
                "kty": jwk.kty, "crv": jwk.crv, "x": jwk.x,
                "kid": jwk.kid, "alg": jwk.alg, "use": jwk.r#use,
            })
        })
        .collect();
    assert!(!keys.is_empty(), "a key to remove");
    let file = std::env::temp_dir().join(format!("agora-jwks-{}.json", uuid::Uuid::now_v7()));
    let set = serde_json::json!({ "keys": keys });
    std::fs::write(&file, set.to_string()).unwrap();
    let reading_the_file = |mut env: Env| {
        env.push(("JWKS_FILE", file.display().to_string()));
        env.push(("TOKEN_KEYS_REFRESH_SECS", REFRESH_SECS.to_string()));
        env
    };
    let votes_env = reading_the_file(topology.votes_env());
    let posts_env = reading_the_file(topology.posts_env(0));
    let votes = Process::start("votes-service", &votes_env).await;
    let posts = Process::start("posts-service", &posts_env).await;
    let votes_channel = channel(&var(&votes_env, "VOTES_LISTEN_ADDR"));
    let posts_channel = channel(&var(&posts_env, "POSTS_LISTEN_ADDR"));

    let (email, password) = ("keys@example.com", "correct horse battery");
    UserServiceClient::new(auth_channel.clone())
        .create_user(CreateUserRequest {
            email: email.into(),
            password: password.into(),
            request_id: String::new(),
        })
        .await
        .expect("registered");
    let token = AuthServiceClient::new(auth_channel)
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .expect("logged in")
        .into_inner()
        .access_token;
    for answer in answers(&posts_channel, &votes_channel, &token).await {
        // Accepted (and now remembered); CountVotes of an unknown post is fine.
        if let Err(status) = answer {
            assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }

    // The key leaves the set: no token names an unknown key, yet within the
    // interval both services refuse the token they had accepted.
    std::fs::write(&file, r#"{"keys": []}"#).unwrap();
    refused_by_both_within(
        &posts_channel,
        &votes_channel,
        &token,
        Duration::from_secs(REFRESH_SECS) + MARGIN,
    )
    .await;

    terminate_all([posts, votes, auth]).await;
    std::fs::remove_file(file).unwrap();
    database.drop_now().await;
}

/// How often each auth-service replica reloads the keys, in the rotation test.
const RELOAD_SECS: u64 = 1;
/// How long the new key is published before it signs.
const SIGN_AFTER_SECS: u64 = 6;

/// `env` with `name` set to `value`, replacing any value it had.
fn with(mut env: Env, name: &'static str, value: String) -> Env {
    env.retain(|(key, _)| *key != name);
    env.push((name, value));
    env
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("tokens name their key")
}

async fn published_kids(auth: &Channel) -> Vec<String> {
    let published = AuthServiceClient::new(auth.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .expect("auth-service publishes its keys")
        .into_inner();
    published.keys.into_iter().map(|jwk| jwk.kid).collect()
}

async fn log_in(channel: &Channel) -> String {
    AuthServiceClient::new(channel.clone())
        .login(LoginRequest {
            email: "rotation@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("logged in")
        .into_inner()
        .access_token
}

/// Polls `condition` every 200 ms until it holds, failing after `within`.
async fn eventually<F: Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_rotation_procedure_runs_end_to_end_on_two_auth_service_replicas() {
    let database = ScratchDatabase::new();
    let topology = Topology::<1>::new(&database.url);
    let second_auth = format!("127.0.0.1:{}", free_port());
    let auth_urls = format!(
        "http://{},http://{second_auth}",
        var(&topology.auth_env(), "AUTH_LISTEN_ADDR")
    );
    let auth_env = with(
        topology.auth_env(),
        "SIGNING_KEYS_RELOAD_SECS",
        RELOAD_SECS.to_string(),
    );
    let verifying = |env: Env| {
        let env = with(env, "AUTH_SERVICE_URL", auth_urls.clone());
        with(env, "TOKEN_KEYS_REFRESH_SECS", REFRESH_SECS.to_string())
    };
    let replicas = [
        Process::start("auth-service", &auth_env).await,
        Process::start(
            "auth-service",
            &with(auth_env.clone(), "AUTH_LISTEN_ADDR", second_auth.clone()),
        )
        .await,
    ];
    let auth_channels = [
        channel(&var(&auth_env, "AUTH_LISTEN_ADDR")),
        channel(&second_auth),
    ];
    let votes_env = verifying(topology.votes_env());
    let posts_env = verifying(topology.posts_env(0));
    let votes = Process::start("votes-service", &votes_env).await;
    let posts = Process::start("posts-service", &posts_env).await;
    let gateway = Process::start("gateway", &verifying(topology.gateway_env())).await;
    let (posts_channel, votes_channel) = (
        channel(&var(&posts_env, "POSTS_LISTEN_ADDR")),
        channel(&var(&votes_env, "VOTES_LISTEN_ADDR")),
    );
    let edge = topology.edge();
    UserServiceClient::new(edge.clone())
        .create_user(CreateUserRequest {
            email: "rotation@example.com".into(),
            password: "correct horse battery".into(),
            request_id: String::new(),
        })
        .await
        .expect("registered");
    let old_token = log_in(&edge).await;
    let old_kid = kid_of(&old_token);
    let database_only = [("DATABASE_URL", database.url.clone())];

    // 1. Publish a new key, signing only later.
    let (status, printed) = run(
        "auth-service",
        &database_only,
        &[
            "rotate-signing-key",
            "--sign-after-secs",
            &SIGN_AFTER_SECS.to_string(),
        ],
    )
    .await;
    assert!(status.success(), "{printed}");
    let new_kid = printed
        .split_whitespace()
        .skip_while(|word| *word != "key")
        .nth(1)
        .expect("the new key's id is printed")
        .to_owned();
    assert!(
        printed.contains(&format!("key {old_kid} stops signing then")),
        "{printed}"
    );

    // 2. Every replica publishes it within its reload interval, before it signs.
    for auth in &auth_channels {
        eventually(
            "every replica publishes the new key beside the old",
            Duration::from_secs(RELOAD_SECS) + MARGIN,
            || async {
                let kids = published_kids(auth).await;
                kids.contains(&new_kid) && kids.contains(&old_kid)
            },
        )
        .await;
    }
    let signs_yet: bool = {
        let mut conn = PgConnection::connect(&database.url).await.unwrap();
        sqlx::query_scalar("select sign_time <= now() from auth.signing_keys where kid = $1")
            .bind(&new_kid)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    if !signs_yet {
        assert_eq!(
            kid_of(&log_in(&auth_channels[0]).await),
            old_kid,
            "the old key signs until the new one's time"
        );
    }

    // 3. At its sign time every replica signs with the new key, and its tokens
    //    work everywhere at once: verifiers fetch a key they meet first.
    for auth in &auth_channels {
        eventually(
            "each replica signs with the new key",
            Duration::from_secs(SIGN_AFTER_SECS + RELOAD_SECS) + MARGIN,
            || async { kid_of(&log_in(auth).await) == new_kid },
        )
        .await;
    }
    let new_token = log_in(&edge).await;
    for token in [&new_token, &old_token] {
        for answer in answers(&posts_channel, &votes_channel, token).await {
            if let Err(status) = answer {
                assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
            }
        }
    }

    // 4. The old key is withdrawn after the longest token lifetime; here at once,
    //    as for a key that leaked. Its tokens are then refused everywhere within
    //    the reload and refresh intervals; the new key's are not.
    let retire_time_after_sign_time: f64 = {
        let mut conn = PgConnection::connect(&database.url).await.unwrap();
        sqlx::query_scalar(
            "select extract(epoch from old.retire_time - new.sign_time)::float8
               from auth.signing_keys old, auth.signing_keys new
              where old.kid = $1 and new.kid = $2",
        )
        .bind(&old_kid)
        .bind(&new_kid)
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    assert_eq!(
        retire_time_after_sign_time, 3660.0,
        "an hour and a minute: the longest token lifetime, and leeway"
    );
    let (status, printed) = run(
        "auth-service",
        &database_only,
        &["retire-signing-key", &old_kid],
    )
    .await;
    assert!(status.success(), "{printed}");
    refused_by_both_within(
        &posts_channel,
        &votes_channel,
        &old_token,
        Duration::from_secs(RELOAD_SECS + REFRESH_SECS) + MARGIN,
    )
    .await;
    for answer in answers(&posts_channel, &votes_channel, &new_token).await {
        if let Err(status) = answer {
            assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
    for auth in &auth_channels {
        assert_eq!(published_kids(auth).await, vec![new_kid.clone()]);
    }

    // The only key that signs cannot be withdrawn: logins would fail.
    let (status, printed) = run(
        "auth-service",
        &database_only,
        &["retire-signing-key", &new_kid],
    )
    .await;
    assert!(!status.success(), "{printed}");
    assert!(printed.contains("the only key that signs now"), "{printed}");

    let [first, second] = replicas;
    terminate_all([gateway, posts, votes, first, second]).await;
    database.drop_now().await;
}
