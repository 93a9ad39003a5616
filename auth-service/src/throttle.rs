//! Slows password guessing: after too many failed logins for one account within
//! a window, further logins for it are refused at once, without hashing, until
//! the window ends. Every email is treated alike, registered or not, so the
//! refusal says nothing about which emails exist.
//!
//! The counts live in auth's schema (`auth.login_failures`), so every replica
//! sees the same count: N replicas do not give N times the allowance. A login
//! costs one more small query, and a failure one upsert. At a scale where that
//! table became hot, a shared in-memory store with expiring counters (Redis
//! `INCR` with `EXPIRE`, say) would take its place behind the same three calls.

use std::time::Duration;

use service_kit::ApiError;
use sqlx::{PgConnection, PgPool};

/// Whether an account had failed logins in the current window when checked.
#[derive(Debug, Clone, Copy)]
pub struct Counted(bool);

/// Failed logins per account key in the current window.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
}

impl LoginThrottle {
    /// `max_failures` per `window`; 0 turns the throttle off.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
        }
    }

    fn off(&self) -> bool {
        self.max_failures == 0
    }

    /// `Ok(Err(wait))` while `key` has used up its failures; else whether it has
    /// any in the current window, which only a success then needs to clear.
    pub async fn check(
        &self,
        pool: &PgPool,
        key: &str,
    ) -> Result<Result<Counted, Duration>, ApiError> {
        if self.off() {
            return Ok(Ok(Counted(false)));
        }
        // The database's clock decides, so replicas whose clocks differ agree.
        let row = sqlx::query!(
            r#"select failures,
                      extract(epoch from window_start + make_interval(secs => $2) - now())::float8
                        as "wait_secs!"
                 from auth.login_failures
                where key = $1 and window_start > now() - make_interval(secs => $2)"#,
            key,
            self.window.as_secs_f64(),
        )
        .fetch_optional(pool)
        .await?;
        Ok(match row {
            Some(row) if row.failures as u32 >= self.max_failures => {
                Err(Duration::from_secs_f64(row.wait_secs.max(0.0)))
            }
            row => Ok(Counted(row.is_some())),
        })
    }

    /// Counts a failure for `key`, in a new window if the last one has ended.
    pub async fn record_failure(&self, pool: &PgPool, key: &str) -> Result<(), ApiError> {
        if self.off() {
            return Ok(());
        }
        sqlx::query!(
            "insert into auth.login_failures as counted (key, failures) values ($1, 1)
             on conflict (key) do update set
                 failures = case when counted.window_start > now() - make_interval(secs => $2)
                                 then counted.failures + 1 else 1 end,
                 window_start = case when counted.window_start > now() - make_interval(secs => $2)
                                     then counted.window_start else now() end",
            key,
            self.window.as_secs_f64(),
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// A successful login starts the count afresh; a login that found none
    /// writes nothing.
    pub async fn record_success(
        &self,
        pool: &PgPool,
        key: &str,
        counted: Counted,
    ) -> Result<(), ApiError> {
        if !counted.0 {
            return Ok(());
        }
        sqlx::query!("delete from auth.login_failures where key = $1", key)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Deletes the counts whose window has ended; how many.
    pub async fn purge_ended(&self, conn: &mut PgConnection) -> Result<u64, ApiError> {
        let deleted = sqlx::query!(
            "delete from auth.login_failures where window_start <= now() - make_interval(secs => $1)",
            self.window.as_secs_f64(),
        )
        .execute(conn)
        .await?;
        Ok(deleted.rows_affected())
    }
}
