//! Slows password guessing: after too many failed logins for one email within a
//! window, further logins for it are refused at once, without hashing, until the
//! window ends. Every email is treated alike, registered or not, so the refusal
//! says nothing about which emails exist.
//!
//! The count lives in this process: with several replicas behind a load balancer,
//! each keeps its own, which multiplies the allowance by the number of replicas.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// More emails than this are not tracked until old entries expire, so spraying
/// made-up emails cannot exhaust memory.
const MAX_TRACKED: usize = 100_000;

/// Failed logins per email in the current window.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    since: Instant,
}

impl LoginThrottle {
    /// `max_failures` per `window`; 0 turns the throttle off.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while `email` has used up its failures.
    pub fn check(&self, email: &str) -> Result<(), Duration> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let failures = self.failures.lock().expect("throttle lock poisoned");
        match failures.get(&key(email)) {
            Some(entry)
                if entry.count >= self.max_failures && entry.since.elapsed() < self.window =>
            {
                Err(self.window - entry.since.elapsed())
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, email: &str) {
        if self.max_failures == 0 {
            return;
        }
        let mut failures = self.failures.lock().expect("throttle lock poisoned");
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, entry| entry.since.elapsed() < self.window);
        }
        let tracked = failures.len() < MAX_TRACKED;
        let now = Instant::now();
        match failures.get_mut(&key(email)) {
            Some(entry) if entry.since.elapsed() < self.window => entry.count += 1,
            Some(entry) => {
                *entry = Failures {
                    count: 1,
                    since: now,
                }
            }
            None if tracked => {
                failures.insert(
                    key(email),
                    Failures {
                        count: 1,
                        since: now,
                    },
                );
            }
            None => {}
        }
    }

    /// A successful login starts the count afresh.
    pub fn record_success(&self, email: &str) {
        self.failures
            .lock()
            .expect("throttle lock poisoned")
            .remove(&key(email));
    }
}

fn key(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_ends() {
        let throttle = LoginThrottle::new(2, Duration::from_millis(200));
        throttle.record_failure("Alice@example.com");
        assert!(
            throttle.check("alice@example.com").is_ok(),
            "one failure of two"
        );
        throttle.record_failure("alice@example.com ");
        let wait = throttle.check("ALICE@example.com").unwrap_err();
        assert!(wait <= Duration::from_millis(200));
        assert!(
            throttle.check("bob@example.com").is_ok(),
            "others are not affected"
        );

        std::thread::sleep(wait);
        assert!(
            throttle.check("alice@example.com").is_ok(),
            "the window has passed"
        );
    }

    #[test]
    fn a_success_starts_afresh_and_zero_turns_it_off() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60));
        throttle.record_failure("alice@example.com");
        throttle.record_success("alice@example.com");
        throttle.record_failure("alice@example.com");
        assert!(throttle.check("alice@example.com").is_ok());

        let off = LoginThrottle::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            off.record_failure("alice@example.com");
        }
        assert!(off.check("alice@example.com").is_ok());
    }
}
