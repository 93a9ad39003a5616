//! Agora's three services wired to each other on ephemeral ports over one test
//! database, with clients for each, as the system tests use them.

pub mod browser;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod telemetry;

use std::net::SocketAddr;

use agora_proto::{
    auth::v1::{
        self as auth, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::ErrorReason,
    posts::v1::{self as posts, post_service_client::PostServiceClient},
    votes::v1::{self as votes, VoteDirection, vote_service_client::VoteServiceClient},
};
use gateway::embedded::{PerService, Quotas, bind_services};
use service_kit::{GrpcServer, ServerLimits};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, transport::Channel};
pub use {auth_service::AuthSettings, posts_service::FeedSettings};

pub const PASSWORD: &str = "correct horse battery";

/// One running service.
pub struct Running {
    pub address: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    fn start(server: GrpcServer) -> Self {
        let address = server.local_addr();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops the service gracefully and waits until it has.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }
}

/// auth-, votes- and posts-service, each on its own port, wired as in production.
pub struct System {
    pub pool: PgPool,
    pub auth: Running,
    pub votes: Running,
    pub posts: Running,
    pub user_client: UserServiceClient<Channel>,
    pub auth_client: AuthServiceClient<Channel>,
    pub vote_client: VoteServiceClient<Channel>,
    pub post_client: PostServiceClient<Channel>,
}

/// A CreatePost request for a post with these fields, and no request id.
pub fn new_post(title: &str, content: &str, published: Option<bool>) -> posts::CreatePostRequest {
    posts::CreatePostRequest {
        post: Some(posts::Post {
            title: title.to_owned(),
            content: content.to_owned(),
            published,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// A registered, logged-in person.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// Where each service listens.
pub type Addresses = PerService<SocketAddr>;

pub async fn spawn_system(pool: PgPool) -> System {
    spawn_system_at(pool, Addresses::ephemeral()).await
}

/// The three services wired as the gateway's all-in-one mode wires them.
pub async fn spawn_system_at(pool: PgPool, addresses: Addresses) -> System {
    spawn_system_with(pool, addresses, Quotas::default()).await
}

/// [`spawn_system_at`] with these per-person quotas.
pub async fn spawn_system_with(pool: PgPool, addresses: Addresses, quotas: Quotas) -> System {
    let settings = (AuthSettings::default(), quotas, FeedSettings::default());
    spawn_system_configured(pool, addresses, settings).await
}

/// [`spawn_system_at`] with these auth-service settings, per-person quotas and
/// WatchPosts settings.
pub async fn spawn_system_configured(
    pool: PgPool,
    addresses: Addresses,
    (auth, quotas, feed): (AuthSettings, Quotas, FeedSettings),
) -> System {
    telemetry::install();
    let servers = bind_services(
        &pool,
        addresses,
        auth,
        quotas,
        feed,
        &ServerLimits::default(),
    )
    .await
    .expect("the services build");
    let (auth, votes, posts) = (
        Running::start(servers.auth),
        Running::start(servers.votes),
        Running::start(servers.posts),
    );
    System {
        user_client: UserServiceClient::new(channel(&auth)),
        auth_client: AuthServiceClient::new(channel(&auth)),
        vote_client: VoteServiceClient::new(channel(&votes)),
        post_client: PostServiceClient::new(channel(&posts)),
        pool,
        auth,
        votes,
        posts,
    }
}

fn channel(service: &Running) -> Channel {
    Channel::from_shared(service.url())
        .expect("a valid URL")
        .connect_lazy()
}

/// A system with Alice signed up and a published post of hers: where most tests
/// of posts and likes begin.
pub async fn spawn_with_post(pool: PgPool) -> (System, Person, posts::Post) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let post = system
        .create_post(&alice, "Hello", "The first post", None)
        .await
        .expect("the post is created");
    (system, alice, post)
}

/// [`spawn_with_post`], and Bob, who likes the post.
pub async fn spawn_with_liked_post(pool: PgPool) -> (System, Person, Person, posts::Post) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;
    system
        .vote(&bob, &post.id, VoteDirection::Add)
        .await
        .expect("bob likes the post");
    (system, alice, bob, post)
}

/// `message` with the person's token as `authorization` metadata.
pub fn as_person<T>(person: &Person, message: T) -> Request<T> {
    bearer(&person.token, message)
}

/// `message` with `token` as `authorization` metadata.
pub fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .expect("a token is valid metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Asserts the status code and the `google.rpc.ErrorInfo` reason (domain `agora`)
/// that a generated client in any language reads.
pub fn assert_reason(status: &Status, reason: ErrorReason, case: &str) {
    assert_eq!(status.code(), reason.code(), "{case}: {status:?}");
    assert_eq!(
        agora_proto::errors::reason_of(status),
        Some(reason),
        "{case}: the ErrorInfo reason of {status:?}"
    );
}

/// Asserts INVALID_ARGUMENT, reason `INVALID_FIELDS`, with `google.rpc.BadRequest`
/// details naming exactly `fields`, as a generated client in any language reads
/// them.
pub fn assert_bad_request(status: &Status, fields: &[&str], case: &str) {
    use tonic_types::StatusExt;
    assert_reason(status, ErrorReason::InvalidFields, case);
    let details = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("{case}: no BadRequest details"));
    let named: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(named, fields, "{case}: fields named in BadRequest");
}

/// Where a gateway serves.
#[derive(Debug, Clone, Copy)]
pub struct GatewayAddresses {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl System {
    /// Starts a gateway in front of this system, as the binary starts with
    /// upstream URLs, with `adjust` applied to its settings; it serves until the
    /// test ends.
    pub async fn spawn_gateway(
        &self,
        adjust: impl FnOnce(&mut gateway::Config),
    ) -> GatewayAddresses {
        let mut config = gateway::Config {
            auth_service_url: Some(self.auth.url()),
            posts_service_url: Some(self.posts.url()),
            votes_service_url: Some(self.votes.url()),
            ..gateway::Config::ephemeral()
        };
        adjust(&mut config);
        let gateway = gateway::build(&config).await.expect("the gateway starts");
        let addresses = GatewayAddresses {
            grpc: gateway.grpc_addr(),
            http: gateway.http_addr(),
        };
        tokio::spawn(gateway.run_until(std::future::pending()));
        addresses
    }

    /// Registers and logs in a new person.
    pub async fn sign_up(&self, email: &str) -> Person {
        let user = self
            .user_client
            .clone()
            .create_user(auth::CreateUserRequest {
                email: email.to_owned(),
                password: PASSWORD.to_owned(),
                request_id: String::new(),
            })
            .await
            .expect("registration succeeds")
            .into_inner()
            .user
            .expect("a user");
        let login = self
            .auth_client
            .clone()
            .login(auth::LoginRequest {
                email: email.to_owned(),
                password: PASSWORD.to_owned(),
            })
            .await
            .expect("login succeeds")
            .into_inner();
        Person {
            id: user.id,
            email: user.email,
            token: login.access_token,
        }
    }

    pub async fn create_post(
        &self,
        who: &Person,
        title: &str,
        content: &str,
        published: Option<bool>,
    ) -> Result<posts::Post, Status> {
        let request = new_post(title, content, published);
        let response = self
            .post_client
            .clone()
            .create_post(as_person(who, request))
            .await?;
        Ok(response.into_inner().post.expect("a post"))
    }

    pub async fn get_post(&self, who: &Person, id: &str) -> Result<posts::Post, Status> {
        let request = posts::GetPostRequest { id: id.to_owned() };
        Ok(self
            .post_client
            .clone()
            .get_post(as_person(who, request))
            .await?
            .into_inner()
            .post
            .expect("a post"))
    }

    pub async fn list_posts(
        &self,
        who: &Person,
        request: posts::ListPostsRequest,
    ) -> Result<posts::ListPostsResponse, Status> {
        Ok(self
            .post_client
            .clone()
            .list_posts(as_person(who, request))
            .await?
            .into_inner())
    }

    pub async fn update_post(
        &self,
        who: &Person,
        request: posts::UpdatePostRequest,
    ) -> Result<posts::Post, Status> {
        Ok(self
            .post_client
            .clone()
            .update_post(as_person(who, request))
            .await?
            .into_inner()
            .post
            .expect("a post"))
    }

    pub async fn delete_post(&self, who: &Person, id: &str) -> Result<(), Status> {
        let request = posts::DeletePostRequest {
            id: id.to_owned(),
            etag: String::new(),
        };
        self.post_client
            .clone()
            .delete_post(as_person(who, request))
            .await
            .map(drop)
    }

    /// Likes (`Add`) or takes back the like of (`Remove`) a post; the new like count.
    pub async fn vote(
        &self,
        who: &Person,
        post_id: &str,
        direction: VoteDirection,
    ) -> Result<i64, Status> {
        let request = votes::VoteRequest {
            post_id: post_id.to_owned(),
            direction: direction.into(),
        };
        Ok(self
            .vote_client
            .clone()
            .vote(as_person(who, request))
            .await?
            .into_inner()
            .like_count)
    }

    /// The number of likes stored for a post.
    pub async fn stored_likes(&self, post_id: &str) -> i64 {
        sqlx::query_scalar("select count(*) from votes.votes where post_id = $1::uuid")
            .bind(post_id)
            .fetch_one(&self.pool)
            .await
            .expect("count likes")
    }
}
