//! posts-service's settings, as flags or environment variables.

use std::net::SocketAddr;

use service_kit::{CommonArgs, FeedRetention, TokenKeysArgs};

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
    pub quotas: QuotaSettings,
    #[command(flatten)]
    pub feed: FeedSettings,
    #[command(flatten)]
    pub token_keys: TokenKeysArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How many posts and searches one person may make; the gateway takes the same
/// settings for the posts-service it runs itself.
///
/// Each replica counts in its own memory, so behind N replicas a person gets up
/// to N times these.
#[derive(Debug, Clone, clap::Args)]
// Each flattened struct is a group, named after the struct unless told: the
// gateway flattens votes-service's `QuotaSettings` beside this one.
#[group(id = "posts_quotas")]
pub struct QuotaSettings {
    /// Posts one person may create a minute, all of them at once if need be; one
    /// more is refused (RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, quota
    /// `create_post`, with a time to retry). Each replica counts in its own
    /// memory, so behind N replicas a person gets up to N times this. 0 turns it
    /// off.
    #[arg(long, env = "QUOTA_POSTS_PER_MINUTE", default_value_t = 30)]
    pub posts_per_minute: u32,
    /// Searches (ListPosts with a `search`) one person may make a minute, all of
    /// them at once if need be; one more is refused (quota `search`). Lists
    /// without a search are not counted. Each replica counts in its own memory,
    /// so behind N replicas a person gets up to N times this. 0 turns it off.
    #[arg(long, env = "QUOTA_SEARCHES_PER_MINUTE", default_value_t = 60)]
    pub searches_per_minute: u32,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            posts_per_minute: 30,
            searches_per_minute: 60,
        }
    }
}

/// WatchPosts: how long changes are kept, and how far a watcher may fall
/// behind; the gateway takes the same settings for the posts-service it runs
/// itself.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FeedSettings {
    #[command(flatten)]
    pub retention: FeedRetention,
    #[command(flatten)]
    pub buffer: WatcherBuffer,
}

/// How far a watcher may fall behind.
#[derive(Debug, Clone, clap::Args)]
pub struct WatcherBuffer {
    /// Batches of changes (each what committed between two reads of the
    /// outboxes) a watcher may fall behind before its stream is ended with
    /// RESOURCE_EXHAUSTED WATCHER_TOO_SLOW and the cursor to resume from. The
    /// process keeps each batch until its slowest watcher has taken it.
    #[arg(long, env = "WATCHER_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub watcher_buffer: u32,
}

impl Default for WatcherBuffer {
    fn default() -> Self {
        Self {
            watcher_buffer: 1024,
        }
    }
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
            quotas: QuotaSettings::default(),
            feed: FeedSettings::default(),
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
    fn quotas_default_as_documented_and_zero_turns_one_off() {
        let defaults = Config::try_parse_from(["posts-service"]).unwrap().quotas;
        assert_eq!(
            (defaults.posts_per_minute, defaults.searches_per_minute),
            (30, 60)
        );
        let unset = QuotaSettings::default();
        assert_eq!(
            (unset.posts_per_minute, unset.searches_per_minute),
            (30, 60)
        );

        let set = Config::try_parse_from([
            "posts-service",
            "--posts-per-minute=0",
            "--searches-per-minute=5",
        ])
        .unwrap()
        .quotas;
        assert_eq!((set.posts_per_minute, set.searches_per_minute), (0, 5));
    }
}
