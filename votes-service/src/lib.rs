//! votes-service: likes on posts, at most one per person and post, and like counts
//! for many posts at once.
//!
//! It owns the `votes` schema. [`build`] makes a bound server from a [`Config`];
//! `main.rs` runs it until a shutdown signal.

pub mod config;
mod grpc;
mod votes;

use std::sync::Arc;

use access_token::{PublicMethods, RequireTokenLayer};
use agora_proto::votes::v1::vote_service_server::VoteServiceServer;
use service_kit::{GrpcServer, ServedApi, config::KeyConfigError};
use sqlx::PgPool;
use tonic::{server::NamedService, service::Routes};

pub use config::Config;

/// Why votes-service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] service_kit::database::DatabaseError),
    #[error(transparent)]
    Keys(#[from] KeyConfigError),
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

/// votes-service's gRPC service, ready to serve on any server.
pub fn served_api(config: &Config, pool: PgPool) -> Result<ServedApi, StartupError> {
    let verifier = Arc::new(config.token_keys.verifier()?);
    let votes = VoteServiceServer::new(grpc::VoteApi { pool: pool.clone() })
        .max_decoding_message_size(config.common.limits.max_message_bytes);
    Ok(ServedApi {
        service_names: vec![<VoteServiceServer<grpc::VoteApi> as NamedService>::NAME],
        routes: Routes::new(votes),
        // Every vote needs a token.
        token_layer: RequireTokenLayer::new(verifier, PublicMethods::infrastructure()),
        pool,
    })
}
