//! What traces cost: the same calls through servers started with traces off
//! (`OTEL_SDK_DISABLED=true`: no spans, no trace context, as before traces
//! existed), with the default (trace context passed on, nothing recorded), with
//! export on but sampling off, and with every call sampled and exported to a
//! collector in this process. The four run side by side and take turns, call
//! by call, so that a machine whose speed drifts over the run drifts for all of
//! them. Calls/s move by more than a few percent between two windows on a
//! shared machine; the servers' CPU per call (from `/proc`) is the steadier
//! measure of what tracing adds, and the one the budget is checked on.

use std::{error::Error, fmt::Write as _, sync::Arc, time::Duration};

use system_tests::otlp::Collector;

use crate::{
    cpu::{CpuPerCall, CpuTime},
    load::{Summary, closed_loop},
    processes::Servers,
    scenarios::{Call, Client, Path},
};

/// The calls measured: a read that crosses three services, a page, and the two
/// writes.
const CALLS: [Call; 4] = [Call::GetPost, Call::FirstPage, Call::CreatePost, Call::Vote];
const PATHS: [Path; 2] = [Path::Grpc, Path::Http];
/// Sampling off may cost at most this much against traces off.
const UNSAMPLED_BUDGET: f64 = 1.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Default,
    Unsampled,
    Sampled,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Off, Mode::Default, Mode::Unsampled, Mode::Sampled];

    fn name(self) -> &'static str {
        match self {
            Mode::Off => "traces off",
            Mode::Default => "default (propagation only)",
            Mode::Unsampled => "export on, sampling off",
            Mode::Sampled => "export on, every call sampled",
        }
    }

    /// The servers' settings for this mode, every one of them given so that
    /// nothing is inherited.
    fn env(self, collector: &str) -> Vec<(&'static str, String)> {
        let (disabled, exporter, sampler) = match self {
            Mode::Off => ("true", "none", "parentbased_always_on"),
            Mode::Default => ("false", "none", "parentbased_always_on"),
            Mode::Unsampled => ("false", "otlp", "always_off"),
            Mode::Sampled => ("false", "otlp", "always_on"),
        };
        vec![
            ("OTEL_SDK_DISABLED", disabled.to_owned()),
            ("OTEL_TRACES_EXPORTER", exporter.to_owned()),
            ("OTEL_TRACES_SAMPLER", sampler.to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.to_owned()),
        ]
    }
}

/// What one mode's calls added up to over every window.
#[derive(Debug, Clone, Copy, Default)]
struct Total {
    calls: u64,
    seconds: f64,
    /// CPU per call of the servers, summed over windows weighted by calls.
    server_cpu_ms: f64,
}

impl Total {
    fn add(&mut self, summary: &Summary, cpu: Option<CpuPerCall>) {
        self.calls += summary.calls;
        self.seconds += summary.seconds;
        if let Some(cpu) = cpu {
            self.server_cpu_ms += cpu.servers_ms * summary.calls as f64;
        }
    }

    fn per_second(&self) -> f64 {
        self.calls as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    fn cpu_per_call(&self) -> f64 {
        self.server_cpu_ms / self.calls.max(1) as f64
    }
}

/// Measures every call by every path in every mode and returns the report. The
/// four modes' servers run side by side (each all-in-one, or split, on the same
/// database) and take turns in short windows, `rounds` times per call, so that
/// a machine whose speed drifts drifts for all of them alike.
pub async fn run(
    pool: sqlx::PgPool,
    database_url: &str,
    split: bool,
    concurrency: usize,
    window: Duration,
    rounds: usize,
    verbose: bool,
) -> Result<String, Box<dyn Error>> {
    let collector = Collector::start().await;
    let mut running = Vec::new();
    for mode in Mode::ALL {
        let env = mode.env(&collector.endpoint());
        let servers = Servers::start_with(split, database_url, verbose, &env).await?;
        let client = Client::log_in(pool.clone(), &servers, concurrency).await?;
        running.push((servers, client));
    }
    let mut totals = vec![vec![Total::default(); Mode::ALL.len()]; CALLS.len() * PATHS.len()];
    for (slot, (call, path)) in pairs().enumerate() {
        eprintln!(
            "{}, {}: {rounds} rounds of the four modes",
            call.name(),
            path.name()
        );
        for round in 0..rounds {
            for step in 0..Mode::ALL.len() {
                let index = (round + step) % Mode::ALL.len();
                let (servers, client) = &running[index];
                let what = format!(
                    "{}, {}, {}",
                    call.name(),
                    path.name(),
                    Mode::ALL[index].name()
                );
                // A few calls first, so connections and caches are as they stay.
                for n in 0..concurrency.min(5) {
                    client
                        .clone()
                        .call(call, path, n)
                        .await
                        .map_err(|error| format!("warm-up {what}: {error:?}"))?;
                }
                let before = CpuTime::now(servers);
                let caller = Arc::clone(client);
                let summary = closed_loop(&what, concurrency, window, move |n| {
                    caller.clone().call(call, path, n)
                })
                .await;
                if summary.failed > 0 {
                    return Err(format!("{what}: {} calls failed", summary.failed).into());
                }
                let cpu = before
                    .zip(CpuTime::now(servers))
                    .and_then(|(before, after)| before.per_call(after, summary.calls));
                totals[slot][index].add(&summary, cpu);
            }
        }
    }
    drop(running);
    Ok(report(&totals, rounds, collector.spans().len()))
}

fn pairs() -> impl Iterator<Item = (Call, Path)> {
    CALLS
        .into_iter()
        .flat_map(|call| PATHS.into_iter().map(move |path| (call, path)))
}

fn report(totals: &[Vec<Total>], rounds: usize, exported: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nWhat traces cost: calls/s, and the servers' CPU ms per call, over {rounds} turns \
         of each mode per call; in brackets, each against traces off (1.00x: the same)\n"
    );
    let _ = write!(out, "| call | path |");
    for mode in Mode::ALL {
        let _ = write!(out, " {} |", mode.name());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(Mode::ALL.len()));
    let (mut off_cpu, mut unsampled_cpu) = (0.0, 0.0);
    for (slot, (call, path)) in pairs().enumerate() {
        let off = totals[slot][0];
        off_cpu += off.cpu_per_call();
        let _ = write!(out, "| {} | {} |", call.name(), path.name());
        for (index, mode) in Mode::ALL.into_iter().enumerate() {
            let total = totals[slot][index];
            let (rate, cpu) = (total.per_second(), total.cpu_per_call());
            if mode == Mode::Unsampled {
                unsampled_cpu += cpu;
            }
            if mode == Mode::Off {
                let _ = write!(out, " {rate:.0}/s, {cpu:.3} ms |");
            } else {
                let slower = off.per_second() / rate.max(f64::MIN_POSITIVE);
                let costlier = cpu / off.cpu_per_call().max(f64::MIN_POSITIVE);
                let _ = write!(
                    out,
                    " {rate:.0}/s ({slower:.2}x), {cpu:.3} ms ({costlier:.2}x) |"
                );
            }
        }
        let _ = writeln!(out);
    }
    // The servers' CPU per call is what tracing adds to; calls/s on a shared
    // machine moves by more than the budget between two windows.
    let cost = unsampled_cpu / off_cpu.max(f64::MIN_POSITIVE);
    let verdict = if cost <= UNSAMPLED_BUDGET {
        "ok"
    } else {
        "MISSED"
    };
    let _ = writeln!(
        out,
        "\nExport on with sampling off: {cost:.3}x the servers' CPU per call of traces off, \
         over all the calls above (budget {UNSAMPLED_BUDGET:.2}x): {verdict}. The collector \
         received {exported} spans from the sampled calls."
    );
    out
}
