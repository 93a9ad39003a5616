//! Two posts-service replicas behind the gateway, as real processes: one is killed
//! under load and started again, and the callers see what the README promises.
//!
//! Loopback only, on free ports; needs `DATABASE_URL` and the debug binaries
//! (`cargo build -p auth-service -p posts-service -p votes-service -p gateway`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::{ErrorReason, reason_of},
    posts::v1::{
        CreatePostRequest, GetPostRequest, ListPostsRequest, Post,
        post_service_client::PostServiceClient,
    },
};
use system_tests::{
    PASSWORD, Person, as_person,
    process::{Process, Running, ScratchDatabase, Topology, terminate_all},
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Concurrent callers, and how many calls each makes at most.
const CALLERS: usize = 4;
const MAX_CALLS_PER_CALLER: usize = 50_000;
/// No call, and no wait for the system to reach a state, may take longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls that must succeed after the kill before the replica is started again.
const CALLS_AFTER_KILL: usize = 200;

/// What one call through the gateway ended in.
#[derive(Debug)]
enum Outcome {
    Ok,
    Failed(tonic::Status),
    TimedOut,
}

/// Callers alternating GetPost and ListPosts through the gateway until told to
/// stop, counting the calls that succeed.
struct Load {
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicUsize>,
    callers: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(posts: PostServiceClient<Channel>, person: &Person, post_id: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let succeeded = Arc::new(AtomicUsize::new(0));
        let callers = (0..CALLERS)
            .map(|_| {
                let (mut posts, person, post_id) =
                    (posts.clone(), person.clone(), post_id.to_owned());
                let (stop, succeeded) = (stop.clone(), succeeded.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for call in 0..MAX_CALLS_PER_CALLER {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let answer = if call % 2 == 0 {
                            let request = GetPostRequest {
                                id: post_id.clone(),
                            };
                            let call = posts.get_post(as_person(&person, request));
                            tokio::time::timeout(CALL_TIMEOUT, call)
                                .await
                                .map(|r| r.map(drop))
                        } else {
                            let request = ListPostsRequest {
                                page_size: 10,
                                ..Default::default()
                            };
                            let call = posts.list_posts(as_person(&person, request));
                            tokio::time::timeout(CALL_TIMEOUT, call)
                                .await
                                .map(|r| r.map(drop))
                        };
                        outcomes.push(match answer {
                            Ok(Ok(())) => {
                                succeeded.fetch_add(1, Ordering::Relaxed);
                                Outcome::Ok
                            }
                            Ok(Err(status)) => Outcome::Failed(status),
                            Err(_) => Outcome::TimedOut,
                        });
                    }
                    outcomes
                })
            })
            .collect();
        Self {
            stop,
            succeeded,
            callers,
        }
    }

    fn succeeded(&self) -> usize {
        self.succeeded.load(Ordering::Relaxed)
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for caller in self.callers {
            outcomes.extend(caller.await.expect("a caller does not panic"));
        }
        outcomes
    }
}

/// Waits, at most [`WAIT_TIMEOUT`], until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let waiting = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT_TIMEOUT, waiting)
        .await
        .unwrap_or_else(|_| panic!("{what}, within {WAIT_TIMEOUT:?}"));
}

/// Calls a replica has answered, by its own log (one line per call).
fn calls_served(replica: &Process) -> usize {
    replica.log_lines_containing(&["agora.posts.v1.PostService/", "rpc finished"])
}

#[tokio::test]
async fn a_killed_posts_replica_costs_only_its_calls_in_flight_and_serves_again_once_back() {
    let database = ScratchDatabase::new();
    let topology = Topology::<2>::new(&database.url);
    let Running {
        auth,
        votes,
        posts: [posts_a, posts_b],
        gateway,
    } = topology.start().await;

    // Arrange: a person and a post, through the gateway.
    let edge = topology.edge();
    let email = "replicas@example.com";
    let user = UserServiceClient::new(edge.clone())
        .create_user(CreateUserRequest {
            email: email.into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("registration through the gateway")
        .into_inner()
        .user
        .expect("a user");
    let token = AuthServiceClient::new(edge.clone())
        .login(LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login through the gateway")
        .into_inner()
        .access_token;
    let person = Person {
        id: user.id,
        email: email.into(),
        token,
    };
    let posts = PostServiceClient::new(edge.clone());
    let create = CreatePostRequest {
        post: Some(Post {
            title: "Replicas".into(),
            content: "Served by whichever is up.".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let post = posts
        .clone()
        .create_post(as_person(&person, create))
        .await
        .expect("a post through the gateway")
        .into_inner()
        .post
        .expect("a post");

    // Act: load on both replicas, then one dies.
    let load = Load::start(posts, &person, &post.id);
    eventually("both replicas serve calls", || {
        calls_served(&posts_a) > 0 && calls_served(&posts_b) > 0
    })
    .await;
    posts_b.kill().await;
    let succeeded_at_kill = load.succeeded();
    eventually("calls keep succeeding after the kill", || {
        load.succeeded() >= succeeded_at_kill + CALLS_AFTER_KILL
    })
    .await;
    let health = HealthClient::new(edge.clone())
        .check(HealthCheckRequest {
            service: "agora.posts.v1.PostService".into(),
        })
        .await
        .expect("the gateway's health answers")
        .into_inner();
    assert_eq!(
        health.status(),
        ServingStatus::Serving,
        "one replica serving is enough"
    );

    // ... and comes back on the same port, with nothing else restarted.
    let posts_b = Process::start_keeping_log("posts-service", &topology.posts_env(1)).await;
    eventually("the restarted replica serves calls again", || {
        calls_served(&posts_b) > 0
    })
    .await;
    let outcomes = load.finish().await;

    // Assert: every call succeeded or failed with UNAVAILABLE, reason
    // DEPENDENCY_UNAVAILABLE, and only a handful failed: those in flight on the
    // killed replica, and at most one more per caller sent in the instant before
    // the gateway saw the replica's connections close.
    let unexpected: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| match outcome {
            Outcome::Ok => false,
            Outcome::Failed(status) => {
                status.code() != Code::Unavailable
                    || reason_of(status) != Some(ErrorReason::DependencyUnavailable)
            }
            Outcome::TimedOut => true,
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "every call succeeds or is UNAVAILABLE, DEPENDENCY_UNAVAILABLE: {unexpected:#?}"
    );
    let unavailable = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Outcome::Failed(_)))
        .count();
    println!(
        "{} calls, {unavailable} UNAVAILABLE, {} served by the restarted replica",
        outcomes.len(),
        calls_served(&posts_b)
    );
    assert!(
        unavailable <= 2 * CALLERS,
        "{unavailable} of {} calls failed; the dead replica must not keep failing calls",
        outcomes.len()
    );

    terminate_all([gateway, posts_a, posts_b, votes, auth]).await;
    database.drop_now().await;
}
