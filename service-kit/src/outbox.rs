//! The outboxes behind WatchPosts (`posts.post_events`, `votes.like_count_events`):
//! each owner purges its own the same way.

use std::time::Duration;

use sqlx::PgConnection;

use crate::ApiError;

/// An outbox: a table of changes with their transaction (`xid`) and time
/// (`event_time`), the one-row table that records the newest transaction
/// purged (`through_xid`), and the SQL function that announces its changes.
#[derive(Debug, Clone, Copy)]
pub struct Outbox {
    pub events: &'static str,
    pub purged: &'static str,
    /// Called as `select {announce}()`.
    pub announce: &'static str,
}

impl Outbox {
    /// Tells WatchPosts' listeners, once a change has committed, that the
    /// outbox has new rows: the change's statement called the schema's
    /// `announce_after_commit()`, so the outbox's trigger did not (migration
    /// 0014 says why). A failure is only logged: the change is made, and the
    /// next announcement brings it along.
    pub async fn announce(&self, conn: &mut PgConnection) {
        let statement = format!("select {}()", self.announce);
        // The name is the owner's constant, never input.
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(conn)
            .await
        {
            tracing::warn!(%error, outbox = self.events, "cannot announce a change to WatchPosts' listeners");
        }
    }

    /// Deletes the changes older than `retention`, of transactions that have
    /// ended, and records the newest transaction deleted, so that a cursor
    /// whose snapshot does not see it is told it lost changes. Answers how many
    /// it deleted.
    pub async fn purge(
        &self,
        conn: &mut PgConnection,
        retention: Duration,
    ) -> Result<u64, ApiError> {
        let Outbox { events, purged, .. } = self;
        // The names are the owners' constants, never input.
        let statement = format!(
            "with purged as (
                 delete from {events}
                 where event_time < now() - make_interval(secs => $1)
                   and xid < pg_snapshot_xmin(pg_current_snapshot())
                 returning xid
             ), recorded as (
                 update {purged}
                 set through_xid = greatest(through_xid, (select max(xid) from purged))
                 where exists (select from purged)
             )
             select count(*) from purged"
        );
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .bind(retention.as_secs_f64())
            .fetch_one(conn)
            .await?;
        Ok(count as u64)
    }
}
