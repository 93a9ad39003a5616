//! posts-service's settings, as flags or environment variables.

use std::net::SocketAddr;

use service_kit::{DatabaseArgs, LogFormat, ServerLimits, TokenKeysArgs};

/// Agora's posts-service: posts with their owners and like counts.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "POSTS_LISTEN_ADDR", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,
    /// votes-service, asked for like counts. (auth-service, asked for owners, is
    /// `AUTH_SERVICE_URL`.)
    #[arg(
        long,
        env = "VOTES_SERVICE_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub votes_service_url: String,
    #[command(flatten)]
    pub token_keys: TokenKeysArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub limits: ServerLimits,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Instead of serving, ask the server at the listen address whether it is
    /// healthy and exit 0 only if so (for container healthchecks).
    #[arg(long)]
    pub health_check: bool,
}

impl Config {
    /// The defaults, on a free loopback port, with the given neighbours.
    pub fn ephemeral(
        auth_service_url: impl Into<String>,
        votes_service_url: impl Into<String>,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            votes_service_url: votes_service_url.into(),
            token_keys: TokenKeysArgs {
                auth_service_url: auth_service_url.into(),
                jwks_file: None,
            },
            database: DatabaseArgs::default(),
            limits: ServerLimits::default(),
            log_format: LogFormat::Text,
            health_check: false,
        }
    }
}
