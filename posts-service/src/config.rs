//! posts-service's settings, as flags or environment variables.

use std::net::SocketAddr;

use service_kit::{CommonArgs, TokenKeysArgs};

/// Agora's posts-service: posts with their owners and like counts.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "POSTS_LISTEN_ADDR", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,
    /// votes-service, asked for like counts: a URL, a comma-separated list of them
    /// (replicas), or a URL whose host is a DNS name, every address of which is a
    /// replica. (auth-service, asked for owners, is `AUTH_SERVICE_URL`, alike.)
    #[arg(
        long,
        env = "VOTES_SERVICE_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub votes_service_url: String,
    #[command(flatten)]
    pub token_keys: TokenKeysArgs,
    #[command(flatten)]
    pub common: CommonArgs,
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
            token_keys: TokenKeysArgs::new(auth_service_url),
            common: CommonArgs::default(),
        }
    }
}
