//! The gateway's settings, as flags or environment variables.

use std::{net::SocketAddr, path::PathBuf};

use service_kit::{CommonArgs, client_address::TrustedNetworks};

use crate::upstreams::UpstreamUrls;

/// Agora's gateway: the one public endpoint. Without upstream URLs it runs auth-,
/// posts- and votes-service itself, on the database of DATABASE_URL.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to serve gRPC and gRPC-Web on.
    #[arg(long, env = "GATEWAY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Address to serve the HTTP/JSON API on.
    #[arg(long, env = "GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// auth-service; give all three upstream URLs or none. Each takes a URL, a
    /// comma-separated list of them (replicas), or a URL whose host is a DNS name,
    /// every address of which is a replica (looked up again every few seconds).
    #[arg(long, env = "AUTH_SERVICE_URL", requires_all = ["posts_service_url", "votes_service_url"])]
    pub auth_service_url: Option<String>,
    /// posts-service; give all three upstream URLs or none.
    #[arg(long, env = "POSTS_SERVICE_URL", requires_all = ["auth_service_url", "votes_service_url"])]
    pub posts_service_url: Option<String>,
    /// votes-service; give all three upstream URLs or none.
    #[arg(long, env = "VOTES_SERVICE_URL", requires_all = ["auth_service_url", "posts_service_url"])]
    pub votes_service_url: Option<String>,
    /// A JWK Set to verify tokens with, instead of asking auth-service.
    #[arg(long, env = "JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Seconds between two fetches of the token keys (or readings of the file)
    /// when no token names an unknown key: a key removed from the set stops being
    /// trusted within this bound.
    #[arg(long, env = "TOKEN_KEYS_REFRESH_SECS", default_value_t = access_token::KEY_REFRESH_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub token_keys_refresh_secs: u64,
    /// Seconds between two requests to auth-service for the sessions that ended:
    /// their access tokens are refused within this bound and a request. Unused
    /// with JWKS_FILE.
    #[arg(long, env = "TOKEN_REVOCATIONS_REFRESH_SECS", default_value_t = access_token::REVOCATION_REFRESH_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub token_revocations_refresh_secs: u64,
    /// Origins allowed to call from a browser (gRPC-Web and HTTP); `*` for any.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allowed_origins: Vec<String>,
    /// Whether the HTTP/JSON API shows every user's email (a post's owner, `GET
    /// /users/{id}`), as the course API does. With false, an email is shown only
    /// to its owner, as over gRPC.
    #[arg(long, env = "HTTP_SHOW_EMAILS", default_value_t = true, action = clap::ArgAction::Set)]
    pub http_show_emails: bool,
    /// Proxies in front of the gateway (addresses or networks, comma-separated;
    /// none by default) whose `x-forwarded-for` names the client. Calls from
    /// anyone else are counted for the peer itself. Every call is forwarded with
    /// exactly the client address so found as its `x-forwarded-for`.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedNetworks,
    /// Registrations (CreateUser, `POST /users`) allowed per client address (an
    /// IPv6 client: its /64) per hour, all at once if need be; more are refused
    /// (RESOURCE_EXHAUSTED REGISTRATION_THROTTLED, HTTP 429 with Retry-After).
    /// Counted by each gateway replica alone, so N replicas allow up to N times
    /// this. 0 turns the limit off.
    #[arg(long, env = "REGISTRATIONS_PER_ADDRESS_PER_HOUR", default_value_t = 20)]
    pub registrations_per_address_per_hour: u32,
    /// Used only with the services embedded.
    #[command(flatten)]
    pub auth: auth_service::AuthSettings,
    /// Used only with the services embedded.
    #[command(flatten)]
    pub quotas: crate::embedded::Quotas,
    /// Used only with the services embedded.
    #[command(flatten)]
    pub feed: posts_service::FeedSettings,
    /// The database is used only with the services embedded, or with
    /// DATABASE_MIGRATIONS=apply-and-exit.
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// The upstreams, when the gateway fronts services running elsewhere; `None`
    /// when it runs them itself.
    pub fn upstream_urls(&self) -> Option<UpstreamUrls> {
        match (
            &self.auth_service_url,
            &self.posts_service_url,
            &self.votes_service_url,
        ) {
            (Some(auth), Some(posts), Some(votes)) => Some(UpstreamUrls {
                auth: auth.clone(),
                posts: posts.clone(),
                votes: votes.clone(),
            }),
            _ => None,
        }
    }

    /// The defaults, on free loopback ports, embedding the services.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            grpc_listen: any,
            http_listen: any,
            auth_service_url: None,
            posts_service_url: None,
            votes_service_url: None,
            jwks_file: None,
            token_keys_refresh_secs: access_token::KEY_REFRESH_INTERVAL.as_secs(),
            token_revocations_refresh_secs: access_token::REVOCATION_REFRESH_INTERVAL.as_secs(),
            cors_allowed_origins: vec!["*".to_owned()],
            http_show_emails: true,
            trusted_proxies: TrustedNetworks::default(),
            registrations_per_address_per_hour: 20,
            auth: auth_service::AuthSettings::default(),
            quotas: crate::embedded::Quotas::default(),
            feed: posts_service::FeedSettings::default(),
            common: CommonArgs::default(),
        }
    }
}
