//! One listener per process: it LISTENs for the outboxes' announcements, reads
//! what was committed since its last read, and hands that batch to every
//! watcher at once.

use std::{sync::Arc, time::Duration};

use service_kit::ApiError;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Mutex, Notify, broadcast, watch};

use super::{
    events::{self, Event},
    snapshot::Snapshot,
};

/// The channels the outboxes' triggers notify.
const CHANNELS: [&str; 2] = ["posts_post_events", "votes_like_count_events"];

/// How long to wait before trying the database again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Reads start at least this far apart. A read costs the database about what
/// a write does; under a stream of writes, one read per write would double the
/// database's work, where one read per pause serves them all. A lone write is
/// read at once.
const READ_GAP: Duration = Duration::from_millis(25);

/// The changes committed between two reads, in key order.
#[derive(Debug)]
pub struct Batch {
    pub after: Snapshot,
    pub upto: Snapshot,
    pub events: Vec<Event>,
}

/// The listener's handle, shared by every watcher.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// Where the last batch ended; held while a batch is sent, so that a new
    /// subscriber's first batch starts exactly there.
    position: Mutex<Snapshot>,
    batches: broadcast::Sender<Arc<Batch>>,
    /// Asks for a read: an announcement came, the announcements' connection
    /// was lost (some may have been missed), or a resumed watcher is ahead of
    /// this replica. Asks made during a read make one more read, whatever
    /// their number.
    read_now: Notify,
    /// True once the process stops serving.
    stopping: watch::Receiver<bool>,
}

/// A watcher's place at the hub: batches from `position` on.
pub struct Subscription {
    pub position: Snapshot,
    pub batches: broadcast::Receiver<Arc<Batch>>,
}

impl Hub {
    /// Starts listening on `pool`'s database. `buffer` batches at most wait for
    /// the slowest watcher; one further behind is cut off. Fails when the
    /// database cannot be reached.
    pub async fn start(
        pool: PgPool,
        buffer: usize,
        stopping: watch::Receiver<bool>,
    ) -> Result<Hub, ApiError> {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen_all(CHANNELS).await?;
        // Taken once listening: whatever commits later is announced.
        let position = events::current_snapshot(&mut *pool.acquire().await?).await?;
        let (batches, _) = broadcast::channel(buffer);
        let hub = Hub {
            shared: Arc::new(Shared {
                position: Mutex::new(position),
                batches,
                read_now: Notify::new(),
                stopping,
            }),
        };
        tokio::spawn(hub.clone().listen(listener));
        tokio::spawn(hub.clone().read_when_asked(pool));
        Ok(hub)
    }

    pub async fn subscribe(&self) -> Subscription {
        let position = self.shared.position.lock().await;
        Subscription {
            batches: self.shared.batches.subscribe(),
            position: position.clone(),
        }
    }

    pub fn read_now(&self) {
        self.shared.read_now.notify_one();
    }

    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shared.stopping.clone()
    }

    /// Asks for a read at every announcement, and after a lost connection,
    /// until the process stops. Reading is another task's, so that
    /// announcements coming faster than reads fold into the next read.
    async fn listen(self, mut listener: PgListener) {
        let mut stopping = self.shared.stopping.clone();
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = stopped(&mut stopping) => return,
            };
            if let Err(error) = received {
                // The next receive connects again.
                tracing::warn!(%error, "lost the database's announcements of new posts and likes; listening again");
                tokio::time::sleep(RETRY).await;
            }
            self.read_now();
        }
    }

    /// Reads once for any number of asks, until the process stops; retries
    /// every second while the database does not answer.
    async fn read_when_asked(self, pool: PgPool) {
        let mut stopping = self.shared.stopping.clone();
        let mut next_read = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.shared.read_now.notified() => {}
                () = stopped(&mut stopping) => return,
            }
            // Asks that come meanwhile fold into this read.
            tokio::time::sleep_until(next_read).await;
            next_read = tokio::time::Instant::now() + READ_GAP;
            let mut failures = 0;
            while let Err(error) = self.read(&pool).await {
                if failures == 0 {
                    tracing::warn!(%error, "cannot read new posts and likes; trying again every second");
                }
                failures += 1;
                tokio::time::sleep(RETRY).await;
                if *stopping.borrow() {
                    return;
                }
            }
            if failures > 0 {
                tracing::info!(failures, "reading new posts and likes again");
            }
        }
    }

    /// Sends one batch: what committed since the last read.
    async fn read(&self, pool: &PgPool) -> Result<(), ApiError> {
        let mut conn = pool.acquire().await?;
        let upto = events::current_snapshot(&mut conn).await?;
        let mut position = self.shared.position.lock().await;
        let events = events::between(&mut conn, &position, &upto, None, i64::MAX).await?;
        let batch = Batch {
            after: std::mem::replace(&mut *position, upto.clone()),
            upto,
            events,
        };
        // No receiver is no error: nobody watches.
        let _ = self.shared.batches.send(Arc::new(batch));
        Ok(())
    }
}

/// Completes once `stopping` turns true (or its sender is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}
