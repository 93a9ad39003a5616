//! Settings every server takes, as flags or environment variables.

use std::{sync::Arc, time::Duration};

use access_token::{
    AuthServiceKeys, AuthServiceRevocations, KEY_REFRESH_INTERVAL, KeysFile,
    REVOCATION_REFRESH_INTERVAL, TokenVerifier,
};
use secrecy::{ExposeSecret, SecretString};

use crate::database::{LOCK_TIMEOUT, MigrationMode, Pooler};

/// Protections a gRPC server applies to every call.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerLimits {
    /// A call still running after this many seconds is cancelled.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Largest request message accepted, in bytes; larger ones get OUT_OF_RANGE.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Calls handled at once across all connections; more wait their turn.
    #[arg(long, env = "CONCURRENCY_LIMIT", default_value_t = 1024)]
    pub concurrency_limit: usize,
    /// Concurrent HTTP/2 streams one connection may open.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
}

impl ServerLimits {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            request_timeout_secs: 30,
            max_message_bytes: 1024 * 1024,
            concurrency_limit: 1024,
            max_concurrent_streams: 256,
        }
    }
}

/// A local PostgreSQL with trust authentication, as on a developer machine.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/agora";

/// Where the database is and how many connections to keep.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; the database is created if it does not exist (except with
    /// DATABASE_MIGRATIONS=verify).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub database_url: SecretString,
    /// Largest number of pooled connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// What DATABASE_URL leads to: `none`, PostgreSQL itself; `pgbouncer`,
    /// PgBouncer 1.21 or newer in transaction mode with `max_prepared_statements`
    /// set (200 is ample). Through PgBouncer no connection sets anything for its
    /// session: the role or the database must set `statement_timeout` and
    /// `lock_timeout` (start-up refuses a server where either is 0), and
    /// migrations are left to a job on a direct URL (DATABASE_MIGRATIONS=verify
    /// here; `apply` is refused).
    #[arg(long, env = "DATABASE_POOLER", value_enum, default_value_t = Pooler::None)]
    pub database_pooler: Pooler,
    /// Seconds a call waits for a free connection before failing with UNAVAILABLE.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = 5)]
    pub database_acquire_timeout_secs: u64,
    /// What start-up does about the schema.
    #[arg(long, env = "DATABASE_MIGRATIONS", value_enum, default_value_t = MigrationMode::Apply)]
    pub database_migrations: MigrationMode,
    /// Seconds a migration statement waits for a lock before it gives up, to be
    /// tried again later: meanwhile every call touching its table waits behind
    /// it. The default, the serving connections' own lock wait, delays those
    /// calls without failing them.
    #[arg(long, env = "DATABASE_MIGRATION_LOCK_TIMEOUT_SECS", default_value_t = LOCK_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub database_migration_lock_timeout_secs: u64,
    /// Further attempts at a migration that gave up waiting for a lock, after 1,
    /// 2, 4... seconds (at most 30); then the start fails.
    #[arg(long, env = "DATABASE_MIGRATION_LOCK_RETRIES", default_value_t = 5)]
    pub database_migration_lock_retries: u32,
}

impl DatabaseArgs {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: SecretString::from(database_url.into()),
            ..Self::default()
        }
    }

    /// The URL without its password, for messages.
    pub fn redacted_url(&self) -> String {
        let url = self.database_url.expose_secret();
        match url::Url::parse(url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            Ok(_) => url.to_owned(),
            Err(_) => "(an unparsable database URL)".to_owned(),
        }
    }
}

impl Default for DatabaseArgs {
    fn default() -> Self {
        Self {
            database_url: SecretString::from(DEFAULT_DATABASE_URL),
            database_max_connections: 10,
            database_pooler: Pooler::None,
            database_acquire_timeout_secs: 5,
            database_migrations: MigrationMode::Apply,
            database_migration_lock_timeout_secs: LOCK_TIMEOUT.as_secs(),
            database_migration_lock_retries: 5,
        }
    }
}

/// What every Agora binary takes besides its own settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub limits: ServerLimits,
    /// TLS on the binary's listeners (plaintext unless set).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// TLS towards the services at https:// URLs this binary calls.
    #[command(flatten)]
    pub upstream_tls: crate::client::UpstreamTlsArgs,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Prometheus metrics.
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsArgs,
    /// Instead of serving, ask the server at the listen address whether it is
    /// healthy and exit 0 only if so (for container healthchecks).
    #[arg(long)]
    pub health_check: bool,
}

/// How long the outboxes behind `WatchPosts` keep changes: a watcher may resume
/// from a cursor this old. posts-service and votes-service each purge their
/// own outbox by it, so give both the same value.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedRetention {
    /// Seconds a change to a post or a like count is kept for watchers that
    /// resume (WatchPosts); an older cursor is refused with OUT_OF_RANGE
    /// CURSOR_EXPIRED. At least 60.
    #[arg(long, env = "FEED_RETENTION_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub feed_retention_secs: u64,
}

impl FeedRetention {
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.feed_retention_secs)
    }
}

impl Default for FeedRetention {
    fn default() -> Self {
        Self {
            feed_retention_secs: 3600,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_hides_only_the_password() {
        let cases = [
            (
                "postgres://agora:s3cret@db:5432/agora",
                "postgres://agora:***@db:5432/agora",
            ),
            (
                "postgres://postgres@localhost/agora",
                "postgres://postgres@localhost/agora",
            ),
            ("postgres://localhost/agora", "postgres://localhost/agora"),
            ("not a url", "(an unparsable database URL)"),
        ];
        for (url, expected) in cases {
            assert_eq!(DatabaseArgs::new(url).redacted_url(), expected, "for {url}");
        }
    }

    #[test]
    fn revocations_are_fetched_every_one_to_sixty_seconds() {
        #[derive(clap::Parser)]
        struct Settings {
            #[command(flatten)]
            keys: TokenKeysArgs,
        }
        let parse = |args: &[&str]| {
            <Settings as clap::Parser>::try_parse_from(
                std::iter::once("test").chain(args.iter().copied()),
            )
            .map(|settings| settings.keys.token_revocations_refresh_secs)
        };
        assert_eq!(parse(&[]).unwrap(), 2, "the default");
        assert_eq!(
            parse(&["--token-revocations-refresh-secs", "60"]).unwrap(),
            60
        );
        for bad in ["0", "61", "-1", "soon"] {
            assert!(
                parse(&["--token-revocations-refresh-secs", bad]).is_err(),
                "{bad} refused"
            );
        }
    }
}

/// Where a service that does not sign tokens gets the keys to verify them, and
/// learns which sessions have ended.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenKeysArgs {
    /// auth-service, asked for its public keys when a token names an unknown one,
    /// and for the sessions that ended every TOKEN_REVOCATIONS_REFRESH_SECS: a
    /// URL, a comma-separated list of them (replicas), or a URL whose host is a DNS
    /// name, every address of which is a replica (looked up again every few
    /// seconds).
    #[arg(
        long,
        env = "AUTH_SERVICE_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub auth_service_url: String,
    /// A JWK Set file to verify with instead of asking auth-service. Then nothing
    /// tells the verifier which sessions ended: tokens of a session logged out
    /// stay valid until they expire.
    #[arg(long, env = "JWKS_FILE")]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Seconds between two fetches of the keys (or readings of the file) when no
    /// token names an unknown key: a key removed from the set stops being trusted
    /// within this bound.
    #[arg(long, env = "TOKEN_KEYS_REFRESH_SECS", default_value_t = KEY_REFRESH_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub token_keys_refresh_secs: u64,
    /// Seconds between two requests to auth-service for the sessions that ended
    /// (logout, password change, deleted account): their access tokens are
    /// refused in this service within this bound and a request. While
    /// auth-service cannot be reached, the sessions already known stay refused
    /// and other tokens are accepted. Unused with JWKS_FILE, which has no
    /// revocations.
    #[arg(long, env = "TOKEN_REVOCATIONS_REFRESH_SECS",
          default_value_t = REVOCATION_REFRESH_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub token_revocations_refresh_secs: u64,
}

impl TokenKeysArgs {
    /// Keys from auth-service at `auth_service_url`, refreshed at the default
    /// interval.
    pub fn new(auth_service_url: impl Into<String>) -> Self {
        Self {
            auth_service_url: auth_service_url.into(),
            jwks_file: None,
            token_keys_refresh_secs: KEY_REFRESH_INTERVAL.as_secs(),
            token_revocations_refresh_secs: REVOCATION_REFRESH_INTERVAL.as_secs(),
        }
    }

    /// A verifier on these keys, which fetches them again every
    /// `token_keys_refresh_secs` (a JWK Set file is read again), so a key removed
    /// from the set stops being trusted within that bound. From auth-service, it
    /// also asks, over the same channel, which sessions ended every
    /// `token_revocations_refresh_secs`, and refuses their tokens; a JWK Set
    /// file has no revocations. It connects lazily, so auth-service may start
    /// later; needs a Tokio runtime.
    pub fn verifier(&self) -> Result<Arc<TokenVerifier>, KeyConfigError> {
        let verifier = match &self.jwks_file {
            Some(path) => {
                let file = KeysFile(path.clone());
                // Read once now, so that a bad file stops the start-up.
                file.read().map_err(|error| KeyConfigError(error.0))?;
                Arc::new(TokenVerifier::new(file))
            }
            None => {
                let auth = crate::client::upstream(&self.auth_service_url)
                    .map_err(|error| KeyConfigError(format!("AUTH_SERVICE_URL: {error}")))?;
                let verifier = Arc::new(
                    TokenVerifier::new(AuthServiceKeys::new(auth.channel()))
                        .with_revocations(AuthServiceRevocations::new(auth.channel())),
                );
                verifier.keep_revocations_fresh(Duration::from_secs(
                    self.token_revocations_refresh_secs,
                ));
                verifier
            }
        };
        verifier.keep_keys_fresh(Duration::from_secs(self.token_keys_refresh_secs));
        Ok(verifier)
    }
}

/// The token keys are configured wrongly.
#[derive(Debug, thiserror::Error)]
#[error("token verification keys: {0}")]
pub struct KeyConfigError(String);
