//! votes-service: likes on posts, at most one per person and post, and like counts
//! for many posts at once.
//!
//! It owns the `votes` schema, and reads posts only through posts-service's read
//! interface, `posts.visible_posts(viewer)`. Its [`Config`] is a
//! [`ServiceConfig`]: `service_kit::service::build` makes a bound server from it,
//! and `main.rs` runs it until a shutdown signal.

pub mod config;
mod grpc;
mod quotas;
mod votes;

use std::{net::SocketAddr, time::Duration};

use agora_proto::votes::v1::vote_service_server::VoteServiceServer;
use service_kit::{CommonArgs, ServedApi, ServiceConfig, StartupError, request_ids};
use sqlx::PgPool;
use tonic::{server::NamedService, service::Routes};

pub use config::{Config, QuotaSettings};
/// For tests: what the periodic purge started by `served_api` does each round.
pub use votes::purge_like_count_changes;

impl ServiceConfig for Config {
    const NAME: &'static str = "votes-service";

    fn server(&self) -> (SocketAddr, &CommonArgs) {
        (self.listen, &self.common)
    }

    /// votes-service's gRPC service.
    async fn served_api(&self, pool: PgPool) -> Result<ServedApi, StartupError> {
        // Before the first upstream is made (auth-service's keys, just below).
        service_kit::install_tls(
            &self.common.upstream_tls,
            Duration::from_secs(self.common.tls.tls_reload_secs),
        )
        .map_err(|error| StartupError::Config(error.to_string()))?;
        let verifier = self.token_keys.verifier()?;
        let votes = VoteServiceServer::new(grpc::VoteApi {
            pool: pool.clone(),
            quotas: quotas::Quotas::new(&self.quotas),
        })
        .max_decoding_message_size(self.common.limits.max_message_bytes);
        let retention = self.feed_retention.retention();
        tokio::spawn(request_ids::purge_periodically(
            pool.clone(),
            "like-count changes older than FEED_RETENTION_SECS",
            move |pool| async move {
                votes::purge_like_count_changes(&mut *pool.acquire().await?, retention).await
            },
        ));
        Ok(ServedApi::new(
            vec![<VoteServiceServer<grpc::VoteApi> as NamedService>::NAME],
            Routes::new(votes),
            verifier,
            pool,
        ))
    }
}
