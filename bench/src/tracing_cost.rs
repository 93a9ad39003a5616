//! What traces cost: the same calls through servers started with traces off
//! (`OTEL_SDK_DISABLED=true`: no spans, no trace context, as before traces
//! existed), with the default (trace context passed on, nothing recorded), with
//! export on but sampling off, and with every call sampled and exported to a
//! collector in this process. Modes take turns, in rounds, so that a machine
//! whose speed drifts over the run drifts for all of them; each figure is the
//! median of its rounds.

use std::{error::Error, fmt::Write as _, sync::Arc, time::Duration};

use system_tests::otlp::Collector;

use crate::{
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

/// Measures every call by every path in every mode, `rounds` times, and
/// returns the report; fails when a call failed.
pub async fn run(
    pool: sqlx::PgPool,
    database_url: &str,
    split: bool,
    concurrency: usize,
    duration: Duration,
    rounds: usize,
    verbose: bool,
) -> Result<String, Box<dyn Error>> {
    let collector = Collector::start().await;
    // figures[mode][call × path] = the summaries of each round.
    let mut figures = vec![vec![Vec::<Summary>::new(); CALLS.len() * PATHS.len()]; Mode::ALL.len()];
    for round in 0..rounds {
        // Each round starts with another mode.
        for step in 0..Mode::ALL.len() {
            let index = (round + step) % Mode::ALL.len();
            let mode = Mode::ALL[index];
            eprintln!("round {} of {rounds}: {}", round + 1, mode.name());
            let servers = Servers::start_with(
                split,
                database_url,
                verbose,
                &mode.env(&collector.endpoint()),
            )
            .await?;
            let client = Client::log_in(pool.clone(), &servers, concurrency).await?;
            for (slot, (call, path)) in pairs().enumerate() {
                let what = format!("{}, {}, {}", call.name(), path.name(), mode.name());
                let caller = Arc::clone(&client);
                // A few calls first, so connections and caches are as they stay.
                for n in 0..concurrency.min(5) {
                    caller
                        .clone()
                        .call(call, path, n)
                        .await
                        .map_err(|error| format!("warm-up {what}: {error:?}"))?;
                }
                let summary = closed_loop(&what, concurrency, duration, move |n| {
                    caller.clone().call(call, path, n)
                })
                .await;
                if summary.failed > 0 {
                    return Err(format!("{what}: {} calls failed", summary.failed).into());
                }
                figures[index][slot].push(summary);
            }
            drop(servers);
        }
    }
    let exported = collector.spans().len();
    Ok(report(&figures, exported))
}

fn pairs() -> impl Iterator<Item = (Call, Path)> {
    CALLS
        .into_iter()
        .flat_map(|call| PATHS.into_iter().map(move |path| (call, path)))
}

/// The median of the rounds' calls per second.
fn median(summaries: &[Summary]) -> f64 {
    let mut rates: Vec<f64> = summaries.iter().map(|summary| summary.per_second).collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or_default()
}

fn report(figures: &[Vec<Vec<Summary>>], exported: usize) -> String {
    let mut out = String::new();
    let rounds = figures[0][0].len();
    let _ = writeln!(
        out,
        "\nWhat traces cost: calls/s (median of {rounds} rounds), and the cost of each mode \
         against traces off (1.00x: none)\n"
    );
    let _ = write!(out, "| call | path |");
    for mode in Mode::ALL {
        let _ = write!(out, " {} |", mode.name());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(Mode::ALL.len()));
    let mut worst_unsampled: f64 = 0.0;
    for (slot, (call, path)) in pairs().enumerate() {
        let off = median(&figures[0][slot]);
        let _ = write!(out, "| {} | {} |", call.name(), path.name());
        for (index, mode) in Mode::ALL.into_iter().enumerate() {
            let rate = median(&figures[index][slot]);
            let cost = off / rate.max(f64::MIN_POSITIVE);
            if mode == Mode::Unsampled {
                worst_unsampled = worst_unsampled.max(cost);
            }
            if mode == Mode::Off {
                let _ = write!(out, " {rate:.0} |");
            } else {
                let _ = write!(out, " {rate:.0} ({cost:.2}x) |");
            }
        }
        let _ = writeln!(out);
    }
    let verdict = if worst_unsampled <= UNSAMPLED_BUDGET {
        "ok"
    } else {
        "MISSED"
    };
    let _ = writeln!(
        out,
        "\nExport on with sampling off costs at most {worst_unsampled:.2}x of traces off \
         (budget {UNSAMPLED_BUDGET:.2}x): {verdict}. The collector received {exported} spans \
         from the sampled runs."
    );
    out
}
