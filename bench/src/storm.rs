//! A login storm: what many concurrent logins (argon2id, m=19 MiB each) do to
//! the reads beside them. GetPost is offered at a fixed rate alone, then again
//! while a crowd of clients logs in over and over; a read should not wait behind
//! the hashing, and logins beyond what auth-service admits are refused, not
//! queued without bound.
//!
//! The crowd behaves as well-made clients do: all start at once, each logs in
//! again as soon as it is answered, and a refused one waits at least as long as
//! the refusal's RetryInfo says, at most twice as long (jitter, so that the
//! refused do not all come back together). Its logins come from other clients than the reads,
//! as they would: their own connection, driven by their own thread, so a read
//! never queues behind them in the benchmark's own client, only (if at all) in
//! the servers.
//!
//! The floor: with hashing on all cores but one, the best a storm can do is to
//! cost the reads what one core busy at the lowest priority costs them, doing
//! nothing else. A third window measures that, with a spinning thread of the
//! benchmark's own in place of the storm.
//!
//! A p99 of one short window swings with whatever else the machine does, so the
//! windows alternate over several rounds and each figure pools its rounds.

use std::{
    error::Error,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use service_kit::retry::jitter;
use tokio::{
    runtime::Runtime,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

use crate::{
    load::{Summary, Tally, open_loop},
    scenarios::{Call, Client, Path, login},
};

/// How long a refused login waits when its refusal says nothing.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub rate: u32,
    /// Clients logging in at once.
    pub logins: usize,
    pub rounds: usize,
    pub get_post_alone: Summary,
    /// Beside one core kept busy at the lowest priority, and no storm.
    pub get_post_beside_busy_core: Summary,
    pub get_post_in_storm: Summary,
    pub logins_succeeded: u64,
    /// RESOURCE_EXHAUSTED: admission control at work, expected.
    pub logins_refused: u64,
    pub logins_failed: u64,
    /// Successful logins per second of storm.
    pub logins_per_second: f64,
}

impl Storm {
    pub fn p99_ratio(&self) -> f64 {
        self.get_post_in_storm.p99_ms / self.get_post_alone.p99_ms
    }

    /// What a busy core costs the reads on this machine, whoever keeps it busy.
    pub fn busy_core_p99_ratio(&self) -> f64 {
        self.get_post_beside_busy_core.p99_ms / self.get_post_alone.p99_ms
    }

    /// What the storm costs beyond that floor.
    pub fn p99_over_floor(&self) -> f64 {
        self.get_post_in_storm.p99_ms / self.get_post_beside_busy_core.p99_ms
    }
}

/// How a storm's logins ended.
#[derive(Default)]
struct Logins {
    succeeded: u64,
    refused: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Logins {
    fn add(&mut self, other: Logins) {
        self.succeeded += other.succeeded;
        self.refused += other.refused;
        self.failed += other.failed;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// `rounds` of: GetPost alone for `window`, beside a busy core for `window`,
/// then in a storm of `logins` clients for `window`; between rounds, the storm's
/// last logins are answered.
pub async fn run(
    client: &Arc<Client>,
    gateway: SocketAddr,
    rate: u32,
    window: Duration,
    logins: usize,
    rounds: usize,
) -> Result<Storm, Box<dyn Error>> {
    let crowd = Crowd::connect(gateway).await?;
    let get_post = |n: u64| {
        let client = client.clone();
        let callers = client.callers();
        client.call(Call::GetPost, Path::Grpc, n as usize % callers)
    };
    let (mut alone, mut beside_busy_core, mut in_storm) =
        (Tally::new(), Tally::new(), Tally::new());
    let mut outcome = Logins::default();
    for _ in 0..rounds {
        alone.merge(open_loop(rate, tokio::time::sleep(window), get_post).await);

        let busy = BusyCore::start()?;
        beside_busy_core.merge(open_loop(rate, tokio::time::sleep(window), get_post).await);
        drop(busy);

        let stop = CancellationToken::new();
        let storm = crowd.storm(logins, stop.clone());
        in_storm.merge(open_loop(rate, tokio::time::sleep(window), get_post).await);
        stop.cancel();
        outcome.add(storm.await.expect("the login storm panicked"));
    }
    if let Some(error) = &outcome.first_error {
        eprintln!(
            "login storm: {} logins failed, the first with: {error}",
            outcome.failed
        );
    }
    let measured = window * rounds as u32;
    Ok(Storm {
        rate,
        logins,
        rounds,
        get_post_alone: alone.summary("GetPost alone", measured),
        get_post_beside_busy_core: beside_busy_core.summary("GetPost beside a busy core", measured),
        get_post_in_storm: in_storm.summary("GetPost in the storm", measured),
        logins_succeeded: outcome.succeeded,
        logins_refused: outcome.refused,
        logins_failed: outcome.failed,
        logins_per_second: outcome.succeeded as f64 / measured.as_secs_f64(),
    })
}

/// The clients of the storm: one thread and one connection to the gateway.
struct Crowd {
    runtime: Option<Runtime>,
    grpc: Channel,
}

impl Crowd {
    async fn connect(gateway: SocketAddr) -> Result<Self, Box<dyn Error>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("login-storm")
            .enable_all()
            .build()?;
        // Connected from the crowd's runtime, so the connection's tasks run there.
        let endpoint = Channel::from_shared(format!("http://{gateway}"))?;
        let grpc = runtime
            .spawn(async move { endpoint.connect().await })
            .await??;
        Ok(Self {
            runtime: Some(runtime),
            grpc,
        })
    }

    /// `count` clients logging in, all starting at once, until `stop`; the
    /// handle ends when the last login is answered.
    fn storm(&self, count: usize, stop: CancellationToken) -> JoinHandle<Logins> {
        let runtime = self.runtime.as_ref().expect("running until dropped");
        let mut clients = JoinSet::new();
        for n in 0..count {
            clients.spawn_on(
                log_in_until(self.grpc.clone(), n, stop.clone()),
                runtime.handle(),
            );
        }
        runtime.spawn(async move {
            let mut logins = Logins::default();
            while let Some(client) = clients.join_next().await {
                logins.add(client.expect("a login client panicked"));
            }
            logins
        })
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        // Dropped from async code, where a runtime must not block to shut down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One client of the storm: logs in as seeded user `n` again and again until
/// `stop`, waiting after a refusal as long as it says (or until `stop`).
async fn log_in_until(grpc: Channel, n: usize, stop: CancellationToken) -> Logins {
    let mut logins = Logins::default();
    while !stop.is_cancelled() {
        let pause = match login(grpc.clone(), n).await {
            Ok(_) => {
                logins.succeeded += 1;
                continue;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                logins.refused += 1;
                let delay = status
                    .get_details_retry_info()
                    .and_then(|retry| retry.retry_delay)
                    .unwrap_or(DEFAULT_RETRY_DELAY);
                jitter(delay, delay * 2)
            }
            Err(status) => {
                logins.failed += 1;
                logins.first_error.get_or_insert(status.to_string());
                DEFAULT_RETRY_DELAY
            }
        };
        let _ = stop.run_until_cancelled(tokio::time::sleep(pause)).await;
    }
    logins
}

/// A thread that keeps one core busy at the lowest priority the system has, and
/// touches almost no memory, until dropped.
struct BusyCore {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyCore {
    fn start() -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = stop.clone();
        let thread = std::thread::Builder::new()
            .name("busy-core".to_owned())
            .spawn(move || {
                lowest_priority();
                while !spinning.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// SCHED_IDLE on Linux: the thread runs only when nothing else wants the core.
/// Elsewhere, or if refused, it spins at its normal priority: a harsher floor.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` only; pid 0 is this thread.
        let refused = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
        if refused {
            eprintln!(
                "busy core: cannot lower its priority ({}); the floor is harsher",
                std::io::Error::last_os_error()
            );
        }
    }
}
