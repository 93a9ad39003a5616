//! WatchPosts: the changes to posts and like counts, as they commit.
//!
//! - Recorded by triggers in the transaction that makes each change, in
//!   posts-service's outbox (`posts.post_events`) and votes-service's
//!   (`votes.like_count_events`, read only through what votes-service
//!   publishes, `votes.like_count_changes`), and announced by NOTIFY at commit.
//! - One [`hub::Hub`] per process LISTENs, reads what committed between its
//!   last snapshot and a new one, and hands the batch to every watcher
//!   ([`snapshot`] says why snapshots, not sequence numbers).
//! - Each watcher ([`watch`]) filters batches through its [`view::View`],
//!   catches up from a cursor first, and ends its stream with where to resume.

mod cursor;
mod events;
mod hub;
mod snapshot;
mod view;
mod watch;

use std::{sync::Arc, time::Duration};

use access_token::{Caller, TokenVerifier};
use agora_proto::errors::ErrorReason;
use service_kit::ApiError;
use sqlx::PgPool;
use tokio::sync::watch as signal;

use crate::listing::Filter;
pub use events::OUTBOX;
pub use watch::WatchStream;

/// A resumed watcher's missed changes are read this many at a time.
const CATCH_UP_PAGE: i64 = 500;
/// A watcher that has sent nothing for this long is sent a checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// How often a watcher's token is checked again (a session may end).
const TOKEN_RECHECK_EVERY: Duration = Duration::from_secs(5);

pub const CURSOR_EXPIRED: ApiError = ApiError::Refused {
    reason: ErrorReason::CursorExpired,
    message: "the cursor is older than the changes kept; list the posts again, then watch from now",
};

/// posts-service's feed: the hub and what every watcher shares.
#[derive(Clone)]
pub struct Feed {
    hub: hub::Hub,
    pool: PgPool,
    verifier: Arc<TokenVerifier>,
}

impl Feed {
    /// Starts listening; `stopping` turning true ends every stream.
    pub async fn start(
        pool: PgPool,
        verifier: Arc<TokenVerifier>,
        buffer: usize,
        stopping: signal::Receiver<bool>,
    ) -> Result<Self, ApiError> {
        let hub = hub::Hub::start(pool.clone(), buffer, stopping).await?;
        Ok(Self {
            hub,
            pool,
            verifier,
        })
    }

    /// A stream for `caller` (whose access token is `token`) from `cursor`
    /// (now when empty). A bad or expired cursor is refused here, before the
    /// stream starts.
    pub async fn watch(
        &self,
        caller: Caller,
        token: String,
        cursor: &str,
        filter: Filter,
    ) -> Result<WatchStream, ApiError> {
        let cursor: Option<cursor::Cursor> = match cursor {
            "" => None,
            text => Some(text.parse().map_err(|error: cursor::NotACursor| {
                ApiError::invalid("cursor", error.to_string())
            })?),
        };
        let mut conn = self.pool.acquire().await?;
        // The stream starts no earlier than this: whatever committed before
        // the call is not sent as news.
        let now = events::current_snapshot(&mut conn).await?;
        if let Some(cursor) = &cursor {
            // A position this database has not reached is another's.
            if !cursor.upto.is_within(&now) {
                return Err(ApiError::invalid("cursor", "not a cursor of this database"));
            }
            if !events::still_kept(&mut conn, cursor).await? {
                return Err(CURSOR_EXPIRED);
            }
        }
        drop(conn);
        let watcher = watch::Watcher {
            view: view::View::new(caller.user_id, filter),
            pool: self.pool.clone(),
            hub: self.hub.clone(),
            verifier: self.verifier.clone(),
            token,
            expires_at: caller.expires_at,
        };
        Ok(watcher.start(cursor, now))
    }
}

/// Deletes the outbox's changes older than `retention` (see
/// [`Outbox::purge`](service_kit::outbox::Outbox::purge)).
pub async fn purge(conn: &mut sqlx::PgConnection, retention: Duration) -> Result<u64, ApiError> {
    events::OUTBOX.purge(conn, retention).await
}
