//! auth-service's settings, as flags or environment variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use service_kit::{CommonArgs, client_address::TrustedNetworks};

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
    /// Failed logins from one client address (an IPv6 client: its /64), for any
    /// emails, before every further login from it must wait a growing delay
    /// after its last failure (LOGIN_DELAY_BASE_MS doubled per failure, at most
    /// LOGIN_DELAY_MAX_SECS); an earlier one is refused at once
    /// (RESOURCE_EXHAUSTED LOGIN_THROTTLED, with the time to wait). 0 turns this
    /// count off.
    #[arg(long, env = "LOGIN_FREE_FAILURES_PER_ADDRESS", default_value_t = 20)]
    pub login_free_failures_per_address: u32,
    /// Failed logins for one email, from anywhere, before it is slowed the same
    /// way, but only for logins from addresses that have failed themselves: its
    /// owner, logging in from an address with no failures, is never slowed. 0
    /// turns this count off.
    #[arg(long, env = "LOGIN_FREE_FAILURES_PER_ACCOUNT", default_value_t = 5)]
    pub login_free_failures_per_account: u32,
    /// The first delay past a free allowance, in milliseconds; each further
    /// failure doubles it.
    #[arg(long, env = "LOGIN_DELAY_BASE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub login_delay_base_ms: u64,
    /// The longest delay between two failed logins, in seconds.
    #[arg(long, env = "LOGIN_DELAY_MAX_SECS", default_value_t = 300)]
    pub login_delay_max_secs: u64,
    /// A failure count is forgotten once this many seconds pass without a
    /// failure.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub login_failure_window_secs: u64,
    /// Callers whose `x-forwarded-for` names the client a login is counted for
    /// (addresses or networks, comma-separated; empty for none): the gateway,
    /// or a load balancer in front of auth-service. Any other caller is the
    /// client itself. The default believes a gateway on the same host.
    #[arg(long, env = "TRUSTED_CALLERS", default_value = "127.0.0.0/8,::1")]
    pub trusted_callers: TrustedNetworks,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            token_ttl_secs: 1800,
            password_hashing_concurrency: 0,
            password_hashing_queue: 64,
            login_free_failures_per_address: 20,
            login_free_failures_per_account: 5,
            login_delay_base_ms: 1000,
            login_delay_max_secs: 300,
            login_failure_window_secs: 900,
            trusted_callers: TrustedNetworks::loopback(),
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
