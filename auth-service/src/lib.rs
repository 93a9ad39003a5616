//! auth-service: registers users, logs them in with argon2id-hashed passwords, and
//! issues EdDSA access tokens whose public keys it publishes as a JWK Set.
//!
//! It owns the `auth` schema. [`build`] makes a bound server from a [`Config`];
//! `main.rs` runs it until a shutdown signal.

mod accounts;
pub mod config;
mod grpc;
mod keys;
mod password;
mod throttle;
mod tokens;
mod users;

use std::sync::Arc;

use access_token::{PublicMethods, RequireTokenLayer, StaticKeys, TokenVerifier};
use agora_proto::auth::v1::{
    auth_service_server::AuthServiceServer, user_service_server::UserServiceServer,
};
use service_kit::{GrpcServer, ServedApi};
use sqlx::PgPool;
use tonic::{server::NamedService, service::Routes};

pub use config::{AuthSettings, Config};

/// Why auth-service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] service_kit::database::DatabaseError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("cannot prepare password hashing: {0}")]
    Passwords(argon2::password_hash::Error),
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
    let api = served_api(config, pool).await?;
    Ok(GrpcServer::bind(config.listen, config.common.limits.clone(), api).await?)
}

/// auth-service's gRPC services, ready to serve on any server.
pub async fn served_api(config: &Config, pool: PgPool) -> Result<ServedApi, StartupError> {
    let keys = Arc::new(match &config.auth.signing_key_file {
        Some(path) => keys::SigningKeys::from_pem_file(path)?,
        None => keys::SigningKeys::load_or_create(&pool).await?,
    });
    // auth-service verifies with its own public keys; no network round trip.
    let verifier = Arc::new(TokenVerifier::new(StaticKeys(keys.published().clone())));
    let accounts = accounts::Accounts {
        pool: pool.clone(),
        passwords: password::Passwords::new(config.auth.password_hashing_concurrency)
            .map_err(StartupError::Passwords)?,
        issuer: Arc::new(tokens::TokenIssuer::new(
            keys.clone(),
            config.auth.token_ttl(),
        )),
        throttle: Arc::new(throttle::LoginThrottle::new(
            config.auth.login_max_failures,
            config.auth.login_failure_window(),
        )),
    };
    let max_message_bytes = config.common.limits.max_message_bytes;
    let users = UserServiceServer::new(grpc::UserApi {
        accounts: accounts.clone(),
    })
    .max_decoding_message_size(max_message_bytes);
    let auth = AuthServiceServer::new(grpc::AuthApi {
        accounts,
        keys,
        verifier: verifier.clone(),
    })
    .max_decoding_message_size(max_message_bytes);
    Ok(ServedApi {
        service_names: vec![
            <UserServiceServer<grpc::UserApi> as NamedService>::NAME,
            <AuthServiceServer<grpc::AuthApi> as NamedService>::NAME,
        ],
        routes: Routes::builder()
            .add_service(users)
            .add_service(auth)
            .clone()
            .routes(),
        token_layer: RequireTokenLayer::new(verifier, public_methods()),
        pool,
    })
}

/// What anyone may call without a token: registering, logging in, and what
/// verifiers need.
fn public_methods() -> PublicMethods {
    PublicMethods::infrastructure()
        .with("/agora.auth.v1.UserService/CreateUser")
        .with("/agora.auth.v1.AuthService/")
}
