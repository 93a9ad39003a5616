//! What announcing changes costs the writes (`--notify-cost`). Every write to
//! a post or a like count adds a row to an outbox (`posts.post_events`,
//! `votes.like_count_events`) in its transaction, and the service announces it
//! with `pg_notify` once committed (`posts.announce()`, `votes.announce()`; the
//! outboxes' triggers do for other writers), which WatchPosts' listener wakes
//! on. CreatePost and Vote (a like and its removal) are measured through one
//! gateway, on one database, in turns with the announcement on (as shipped)
//! and made a no-op (the outbox rows still written), and, for context, with the
//! outbox triggers disabled too (no feed at all). One watcher
//! streams throughout, so the listener is LISTENing and, when announced, reads
//! and sends every change, as it would in production.
//!
//! The settings take turns within each call, each round starting with the
//! next, so that a machine whose speed drifts drifts for all of them. The
//! feed is put back as shipped at the end, whatever happens.

use std::{
    error::Error,
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    cpu::{CpuPerCall, CpuTime},
    feed::{self, Progress},
    load::{Summary, closed_loop},
    processes::Servers,
    scenarios::{Call, Client, Path, login},
    seed::USERS,
};

const CALLS: [Call; 2] = [Call::CreatePost, Call::Vote];
/// The announcement may cost the writes at most a tenth of their calls/s.
const BUDGET: f64 = 0.90;
/// Before each turn, and after it, the servers are let to finish what the
/// writes left them (the listener reading and sending what was announced):
/// until, over `QUIET`, the watcher receives nothing and the servers spend at
/// most `IDLE_CPU` of it on the CPU; at most `SETTLE_AT_MOST`.
const QUIET: Duration = Duration::from_millis(200);
const IDLE_CPU: f64 = 0.1;
const SETTLE_AT_MOST: Duration = Duration::from_secs(10);

/// Which parts of the feed are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Setting {
    /// As shipped: outbox rows written and announced.
    Announced,
    /// Outbox rows written, not announced.
    Unannounced,
    /// Neither: no feed at all.
    NoFeed,
}

impl Setting {
    const ALL: [Setting; 3] = [Setting::Announced, Setting::Unannounced, Setting::NoFeed];

    fn name(self) -> &'static str {
        match self {
            Setting::Announced => "announce on (as shipped)",
            Setting::Unannounced => "announce off (outbox rows written)",
            Setting::NoFeed => "no feed (outbox triggers off too)",
        }
    }

    /// The statements that make this setting: the outbox triggers on or off,
    /// and the announcement (`posts.announce()` and `votes.announce()`, which
    /// both the services after their commits and the triggers call) made to
    /// notify or to do nothing.
    fn statements(self) -> String {
        const RECORDING: [(&str, &str); 2] = [
            ("posts.posts", "posts_record_events"),
            ("votes.like_counts", "votes_record_like_count_events"),
        ];
        const ANNOUNCING: [(&str, &str); 2] = [
            ("posts.announce", "posts_post_events"),
            ("votes.announce", "votes_like_count_events"),
        ];
        let (recorded, announced) = match self {
            Setting::Announced => (true, true),
            Setting::Unannounced => (true, false),
            Setting::NoFeed => (false, false),
        };
        let mut statements = String::new();
        for (table, trigger) in RECORDING {
            let verb = if recorded { "enable" } else { "disable" };
            statements += &format!("alter table {table} {verb} trigger {trigger};\n");
        }
        for (function, channel) in ANNOUNCING {
            let body = if announced {
                format!("perform pg_notify('{channel}', '');")
            } else {
                String::new()
            };
            statements += &format!(
                "create or replace function {function}() returns void language plpgsql \
                 as $$ begin {body} end $$;\n"
            );
        }
        statements
    }

    async fn apply(self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(self.statements()))
            .execute(pool)
            .await
            .map(drop)
    }
}

/// One call in one setting, in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub call: Call,
    pub setting: Setting,
    #[serde(flatten)]
    pub summary: Summary,
    /// CPU per call of the servers and of PostgreSQL (Linux only), until the
    /// servers were idle again after the window.
    pub cpu: Option<CpuPerCall>,
    /// Changes the watcher received during the window.
    pub watcher_changes: u64,
    /// How long, after the window's last call, the servers kept working or
    /// the watcher kept receiving (0 within 0.2 s).
    pub busy_after_seconds: f64,
}

/// What the run measured, and how the watcher fared.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyCost {
    pub topology: &'static str,
    pub concurrency: usize,
    pub seconds: f64,
    pub rounds: usize,
    pub figures: Vec<Figure>,
    /// Times the watcher's stream ended and was opened again, and why first.
    pub watcher_reopened: u64,
    pub watcher_error: Option<String>,
}

/// Measures CreatePost and Vote in every setting, `rounds` times each, with
/// one watcher streaming throughout; `pool` is the scratch database's, on
/// which the triggers are set (and enabled again at the end, whatever
/// happens).
pub async fn run(
    pool: &PgPool,
    servers: &Servers,
    client: &Arc<Client>,
    concurrency: usize,
    window: Duration,
    rounds: usize,
    split: bool,
) -> Result<NotifyCost, Box<dyn Error>> {
    let outcome = measure(pool, servers, client, concurrency, window, rounds, split).await;
    let restored = Setting::Announced.apply(pool).await;
    let cost = outcome?;
    restored.map_err(|error| format!("enabling the feed's triggers again: {error}"))?;
    Ok(cost)
}

async fn measure(
    pool: &PgPool,
    servers: &Servers,
    client: &Arc<Client>,
    concurrency: usize,
    window: Duration,
    rounds: usize,
    split: bool,
) -> Result<NotifyCost, Box<dyn Error>> {
    // The watcher: a user no caller is, on a connection of its own.
    let channel = feed::connect(servers).await?;
    let token = login(channel.clone(), USERS as usize - 1).await?;
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(keep_watching(
        channel,
        token,
        progress.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    while progress.checkpointed.load(Ordering::Relaxed) == 0 {
        if watcher.is_finished() || started.elapsed() > SETTLE_AT_MOST {
            stop.cancel();
            let (_, error) = watcher.await?;
            return Err(format!(
                "the watcher had no first checkpoint: {}",
                error.as_deref().unwrap_or("none in time")
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let measured = windows(
        pool,
        servers,
        client,
        &progress,
        concurrency,
        window,
        rounds,
    )
    .await;
    stop.cancel();
    let (reopened, error) = watcher.await?;
    Ok(NotifyCost {
        topology: if split { "split" } else { "all-in-one" },
        concurrency,
        seconds: window.as_secs_f64(),
        rounds,
        figures: measured?,
        watcher_reopened: reopened,
        watcher_error: error,
    })
}

async fn windows(
    pool: &PgPool,
    servers: &Servers,
    client: &Arc<Client>,
    progress: &Progress,
    concurrency: usize,
    window: Duration,
    rounds: usize,
) -> Result<Vec<Figure>, Box<dyn Error>> {
    let mut figures = Vec::new();
    for call in CALLS {
        eprintln!(
            "{}: {rounds} rounds of the {} settings",
            call.name(),
            Setting::ALL.len()
        );
        for round in 0..rounds {
            for step in 0..Setting::ALL.len() {
                let setting = Setting::ALL[(round + step) % Setting::ALL.len()];
                let what = format!("{}, {}", call.name(), setting.name());
                setting.apply(pool).await?;

                // A few calls first: statements planned again after the
                // change, and what was written unannounced delivered now.
                for n in 0..concurrency.min(5) {
                    client
                        .clone()
                        .call(call, Path::Grpc, n)
                        .await
                        .map_err(|error| format!("warm-up {what}: {error:?}"))?;
                }
                settle(servers, progress).await;
                let delivered = progress.delivered.load(Ordering::Relaxed);
                let before = CpuTime::now(servers);
                let caller = client.clone();
                let summary = closed_loop(&what, concurrency, window, move |n| {
                    caller.clone().call(call, Path::Grpc, n)
                })
                .await;
                let watcher_changes = progress.delivered.load(Ordering::Relaxed) - delivered;
                // What the calls left the servers to do counts in their CPU.
                let busy_after = settle(servers, progress).await;
                let cpu = before
                    .zip(CpuTime::now(servers))
                    .and_then(|(before, after)| before.per_call(after, summary.calls));
                figures.push(Figure {
                    call,
                    setting,
                    summary,
                    cpu,
                    watcher_changes,
                    busy_after_seconds: busy_after.as_secs_f64(),
                });
            }
        }
    }
    Ok(figures)
}

/// Waits until the watcher receives nothing and the servers are idle (see
/// [`QUIET`]), or for [`SETTLE_AT_MOST`]; gives how long they were not.
async fn settle(servers: &Servers, progress: &Progress) -> Duration {
    let started = Instant::now();
    while started.elapsed() < SETTLE_AT_MOST {
        let (delivered, cpu) = (
            progress.delivered.load(Ordering::Relaxed),
            CpuTime::now(servers),
        );
        tokio::time::sleep(QUIET).await;
        let busy_ms = cpu
            .zip(CpuTime::now(servers))
            .and_then(|(before, after)| before.per_call(after, 1))
            .map_or(0.0, |spent| spent.servers_ms);
        let idle = busy_ms <= QUIET.as_secs_f64() * 1000.0 * IDLE_CPU;
        if idle && progress.delivered.load(Ordering::Relaxed) == delivered {
            // The quiet interval itself was not the servers' doing.
            return started.elapsed().saturating_sub(QUIET);
        }
    }
    started.elapsed()
}

/// Watches until `stop`, opening the stream again (from now) whenever it
/// ends; gives how many times it did, and the first reason.
async fn keep_watching(
    channel: tonic::transport::Channel,
    token: String,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> (u64, Option<String>) {
    let (mut reopened, mut first_error) = (0, None);
    loop {
        let watched = feed::watch(
            channel.clone(),
            token.clone(),
            progress.clone(),
            stop.clone(),
        )
        .await;
        if stop.is_cancelled() {
            break;
        }
        if let Some(error) = watched.error {
            first_error.get_or_insert(error);
        }
        if progress.checkpointed.load(Ordering::Relaxed) == 0 {
            // Never opened: the caller gives up.
            break;
        }
        reopened += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (reopened, first_error)
}

/// The median of a figure over the rounds.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

impl NotifyCost {
    pub fn failed(&self) -> u64 {
        self.figures.iter().map(|f| f.summary.failed).sum()
    }

    /// Calls/s of `call` in `setting`, over all its windows.
    fn per_second(&self, call: Call, setting: Setting) -> f64 {
        let (calls, seconds) = self
            .of(call, setting)
            .fold((0, 0.0), |(calls, seconds), f| {
                (calls + f.summary.calls, seconds + f.summary.seconds)
            });
        calls as f64 / f64::max(seconds, f64::MIN_POSITIVE)
    }

    fn of(&self, call: Call, setting: Setting) -> impl Iterator<Item = &Figure> {
        self.figures
            .iter()
            .filter(move |f| (f.call, f.setting) == (call, setting))
    }

    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nWhat announcing changes costs the writes: gRPC through the {} gateway, {} \
             callers, {} turns of each setting per call, {:.0} s each, one watcher streaming \
             throughout; calls/s over all turns, p50 and CPU the median of the turns\n",
            self.topology, self.concurrency, self.rounds, self.seconds
        );
        let _ = writeln!(
            out,
            "| call | setting | calls/s | p50 ms | CPU ms svc/db | watcher got | busy after, s | \
             failed | / announce off |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for call in CALLS {
            let off = self.per_second(call, Setting::Unannounced);
            for setting in Setting::ALL {
                let rate = self.per_second(call, setting);
                let cpu = |pick: fn(&CpuPerCall) -> f64| {
                    let values: Vec<f64> = self
                        .of(call, setting)
                        .filter_map(|f| f.cpu.as_ref().map(pick))
                        .collect();
                    (!values.is_empty()).then(|| median(values.into_iter()))
                };
                let cpu_text = match (cpu(|c| c.servers_ms), cpu(|c| c.database_ms)) {
                    (Some(svc), Some(db)) => format!("{svc:.3} / {db:.3}"),
                    _ => String::new(),
                };
                let ratio = match setting {
                    Setting::Unannounced => String::new(),
                    _ => format!("{:.3}", rate / off.max(f64::MIN_POSITIVE)),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {rate:.0} | {:.2} | {cpu_text} | {} | {:.1} | {} | {ratio} |",
                    if setting == Setting::ALL[0] {
                        call.name()
                    } else {
                        ""
                    },
                    setting.name(),
                    median(self.of(call, setting).map(|f| f.summary.p50_ms)),
                    self.of(call, setting)
                        .map(|f| f.watcher_changes)
                        .sum::<u64>(),
                    median(self.of(call, setting).map(|f| f.busy_after_seconds)),
                    self.of(call, setting)
                        .map(|f| f.summary.failed)
                        .sum::<u64>(),
                );
            }
        }
        let _ = writeln!(
            out,
            "\nwatcher got: the changes the watcher received during the turns (unannounced \
             ones come when the next announced write wakes the listener, before the next turn \
             is measured). busy after: how long after a turn's last call the servers kept \
             working (over a tenth of a core) or the watcher kept receiving, median of the \
             turns; each turn starts once they have stopped."
        );
        for call in CALLS {
            let ratio = self.per_second(call, Setting::Announced)
                / self
                    .per_second(call, Setting::Unannounced)
                    .max(f64::MIN_POSITIVE);
            let verdict = if ratio >= BUDGET { "ok" } else { "MISSED" };
            let _ = writeln!(
                out,
                "{}: calls/s with the announcement / without: {ratio:.3} (budget ≥ {BUDGET:.2}): \
                 {verdict}",
                call.name()
            );
        }
        if self.watcher_reopened > 0 {
            let _ = writeln!(
                out,
                "The watcher's stream ended {} times and was opened again; the first: {}",
                self.watcher_reopened,
                self.watcher_error.as_deref().unwrap_or("(no error)")
            );
        }
        let failed = self.failed();
        if failed > 0 {
            let _ = writeln!(out, "{failed} calls FAILED (see the errors above)");
        }
        out
    }
}
