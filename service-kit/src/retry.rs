//! Retrying a read that failed because the service it went to was unavailable: a
//! connection that broke, a replica that went away. Only reads are retried, and
//! only once, after a short random pause, within the caller's deadline; a write
//! is never sent again blindly.

use std::{
    future::Future,
    time::{Duration, SystemTime},
};

use tonic::{Code, Status};

use crate::deadline::Deadline;

/// `call`, and once more if it failed with UNAVAILABLE and the deadline leaves
/// time for the pause and another try.
pub async fn read_once_more_if_unavailable<T, F, Fut>(
    deadline: Deadline,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let first = call().await;
    match first {
        Err(status) if status.code() == Code::Unavailable => {
            let pause = jitter(Duration::from_millis(10), Duration::from_millis(50));
            if deadline.next_hop() <= pause {
                return Err(status);
            }
            tokio::time::sleep(pause).await;
            call().await
        }
        outcome => outcome,
    }
}

/// A pause between `min` and `max`, different for each call, so that retries
/// from many calls do not arrive together.
pub fn jitter(min: Duration, max: Duration) -> Duration {
    let spread = (max - min).as_nanos() as u64;
    let noise = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |now| u64::from(now.subsec_nanos()));
    min + Duration::from_nanos(noise % spread.max(1))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn an_unavailable_read_is_tried_once_more_and_nothing_else_is() {
        for (first, tries) in [
            (Code::Unavailable, 2),
            (Code::Internal, 1),
            (Code::NotFound, 1),
            (Code::DeadlineExceeded, 1),
        ] {
            let count = Cell::new(0);
            let outcome = read_once_more_if_unavailable(Deadline::none(), || {
                count.set(count.get() + 1);
                async move { Err::<(), _>(Status::new(first, "")) }
            })
            .await;
            assert_eq!(outcome.unwrap_err().code(), first);
            assert_eq!(count.get(), tries, "{first:?}");
        }
        let count = Cell::new(0);
        let outcome = read_once_more_if_unavailable(Deadline::none(), || {
            count.set(count.get() + 1);
            let answer = match count.get() {
                1 => Err(Status::unavailable("gone")),
                _ => Ok(7),
            };
            async move { answer }
        })
        .await;
        assert_eq!(outcome.unwrap(), 7, "the second try answers");
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(50));
        let pause = jitter(min, max);
        assert!(pause >= min && pause < max, "{pause:?}");
    }
}
