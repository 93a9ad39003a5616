//! Slows password guessing without handing anyone a way to lock others out
//! (OWASP's credential-stuffing guidance): failed logins are counted per
//! account and per client address, and past a free allowance each further
//! attempt must come a growing delay after the last failure. An attempt that
//! comes too early is refused at once, without hashing and without sleeping,
//! with the time left to wait.
//!
//! - The address count (`address:<ip>`, an IPv6 client by its /64) applies to
//!   every login from that address, whatever the email: one client guessing at
//!   many accounts is slowed after `free_per_address` failures.
//! - The account count (`account:<auth.email_key>`) applies only to logins from
//!   addresses that have failed themselves within the window. An owner typing
//!   the right password from an address with no failures is never slowed, however
//!   hard the account is attacked elsewhere; an attacker, who fails, is.
//! - A refresh token names no account until it is found, so an invalid one
//!   counts for its address alone ([`LoginKeys::address_only`]), and a refresh
//!   from an address past its allowance waits like a login.
//! - The calls that check the password of a signed-in user (changing it,
//!   deleting the account) count like logins for that user's account.
//!
//! The delay past an allowance of `free` is `min(base * 2^(failures - free),
//! max)`: with the defaults (1 s, 5 minutes) it reaches its cap after nine
//! doublings. A count is forgotten once a whole window passes without a failure.
//! Refused attempts are not failures, so hammering does not lengthen the wait.
//! Every email is treated alike, registered or not, so the refusal says nothing
//! about which emails exist.
//!
//! The counts live in auth's schema (`auth.login_failures`), so every replica
//! sees the same ones and the database's clock decides. A login costs one
//! small query (both counts at once), a failure one upsert (both keys at once),
//! and a success a delete only when its account had a count. At a scale where
//! that table became hot, a shared in-memory store with expiring counters (Redis
//! `INCR`, `EXPIRE`) would take its place behind the same calls.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use service_kit::{ApiError, client_address::counted_as};
use sqlx::{PgConnection, PgPool};

use crate::config::AuthSettings;

/// The most failures a count keeps; far past the point where the delay stops
/// growing, and well inside an `integer`.
const MAX_COUNTED: i32 = 1_000_000;

/// The counts one login is checked against and adds to.
#[derive(Debug, Clone)]
pub struct LoginKeys {
    /// None for a refresh token, which names no account until it is found.
    account: Option<String>,
    address: String,
}

impl LoginKeys {
    /// For the account with email key `email_key`, tried from `client`; calls
    /// that name no client share one count.
    pub fn new(email_key: &str, client: Option<IpAddr>) -> Self {
        Self {
            account: Some(account_key(email_key)),
            ..Self::address_only(client)
        }
    }

    /// For `client` alone: refresh tokens, whose failures are the address's.
    pub fn address_only(client: Option<IpAddr>) -> Self {
        let address = match client.map(counted_as) {
            Some(IpNet::V4(v4)) => v4.addr().to_string(),
            Some(IpNet::V6(v6)) => v6.to_string(),
            None => "unknown".to_owned(),
        };
        Self {
            account: None,
            address: format!("address:{address}"),
        }
    }
}

fn account_key(email_key: &str) -> String {
    format!("account:{email_key}")
}

/// Whether the account had failed logins in the current window when checked.
#[derive(Debug, Clone, Copy)]
pub struct Counted(bool);

/// Which count refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowed {
    /// Too many failures from this address, for any emails.
    Address,
    /// Too many failures for this email, and this address has failed too.
    Account,
}

/// A login that came before its delay had passed.
#[derive(Debug, Clone, Copy)]
pub struct TooEarly {
    pub slowed: Slowed,
    pub wait: Duration,
}

/// Failed logins per account and per client address, and the delays they cost.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    free_per_account: u32,
    free_per_address: u32,
    base_delay: Duration,
    max_delay: Duration,
    window: Duration,
}

impl LoginThrottle {
    pub fn new(settings: &AuthSettings) -> Self {
        Self {
            free_per_account: settings.login_free_failures_per_account,
            free_per_address: settings.login_free_failures_per_address,
            base_delay: Duration::from_millis(settings.login_delay_base_ms),
            max_delay: Duration::from_secs(settings.login_delay_max_secs),
            window: settings.login_failure_window(),
        }
    }

    fn off(&self) -> bool {
        self.free_per_account == 0 && self.free_per_address == 0
    }

    /// `Ok(Err(too_early))` while the login must wait; else whether its account
    /// has failures in the current window, which only a success then needs to
    /// clear. Both counts are read in one query.
    pub async fn check(
        &self,
        pool: &PgPool,
        keys: &LoginKeys,
    ) -> Result<Result<Counted, TooEarly>, ApiError> {
        if self.off() {
            return Ok(Ok(Counted(false)));
        }
        // The database's clock decides, so replicas whose clocks differ agree.
        let rows = sqlx::query!(
            r#"select key, failures,
                      extract(epoch from now() - last_failure)::float8 as "since_secs!"
                 from auth.login_failures
                where key in ($1, $2) and last_failure > now() - make_interval(secs => $3)"#,
            keys.account,
            keys.address,
            self.window.as_secs_f64(),
        )
        .fetch_all(pool)
        .await?;
        let found = |key: &str| {
            rows.iter().find(|row| row.key == key).map(|row| {
                (
                    row.failures,
                    Duration::from_secs_f64(row.since_secs.max(0.0)),
                )
            })
        };
        let account = keys.account.as_deref().and_then(found);
        let address = found(&keys.address);
        let address_wait = address.and_then(|(failures, since)| {
            self.wait(failures, self.free_per_address, since)
                .map(|wait| (Slowed::Address, wait))
        });
        // The account's count slows only addresses that have failed themselves.
        let account_wait = account
            .filter(|_| address.is_some())
            .and_then(|(failures, since)| {
                self.wait(failures, self.free_per_account, since)
                    .map(|wait| (Slowed::Account, wait))
            });
        match address_wait
            .into_iter()
            .chain(account_wait)
            .max_by_key(|(_, wait)| *wait)
        {
            Some((slowed, wait)) => Ok(Err(TooEarly { slowed, wait })),
            None => Ok(Ok(Counted(account.is_some()))),
        }
    }

    /// How much longer a login must wait after `failures` with `free` of them
    /// allowed, the last `since` ago; `None` when it need not.
    fn wait(&self, failures: i32, free: u32, since: Duration) -> Option<Duration> {
        let failures = u32::try_from(failures).ok()?;
        if free == 0 || failures < free {
            return None;
        }
        let doublings = failures - free;
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        // The count is forgotten when the window passes with no failure, so no
        // wait outlasts it.
        let delay = self
            .base_delay
            .saturating_mul(factor)
            .min(self.max_delay)
            .min(self.window);
        Some(delay.saturating_sub(since)).filter(|wait| !wait.is_zero())
    }

    /// Counts a failure for the account and the address, in one statement,
    /// starting a count afresh where a whole window has passed since the last.
    pub async fn record_failure(&self, pool: &PgPool, keys: &LoginKeys) -> Result<(), ApiError> {
        if self.off() {
            return Ok(());
        }
        // Sorted, so two concurrent failures lock their rows in one order.
        let keys: Vec<String> = keys
            .account
            .iter()
            .chain([&keys.address])
            .cloned()
            .collect();
        sqlx::query!(
            "insert into auth.login_failures as counted (key, failures)
             select key, 1 from unnest($1::text[]) as key order by key
             on conflict (key) do update set
                 failures = case when counted.last_failure > now() - make_interval(secs => $2)
                                 then least(counted.failures + 1, $3) else 1 end,
                 last_failure = now()",
            &keys[..],
            self.window.as_secs_f64(),
            MAX_COUNTED,
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// A successful login clears its account's count, when the check found one
    /// (else it writes nothing). The address's count stays: an attacker who logs
    /// in to an account of their own must not wipe their failures elsewhere.
    pub async fn record_success(
        &self,
        pool: &PgPool,
        keys: &LoginKeys,
        counted: Counted,
    ) -> Result<(), ApiError> {
        let Some(account) = keys.account.as_deref().filter(|_| counted.0) else {
            return Ok(());
        };
        sqlx::query!("delete from auth.login_failures where key = $1", account)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Deletes the account's count, for an account being deleted: keyed by its
    /// email, it would name the account after it is gone. Both keys go, as this
    /// service computes it and as `auth.email_key` does, should their Unicode
    /// tables differ.
    pub async fn forget_account(conn: &mut PgConnection, email: &str) -> Result<(), ApiError> {
        sqlx::query(
            "delete from auth.login_failures where key in ($1, 'account:' || auth.email_key($2))",
        )
        .bind(account_key(&crate::users::email_key(email)))
        .bind(email)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Deletes the counts a whole window has passed over without a failure; how
    /// many.
    pub async fn purge_ended(&self, conn: &mut PgConnection) -> Result<u64, ApiError> {
        let deleted = sqlx::query!(
            "delete from auth.login_failures where last_failure <= now() - make_interval(secs => $1)",
            self.window.as_secs_f64(),
        )
        .execute(conn)
        .await?;
        Ok(deleted.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle {
            free_per_account: 5,
            free_per_address: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            window: Duration::from_secs(900),
        }
    }

    #[test]
    fn the_delay_doubles_past_the_allowance_up_to_its_cap() {
        let throttle = throttle();
        let wait = |failures| throttle.wait(failures, 5, Duration::ZERO);
        let secs = |secs| Some(Duration::from_secs(secs));
        let expected = [
            (4, None),
            (5, secs(1)),
            (6, secs(2)),
            (7, secs(4)),
            (13, secs(256)),
            (14, secs(300)),
            (1_000_000, secs(300)),
        ];
        for (failures, delay) in expected {
            assert_eq!(wait(failures), delay, "after {failures} failures");
        }
        assert_eq!(
            throttle.wait(100, 0, Duration::ZERO),
            None,
            "0 turns it off"
        );
        assert_eq!(
            throttle.wait(6, 5, Duration::from_millis(500)),
            Some(Duration::from_millis(1500)),
            "counted from the last failure"
        );
        assert_eq!(throttle.wait(6, 5, Duration::from_secs(3)), None);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_block() {
        let keys = |client: &str| LoginKeys::new("a@example.com", Some(client.parse().unwrap()));
        assert_eq!(keys("192.0.2.1").address, "address:192.0.2.1");
        assert_eq!(keys("2001:db8:1:2::5").address, "address:2001:db8:1:2::/64");
        assert_eq!(
            keys("192.0.2.1").account.as_deref(),
            Some("account:a@example.com")
        );
        assert_eq!(LoginKeys::new("k", None).address, "address:unknown");
    }
}
