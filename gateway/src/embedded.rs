//! The all-in-one mode: auth-, posts- and votes-service in the gateway's own
//! process, each on a loopback port of its own, so the gateway talks to them
//! exactly as it would to remote ones.

use std::net::SocketAddr;

use service_kit::{CommonArgs, GrpcServer};
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinSet};

use crate::{config::Config, upstreams::UpstreamUrls};

/// Why an embedded service could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("auth-service: {0}")]
    Auth(#[from] auth_service::StartupError),
    #[error("posts-service: {0}")]
    Posts(#[from] posts_service::StartupError),
    #[error("votes-service: {0}")]
    Votes(#[from] votes_service::StartupError),
}

/// The three services, bound and ready to serve.
pub struct EmbeddedServices {
    servers: Vec<GrpcServer>,
    pub urls: UpstreamUrls,
}

impl EmbeddedServices {
    pub async fn bind(config: &Config, pool: PgPool) -> Result<Self, EmbeddedError> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let url = |server: &GrpcServer| format!("http://{}", server.local_addr());

        let auth_config = auth_service::Config {
            listen: loopback,
            auth: config.auth.clone(),
            common: CommonArgs {
                limits: config.common.limits.clone(),
                ..CommonArgs::default()
            },
        };
        let auth = auth_service::build_with_pool(&auth_config, pool.clone()).await?;
        let votes_config = votes_service::Config {
            common: CommonArgs {
                limits: config.common.limits.clone(),
                ..CommonArgs::default()
            },
            ..votes_service::Config::ephemeral(url(&auth))
        };
        let votes = votes_service::build_with_pool(&votes_config, pool.clone()).await?;
        let posts_config = posts_service::Config {
            common: CommonArgs {
                limits: config.common.limits.clone(),
                ..CommonArgs::default()
            },
            ..posts_service::Config::ephemeral(url(&auth), url(&votes))
        };
        let posts = posts_service::build_with_pool(&posts_config, pool).await?;
        let urls = UpstreamUrls {
            auth: url(&auth),
            posts: url(&posts),
            votes: url(&votes),
        };
        Ok(Self {
            servers: vec![auth, posts, votes],
            urls,
        })
    }

    /// Serves the three until `stop` turns true, then lets their calls finish.
    pub fn spawn(
        self,
        stop: watch::Receiver<bool>,
    ) -> JoinSet<Result<(), tonic::transport::Error>> {
        let mut tasks = JoinSet::new();
        for server in self.servers {
            let mut stop = stop.clone();
            tasks.spawn(server.run_until(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            }));
        }
        tasks
    }
}
