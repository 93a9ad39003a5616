//! Client request ids (AIP-155): how long a service remembers them, and the task
//! that forgets them after that.

use std::{future::Future, time::Duration};

use sqlx::PgPool;
use tokio::time::{Instant, MissedTickBehavior};

use crate::ApiError;

/// How long a request id is remembered; after that it starts a new request.
pub const LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How often request ids older than [`LIFETIME`] are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Runs `purge` (which answers how many rows it deleted) every
/// [`PURGE_INTERVAL`] until `pool` is closed; `what` names the rows in the log.
/// A failed round is logged and the next one tries again. Request ids are
/// purged so; so are other rows kept for a while (the feed's outboxes).
pub async fn purge_periodically<F, Fut>(pool: PgPool, what: &'static str, purge: F)
where
    F: Fn(PgPool) -> Fut,
    Fut: Future<Output = Result<u64, ApiError>>,
{
    let mut rounds = tokio::time::interval_at(Instant::now() + PURGE_INTERVAL, PURGE_INTERVAL);
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        if pool.is_closed() {
            return;
        }
        match purge(pool.clone()).await {
            Ok(purged) => tracing::debug!(purged, what, "purged"),
            Err(error) => tracing::warn!(%error, what, "cannot purge"),
        }
    }
}
