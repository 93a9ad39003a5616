//! Load of two kinds, and what it measured: closed-loop (a fixed number of
//! callers, each calling again as soon as its last call ends: throughput) and
//! open-loop (calls started at a fixed rate whatever the answers: latency as a
//! user sees it, queueing included).

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;

/// Why a call did not succeed.
#[derive(Debug)]
pub enum CallError {
    /// Turned away by admission control (RESOURCE_EXHAUSTED, HTTP 429): the
    /// server protecting itself, not a failure.
    Refused,
    Failed(String),
}

/// What one run of calls measured. Only successful calls count in the rate and
/// the latencies.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub calls: u64,
    pub failed: u64,
    pub refused: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the first call's start to the last call's end.
    pub seconds: f64,
}

/// Outcomes as they come in; tallies of separate runs add up.
pub struct Tally {
    latencies_us: Histogram<u64>,
    failed: u64,
    refused: u64,
    first_error: Option<String>,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            // 1 µs to a minute (longer counts as a minute), three significant digits.
            latencies_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            failed: 0,
            refused: 0,
            first_error: None,
        }
    }

    fn record(&mut self, outcome: Result<(), CallError>, latency: Duration) {
        match outcome {
            Ok(()) => self
                .latencies_us
                .saturating_record(latency.as_micros() as u64),
            Err(CallError::Refused) => self.refused += 1,
            Err(CallError::Failed(error)) => {
                self.failed += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies_us
            .add(&other.latencies_us)
            .expect("histograms of the same bounds add up");
        self.failed += other.failed;
        self.refused += other.refused;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// The summary; failures are also told on stderr, with the first error.
    pub fn summary(self, what: &str, elapsed: Duration) -> Summary {
        if let Some(error) = &self.first_error {
            eprintln!(
                "{what}: {} calls failed, the first with: {error}",
                self.failed
            );
        }
        let quantile_ms = |q| self.latencies_us.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            calls: self.latencies_us.len(),
            failed: self.failed,
            refused: self.refused,
            per_second: self.latencies_us.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: quantile_ms(0.5),
            p99_ms: quantile_ms(0.99),
            seconds: elapsed.as_secs_f64(),
        }
    }
}

/// Runs `call` from `concurrency` callers (each a task, numbered from 0), each
/// calling again as soon as its last call ends, until `duration` has passed.
pub async fn closed_loop<F, Fut>(
    what: &str,
    concurrency: usize,
    duration: Duration,
    call: F,
) -> Summary
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CallError>> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let mut callers = JoinSet::new();
    for caller in 0..concurrency {
        let call = call.clone();
        callers.spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let start = Instant::now();
                let outcome = call(caller).await;
                tally.record(outcome, start.elapsed());
            }
            tally
        });
    }
    let mut total = Tally::new();
    while let Some(tally) = callers.join_next().await {
        total.merge(tally.expect("a caller panicked"));
    }
    total.summary(what, started.elapsed())
}

/// Starts call `n` (from 0) at `n / rate` seconds, whether or not earlier calls
/// have answered, until `stop` completes; the tally holds every call started,
/// each answered. Latency counts from each call's scheduled start, so time spent
/// queueing behind slow calls is not hidden.
pub async fn open_loop<F, Fut>(rate: u32, stop: impl Future<Output = ()>, call: F) -> Tally
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), CallError>> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = tokio::time::Instant::now();
    let mut calls = JoinSet::new();
    tokio::pin!(stop);
    for n in 0.. {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = tokio::time::sleep_until(scheduled) => {}
        }
        let call = call(n);
        calls.spawn(async move { (call.await, scheduled.elapsed()) });
    }
    let mut tally = Tally::new();
    while let Some(answer) = calls.join_next().await {
        let (outcome, latency) = answer.expect("a call panicked");
        tally.record(outcome, latency);
    }
    tally
}
