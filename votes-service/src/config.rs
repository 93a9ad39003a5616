//! votes-service's settings, as flags or environment variables.

use std::net::SocketAddr;

use service_kit::{CommonArgs, TokenKeysArgs};

/// Agora's votes-service: likes on posts.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "VOTES_LISTEN_ADDR", default_value = "127.0.0.1:50054")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub token_keys: TokenKeysArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// The defaults, on a free loopback port, taking token keys from `auth_service_url`.
    pub fn ephemeral(auth_service_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_keys: TokenKeysArgs::new(auth_service_url),
            common: CommonArgs::default(),
        }
    }
}
