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
    /// Without a command, auth-service serves.
    #[command(subcommand)]
    pub command: Option<KeyCommand>,
}

/// Changes to the signing keys kept in the database (`auth.signing_keys`), made
/// once and then exiting; every running replica picks them up within
/// SIGNING_KEYS_RELOAD_SECS, without a restart.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeyCommand {
    /// Makes a new signing key, published at once and signing from
    /// `--sign-after-secs` from now; every older key then stops signing and is
    /// withdrawn an hour (the longest token lifetime) and a minute later, once
    /// the last token it signed has expired. Prints the schedule.
    RotateSigningKey {
        /// Seconds the new key is published before it signs: at least
        /// SIGNING_KEYS_RELOAD_SECS, so every replica knows it first, and where
        /// verifiers read a JWKS_FILE, the time to copy the new set there plus
        /// their TOKEN_KEYS_REFRESH_SECS. 0 signs at once (a leaked key).
        #[arg(long, default_value_t = 120)]
        sign_after_secs: u64,
    },
    /// Withdraws a key now (one that leaked): tokens it signed stop verifying
    /// within each verifier's TOKEN_KEYS_REFRESH_SECS. Refused for the only key
    /// that signs now; rotate with `--sign-after-secs 0` first.
    RetireSigningKey {
        /// The key's id, the `kid` of its tokens and of GetJwks.
        kid: String,
    },
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
    /// Seconds between two loads of the signing keys kept in the database, 1 to
    /// 3600: a rotated or retired key takes effect in every replica within this.
    #[arg(long, env = "SIGNING_KEYS_RELOAD_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub signing_keys_reload_secs: u64,
    /// 32 random bytes in base64 (`openssl rand -base64 32`) that seal the
    /// signing keys kept in the database: without it they are stored in the
    /// clear, readable by anyone with the database or a backup of it. Keys
    /// stored in the clear are sealed at the next start with it. Empty is unset.
    #[arg(long, env = "SIGNING_KEYS_SECRET", hide_env_values = true)]
    pub signing_keys_secret: Option<Secret>,
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
    /// Seconds a session may go without a refresh before its refresh token
    /// expires (REFRESH_TOKEN_EXPIRED); each login or refresh starts the count
    /// again. 30 days by default.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT_SECS", default_value_t = 30 * DAY_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_timeout_secs: u64,
    /// Seconds after its login that a session ends however often it is
    /// refreshed: then only the password starts a new one. 90 days by default.
    #[arg(long, env = "SESSION_MAX_AGE_SECS", default_value_t = 90 * DAY_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_max_age_secs: u64,
    /// Milliseconds between two reads of the ended sessions by auth-service's
    /// own token check (VerifyToken and the calls that need a token), 100 to
    /// 60000: an access token of a session ended on another replica is
    /// refused here within this bound.
    #[arg(long, env = "REVOKED_SESSIONS_RELOAD_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub revoked_sessions_reload_ms: u64,
}

const DAY_SECS: u64 = 24 * 60 * 60;

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            signing_keys_reload_secs: 30,
            signing_keys_secret: None,
            token_ttl_secs: 1800,
            password_hashing_concurrency: 0,
            password_hashing_queue: 64,
            login_free_failures_per_address: 20,
            login_free_failures_per_account: 5,
            login_delay_base_ms: 1000,
            login_delay_max_secs: 300,
            login_failure_window_secs: 900,
            trusted_callers: TrustedNetworks::loopback(),
            session_idle_timeout_secs: 30 * DAY_SECS,
            session_max_age_secs: 90 * DAY_SECS,
            revoked_sessions_reload_ms: 2000,
        }
    }
}

impl AuthSettings {
    pub fn signing_keys_reload(&self) -> Duration {
        Duration::from_secs(self.signing_keys_reload_secs)
    }

    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_secs)
    }

    pub fn login_failure_window(&self) -> Duration {
        Duration::from_secs(self.login_failure_window_secs)
    }

    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout_secs)
    }

    pub fn session_max_age(&self) -> Duration {
        Duration::from_secs(self.session_max_age_secs)
    }

    pub fn revoked_sessions_reload(&self) -> Duration {
        Duration::from_millis(self.revoked_sessions_reload_ms)
    }
}

impl Config {
    /// The defaults, but on a free loopback port: for tests and embedding.
    pub fn ephemeral() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: AuthSettings::default(),
            common: CommonArgs::default(),
            command: None,
        }
    }
}

/// A setting that must not appear in logs or debug output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}
