//! How long a call may still take, so that the calls it makes to other services
//! end when it does: the caller's `grpc-timeout` is passed on, less the time
//! already spent, and never more than one hop's default.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// A call to another service that names no deadline of its own waits this long.
pub const PER_HOP_TIMEOUT: Duration = Duration::from_secs(5);

/// When the call being served must be answered, if its caller said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// The deadline a call's metadata names, counted from now (when the handler
    /// reads it, which is as good as arrival for calls that queue nowhere else).
    pub fn of(metadata: &MetadataMap) -> Self {
        let timeout = metadata
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok());
        Self::from_grpc_timeout(timeout, None)
    }

    /// The deadline a `grpc-timeout` value names, counted from now, or `limit`
    /// from now if that comes sooner.
    pub fn from_grpc_timeout(value: Option<&str>, limit: Option<Duration>) -> Self {
        let timeout = match (value.and_then(parse_grpc_timeout), limit) {
            (Some(timeout), Some(limit)) => Some(timeout.min(limit)),
            (timeout, limit) => timeout.or(limit),
        };
        Self(timeout.map(|timeout| Instant::now() + timeout))
    }

    /// Whether the deadline has passed, or is about to: the server's own timer,
    /// started a moment earlier, is what ends a call.
    pub fn has_passed(&self) -> bool {
        const SLACK: Duration = Duration::from_millis(10);
        self.0
            .is_some_and(|deadline| Instant::now() + SLACK >= deadline)
    }

    /// How long until the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// No deadline: the per-hop default applies.
    pub fn none() -> Self {
        Self(None)
    }

    /// How long a call made now to another service may take: what is left of
    /// this call's deadline, at most [`PER_HOP_TIMEOUT`].
    pub fn next_hop(&self) -> Duration {
        match self.0 {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(PER_HOP_TIMEOUT),
            None => PER_HOP_TIMEOUT,
        }
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (gRPC over HTTP/2).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_next_hop_gets_what_is_left_and_at_most_the_default() {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "200m".parse().unwrap());
        let left = Deadline::of(&metadata).next_hop();
        assert!(left <= Duration::from_millis(200) && left > Duration::ZERO);

        metadata.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(Deadline::of(&metadata).next_hop(), PER_HOP_TIMEOUT);
        assert_eq!(Deadline::none().next_hop(), PER_HOP_TIMEOUT);
    }
}
