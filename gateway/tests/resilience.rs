//! The split topology as real processes, when something it depends on fails:
//! votes-service or auth-service killed with SIGKILL under load, PostgreSQL
//! restarted under load, and a genuine token whose user has been deleted. Callers
//! see what `posts.proto` promises: posts still answered, without what the missing
//! neighbour adds; writes that need no neighbour still done, and done once; an
//! outage UNAVAILABLE `DEPENDENCY_UNAVAILABLE`, never INTERNAL; and everything back
//! once the failed part is, with nothing else restarted.
//!
//! Loopback only, on free ports; needs `DATABASE_URL`, the debug binaries
//! (`cargo build -p auth-service -p posts-service -p votes-service -p gateway`),
//! and for the restart PostgreSQL's server binaries, a `postgres` user and root
//! (see `system_tests::postgres`). Every wait polls and is bounded.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, User, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::{ErrorReason, reason_of},
    posts::v1::{
        CreatePostRequest, GetPostRequest, ListPostsRequest, Post,
        post_service_client::PostServiceClient,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use sqlx::{Connection, PgConnection, PgPool};
use system_tests::{
    PASSWORD, Person, as_person, assert_reason,
    postgres::Cluster,
    process::{Env, Process, ScratchDatabase, Topology, terminate_all},
};
use tokio::task::JoinHandle;
use tonic::{Code, Request, Response, Status, transport::Channel};
use uuid::Uuid;

/// The deadline every call carries; the test gives up on a call a moment later.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// No wait for the system to reach a state may take longer.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// The system

/// A neighbour of posts-service that a test kills and starts again.
#[derive(Debug, Clone, Copy)]
enum Neighbour {
    Auth,
    Votes,
}

impl Neighbour {
    fn binary(self) -> &'static str {
        match self {
            Self::Auth => "auth-service",
            Self::Votes => "votes-service",
        }
    }
}

/// The split [`Topology`] running, with one posts-service: its neighbours can be
/// killed and started again.
struct System {
    topology: Topology<1>,
    /// The gateway's gRPC edge, which every call of the tests goes through.
    edge: Channel,
    auth: Option<Process>,
    votes: Option<Process>,
    posts: Process,
    gateway: Process,
}

impl System {
    /// Starts the four binaries on free loopback ports over `database_url`, in
    /// dependency order.
    async fn start(database_url: &str) -> Self {
        // The load test writes some 330 posts as one person within seconds, far
        // past the default quota, which is not what these tests are about.
        let topology = Topology::new(database_url).with("QUOTA_POSTS_PER_MINUTE", "100000");
        let running = topology.start().await;
        let [posts] = running.posts;
        Self {
            edge: topology.edge(),
            topology,
            auth: Some(running.auth),
            votes: Some(running.votes),
            posts,
            gateway: running.gateway,
        }
    }

    fn posts(&self) -> PostServiceClient<Channel> {
        PostServiceClient::new(self.edge.clone())
    }

    fn slot(&mut self, neighbour: Neighbour) -> (&mut Option<Process>, Env) {
        match neighbour {
            Neighbour::Auth => (&mut self.auth, self.topology.auth_env()),
            Neighbour::Votes => (&mut self.votes, self.topology.votes_env()),
        }
    }

    /// SIGKILL, as a crash or an OOM kill ends it; returns once it is gone.
    async fn kill(&mut self, neighbour: Neighbour) {
        let (slot, _) = self.slot(neighbour);
        let process = slot.take().expect("the neighbour is running");
        let status = process.kill().await;
        assert!(
            !status.success(),
            "{} was killed: {status}",
            neighbour.binary()
        );
    }

    /// Starts the neighbour again, on the same port, as a supervisor would.
    async fn start_again(&mut self, neighbour: Neighbour) {
        let (slot, env) = self.slot(neighbour);
        assert!(slot.is_none(), "{} is not running", neighbour.binary());
        *slot = Some(Process::start(neighbour.binary(), &env).await);
    }

    /// Signs up and logs in a new person through the gateway.
    async fn sign_up(&self, email: &str) -> Person {
        let user = self.register(email).await;
        Person {
            id: user.id,
            email: email.to_owned(),
            token: self.login(email).await.expect("login through the gateway"),
        }
    }

    /// Registers a user through the gateway, without logging in.
    async fn register(&self, email: &str) -> User {
        let mut request = Request::new(CreateUserRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        });
        request.set_timeout(CALL_TIMEOUT);
        let mut users = UserServiceClient::new(self.edge.clone());
        within(users.create_user(request))
            .await
            .expect("registration through the gateway")
            .user
            .expect("a user")
    }

    /// An access token for `email`, through the gateway.
    async fn login(&self, email: &str) -> Result<String, Status> {
        let mut request = Request::new(LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
        });
        request.set_timeout(CALL_TIMEOUT);
        let mut auth = AuthServiceClient::new(self.edge.clone());
        Ok(within(auth.login(request)).await?.access_token)
    }

    /// Stops every process with SIGTERM; each must stop cleanly, which also
    /// proves it ran all along.
    async fn stop(self) {
        let processes = [Some(self.gateway), Some(self.posts), self.votes, self.auth];
        terminate_all(processes.into_iter().flatten()).await;
    }
}

/// `message` with the person's token and [`CALL_TIMEOUT`] as its deadline.
fn bearer<T>(person: &Person, message: T) -> Request<T> {
    let mut request = as_person(person, message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// The answer of a call, or DEADLINE_EXCEEDED if none came in time: a call never
/// hangs a test.
async fn within<T>(call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, Status> {
    let give_up = CALL_TIMEOUT + Duration::from_secs(1);
    match tokio::time::timeout(give_up, call).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the test had no answer within {give_up:?}"
        ))),
    }
}

async fn get_post(
    posts: &mut PostServiceClient<Channel>,
    who: &Person,
    id: &str,
) -> Result<Post, Status> {
    let request = bearer(who, GetPostRequest { id: id.to_owned() });
    Ok(within(posts.get_post(request)).await?.post.expect("a post"))
}

async fn list_posts(
    posts: &mut PostServiceClient<Channel>,
    who: &Person,
) -> Result<Vec<Post>, Status> {
    let request = ListPostsRequest {
        page_size: 100,
        ..Default::default()
    };
    Ok(within(posts.list_posts(bearer(who, request))).await?.posts)
}

async fn create_post(
    posts: &mut PostServiceClient<Channel>,
    who: &Person,
    title: &str,
    request_id: Uuid,
) -> Result<Post, Status> {
    let request = CreatePostRequest {
        post: Some(Post {
            title: title.to_owned(),
            content: "Written while something was down.".to_owned(),
            ..Default::default()
        }),
        request_id: request_id.to_string(),
    };
    Ok(within(posts.create_post(bearer(who, request)))
        .await?
        .post
        .expect("a post"))
}

/// Polls `attempt` until it gives a value, at most [`WAIT_TIMEOUT`].
async fn eventually<T>(what: &str, mut attempt: impl AsyncFnMut() -> Option<T>) -> T {
    let polling = async {
        loop {
            if let Some(value) = attempt().await {
                return value;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    tokio::time::timeout(WAIT_TIMEOUT, polling)
        .await
        .unwrap_or_else(|_| panic!("{what}, within {WAIT_TIMEOUT:?}"))
}

/// The ids of the rows of `posts.posts` with this title.
async fn rows_titled(pool: &PgPool, title: &str) -> Vec<String> {
    sqlx::query_scalar("select id::text from posts.posts where title = $1")
        .bind(title)
        .fetch_all(pool)
        .await
        .expect("read posts.posts")
}

// ---------------------------------------------------------------------------
// Reads under a kill

/// Callers reading through the gateway, concurrently.
const READERS: usize = 3;
/// Reads each caller makes once the neighbour is gone.
const READS_AFTER_KILL: usize = 30;
/// Reads each caller makes at most before that, should the kill never come.
const MAX_READS_BEFORE_KILL: usize = 2_000;

/// Where the kill stands, as a caller saw it when a read started and ended.
const UP: u8 = 0;
const KILLING: u8 = 1;
const DOWN: u8 = 2;

/// One GetPost or ListPosts, with the posts it answered.
#[derive(Debug)]
struct Read {
    started: u8,
    ended: u8,
    answer: Result<Vec<Post>, Status>,
}

/// Callers alternating GetPost and ListPosts through the gateway, each until it
/// has made [`READS_AFTER_KILL`] reads after a neighbour is gone.
struct ReadLoad {
    phase: Arc<AtomicU8>,
    reads: Arc<AtomicUsize>,
    callers: Vec<JoinHandle<Vec<Read>>>,
}

impl ReadLoad {
    fn start(posts: PostServiceClient<Channel>, person: &Person, post_id: &str) -> Self {
        let phase = Arc::new(AtomicU8::new(UP));
        let reads = Arc::new(AtomicUsize::new(0));
        let callers = (0..READERS)
            .map(|_| {
                let (mut posts, person, post_id) =
                    (posts.clone(), person.clone(), post_id.to_owned());
                let (phase, reads) = (phase.clone(), reads.clone());
                tokio::spawn(async move {
                    let (mut done, mut after_kill) = (Vec::new(), 0);
                    for call in 0.. {
                        let started = phase.load(Ordering::SeqCst);
                        if started == DOWN {
                            if after_kill == READS_AFTER_KILL {
                                break;
                            }
                            after_kill += 1;
                        } else if call == MAX_READS_BEFORE_KILL {
                            break;
                        }
                        let answer = if call % 2 == 0 {
                            get_post(&mut posts, &person, &post_id)
                                .await
                                .map(|post| vec![post])
                        } else {
                            list_posts(&mut posts, &person).await
                        };
                        let ended = phase.load(Ordering::SeqCst);
                        done.push(Read {
                            started,
                            ended,
                            answer,
                        });
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                    done
                })
            })
            .collect();
        Self {
            phase,
            reads,
            callers,
        }
    }

    /// Kills the neighbour once the callers have made a few reads, and returns
    /// every read made, once each caller has made its reads after the kill.
    async fn kill_during(self, system: &mut System, neighbour: Neighbour) -> Vec<Read> {
        eventually("reads before the kill", async || {
            (self.reads.load(Ordering::SeqCst) >= 4 * READERS).then_some(())
        })
        .await;
        self.phase.store(KILLING, Ordering::SeqCst);
        system.kill(neighbour).await;
        self.phase.store(DOWN, Ordering::SeqCst);
        let mut reads = Vec::new();
        for caller in self.callers {
            let finished = tokio::time::timeout(WAIT_TIMEOUT, caller)
                .await
                .expect("the readers finish their reads in time");
            reads.extend(finished.expect("a reader does not panic"));
        }
        let after_kill = reads.iter().filter(|read| read.started == DOWN).count();
        assert_eq!(
            after_kill,
            READERS * READS_AFTER_KILL,
            "each reader read {READS_AFTER_KILL} times after the kill"
        );
        println!(
            "{} reads, {after_kill} of them started after {} was gone",
            reads.len(),
            neighbour.binary()
        );
        reads
    }
}

/// Every read succeeded; their posts, with when each read started and ended.
fn all_succeeded(reads: Vec<Read>, what: &str) -> Vec<(u8, u8, Vec<Post>)> {
    let failed: Vec<&Status> = reads
        .iter()
        .filter_map(|read| read.answer.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "every GetPost and ListPosts succeeds {what}; {} of {} failed: {failed:#?}",
        failed.len(),
        reads.len()
    );
    reads
        .into_iter()
        .map(|read| {
            let posts = read.answer.expect("checked above");
            assert!(!posts.is_empty(), "a read answers the post");
            (read.started, read.ended, posts)
        })
        .collect()
}

#[tokio::test]
async fn posts_are_served_without_like_counts_while_votes_service_is_down_and_with_them_once_back()
{
    let database = ScratchDatabase::new();
    let mut system = System::start(&database.url).await;
    let pool = PgPool::connect(&database.url).await.expect("the database");
    let person = system.sign_up("likes-down@example.com").await;
    let mut posts = system.posts();
    let post = create_post(&mut posts, &person, "Liked", Uuid::now_v7())
        .await
        .expect("a post");
    let vote = VoteRequest {
        post_id: post.id.clone(),
        direction: VoteDirection::Add.into(),
    };
    let mut votes = VoteServiceClient::new(system.edge.clone());
    within(votes.vote(bearer(&person, vote.clone())))
        .await
        .expect("a like while votes-service is up");

    // Act: votes-service dies under reads.
    let load = ReadLoad::start(posts.clone(), &person, &post.id);
    let reads = load.kill_during(&mut system, Neighbour::Votes).await;

    // Assert: every read succeeded; with the like count while votes-service was
    // up, and without it (absent, never zero) once it was gone.
    for (started, ended, answered) in all_succeeded(reads, "while votes-service dies") {
        for post in answered {
            if ended == UP {
                assert_eq!(
                    (post.like_count, post.liked_by_caller),
                    (Some(1), Some(true)),
                    "before the kill: {post:?}"
                );
            }
            if started == DOWN {
                assert_eq!(
                    (post.like_count, post.liked_by_caller),
                    (None, None),
                    "after the kill the likes are unknown: {post:?}"
                );
            }
        }
    }

    // A write that needs no votes-service succeeds, once, also when retried.
    let request_id = Uuid::now_v7();
    let title = "Written without votes-service";
    let created = create_post(&mut posts, &person, title, request_id)
        .await
        .expect("CreatePost while votes-service is down");
    assert_eq!(
        (created.like_count, created.liked_by_caller),
        (None, None),
        "a new post's likes are unknown too: {created:?}"
    );
    let retried = create_post(&mut posts, &person, title, request_id)
        .await
        .expect("a retry of CreatePost while votes-service is down");
    assert_eq!(retried.id, created.id, "a retry answers the first post");
    assert_eq!(
        rows_titled(&pool, title).await,
        [created.id.as_str()],
        "exactly one row for the post"
    );

    // Liking needs votes-service: UNAVAILABLE, at once rather than at the deadline.
    let status = within(votes.vote(bearer(&person, vote)))
        .await
        .expect_err("Vote while votes-service is down");
    assert_reason(
        &status,
        ErrorReason::DependencyUnavailable,
        "Vote while votes-service is down",
    );

    // votes-service comes back on its port, with nothing else restarted.
    system.start_again(Neighbour::Votes).await;
    let back = eventually("like counts come back", async || {
        let post = get_post(&mut posts, &person, &post.id).await.ok()?;
        post.like_count.is_some().then_some(post)
    })
    .await;
    assert_eq!(
        (back.like_count, back.liked_by_caller),
        (Some(1), Some(true)),
        "the like made before the outage: {back:?}"
    );
    let new_post = get_post(&mut posts, &person, &created.id)
        .await
        .expect("the post written during the outage");
    assert_eq!(new_post.like_count, Some(0), "{new_post:?}");

    system.stop().await;
    pool.close().await;
    database.drop_now().await;
}

#[tokio::test]
async fn posts_keep_their_owner_ids_while_auth_service_is_down_and_logins_work_once_back() {
    let database = ScratchDatabase::new();
    let mut system = System::start(&database.url).await;
    let pool = PgPool::connect(&database.url).await.expect("the database");
    let author = system.sign_up("owners-down@example.com").await;
    // A user posts-service has never described, whose post appears only later.
    let unseen = system.register("unseen@example.com").await;
    let mut posts = system.posts();
    let post = create_post(&mut posts, &author, "Authored", Uuid::now_v7())
        .await
        .expect("a post");
    let read = get_post(&mut posts, &author, &post.id)
        .await
        .expect("GetPost while auth-service is up");
    assert_eq!(
        read.owner.as_ref().map(|owner| owner.id.as_str()),
        Some(author.id.as_str()),
        "the author, read before the kill: {read:?}"
    );

    // Act: auth-service dies under reads.
    let load = ReadLoad::start(posts.clone(), &author, &post.id);
    let reads = load.kill_during(&mut system, Neighbour::Auth).await;

    // Assert: every read succeeded, each post with its owner id, and the author
    // read before the kill with the profile remembered.
    for (_, _, answered) in all_succeeded(reads, "while auth-service dies") {
        for post in answered {
            assert_eq!(post.owner_id, author.id, "{post:?}");
            assert_eq!(
                post.owner.as_ref().map(|owner| owner.id.as_str()),
                Some(author.id.as_str()),
                "an author read before the kill: {post:?}"
            );
        }
    }

    // A post by someone never looked up: its owner is unknown, its owner id known.
    let unseen_post = Uuid::now_v7();
    sqlx::query(
        "insert into posts.posts (id, owner_id, title, content) values ($1, $2::uuid, 'Unseen', 'By someone never looked up')",
    )
    .bind(unseen_post)
    .bind(&unseen.id)
    .execute(&pool)
    .await
    .expect("insert a post by another user");
    let listed = list_posts(&mut posts, &author)
        .await
        .expect("ListPosts while auth-service is down");
    let by_unseen = listed
        .iter()
        .find(|post| post.id == unseen_post.to_string())
        .expect("the unseen user's post is listed");
    assert_eq!(by_unseen.owner_id, unseen.id, "{by_unseen:?}");
    assert_eq!(
        by_unseen.owner, None,
        "an owner never looked up is absent, not made up: {by_unseen:?}"
    );

    // Writing a post needs no auth-service: the token was checked with keys
    // already fetched.
    let created = create_post(
        &mut posts,
        &author,
        "Written without auth-service",
        Uuid::now_v7(),
    )
    .await
    .expect("CreatePost while auth-service is down");
    assert_eq!(created.owner_id, author.id, "{created:?}");
    assert_eq!(
        created.owner.as_ref().map(|owner| owner.id.as_str()),
        Some(author.id.as_str()),
        "the author, remembered: {created:?}"
    );

    // Logging in needs it: UNAVAILABLE.
    let status = system
        .login(&author.email)
        .await
        .expect_err("Login while auth-service is down");
    assert_reason(
        &status,
        ErrorReason::DependencyUnavailable,
        "Login while auth-service is down",
    );

    // auth-service comes back on its port, with nothing else restarted.
    system.start_again(Neighbour::Auth).await;
    eventually("logins work again", async || {
        system.login(&author.email).await.ok()
    })
    .await;
    eventually("owners are looked up again", async || {
        let listed = list_posts(&mut posts, &author).await.ok()?;
        let by_unseen = listed
            .into_iter()
            .find(|post| post.id == unseen_post.to_string())?;
        by_unseen.owner.filter(|owner| owner.id == unseen.id)
    })
    .await;

    system.stop().await;
    pool.close().await;
    database.drop_now().await;
}

// ---------------------------------------------------------------------------
// PostgreSQL restarted under load

/// Concurrent callers, and the operations each makes: GetPost, ListPosts and
/// CreatePost in turn, about a thousand calls in all.
const CALLERS: usize = 4;
const OPERATIONS_PER_CALLER: usize = 250;
/// Tries of one CreatePost, with its one request id, while it is UNAVAILABLE.
const CREATE_TRIES: usize = 50;
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    GetPost,
    ListPosts,
    CreatePost,
}

/// One call and how it ended.
#[derive(Debug)]
struct Call {
    method: Method,
    answer: Result<(), Status>,
}

/// What one caller did.
#[derive(Debug, Default)]
struct Calls {
    calls: Vec<Call>,
    /// Each CreatePost that succeeded: its request id and the post answered.
    created: Vec<(Uuid, String)>,
    /// CreatePosts still failing after [`CREATE_TRIES`].
    gave_up: Vec<Uuid>,
}

/// The title that names a CreatePost's request id, so the rows it wrote can be
/// counted.
fn title_of(request_id: Uuid) -> String {
    format!("load {request_id}")
}

fn is_dependency_unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && reason_of(status) == Some(ErrorReason::DependencyUnavailable)
}

async fn caller(
    mut posts: PostServiceClient<Channel>,
    person: Person,
    post_id: String,
    done: Arc<AtomicUsize>,
) -> Calls {
    let mut calls = Calls::default();
    for operation in 0..OPERATIONS_PER_CALLER {
        match operation % 3 {
            0 => {
                let answer = get_post(&mut posts, &person, &post_id).await.map(drop);
                calls.calls.push(Call {
                    method: Method::GetPost,
                    answer,
                });
            }
            1 => {
                let answer = list_posts(&mut posts, &person).await.map(drop);
                calls.calls.push(Call {
                    method: Method::ListPosts,
                    answer,
                });
            }
            _ => {
                let request_id = Uuid::now_v7();
                let title = title_of(request_id);
                let mut created = None;
                for _ in 0..CREATE_TRIES {
                    let answer = create_post(&mut posts, &person, &title, request_id).await;
                    let retry = answer.as_ref().is_err_and(is_dependency_unavailable);
                    calls.calls.push(Call {
                        method: Method::CreatePost,
                        answer: answer.as_ref().map(drop).map_err(Clone::clone),
                    });
                    match answer {
                        Ok(post) => {
                            created = Some(post.id);
                            break;
                        }
                        Err(_) if retry => tokio::time::sleep(RETRY_PAUSE).await,
                        Err(_) => break,
                    }
                }
                match created {
                    Some(post_id) => calls.created.push((request_id, post_id)),
                    None => calls.gave_up.push(request_id),
                }
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    calls
}

/// When the server at `url` started, on a connection of its own.
async fn postmaster_start_time(url: &str) -> String {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("the test's cluster");
    let started = sqlx::query_scalar("select pg_postmaster_start_time()::text")
        .fetch_one(&mut conn)
        .await
        .expect("the server's start time");
    let _ = conn.close().await;
    started
}

#[tokio::test]
async fn a_postgres_restart_under_load_costs_only_unavailable_calls_and_writes_each_post_once() {
    // Arrange: a cluster of the test's own, which every service uses.
    let cluster = Arc::new(Cluster::start());
    let database_url = cluster.url("agora");
    let system = System::start(&database_url).await;
    let person = system.sign_up("restart@example.com").await;
    let mut posts = system.posts();
    let seed_request = Uuid::now_v7();
    let seed = create_post(&mut posts, &person, &title_of(seed_request), seed_request)
        .await
        .expect("a post before the restart");

    // Act: the load, and a fast restart once a third of it is done.
    let done = Arc::new(AtomicUsize::new(0));
    let callers: Vec<JoinHandle<Calls>> = (0..CALLERS)
        .map(|_| {
            tokio::spawn(caller(
                posts.clone(),
                person.clone(),
                seed.id.clone(),
                done.clone(),
            ))
        })
        .collect();
    let operations = CALLERS * OPERATIONS_PER_CALLER;
    eventually("a third of the load is done", async || {
        (done.load(Ordering::SeqCst) >= operations / 3).then_some(())
    })
    .await;
    let done_at_restart = done.load(Ordering::SeqCst);
    let started_before = postmaster_start_time(&database_url).await;
    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .expect("pg_ctl restart");
    assert_ne!(
        postmaster_start_time(&database_url).await,
        started_before,
        "the server really restarted"
    );
    let done_after_restart = done.load(Ordering::SeqCst);
    eventually("calls succeed again after the restart", async || {
        get_post(&mut posts, &person, &seed.id).await.ok()
    })
    .await;
    let mut calls = Vec::new();
    let mut created = vec![(seed_request, seed.id.clone())];
    let mut gave_up = Vec::new();
    for caller in callers {
        let finished = tokio::time::timeout(Duration::from_secs(60), caller)
            .await
            .expect("the load finishes in time")
            .expect("a caller does not panic");
        calls.extend(finished.calls);
        created.extend(finished.created);
        gave_up.extend(finished.gave_up);
    }

    // Assert: each call succeeded or was UNAVAILABLE DEPENDENCY_UNAVAILABLE.
    let mut counts: BTreeMap<(Method, &str), usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for call in &calls {
        let outcome = match &call.answer {
            Ok(()) => "OK",
            Err(status) if is_dependency_unavailable(status) => "UNAVAILABLE",
            Err(status) => {
                unexpected.push((call.method, status));
                "other"
            }
        };
        *counts.entry((call.method, outcome)).or_default() += 1;
    }
    let total = |outcome: &str| {
        counts
            .iter()
            .filter(|((_, o), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    println!(
        "{} calls over {operations} operations: {} OK, {} UNAVAILABLE, {} other; \
         restart began after {done_at_restart} operations and ended after \
         {done_after_restart}; by method: {counts:?}",
        calls.len(),
        total("OK"),
        total("UNAVAILABLE"),
        total("other"),
    );
    assert!(
        done_after_restart < operations,
        "the load went on after the restart, which came in its middle"
    );
    assert!(
        unexpected.is_empty(),
        "every call ends OK or UNAVAILABLE DEPENDENCY_UNAVAILABLE, never INTERNAL or \
         UNKNOWN: {unexpected:#?}\n--- server.log\n{}",
        cluster.server_log()
    );
    assert!(
        gave_up.is_empty(),
        "every CreatePost succeeds within {CREATE_TRIES} tries: {gave_up:?}"
    );

    // ... and each post is written exactly once, and nothing else is.
    let pool = PgPool::connect(&database_url)
        .await
        .expect("the test's cluster");
    let rows: Vec<(String, String)> = sqlx::query_as("select id::text, title from posts.posts")
        .fetch_all(&pool)
        .await
        .expect("read posts.posts");
    let mut rows_by_title: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, title) in &rows {
        rows_by_title.entry(title).or_default().push(id);
    }
    for (request_id, post_id) in &created {
        assert_eq!(
            rows_by_title.get(title_of(*request_id).as_str()),
            Some(&vec![post_id.as_str()]),
            "request id {request_id}: exactly the one row answered"
        );
    }
    assert_eq!(
        rows.len(),
        created.len(),
        "no rows beyond those of the request ids that succeeded"
    );
    pool.close().await;

    system.stop().await;
    drop(cluster);
}

// ---------------------------------------------------------------------------
// A deleted user's token

#[tokio::test]
async fn a_genuine_token_of_a_deleted_user_writes_nothing() {
    let database = ScratchDatabase::new();
    let system = System::start(&database.url).await;
    let pool = PgPool::connect(&database.url).await.expect("the database");
    let person = system.sign_up("deleted@example.com").await;
    let mut posts = system.posts();
    create_post(&mut posts, &person, "Before", Uuid::now_v7())
        .await
        .expect("a post while the account exists");

    sqlx::query("delete from auth.users where id = $1::uuid")
        .bind(&person.id)
        .execute(&pool)
        .await
        .expect("delete the user");
    let rows = async || -> (i64, i64) {
        sqlx::query_as(
            "select (select count(*) from posts.posts), \
                    (select count(*) from posts.create_post_requests)",
        )
        .fetch_one(&pool)
        .await
        .expect("count rows")
    };
    let before = rows().await;

    for (case, request_id) in [
        ("without a request id", None),
        ("with a request id", Some(Uuid::now_v7())),
    ] {
        let request = CreatePostRequest {
            post: Some(Post {
                title: "After".into(),
                content: "By a deleted account".into(),
                ..Default::default()
            }),
            request_id: request_id.map(|id| id.to_string()).unwrap_or_default(),
        };
        let status = within(posts.create_post(bearer(&person, request)))
            .await
            .expect_err("CreatePost by a deleted account");
        assert_reason(&status, ErrorReason::AccountDeleted, case);
    }
    assert_eq!(rows().await, before, "no post and no request id written");

    system.stop().await;
    pool.close().await;
    database.drop_now().await;
}
