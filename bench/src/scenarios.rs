//! The calls a user of the course API makes, each by three paths: its SQL straight
//! through a pool (the ceiling), gRPC through the gateway, and HTTP/JSON through
//! the gateway's facade.
//!
//! Caller `n` is seeded user `n`, with its own access token, so callers never
//! collide: each likes and unlikes a post of its own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use agora_proto::{
    auth::v1::{LoginRequest, auth_service_client::AuthServiceClient},
    posts::v1::{
        CreatePostRequest, GetPostRequest, ListPostsRequest, Post,
        post_service_client::PostServiceClient,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use futures::{StreamExt as _, TryStreamExt as _};
use reqwest::StatusCode;
use serde::Serialize;
use sqlx::PgPool;
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    ceilings,
    load::CallError,
    processes::Servers,
    seed::{self, PASSWORD, POSTS},
};

const PAGE_SIZE: i64 = 10;
const TITLE: &str = "Benchmark post";
const CONTENT: &str = "Written by the benchmark, to be read by nobody.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Call {
    GetPost,
    ListPosts,
    FirstPage,
    CreatePost,
    Vote,
    Login,
}

impl Call {
    pub const ALL: [Call; 6] = [
        Call::GetPost,
        Call::ListPosts,
        Call::FirstPage,
        Call::CreatePost,
        Call::Vote,
        Call::Login,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Call::GetPost => "GetPost (random post)",
            Call::ListPosts => "ListPosts 10 (random skip)",
            Call::FirstPage => "ListPosts 10 (first page)",
            Call::CreatePost => "CreatePost",
            Call::Vote => "Vote (like + unlike)",
            Call::Login => "Login",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Path {
    Ceiling,
    Grpc,
    Http,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Ceiling, Path::Grpc, Path::Http];

    pub fn name(self) -> &'static str {
        match self {
            Path::Ceiling => "SQL ceiling",
            Path::Grpc => "gRPC",
            Path::Http => "HTTP",
        }
    }
}

/// Everything needed to make any call by any path.
pub struct Client {
    pool: PgPool,
    grpc: Channel,
    http: reqwest::Client,
    http_base: String,
    /// Caller `n`'s token (a bearer header value).
    tokens: Vec<String>,
    /// Counts picks, so each pick is another pseudo-random number.
    picks: AtomicU64,
}

impl Client {
    /// Connects to the gateway and logs `callers` seeded users in, a few at a time.
    pub async fn log_in(
        pool: PgPool,
        servers: &Servers,
        callers: usize,
    ) -> Result<Arc<Self>, Box<dyn std::error::Error>> {
        let (grpc, tokens) = log_in_callers(servers, callers).await?;
        Ok(Arc::new(Self {
            pool,
            grpc,
            http: reqwest::Client::new(),
            http_base: format!("http://{}", servers.http),
            tokens,
            picks: AtomicU64::new(0),
        }))
    }

    pub fn callers(&self) -> usize {
        self.tokens.len()
    }

    /// Makes `call` by `path` as caller `caller` (any number: callers repeat).
    pub async fn call(
        self: Arc<Self>,
        call: Call,
        path: Path,
        caller: usize,
    ) -> Result<(), CallError> {
        let user = caller as u64;
        match path {
            Path::Ceiling => self.ceiling(call, user).await.map_err(failed),
            Path::Grpc => self.grpc(call, caller).await.map_err(grpc_error),
            Path::Http => self.http(call, caller).await,
        }
    }

    async fn ceiling(&self, call: Call, user: u64) -> Result<(), sqlx::Error> {
        let (pool, viewer) = (&self.pool, seed::user_id(user));
        match call {
            Call::GetPost => ceilings::get_post(pool, self.random_post(), viewer).await,
            Call::ListPosts => {
                ceilings::list_posts(pool, viewer, PAGE_SIZE, self.random_skip()).await
            }
            Call::FirstPage => ceilings::list_posts(pool, viewer, PAGE_SIZE, 0).await,
            Call::CreatePost => ceilings::create_post(pool, viewer, TITLE, CONTENT).await,
            Call::Vote => ceilings::vote_pair(pool, seed::unliked_post(user), viewer).await,
            Call::Login => ceilings::login(pool, &seed::email(user)).await,
        }
    }

    async fn grpc(&self, call: Call, caller: usize) -> Result<(), Status> {
        let mut posts = PostServiceClient::new(self.grpc.clone());
        let list = |skip| ListPostsRequest {
            page_size: PAGE_SIZE as i32,
            skip,
            ..Default::default()
        };
        match call {
            Call::GetPost => {
                let id = self.random_post().to_string();
                posts
                    .get_post(self.as_caller(caller, GetPostRequest { id }))
                    .await?;
            }
            Call::ListPosts => {
                let request = list(self.random_skip() as i32);
                posts.list_posts(self.as_caller(caller, request)).await?;
            }
            Call::FirstPage => {
                posts.list_posts(self.as_caller(caller, list(0))).await?;
            }
            Call::CreatePost => {
                let request = CreatePostRequest {
                    post: Some(Post {
                        title: TITLE.to_owned(),
                        content: CONTENT.to_owned(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                };
                posts.create_post(self.as_caller(caller, request)).await?;
            }
            Call::Vote => {
                let mut votes = VoteServiceClient::new(self.grpc.clone());
                let post_id = seed::unliked_post(caller as u64).to_string();
                for direction in [VoteDirection::Add, VoteDirection::Remove] {
                    let request = VoteRequest {
                        post_id: post_id.clone(),
                        direction: direction.into(),
                    };
                    votes.vote(self.as_caller(caller, request)).await?;
                }
            }
            Call::Login => {
                login(self.grpc.clone(), caller).await?;
            }
        }
        Ok(())
    }

    async fn http(&self, call: Call, caller: usize) -> Result<(), CallError> {
        let url = |path: &str| format!("{}{path}", self.http_base);
        let list = |skip| url(&format!("/posts?limit={PAGE_SIZE}&skip={skip}"));
        let token = &self.tokens[caller % self.tokens.len()];
        let get = |url: String| self.http.get(url).bearer_auth(token);
        let post = |url: String| self.http.post(url).bearer_auth(token);
        match call {
            Call::GetPost => {
                let request = get(url(&format!("/posts/{}", self.random_post())));
                expect(request, StatusCode::OK).await
            }
            Call::ListPosts => expect(get(list(self.random_skip())), StatusCode::OK).await,
            Call::FirstPage => expect(get(list(0)), StatusCode::OK).await,
            Call::CreatePost => {
                let body = serde_json::json!({ "title": TITLE, "content": CONTENT });
                expect(post(url("/posts")).json(&body), StatusCode::CREATED).await
            }
            Call::Vote => {
                let post_id = seed::unliked_post(caller as u64);
                for dir in [1, 0] {
                    let body = serde_json::json!({ "post_id": post_id, "dir": dir });
                    expect(post(url("/vote")).json(&body), StatusCode::CREATED).await?;
                }
                Ok(())
            }
            Call::Login => {
                let email = seed::email(caller as u64);
                let form = [("username", email.as_str()), ("password", PASSWORD)];
                let request = self.http.post(url("/login")).form(&form);
                expect(request, StatusCode::OK).await
            }
        }
    }

    /// `message` with the caller's token.
    fn as_caller<T>(&self, caller: usize, message: T) -> Request<T> {
        bearer(&self.tokens[caller % self.tokens.len()], message)
    }

    /// Any of the seeded posts.
    fn random_post(&self) -> Uuid {
        seed::post_id(self.pick(POSTS))
    }

    /// Any offset that still gives a full page.
    fn random_skip(&self) -> i64 {
        self.pick(POSTS - PAGE_SIZE as u64 + 1) as i64
    }

    /// A pseudo-random number below `bound` (SplitMix64 of a counter: cheap, shared
    /// by all callers without a lock, and the same sequence in every run).
    fn pick(&self, bound: u64) -> u64 {
        let mut z = self
            .picks
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}

/// A channel to the gateway, and the tokens of seeded users `0..callers`,
/// logged in a few at a time.
pub async fn log_in_callers(
    servers: &Servers,
    callers: usize,
) -> Result<(Channel, Vec<String>), Box<dyn std::error::Error>> {
    let grpc = Channel::from_shared(format!("http://{}", servers.grpc))?
        .connect()
        .await?;
    let at_once = std::thread::available_parallelism().map_or(1, usize::from);
    let tokens = futures::stream::iter(0..callers)
        .map(|caller| token(grpc.clone(), caller))
        .buffered(at_once)
        .try_collect()
        .await?;
    Ok((grpc, tokens))
}

/// `message` with `token` as its bearer.
pub fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .expect("a token is valid metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

pub async fn login(grpc: Channel, caller: usize) -> Result<String, Status> {
    let request = LoginRequest {
        email: seed::email(caller as u64),
        password: PASSWORD.to_owned(),
    };
    let answer = AuthServiceClient::new(grpc).login(request).await?;
    Ok(answer.into_inner().access_token)
}

/// Caller `caller`'s token; a login refused by admission control is asked again,
/// for up to ten seconds.
async fn token(grpc: Channel, caller: usize) -> Result<String, Status> {
    let mut refusals = 0;
    loop {
        match login(grpc.clone(), caller).await {
            Err(status) if status.code() == Code::ResourceExhausted && refusals < 100 => {
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn expect(request: reqwest::RequestBuilder, expected: StatusCode) -> Result<(), CallError> {
    let response = request.send().await.map_err(failed)?;
    match response.status() {
        status if status == expected => response.bytes().await.map(drop).map_err(failed),
        StatusCode::TOO_MANY_REQUESTS => Err(CallError::Refused),
        status => {
            let body = response.text().await.unwrap_or_default();
            Err(CallError::Failed(format!("HTTP {status}: {body}")))
        }
    }
}

pub fn grpc_error(status: Status) -> CallError {
    match status.code() {
        Code::ResourceExhausted => CallError::Refused,
        _ => CallError::Failed(status.to_string()),
    }
}

fn failed(error: impl std::fmt::Display) -> CallError {
    CallError::Failed(error.to_string())
}
