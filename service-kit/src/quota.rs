//! Keyed rate limits: how many calls of one kind each key (a person, a client
//! address) may make per period, with a burst, by GCRA (the `governor` crate).
//!
//! A [`Quota`] only counts and answers how long to wait; what a refusal means is
//! the caller's to say. [`exceeded`] is the per-person answer, QUOTA_EXCEEDED.
//!
//! The counts live in this process's memory: each replica counts alone, so behind
//! N replicas a key gets up to N times its quota. Keys idle long enough to have
//! their whole burst back are forgotten by a periodic purge, so memory follows the
//! keys active lately, not every key ever seen.

use std::{
    hash::Hash,
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, RateLimiter, clock::Clock as _};
use tokio::time::{Instant, MissedTickBehavior};

use crate::ApiError;

/// How often idle keys are forgotten.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// At most `limit` calls per `period` for each key, with up to `burst` at once; a
/// key that used its burst gets one call back every `period / limit`. Cloning
/// shares the counts.
#[derive(Debug)]
pub struct Quota<K: Hash + Eq + Clone> {
    /// `None` when the quota is off.
    limiter: Option<Arc<DefaultKeyedRateLimiter<K>>>,
}

impl<K: Hash + Eq + Clone> Clone for Quota<K> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone> Quota<K> {
    /// `limit` calls per `period`, `burst` at once; a `limit` or `burst` of 0, or a
    /// zero `period`, turns the quota off.
    pub fn new(limit: u32, period: Duration, burst: u32) -> Self {
        let (Some(limit), Some(burst)) = (NonZeroU32::new(limit), NonZeroU32::new(burst)) else {
            return Self::off();
        };
        let Some(quota) = governor::Quota::with_period(period / limit.get()) else {
            return Self::off();
        };
        Self {
            limiter: Some(Arc::new(RateLimiter::keyed(quota.allow_burst(burst)))),
        }
    }

    /// `limit` calls a minute, all of them at once if need be; 0 turns it off.
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60), limit)
    }

    /// A quota that allows everything.
    pub fn off() -> Self {
        Self { limiter: None }
    }

    pub fn is_off(&self) -> bool {
        self.limiter.is_none()
    }

    /// Counts a call by `key` if its quota allows one now; otherwise counts
    /// nothing and answers how long until it does.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Forgets the keys that have their whole burst back, which a fresh key has
    /// too, so forgetting them changes no answer.
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Quota<K> {
    /// Starts a task that calls [`Quota::retain_recent`] every [`PURGE_INTERVAL`],
    /// and ends once every clone of this quota is dropped. Needs a Tokio runtime.
    pub fn purge_periodically(&self) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let limiter: Weak<DefaultKeyedRateLimiter<K>> = Arc::downgrade(limiter);
        tokio::spawn(async move {
            let mut rounds =
                tokio::time::interval_at(Instant::now() + PURGE_INTERVAL, PURGE_INTERVAL);
            rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                rounds.tick().await;
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
}

/// What a call refused by the per-person quota named `quota` answers:
/// RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, `ErrorInfo.metadata["quota"]`
/// naming it, and `google.rpc.RetryInfo` of `retry_after`.
pub fn exceeded(quota: &'static str, retry_after: Duration) -> ApiError {
    ApiError::QuotaExceeded { quota, retry_after }
}

#[cfg(test)]
mod tests {
    use agora_proto::errors::ErrorReason;
    use tonic::{Code, Status};
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_burst_passes_then_the_next_call_waits_about_one_replenishment() {
        let quota = Quota::per_minute(3);

        for call in 1..=3 {
            assert_eq!(quota.check(&"alice"), Ok(()), "call {call} of the burst");
        }
        let wait = quota
            .check(&"alice")
            .expect_err("the fourth call is refused");

        // One call comes back every 20 seconds.
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(quota.check(&"alice").is_err(), "a refusal counts nothing");
    }

    #[test]
    fn keys_are_counted_apart() {
        let quota = Quota::per_minute(1);

        assert_eq!(quota.check(&1), Ok(()));
        assert!(quota.check(&1).is_err());
        assert_eq!(quota.check(&2), Ok(()), "another key has its own quota");
        assert_eq!(quota.clone().check(&3), Ok(()));
        assert!(quota.clone().check(&3).is_err(), "clones share the counts");
    }

    #[test]
    fn zero_turns_a_quota_off() {
        for quota in [
            Quota::per_minute(0),
            Quota::new(0, Duration::from_secs(1), 5),
            Quota::new(5, Duration::from_secs(1), 0),
            Quota::new(5, Duration::ZERO, 5),
        ] {
            assert!(quota.is_off());
            for _ in 0..1000 {
                assert_eq!(quota.check(&"alice"), Ok(()));
            }
            assert!(quota.is_empty(), "an off quota remembers no one");
        }
    }

    #[test]
    fn the_burst_can_differ_from_the_limit() {
        // Two a second, but only one at once.
        let quota = Quota::new(2, Duration::from_secs(1), 1);

        assert_eq!(quota.check(&"alice"), Ok(()));
        let wait = quota.check(&"alice").expect_err("no burst");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
    }

    #[test]
    fn after_the_wait_a_call_is_allowed_again() {
        let quota = Quota::new(1, Duration::from_millis(50), 1);
        assert_eq!(quota.check(&"alice"), Ok(()));
        let wait = quota.check(&"alice").expect_err("refused");

        std::thread::sleep(wait);

        assert_eq!(quota.check(&"alice"), Ok(()));
    }

    #[test]
    fn idle_keys_are_forgotten_and_busy_ones_kept() {
        let quota = Quota::new(1, Duration::from_millis(50), 1);
        quota.check(&"idle").unwrap();
        // governor keeps a key one replenishment past its full burst.
        std::thread::sleep(Duration::from_millis(120));
        quota.check(&"busy").unwrap();

        quota.retain_recent();

        assert_eq!(quota.len(), 1);
        assert!(
            quota.check(&"busy").is_err(),
            "the busy key is still counted"
        );
    }

    #[test]
    fn a_refusal_is_quota_exceeded_with_its_name_and_wait() {
        let status = Status::from(exceeded("create_post", Duration::from_millis(1500)));

        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, ErrorReason::QuotaExceeded.reason());
        assert_eq!(info.metadata["quota"], "create_post");
        let retry = status.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));
        assert_eq!(
            status.message(),
            "quota create_post exceeded, try again in 2 s"
        );
    }
}
