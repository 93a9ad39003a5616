//! Concurrent callers for a fixed time, and what they measured.

use std::{
    fmt,
    future::Future,
    time::{Duration, Instant},
};

use futures::future::join_all;
use hdrhistogram::Histogram;

/// What one scenario measured.
pub struct Stats {
    pub name: String,
    pub calls: u64,
    pub errors: u64,
    elapsed: Duration,
    latencies_us: Histogram<u64>,
    first_error: Option<String>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    pub fn median_ms(&self) -> f64 {
        self.latencies_us.value_at_quantile(0.5) as f64 / 1000.0
    }

    fn p99_ms(&self) -> f64 {
        self.latencies_us.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// Microseconds from 1 µs to a minute (longer ones count as a minute), to three
/// significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Runs `call` from `concurrency` callers, each calling again as soon as its last
/// call ends, until `duration` has passed.
pub async fn measure<F, Fut>(name: &str, concurrency: usize, duration: Duration, call: F) -> Stats
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let deadline = started + duration;
    let callers = (0..concurrency).map(|caller| {
        let call = &call;
        async move {
            let mut latencies = latency_histogram();
            let (mut errors, mut first_error) = (0, None);
            while Instant::now() < deadline {
                let start = Instant::now();
                match call(caller).await {
                    Ok(()) => latencies.saturating_record(start.elapsed().as_micros() as u64),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error)
        }
    });
    let results = join_all(callers).await;
    let elapsed = started.elapsed();
    let mut stats = Stats {
        name: name.to_owned(),
        calls: 0,
        errors: 0,
        elapsed,
        latencies_us: latency_histogram(),
        first_error: None,
    };
    for (latencies, errors, first_error) in results {
        stats.calls += latencies.len();
        stats.errors += errors;
        stats
            .latencies_us
            .add(&latencies)
            .expect("histograms of the same precision add up");
        stats.first_error = stats.first_error.or(first_error);
    }
    if let Some(error) = &stats.first_error {
        eprintln!(
            "{name}: {} calls failed, the first with: {error}",
            stats.errors
        );
    }
    stats
}

/// The table of scenarios and the ratios between them.
#[derive(Default)]
pub struct Report {
    rows: Vec<String>,
    ratios: Vec<(String, f64)>,
}

impl Report {
    pub fn add(&mut self, stats: &Stats) {
        self.rows.push(format!(
            "{:<40} {:>8} {:>7} {:>10.0} {:>8.2} {:>8.2}",
            stats.name,
            stats.calls,
            stats.errors,
            stats.per_second(),
            stats.median_ms(),
            stats.p99_ms()
        ));
    }

    pub fn ratio(&mut self, what: &str, value: f64) {
        self.ratios.push((what.to_owned(), value));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n{:<40} {:>8} {:>7} {:>10} {:>8} {:>8}",
            "scenario", "calls", "errors", "calls/s", "p50 ms", "p99 ms"
        )?;
        for row in &self.rows {
            writeln!(f, "{row}")?;
        }
        writeln!(f, "\nratios, measured in this run:")?;
        for (what, value) in &self.ratios {
            writeln!(f, "  {what:<58} {value:>6.2}")?;
        }
        Ok(())
    }
}
