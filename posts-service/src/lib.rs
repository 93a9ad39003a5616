//! posts-service: posts with create, read, list and search, update and delete,
//! each shown with its owner (from auth-service) and like count (from
//! votes-service).
//!
//! It owns the `posts` schema, and publishes `posts.visible_posts(viewer)` as its
//! read interface for other services. Its [`Config`] is a
//! [`ServiceConfig`]: `service_kit::service::build` makes a bound server from it,
//! and `main.rs` runs it until a shutdown signal.

pub mod config;
mod grpc;
mod listing;
mod neighbours;
mod posts;

use std::{net::SocketAddr, sync::Arc};

use agora_proto::{
    auth::v1::user_service_client::UserServiceClient,
    posts::v1::post_service_server::PostServiceServer,
    votes::v1::vote_service_client::VoteServiceClient,
};
use service_kit::{CommonArgs, ServedApi, ServiceConfig, StartupError, client::lazy_channel};
use sqlx::PgPool;
use tonic::{server::NamedService, service::Routes};

pub use config::Config;

impl ServiceConfig for Config {
    const NAME: &'static str = "posts-service";

    fn server(&self) -> (SocketAddr, &CommonArgs) {
        (self.listen, &self.common)
    }

    /// posts-service's gRPC service.
    async fn served_api(&self, pool: PgPool) -> Result<ServedApi, StartupError> {
        let verifier = Arc::new(self.token_keys.verifier()?);
        let channel = |what: &str, url: &str| {
            lazy_channel(url).map_err(|error| {
                StartupError::Config(format!("{what} is not a usable URL: {error}"))
            })
        };
        let neighbours = neighbours::Neighbours {
            users: UserServiceClient::new(channel(
                "AUTH_SERVICE_URL",
                &self.token_keys.auth_service_url,
            )?),
            votes: VoteServiceClient::new(channel("VOTES_SERVICE_URL", &self.votes_service_url)?),
        };
        let posts = PostServiceServer::new(grpc::PostApi {
            pool: pool.clone(),
            neighbours,
        })
        .max_decoding_message_size(self.common.limits.max_message_bytes);
        Ok(ServedApi::new(
            vec![<PostServiceServer<grpc::PostApi> as NamedService>::NAME],
            Routes::new(posts),
            verifier,
            pool,
        ))
    }
}
