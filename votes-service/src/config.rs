//! votes-service's settings, as flags or environment variables.

use std::net::SocketAddr;

use service_kit::{CommonArgs, FeedRetention, TokenKeysArgs};

/// Agora's votes-service: likes on posts.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "VOTES_LISTEN_ADDR", default_value = "127.0.0.1:50054")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub quotas: QuotaSettings,
    /// How long like-count changes are kept for posts-service's WatchPosts.
    #[command(flatten)]
    pub feed_retention: FeedRetention,
    #[command(flatten)]
    pub token_keys: TokenKeysArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How often one person may vote; the gateway takes the same settings for the
/// votes-service it runs itself.
#[derive(Debug, Clone, clap::Args)]
// Each flattened struct is a group, named after the struct unless told: the
// gateway flattens posts-service's `QuotaSettings` beside this one.
#[group(id = "votes_quotas")]
pub struct QuotaSettings {
    /// Votes (likes and likes taken back, counted together) one person may cast a
    /// minute, all of them at once if need be; one more is refused
    /// (RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, quota `vote`, with a time to
    /// retry). Each replica counts in its own memory, so behind N replicas a
    /// person gets up to N times this. 0 turns it off.
    #[arg(long, env = "QUOTA_VOTES_PER_MINUTE", default_value_t = 120)]
    pub votes_per_minute: u32,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            votes_per_minute: 120,
        }
    }
}

impl Config {
    /// The defaults, on a free loopback port, taking token keys from `auth_service_url`.
    pub fn ephemeral(auth_service_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            quotas: QuotaSettings::default(),
            feed_retention: FeedRetention::default(),
            token_keys: TokenKeysArgs::new(auth_service_url),
            common: CommonArgs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_vote_quota_defaults_as_documented() {
        let defaults = Config::try_parse_from(["votes-service"]).unwrap().quotas;
        assert_eq!(defaults.votes_per_minute, 120);
        assert_eq!(QuotaSettings::default().votes_per_minute, 120);
        let set = Config::try_parse_from(["votes-service", "--votes-per-minute=0"])
            .unwrap()
            .quotas;
        assert_eq!(set.votes_per_minute, 0);
    }
}
