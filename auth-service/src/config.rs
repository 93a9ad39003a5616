//! auth-service's settings, as flags or environment variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use service_kit::CommonArgs;

/// Agora's auth-service: users, password login and access tokens.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "AUTH_LISTEN_ADDR", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How auth-service signs tokens and treats passwords; the gateway takes the same
/// settings for the auth-service it runs itself.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// Ed25519 private key (PKCS#8 PEM, e.g. from `openssl genpkey -algorithm
    /// ed25519`) that signs access tokens. Without it, a key kept in the database is
    /// used, and made on first start.
    #[arg(long, env = "SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// How long an access token is valid, in seconds (1 minute to 1 hour). Verifiers
    /// refuse tokens that live longer than an hour.
    #[arg(long, env = "TOKEN_TTL_SECS", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(60..=access_token::DEFAULT_MAX_LIFETIME.as_secs()))]
    pub token_ttl_secs: u64,
    /// Password hashes computed at once; 0 means one per CPU core (all but one
    /// when the gateway runs the services itself). Logins beyond this wait, so
    /// hashing never starves other calls. Each keeps a 19 MiB working buffer.
    #[arg(long, env = "PASSWORD_HASHING_CONCURRENCY", default_value_t = 0)]
    pub password_hashing_concurrency: usize,
    /// Logins and registrations that may wait for a password hash besides those
    /// running; one more is refused at once (RESOURCE_EXHAUSTED, with a time to
    /// retry), as is one whose deadline would pass before its turn.
    #[arg(long, env = "PASSWORD_HASHING_QUEUE", default_value_t = 64)]
    pub password_hashing_queue: usize,
    /// Failed logins allowed per email within the window; then its logins are
    /// refused (RESOURCE_EXHAUSTED) until the window ends. 0 turns this off.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 10)]
    pub login_max_failures: u32,
    /// The window for LOGIN_MAX_FAILURES, in seconds, from the first failure.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECS", default_value_t = 900)]
    pub login_failure_window_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            token_ttl_secs: 1800,
            password_hashing_concurrency: 0,
            password_hashing_queue: 64,
            login_max_failures: 10,
            login_failure_window_secs: 900,
        }
    }
}

impl AuthSettings {
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_secs)
    }

    pub fn login_failure_window(&self) -> Duration {
        Duration::from_secs(self.login_failure_window_secs)
    }
}

impl Config {
    /// The defaults, but on a free loopback port: for tests and embedding.
    pub fn ephemeral() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: AuthSettings::default(),
            common: CommonArgs::default(),
        }
    }
}
