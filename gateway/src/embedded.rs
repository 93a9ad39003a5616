//! The three services wired to each other: auth-service first, then votes-service
//! (which verifies tokens with auth-service's keys), then posts-service (which asks
//! both). The all-in-one mode runs them in the gateway's own process, each on a
//! loopback port of its own and configured with the others' URLs as remote ones
//! would be; calls between them, and from the gateway, are then made in-process
//! (`service_kit::hop`), through the same token checks, limits and deadlines. The
//! system tests wire them the same way.

use std::net::SocketAddr;

use service_kit::{CommonArgs, GrpcServer, ServerLimits, StartupError, service::build_with_pool};
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinSet};

use crate::upstreams::UpstreamUrls;

/// One value for each service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerService<T> {
    pub auth: T,
    pub votes: T,
    pub posts: T,
}

impl PerService<SocketAddr> {
    /// Free loopback ports, chosen by the system.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            auth: any,
            votes: any,
            posts: any,
        }
    }
}

/// The per-person quotas of the services that have them, as each service takes
/// them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Quotas {
    #[command(flatten)]
    pub posts: posts_service::QuotaSettings,
    #[command(flatten)]
    pub votes: votes_service::QuotaSettings,
}

/// Why one of the services could not start.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {source}")]
pub struct EmbeddedError {
    service: &'static str,
    source: StartupError,
}

/// Binds the three services at `addresses` on an already migrated database, each
/// knowing where the others are.
pub async fn bind_services(
    pool: &PgPool,
    addresses: PerService<SocketAddr>,
    auth: auth_service::AuthSettings,
    quotas: Quotas,
    feed: posts_service::FeedSettings,
    limits: &ServerLimits,
) -> Result<PerService<GrpcServer>, EmbeddedError> {
    let url = |server: &GrpcServer| format!("http://{}", server.local_addr());
    let common = || CommonArgs {
        limits: limits.clone(),
        ..CommonArgs::default()
    };
    let failed = |service| move |source| EmbeddedError { service, source };

    let auth_config = auth_service::Config {
        listen: addresses.auth,
        auth: leave_a_core_for_reads(auth),
        common: common(),
        command: None,
    };
    let auth = build_with_pool(&auth_config, pool.clone())
        .await
        .map_err(failed("auth-service"))?;
    let votes_config = votes_service::Config {
        listen: addresses.votes,
        quotas: quotas.votes,
        feed_retention: feed.retention.clone(),
        common: common(),
        ..votes_service::Config::ephemeral(url(&auth))
    };
    let votes = build_with_pool(&votes_config, pool.clone())
        .await
        .map_err(failed("votes-service"))?;
    let posts_config = posts_service::Config {
        listen: addresses.posts,
        quotas: quotas.posts,
        feed,
        common: common(),
        ..posts_service::Config::ephemeral(url(&auth), url(&votes))
    };
    let posts = build_with_pool(&posts_config, pool.clone())
        .await
        .map_err(failed("posts-service"))?;
    Ok(PerService { auth, votes, posts })
}

/// Password hashing, one core each, would take every core of the process during
/// a burst of logins; in one process with the other services it takes at most
/// all but one, so reads keep a core. An explicit setting stands.
fn leave_a_core_for_reads(mut auth: auth_service::AuthSettings) -> auth_service::AuthSettings {
    if auth.password_hashing_concurrency == 0 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        auth.password_hashing_concurrency = cores.saturating_sub(1).max(1);
    }
    auth
}

/// The three services, bound on loopback and ready to serve.
pub struct EmbeddedServices {
    servers: PerService<GrpcServer>,
    pub urls: UpstreamUrls,
}

impl EmbeddedServices {
    pub async fn bind(
        pool: &PgPool,
        auth: auth_service::AuthSettings,
        quotas: Quotas,
        feed: posts_service::FeedSettings,
        limits: &ServerLimits,
    ) -> Result<Self, EmbeddedError> {
        let servers =
            bind_services(pool, PerService::ephemeral(), auth, quotas, feed, limits).await?;
        let url = |server: &GrpcServer| format!("http://{}", server.local_addr());
        let urls = UpstreamUrls {
            auth: url(&servers.auth),
            posts: url(&servers.posts),
            votes: url(&servers.votes),
        };
        Ok(Self { servers, urls })
    }

    /// Serves the three until `stop` turns true, then lets their calls finish.
    /// Their open streams end as soon as `end_streams` turns true: the
    /// gateway's own stop waits for the calls through it, streams included.
    pub fn spawn(
        self,
        stop: watch::Receiver<bool>,
        end_streams: watch::Receiver<bool>,
    ) -> JoinSet<Result<(), tonic::transport::Error>> {
        let mut tasks = JoinSet::new();
        let PerService { auth, votes, posts } = self.servers;
        for server in [auth, votes, posts] {
            if let Some(streams) = server.streams_stopping() {
                let mut end_streams = end_streams.clone();
                tokio::spawn(async move {
                    if end_streams.wait_for(|end| *end).await.is_ok() {
                        streams.send_replace(true);
                    }
                });
            }
            let mut stop = stop.clone();
            tasks.spawn(server.run_until(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            }));
        }
        tasks
    }
}
