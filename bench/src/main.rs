//! Agora's benchmark. It runs the real servers as processes (the all-in-one
//! gateway, or with `--split` the three services and a gateway in front of them)
//! on a scratch database seeded with the course workload, and measures in one run
//! what a user compares: for each call, its SQL straight through a pool (the
//! ceiling), the call over gRPC and over HTTP/JSON through the gateway; each
//! server's memory along the way; and what a login storm does to reads beside it.
//!
//! `cargo run --release -p bench` (see `--help`). Traffic stays on loopback and
//! every loop is bounded in time.

mod ceilings;
mod cpu;
mod feed;
mod load;
mod memory;
mod notify_cost;
mod pgbouncer;
mod processes;
mod report;
mod scale;
mod scenarios;
mod seed;
mod storm;
mod tracing_cost;

use std::{error::Error, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use cpu::CpuTime;
use load::closed_loop;
use memory::Snapshot;
use processes::Servers;
use report::{Machine, Results, Settings};
use scenarios::{Call, Client, Path};

/// Calls of each kind, by each path, before the "warm" memory figure.
const WARM_UP_CALLS: usize = 5;
/// Idle time before the final memory figure, for memory freed late to be returned.
const SETTLE: Duration = Duration::from_secs(2);

/// Measures Agora's calls against their SQL ceiling, the servers' memory, and a
/// login storm, and prints the figures.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// PostgreSQL server to create the scratch database on (it is dropped after).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@localhost:5432/postgres"
    )]
    database_url: String,
    /// Run auth-, posts- and votes-service and the gateway as four processes,
    /// instead of the all-in-one gateway.
    #[arg(long)]
    split: bool,
    /// Seconds each figure is measured for.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Concurrent callers for every call and path (at most one per seeded user).
    #[arg(long, default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=seed::USERS))]
    concurrency: u64,
    /// GetPost calls per second offered in the login storm.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Clients logging in at once, over and over, in the login storm.
    #[arg(long, default_value_t = 200)]
    storm: usize,
    /// Rounds of the login storm, each a window of GetPost alone then one in
    /// the storm, both `--seconds` long.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    storm_rounds: u64,
    /// Measure only the login storm (and memory), not the calls one by one.
    #[arg(long)]
    storm_only: bool,
    /// Write every result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Let the servers log at info level (else only warnings).
    #[arg(long)]
    verbose: bool,
    /// Measure at size instead: the main reads and writes on 10,000 posts and on
    /// this many (100,000 users either way), side by side, with each call's cost
    /// ratio against its target.
    #[arg(long, value_parser = clap::value_parser!(u64).range(scale::SMALL..=50_000_000))]
    posts: Option<u64>,
    /// Measure instead what traces cost: GetPost, the first page, CreatePost and
    /// Vote by gRPC and HTTP, through servers with traces off, by default, with
    /// export on and sampling off, and with every call exported, in turns.
    #[arg(long, conflicts_with_all = ["posts", "storm_only"])]
    tracing_cost: bool,
    /// With `--tracing-cost`: turns of each mode per call, each `--seconds`
    /// long.
    #[arg(long, default_value_t = 5, requires = "tracing_cost",
          value_parser = clap::value_parser!(u64).range(1..))]
    tracing_rounds: u64,
    /// With `--posts`: keep the seeded datasets (`agora_bench_scale_<posts>`)
    /// for the next run, and reuse those an earlier run kept.
    #[arg(long, requires = "posts")]
    keep: bool,
    /// Measure instead the calls with the servers connected straight to
    /// PostgreSQL and through this PgBouncer, in turns: a URL of PgBouncer in
    /// transaction mode (1.21 or newer, with `max_prepared_statements` set),
    /// forwarding every database to the server of DATABASE_URL (`* = host=…
    /// port=…`). Seeding and migrations go straight to PostgreSQL.
    #[arg(long, value_name = "URL", conflicts_with_all = ["posts", "storm_only", "tracing_cost"])]
    pgbouncer: Option<String>,
    /// With `--pgbouncer`: rounds of the two routes; each figure is the median
    /// of its rounds.
    #[arg(long, default_value_t = 3, requires = "pgbouncer",
          value_parser = clap::value_parser!(u64).range(1..))]
    pgbouncer_rounds: u64,
    /// Measure instead the live feed: `--watchers` WatchPosts streams through
    /// the gateway while a few writers create posts and like and unlike for
    /// `--seconds`; each change's delay from its commit to its arrival, and
    /// whether every watcher received every write's change exactly once.
    #[arg(long, conflicts_with_all = ["posts", "storm_only", "tracing_cost", "pgbouncer"])]
    feed: bool,
    /// With `--feed`: WatchPosts streams.
    #[arg(long, default_value_t = 1000, requires = "feed",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    watchers: u64,
    /// With `--feed`: HTTP/2 connections the watchers share (default: one per
    /// 125 watchers; a server takes at most 256 streams on one).
    #[arg(long, requires = "feed", value_parser = clap::value_parser!(u64).range(1..))]
    watcher_connections: Option<u64>,
    /// With `--feed`: writes per second, all writers together (CreatePost, a
    /// like and its removal, in turns; each a write).
    #[arg(long, default_value_t = 100, requires = "feed",
          value_parser = clap::value_parser!(u32).range(1..))]
    write_rate: u32,
    /// Measure instead what announcing changes to the feed costs the writes:
    /// CreatePost and Vote with the outboxes' announcing triggers enabled and
    /// disabled (and the outbox triggers too, for context), in turns, one
    /// watcher streaming throughout.
    #[arg(long, conflicts_with_all = ["posts", "storm_only", "tracing_cost", "pgbouncer", "feed"])]
    notify_cost: bool,
    /// With `--notify-cost`: turns of each setting per call, each `--seconds`
    /// long.
    #[arg(long, default_value_t = 5, requires = "notify_cost",
          value_parser = clap::value_parser!(u64).range(1..))]
    notify_rounds: u64,
}

fn main() -> ExitCode {
    // Before anything else: this process may be one of the servers.
    if let Some(exit) = processes::serve_if_asked() {
        return exit;
    }
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts");
    match runtime.block_on(run(&args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("agora-bench: {failed} calls failed; see the errors above");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("agora-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run on a scratch database, dropped whatever happens; gives the
/// number of failed calls.
async fn run(args: &Args) -> Result<u64, Box<dyn Error>> {
    if let Some(posts) = args.posts {
        let (results, failed) = scale::run(
            &args.database_url,
            posts,
            args.keep,
            args.concurrency as usize,
            Duration::from_secs(args.seconds),
            args.verbose,
        )
        .await?;
        print!("{}", scale::report(&results));
        if let Some(path) = &args.json {
            let file = std::fs::File::create(path)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            serde_json::to_writer_pretty(file, &results)?;
        }
        return Ok(failed);
    }
    let (scratch, pool) = seed::Scratch::create(&args.database_url).await?;
    let outcome = if args.tracing_cost {
        tracing_cost(args, pool.clone(), &scratch.url).await
    } else if let Some(pgbouncer) = &args.pgbouncer {
        through_pgbouncer(args, pgbouncer, &scratch.url).await
    } else if args.feed {
        live_feed(args, &scratch.url).await
    } else if args.notify_cost {
        notify_cost(args, pool.clone(), &scratch.url).await
    } else {
        measure(args, pool.clone(), &scratch.url).await
    };
    pool.close().await;
    scratch.drop().await;
    outcome
}

async fn measure(args: &Args, pool: sqlx::PgPool, url: &str) -> Result<u64, Box<dyn Error>> {
    let duration = Duration::from_secs(args.seconds);
    let concurrency = args.concurrency as usize;
    seed::seed(url).await?;
    let servers = Servers::start(args.split, url, args.verbose).await?;
    let client = Client::log_in(pool, &servers, concurrency).await?;
    warm_up(&client).await?;
    let mut memory = vec![Snapshot::take("warm", &servers)?];

    let mut measured = Vec::new();
    let calls = if args.storm_only {
        &[][..]
    } else {
        &Call::ALL[..]
    };
    for &call in calls {
        for path in Path::ALL {
            let what = format!("{}, {}", call.name(), path.name());
            let client = client.clone();
            let cpu_before = CpuTime::now(&servers);
            let summary = closed_loop(&what, concurrency, duration, move |caller| {
                client.clone().call(call, path, caller)
            })
            .await;
            let cpu = cpu_before
                .zip(CpuTime::now(&servers))
                .and_then(|(before, after)| before.per_call(after, summary.calls));
            measured.push((call, path, summary, cpu));
        }
        memory.push(Snapshot::take(format!("after {}", call.name()), &servers)?);
    }

    let rounds = args.storm_rounds as usize;
    let storm = storm::run(
        &client,
        servers.grpc,
        args.rate,
        duration,
        args.storm,
        rounds,
    )
    .await?;
    memory.push(Snapshot::take("after the storm", &servers)?);
    tokio::time::sleep(SETTLE).await;
    memory.push(Snapshot::take(
        format!("final, after {} s idle", SETTLE.as_secs()),
        &servers,
    )?);
    drop(servers);

    let results = Results::new(machine(args.split), settings(args), measured, memory, storm);
    print!("\n{results}");
    if let Some(path) = &args.json {
        let file = std::fs::File::create(path)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        serde_json::to_writer_pretty(file, &results)?;
    }
    Ok(results.failures())
}

async fn tracing_cost(args: &Args, pool: sqlx::PgPool, url: &str) -> Result<u64, Box<dyn Error>> {
    seed::seed(url).await?;
    let report = tracing_cost::run(
        pool,
        url,
        args.split,
        args.concurrency as usize,
        Duration::from_secs(args.seconds),
        args.tracing_rounds as usize,
        args.verbose,
    )
    .await?;
    print!("{report}");
    Ok(0)
}

async fn through_pgbouncer(args: &Args, pgbouncer: &str, url: &str) -> Result<u64, Box<dyn Error>> {
    seed::seed(url).await?;
    let figures = pgbouncer::run(
        url,
        pgbouncer,
        args.split,
        args.concurrency as usize,
        Duration::from_secs(args.seconds),
        args.pgbouncer_rounds as usize,
        args.verbose,
    )
    .await?;
    print!("{}", pgbouncer::report(&figures, args.split));
    if let Some(path) = &args.json {
        let file = std::fs::File::create(path)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        serde_json::to_writer_pretty(file, &figures)?;
    }
    Ok(figures.iter().map(|figure| figure.summary.failed).sum())
}

async fn live_feed(args: &Args, url: &str) -> Result<u64, Box<dyn Error>> {
    seed::seed(url).await?;
    let servers = Servers::start(args.split, url, args.verbose).await?;
    let settings = feed::Settings {
        watchers: args.watchers as usize,
        connections: args.watcher_connections.map(|n| n as usize),
        write_rate: args.write_rate,
        window: Duration::from_secs(args.seconds),
        split: args.split,
    };
    let feed = feed::run(&servers, settings).await?;
    drop(servers);
    print!("{feed}");
    write_json(args, &feed)?;
    if !feed.complete() {
        return Err("the feed lost, repeated or mixed up changes (see above)".into());
    }
    Ok(feed.writes_failed)
}

async fn notify_cost(args: &Args, pool: sqlx::PgPool, url: &str) -> Result<u64, Box<dyn Error>> {
    seed::seed(url).await?;
    let servers = Servers::start(args.split, url, args.verbose).await?;
    let concurrency = args.concurrency as usize;
    let client = Client::log_in(pool.clone(), &servers, concurrency).await?;
    let cost = notify_cost::run(
        &pool,
        &servers,
        &client,
        concurrency,
        Duration::from_secs(args.seconds),
        args.notify_rounds as usize,
        args.split,
    )
    .await?;
    drop(servers);
    print!("{}", cost.report());
    write_json(args, &cost)?;
    Ok(cost.failed())
}

/// With `--json PATH`, `results` as JSON there.
fn write_json(args: &Args, results: &impl serde::Serialize) -> Result<(), Box<dyn Error>> {
    if let Some(path) = &args.json {
        let file = std::fs::File::create(path)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        serde_json::to_writer_pretty(file, results)?;
    }
    Ok(())
}

/// A few calls of each kind by each path, so that caches, pools and connections
/// are as they will be; a failure here stops the run.
async fn warm_up(client: &Arc<Client>) -> Result<(), Box<dyn Error>> {
    for call in Call::ALL {
        for path in [Path::Grpc, Path::Http] {
            for caller in 0..WARM_UP_CALLS.min(client.callers()) {
                if let Err(error) = client.clone().call(call, path, caller).await {
                    let what = format!("{}, {}", call.name(), path.name());
                    return Err(format!("warm-up {what}: {error:?}").into());
                }
            }
        }
    }
    Ok(())
}

fn machine(split: bool) -> Machine {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|commit| commit.trim().to_owned());
    Machine {
        cores: cores(),
        topology: if split { "split" } else { "all-in-one" },
        build: if cfg!(debug_assertions) {
            "DEBUG (use --release for real figures)"
        } else {
            "release"
        },
        git_commit: commit,
    }
}

fn settings(args: &Args) -> Settings {
    // auth-service's own default when run apart: one hash per core.
    let hashing = std::env::var("PASSWORD_HASHING_CONCURRENCY")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(cores);
    Settings {
        seconds: args.seconds,
        concurrency: args.concurrency as usize,
        rate: args.rate,
        storm: args.storm,
        hashing_concurrency: args.split.then_some(hashing),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
