//! posts-service: posts with create, read, list and search, update and delete,
//! each shown with its owner (from auth-service) and like count (from
//! votes-service).
//!
//! It owns the `posts` schema. [`build`] makes a bound server from a [`Config`];
//! `main.rs` runs it until a shutdown signal.

pub mod config;
mod grpc;
mod listing;
mod neighbours;
mod posts;

use std::sync::Arc;

use access_token::{PublicMethods, RequireTokenLayer};
use agora_proto::{
    auth::v1::user_service_client::UserServiceClient,
    posts::v1::post_service_server::PostServiceServer,
    votes::v1::vote_service_client::VoteServiceClient,
};
use service_kit::{GrpcServer, ServedApi, client::lazy_channel, config::KeyConfigError};
use sqlx::PgPool;
use tonic::{server::NamedService, service::Routes};

pub use config::Config;

/// Why posts-service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] service_kit::database::DatabaseError),
    #[error(transparent)]
    Keys(#[from] KeyConfigError),
    #[error("{what} is not a usable URL: {source}")]
    Neighbour {
        what: &'static str,
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Bind(#[from] service_kit::BindError),
}

/// Connects to the database (creating and migrating it as needed) and binds the
/// server.
pub async fn build(config: &Config) -> Result<GrpcServer, StartupError> {
    let pool = service_kit::database::connect(&config.common.database).await?;
    build_with_pool(config, pool).await
}

/// Binds the server on an already migrated database.
pub async fn build_with_pool(config: &Config, pool: PgPool) -> Result<GrpcServer, StartupError> {
    let api = served_api(config, pool)?;
    Ok(GrpcServer::bind(config.listen, config.common.limits.clone(), api).await?)
}

/// posts-service's gRPC service, ready to serve on any server.
pub fn served_api(config: &Config, pool: PgPool) -> Result<ServedApi, StartupError> {
    let verifier = Arc::new(config.token_keys.verifier()?);
    let channel = |what, url: &str| {
        lazy_channel(url).map_err(|source| StartupError::Neighbour { what, source })
    };
    let neighbours = neighbours::Neighbours {
        users: UserServiceClient::new(channel(
            "AUTH_SERVICE_URL",
            &config.token_keys.auth_service_url,
        )?),
        votes: VoteServiceClient::new(channel("VOTES_SERVICE_URL", &config.votes_service_url)?),
    };
    let posts = PostServiceServer::new(grpc::PostApi {
        pool: pool.clone(),
        neighbours,
    })
    .max_decoding_message_size(config.common.limits.max_message_bytes);
    Ok(ServedApi {
        service_names: vec![<PostServiceServer<grpc::PostApi> as NamedService>::NAME],
        routes: Routes::new(posts),
        // Every post RPC needs a token.
        token_layer: RequireTokenLayer::new(verifier, PublicMethods::infrastructure()),
        pool,
    })
}
