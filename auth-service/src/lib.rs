//! auth-service: registers users, logs them in with argon2id-hashed passwords
//! into sessions kept alive by refresh tokens, issues EdDSA access tokens whose
//! public keys it publishes as a JWK Set, and publishes the sessions that ended
//! so that every verifier refuses their tokens.
//!
//! It owns the `auth` schema. Its [`Config`] is a [`ServiceConfig`]:
//! `service_kit::service::build` makes a bound server from it, and `main.rs` runs
//! it until a shutdown signal.

mod accounts;
pub mod config;
mod grpc;
mod hashing_threads;
mod key_commands;
mod keys;
mod password;
mod sessions;
mod throttle;
mod tokens;
mod users;

use std::{net::SocketAddr, sync::Arc};

use access_token::TokenVerifier;
use agora_proto::auth::v1::{
    auth_service_server::AuthServiceServer, user_service_server::UserServiceServer,
};
use service_kit::{CommonArgs, ServedApi, ServiceConfig, StartupError, request_ids};
use sqlx::PgPool;
use tonic::{server::NamedService, service::Routes};

pub use config::{AuthSettings, Config, KeyCommand};
/// The key an email's login failures are counted by (as `auth.email_key` in SQL).
pub use users::email_key;
/// For tests: what the periodic purge started by `served_api` does each round.
pub use users::purge_expired_request_ids;

/// For tests: the sessions part of the periodic purge. Deletes the sessions past
/// `settings`' idle timeout or longest lifetime, and the revocations of ended
/// sessions whose access tokens have all expired; how many rows.
pub async fn purge_sessions(
    conn: &mut sqlx::PgConnection,
    settings: &AuthSettings,
) -> Result<u64, service_kit::ApiError> {
    sessions::purge(conn, session_lifetimes(settings)).await
}

fn session_lifetimes(settings: &AuthSettings) -> sessions::Lifetimes {
    sessions::Lifetimes {
        idle: settings.session_idle_timeout(),
        max_age: settings.session_max_age(),
    }
}

/// The `auth-service` binary: serves until a shutdown signal, or makes one change
/// to the signing keys and exits.
pub async fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    if let Err(error) = service_kit::service::load_env_file() {
        eprintln!("auth-service: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let config = Config::parse();
    match &config.command {
        None => service_kit::service::run(config).await,
        Some(command) => {
            let name = <Config as ServiceConfig>::NAME;
            if let Err(error) = service_kit::telemetry::init(name, config.common.log_format) {
                tracing::error!(%error, "{name} cannot start");
                return std::process::ExitCode::FAILURE;
            }
            key_commands::run(&config, command).await
        }
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "auth-service";

    fn server(&self) -> (SocketAddr, &CommonArgs) {
        (self.listen, &self.common)
    }

    /// auth-service's gRPC services.
    async fn served_api(&self, pool: PgPool) -> Result<ServedApi, StartupError> {
        let config = self;
        let seal = keys::KeySeal::configured(&config.auth)
            .map_err(|error| StartupError::Config(error.to_string()))?;
        let keys = match &config.auth.signing_key_file {
            Some(path) => keys::SigningKeys::from_pem_file(path),
            None => match pool.acquire().await {
                Ok(mut conn) => keys::SigningKeys::load_or_create(&mut conn, seal.as_deref()).await,
                Err(error) => Err(error.into()),
            },
        };
        let keys =
            keys::KeyRing::new(keys.map_err(|error| StartupError::Config(error.to_string()))?);
        let reload_every = config.auth.signing_keys_reload();
        if config.auth.signing_key_file.is_none() {
            if seal.is_none() {
                tracing::warn!(
                    "the token signing keys are stored in the clear in the database; \
                     set SIGNING_KEYS_SECRET (or SIGNING_KEY_FILE) in production"
                );
            }
            keys.reload_periodically(pool.clone(), seal, reload_every);
        }
        // auth-service verifies with its own key ring and reads the ended
        // sessions from its own tables; no network round trip.
        let verifier = Arc::new(
            TokenVerifier::new(keys::RingKeys(keys.clone()))
                .with_revocations(sessions::StoredRevocations(pool.clone())),
        );
        verifier.keep_keys_fresh(reload_every);
        verifier.keep_revocations_fresh(config.auth.revoked_sessions_reload());
        let passwords = password::Passwords::new(
            config.auth.password_hashing_concurrency,
            config.auth.password_hashing_queue,
        )
        .map_err(|error| {
            StartupError::Config(format!("cannot prepare password hashing: {error}"))
        })?;
        let throttle = Arc::new(throttle::LoginThrottle::new(&config.auth));
        let accounts = accounts::Accounts {
            pool: pool.clone(),
            passwords,
            issuer: Arc::new(tokens::TokenIssuer::new(
                keys.clone(),
                config.auth.token_ttl(),
            )),
            throttle: throttle.clone(),
            trusted_callers: config.auth.trusted_callers.clone(),
            session_lifetimes: session_lifetimes(&config.auth),
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
        // Request ids past their lifetime, login failure counts past their
        // window, expired sessions, and revocations whose tokens have expired.
        let lifetimes = session_lifetimes(&config.auth);
        tokio::spawn(request_ids::purge_periodically(
            pool.clone(),
            "expired request ids",
            move |pool| {
                let throttle = throttle.clone();
                async move {
                    let mut conn = pool.acquire().await?;
                    let ids = users::purge_expired_request_ids(&mut conn).await?;
                    let failures = throttle.purge_ended(&mut conn).await?;
                    Ok(ids + failures + sessions::purge(&mut conn, lifetimes).await?)
                }
            },
        ));
        Ok(ServedApi::new(
            vec![
                <UserServiceServer<grpc::UserApi> as NamedService>::NAME,
                <AuthServiceServer<grpc::AuthApi> as NamedService>::NAME,
            ],
            Routes::builder()
                .add_service(users)
                .add_service(auth)
                .clone()
                .routes(),
            verifier,
            pool,
        ))
    }
}
