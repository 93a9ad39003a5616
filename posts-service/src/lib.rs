//! posts-service: posts with create, read, list and search, update and delete,
//! each shown with its owner (from auth-service) and like count (from
//! votes-service).
//!
//! It owns the `posts` schema, and publishes `posts.visible_posts(viewer)` as its
//! read interface for other services. Its [`Config`] is a
//! [`ServiceConfig`]: `service_kit::service::build` makes a bound server from it,
//! and `main.rs` runs it until a shutdown signal.

pub mod config;
mod feed;
mod grpc;
mod listing;
mod neighbours;
mod posts;
mod quotas;

use std::{net::SocketAddr, time::Duration};

use agora_proto::{
    auth::v1::user_service_client::UserServiceClient,
    posts::v1::post_service_server::PostServiceServer,
    votes::v1::vote_service_client::VoteServiceClient,
};
use service_kit::{
    CommonArgs, ServedApi, ServiceConfig, StartupError, client::upstream, request_ids,
};
use sqlx::PgPool;
use tonic::{server::NamedService, service::Routes};

pub use config::{Config, FeedSettings, QuotaSettings, WatcherBuffer};
/// For tests: what the periodic purges started by `served_api` do each round.
pub use {feed::purge as purge_post_events, posts::purge_expired_request_ids};

impl ServiceConfig for Config {
    const NAME: &'static str = "posts-service";

    fn server(&self) -> (SocketAddr, &CommonArgs) {
        (self.listen, &self.common)
    }

    /// posts-service's gRPC service.
    async fn served_api(&self, pool: PgPool) -> Result<ServedApi, StartupError> {
        // Before the first upstream is made (auth-service's keys, just below).
        service_kit::install_tls(
            &self.common.upstream_tls,
            Duration::from_secs(self.common.tls.tls_reload_secs),
        )
        .map_err(|error| StartupError::Config(error.to_string()))?;
        let verifier = self.token_keys.verifier()?;
        let channel = |what: &str, url: &str| {
            upstream(url)
                .map(|replicas| replicas.hop())
                .map_err(|error| StartupError::Config(format!("{what}: {error}")))
        };
        let neighbours = neighbours::Neighbours {
            users: UserServiceClient::new(channel(
                "AUTH_SERVICE_URL",
                &self.token_keys.auth_service_url,
            )?),
            votes: VoteServiceClient::new(channel("VOTES_SERVICE_URL", &self.votes_service_url)?),
            owners: Default::default(),
        };
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let feed = feed::Feed::start(
            pool.clone(),
            verifier.clone(),
            self.feed.buffer.watcher_buffer as usize,
            stopped,
        )
        .await
        .map_err(|error| {
            StartupError::Config(format!("cannot listen for new posts and likes: {error}"))
        })?;
        let posts = PostServiceServer::new(grpc::PostApi {
            pool: pool.clone(),
            neighbours,
            quotas: quotas::Quotas::new(&self.quotas),
            feed,
        })
        .max_decoding_message_size(self.common.limits.max_message_bytes);
        tokio::spawn(request_ids::purge_periodically(
            pool.clone(),
            "expired request ids",
            |pool| async move { posts::purge_expired_request_ids(&mut *pool.acquire().await?).await },
        ));
        let retention = self.feed.retention.retention();
        tokio::spawn(request_ids::purge_periodically(
            pool.clone(),
            "changes older than FEED_RETENTION_SECS",
            move |pool| async move { feed::purge(&mut *pool.acquire().await?, retention).await },
        ));
        Ok(ServedApi::new(
            vec![<PostServiceServer<grpc::PostApi> as NamedService>::NAME],
            Routes::new(posts),
            verifier,
            pool,
        )
        .with_stopping(stopping))
    }
}
