//! A login storm: what a burst of logins (argon2id, m=19 MiB each) does to the
//! reads beside it. GetPost is offered at a fixed rate alone, then again while
//! many logins are fired at once; a read should not wait behind the hashing, and
//! logins beyond what auth-service admits are refused, not queued without bound.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::{
    load::{CallError, Summary, open_loop},
    scenarios::{Call, Client, Path},
};

#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub rate: u32,
    pub logins: usize,
    pub get_post_alone: Summary,
    pub get_post_in_storm: Summary,
    pub logins_succeeded: u64,
    /// RESOURCE_EXHAUSTED: admission control at work, expected.
    pub logins_refused: u64,
    pub logins_failed: u64,
    /// From the first login fired to the last answered.
    pub storm_seconds: f64,
}

impl Storm {
    pub fn p99_ratio(&self) -> f64 {
        self.get_post_in_storm.p99_ms / self.get_post_alone.p99_ms
    }
}

pub async fn run(client: &Arc<Client>, rate: u32, duration: Duration, logins: usize) -> Storm {
    let get_post = |client: Arc<Client>| {
        let callers = client.callers();
        move |n: u64| {
            client
                .clone()
                .call(Call::GetPost, Path::Grpc, n as usize % callers)
        }
    };
    let alone = open_loop("GetPost alone", rate, duration, get_post(client.clone())).await;

    let fired = Instant::now();
    let mut storm = JoinSet::new();
    for n in 0..logins {
        // Each once, with no deadline: the storm ends when every login is answered.
        let login = client.clone().call(Call::Login, Path::Grpc, n);
        storm.spawn(async move { (login.await, fired.elapsed()) });
    }
    let in_storm = open_loop(
        "GetPost in the storm",
        rate,
        duration,
        get_post(client.clone()),
    )
    .await;

    let (mut succeeded, mut refused, mut failed, mut last) = (0, 0, 0, Duration::ZERO);
    let mut first_error = None;
    while let Some(answer) = storm.join_next().await {
        let (outcome, answered) = answer.expect("a login panicked");
        last = last.max(answered);
        match outcome {
            Ok(()) => succeeded += 1,
            Err(CallError::Refused) => refused += 1,
            Err(CallError::Failed(error)) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        eprintln!("login storm: {failed} logins failed, the first with: {error}");
    }
    Storm {
        rate,
        logins,
        get_post_alone: alone,
        get_post_in_storm: in_storm,
        logins_succeeded: succeeded,
        logins_refused: refused,
        logins_failed: failed,
        storm_seconds: last.as_secs_f64(),
    }
}
