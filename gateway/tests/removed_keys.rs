//! A key removed from the set the verifiers read stops being trusted within their
//! refresh interval, in the split topology: posts- and votes-service read a JWK
//! Set file (`JWKS_FILE`) again every `TOKEN_KEYS_REFRESH_SECS`, and forget the
//! tokens they remembered from that key, though no token names an unknown key.

use std::time::{Duration, Instant};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, GetJwksRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::ErrorReason,
    posts::v1::{ListPostsRequest, post_service_client::PostServiceClient},
    votes::v1::{CountVotesRequest, vote_service_client::VoteServiceClient},
};
use system_tests::{
    assert_reason, bearer,
    process::{Env, Process, ScratchDatabase, Topology, terminate_all},
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
    let removed = Instant::now();
    let refused = loop {
        let [listed, counted] = answers(&posts_channel, &votes_channel, &token).await;
        if let (Err(listed), Err(counted)) = (&listed, &counted)
            && listed.code() == Code::Unauthenticated
            && counted.code() == Code::Unauthenticated
        {
            break [listed.clone(), counted.clone()];
        }
        assert!(
            removed.elapsed() < Duration::from_secs(REFRESH_SECS) + MARGIN,
            "still accepted {:?} after the key was removed: {listed:?}, {counted:?}",
            removed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (service, status) in ["posts-service", "votes-service"].iter().zip(&refused) {
        assert_reason(status, ErrorReason::TokenKeyUnknown, service);
    }

    terminate_all([posts, votes, auth]).await;
    std::fs::remove_file(file).unwrap();
    database.drop_now().await;
}
