//! What PgBouncer costs and saves (`--pgbouncer URL`): the same calls through
//! servers connected straight to PostgreSQL and through PgBouncer in
//! transaction mode, in turns, on one scratch database seeded and migrated
//! straight. Beside each figure: the CPU each call cost the servers, PostgreSQL
//! and PgBouncer, and the most connections PostgreSQL held for the database at
//! once, which is what PgBouncer is for.
//!
//! Through PgBouncer the servers run as a deployment behind it would
//! (`DATABASE_POOLER=pgbouncer`, `DATABASE_MIGRATIONS=verify`), with the
//! statement and lock timeouts set on the scratch database, since nothing can
//! be set per session there.

use std::{
    error::Error,
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use service_kit::database::{LOCK_TIMEOUT, STATEMENT_TIMEOUT};
use sqlx::{Connection as _, PgConnection, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::{
    cpu::{self, CpuTime},
    load::{Summary, closed_loop},
    processes::Servers,
    scenarios::{Call, Client, Path},
};

/// Every call but Login, whose cost is its password hash, not the database.
const CALLS: [Call; 5] = [
    Call::GetPost,
    Call::ListPosts,
    Call::FirstPage,
    Call::CreatePost,
    Call::Vote,
];
/// PgBouncer's process name, for its CPU time.
const PGBOUNCER: &str = "pgbouncer";
/// How often the connections PostgreSQL holds are counted during a figure.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Route {
    Direct,
    Pgbouncer,
}

impl Route {
    const ALL: [Route; 2] = [Route::Direct, Route::Pgbouncer];

    fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Pgbouncer => "through PgBouncer",
        }
    }
}

/// One call by one route, in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub call: Call,
    pub route: Route,
    #[serde(flatten)]
    pub summary: Summary,
    /// CPU per call, ms: the servers', PostgreSQL's, PgBouncer's (Linux only).
    pub servers_cpu_ms: Option<f64>,
    pub database_cpu_ms: Option<f64>,
    pub pgbouncer_cpu_ms: Option<f64>,
    /// The most connections PostgreSQL held for the database at once.
    pub database_connections: i64,
}

/// Measures every call by both routes, `rounds` times, each round starting
/// with the other route; `database_url` is the scratch database, seeded and
/// migrated, `pgbouncer_url` the bouncer (its database name is replaced).
pub async fn run(
    database_url: &str,
    pgbouncer_url: &str,
    split: bool,
    concurrency: usize,
    duration: Duration,
    rounds: usize,
    verbose: bool,
) -> Result<Vec<Figure>, Box<dyn Error>> {
    let database = url::Url::parse(database_url)?
        .path()
        .trim_start_matches('/')
        .to_owned();
    let mut pooled = url::Url::parse(pgbouncer_url)?;
    pooled.set_path(&database);
    set_timeouts_on_the_database(database_url, &database).await?;
    // The calls go through the gateway: the ceilings' pool is never used, and
    // so holds no connection that would be counted.
    let unused = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy(database_url)?;
    let mut figures = Vec::new();
    for round in 0..rounds {
        for step in 0..Route::ALL.len() {
            let route = Route::ALL[(round + step) % Route::ALL.len()];
            eprintln!("round {} of {rounds}: {}", round + 1, route.name());
            let servers = match route {
                Route::Direct => Servers::start(split, database_url, verbose).await?,
                Route::Pgbouncer => {
                    let env = [
                        ("DATABASE_POOLER", "pgbouncer".to_owned()),
                        ("DATABASE_MIGRATIONS", "verify".to_owned()),
                    ];
                    Servers::start_with(split, pooled.as_str(), verbose, &env).await?
                }
            };
            let client = Client::log_in(unused.clone(), &servers, concurrency).await?;
            for call in CALLS {
                let what = format!("{}, {}", call.name(), route.name());
                for caller in 0..concurrency.min(5) {
                    client
                        .clone()
                        .call(call, Path::Grpc, caller)
                        .await
                        .map_err(|error| format!("warm-up {what}: {error:?}"))?;
                }
                let counting = count_connections(database_url, &database).await?;
                let (cpu_before, bouncer_before) =
                    (CpuTime::now(&servers), cpu::of_processes_named(PGBOUNCER));
                let caller = client.clone();
                let summary = closed_loop(&what, concurrency, duration, move |n| {
                    caller.clone().call(call, Path::Grpc, n)
                })
                .await;
                let cpu = cpu_before
                    .zip(CpuTime::now(&servers))
                    .and_then(|(before, after)| before.per_call(after, summary.calls));
                let bouncer = bouncer_before.zip(cpu::of_processes_named(PGBOUNCER)).map(
                    |(before, after)| {
                        after.saturating_sub(before).as_secs_f64() * 1000.0
                            / summary.calls.max(1) as f64
                    },
                );
                figures.push(Figure {
                    call,
                    route,
                    summary,
                    servers_cpu_ms: cpu.map(|cpu| cpu.servers_ms),
                    database_cpu_ms: cpu.map(|cpu| cpu.database_ms),
                    pgbouncer_cpu_ms: bouncer.filter(|_| route == Route::Pgbouncer),
                    database_connections: counting.stop().await,
                });
            }
            drop(servers);
        }
    }
    Ok(figures)
}

/// Through PgBouncer no connection can set its own timeouts: the scratch
/// database sets those a direct connection sets itself (dropped with it).
async fn set_timeouts_on_the_database(
    database_url: &str,
    database: &str,
) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(database_url).await?;
    for (name, value) in [
        ("statement_timeout", STATEMENT_TIMEOUT),
        ("lock_timeout", LOCK_TIMEOUT),
    ] {
        let set = format!(
            "alter database \"{database}\" set {name} = '{}ms'",
            value.as_millis()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(set))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await
}

/// Counts, until stopped, the connections to `database` that PostgreSQL has
/// served since the count began (its client backends busy now, or busy at some
/// moment since; not this counter's own), and keeps the most: idle connections
/// left from an earlier figure, PgBouncer's among them, do not count.
struct ConnectionCount {
    most: Arc<AtomicI64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn count_connections(
    database_url: &str,
    database: &str,
) -> Result<ConnectionCount, sqlx::Error> {
    let mut conn = PgConnection::connect(database_url).await?;
    let since: time::OffsetDateTime = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&mut conn)
        .await?;
    let (most, stop) = (Arc::new(AtomicI64::new(0)), CancellationToken::new());
    let (kept, stopped, database) = (most.clone(), stop.clone(), database.to_owned());
    let task = tokio::spawn(async move {
        while !stopped.is_cancelled() {
            let counted: Result<i64, _> = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                  where datname = $1 and backend_type = 'client backend'
                    and pid <> pg_backend_pid()
                    and (state <> 'idle' or state_change >= $2)",
            )
            .bind(&database)
            .bind(since)
            .fetch_one(&mut conn)
            .await;
            if let Ok(count) = counted {
                kept.fetch_max(count, Ordering::Relaxed);
            }
            tokio::select! {
                () = stopped.cancelled() => {}
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
        let _ = conn.close().await;
    });
    Ok(ConnectionCount { most, stop, task })
}

impl ConnectionCount {
    async fn stop(self) -> i64 {
        self.stop.cancel();
        let _ = self.task.await;
        self.most.load(Ordering::Relaxed)
    }
}

/// The median of a figure over the rounds.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Each call by both routes (the median of the rounds), with the cost of
/// PgBouncer as calls/s through it over calls/s direct.
pub fn report(figures: &[Figure], split: bool) -> String {
    let mut out = String::new();
    let rounds = figures
        .iter()
        .filter(|f| (f.call, f.route) == (CALLS[0], Route::Direct))
        .count();
    let _ = writeln!(
        out,
        "\nPgBouncer, transaction mode: gRPC through the {} gateway, the servers connected \
         straight to PostgreSQL and through PgBouncer (median of {rounds} rounds)\n",
        if split { "split" } else { "all-in-one" }
    );
    let _ = writeln!(
        out,
        "| call | route | calls/s | p50 ms | p99 ms | CPU ms svc/db/bouncer | connections | \
         failed | / direct |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let failed: u64 = figures.iter().map(|f| f.summary.failed).sum();
    for call in CALLS {
        let of = |route: Route| {
            figures
                .iter()
                .filter(move |f| (f.call, f.route) == (call, route))
        };
        let rate = |route| median(of(route).map(|f| f.summary.per_second));
        for route in Route::ALL {
            let cpu = |pick: fn(&Figure) -> Option<f64>| {
                let values: Vec<f64> = of(route).filter_map(pick).collect();
                (!values.is_empty()).then(|| median(values.into_iter()))
            };
            let cpu_text = match (
                cpu(|f| f.servers_cpu_ms),
                cpu(|f| f.database_cpu_ms),
                cpu(|f| f.pgbouncer_cpu_ms),
            ) {
                (Some(svc), Some(db), Some(bouncer)) => {
                    format!("{svc:.2} / {db:.2} / {bouncer:.2}")
                }
                (Some(svc), Some(db), None) => format!("{svc:.2} / {db:.2} / -"),
                _ => String::new(),
            };
            let ratio = match route {
                Route::Direct => String::new(),
                Route::Pgbouncer => {
                    format!("{:.2}", rate(Route::Pgbouncer) / rate(Route::Direct))
                }
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {cpu_text} | {} | {} | {ratio} |",
                if route == Route::Direct {
                    call.name()
                } else {
                    ""
                },
                route.name(),
                rate(route),
                median(of(route).map(|f| f.summary.p50_ms)),
                median(of(route).map(|f| f.summary.p99_ms)),
                of(route)
                    .map(|f| f.database_connections)
                    .max()
                    .unwrap_or_default(),
                of(route).map(|f| f.summary.failed).sum::<u64>(),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nconnections: the most connections to the database PostgreSQL served during the \
         figure (busy at some moment of it). \
         / direct: calls/s through PgBouncer over calls/s direct.{}",
        if failed > 0 {
            format!(
                " {failed} calls FAILED: is PgBouncer 1.21 or newer, with max_prepared_statements \
                 set? (see bench/README.md)"
            )
        } else {
            String::new()
        }
    );
    out
}
