//! One watcher: its stream, and the task that fills it (catching up from a
//! cursor, then following the hub) until it ends it with a status that says
//! where to resume.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use access_token::TokenVerifier;
use agora_proto::{
    errors::ErrorReason,
    posts::v1::{Checkpoint, WatchPostsResponse, watch_posts_response::Event as Message},
};
use service_kit::{ApiError, fields::timestamp};
use sqlx::PgPool;
use tokio::sync::{broadcast::error::RecvError, mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;

use super::{
    CATCH_UP_PAGE, CHECKPOINT_EVERY, TOKEN_RECHECK_EVERY,
    cursor::Cursor,
    events,
    hub::{self, Hub, Subscription},
    snapshot::Snapshot,
    view::View,
};

/// Messages a watcher's task may get ahead of its stream; beyond them it waits,
/// and the hub's buffer is what it may fall behind.
const OUTGOING: usize = 16;

/// How long a resumed watcher waits for this replica to reach its cursor.
const REACH_CURSOR: Duration = Duration::from_secs(5);

/// Why a stream ended early, sent as its final status with where to resume.
#[derive(Debug)]
pub struct End {
    reason: ErrorReason,
    message: String,
}

impl End {
    fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    fn interrupted(why: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorReason::StreamInterrupted,
            format!("{why}; resume from the cursor"),
        )
    }

    fn status(&self, cursor: &str) -> Status {
        let metadata: &[(&str, &str)] = if cursor.is_empty() {
            &[]
        } else {
            &[("cursor", cursor)]
        };
        self.reason
            .status(&self.message, metadata, tonic_types::ErrorDetails::new())
    }
}

/// What a watcher's task needs.
pub struct Watcher {
    pub view: View,
    pub pool: PgPool,
    pub hub: Hub,
    pub verifier: Arc<TokenVerifier>,
    /// The caller's access token, checked again while the stream lasts.
    pub token: String,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The response stream: the task's messages, then its ending. An ending goes
/// out at once (messages still buffered are dropped) and names the cursor of
/// the last message that went out, so resuming loses nothing.
pub struct WatchStream {
    messages: mpsc::Receiver<WatchPostsResponse>,
    ending: oneshot::Receiver<End>,
    last_cursor: String,
    ended: bool,
}

impl Stream for WatchStream {
    type Item = Result<WatchPostsResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(ending) = Pin::new(&mut self.ending).poll(cx) {
            self.ended = true;
            return Poll::Ready(match ending {
                Ok(end) => Some(Err(end.status(&self.last_cursor))),
                // The task ended without a word: it only does so at shutdown.
                Err(_) => Some(Err(
                    End::interrupted("the stream stopped").status(&self.last_cursor)
                )),
            });
        }
        match self.messages.poll_recv(cx) {
            Poll::Ready(Some(message)) => {
                self.last_cursor.clone_from(&message.cursor);
                Poll::Ready(Some(Ok(message)))
            }
            // The task is gone; its ending is ready or never comes.
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(
                    End::interrupted("the stream stopped").status(&self.last_cursor)
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Watcher {
    /// Starts the task from `cursor` (`now` when `None`) and answers its
    /// stream; the stream follows the hub from a position that sees `now`.
    pub fn start(self, cursor: Option<Cursor>, now: Snapshot) -> WatchStream {
        let (messages, receiver) = mpsc::channel(OUTGOING);
        let (end, ending) = oneshot::channel();
        tokio::spawn(async move {
            let mut task = Task {
                watcher: self,
                messages,
                last_sent: tokio::time::Instant::now(),
            };
            if let Err(reason) = task.run(cursor, now).await {
                let _ = end.send(reason);
            }
        });
        WatchStream {
            messages: receiver,
            ending,
            last_cursor: String::new(),
            ended: false,
        }
    }
}

struct Task {
    watcher: Watcher,
    messages: mpsc::Sender<WatchPostsResponse>,
    last_sent: tokio::time::Instant,
}

impl Task {
    /// Runs until the stream must end (an `Err`), or the caller went away.
    async fn run(&mut self, cursor: Option<Cursor>, now: Snapshot) -> Result<(), End> {
        let mut subscription = self.watcher.hub.subscribe().await;
        if let Some(cursor) = &cursor {
            self.send(checkpoint(false), cursor).await?;
        }
        // `now` sees whatever the cursor sees.
        self.reach(&mut subscription, &now).await?;
        if let Some(cursor) = cursor {
            self.catch_up(cursor, &subscription.position).await?;
        }
        let position = Cursor::at(subscription.position.clone());
        self.send(checkpoint(true), &position).await?;
        self.follow(subscription).await
    }

    /// Waits until the hub's position sees everything `upto` sees: the
    /// database when the call came, or a cursor from a replica that read later
    /// than this one.
    async fn reach(&mut self, subscription: &mut Subscription, upto: &Snapshot) -> Result<(), End> {
        let deadline = tokio::time::Instant::now() + REACH_CURSOR;
        while !upto.is_within(&subscription.position) {
            self.watcher.hub.read_now();
            let batch = tokio::time::timeout_at(deadline, subscription.batches.recv()).await;
            match batch {
                Ok(Ok(batch)) => subscription.position = batch.upto.clone(),
                Ok(Err(RecvError::Lagged(_))) => {
                    // Batches were skipped: take the position afresh.
                    *subscription = self.watcher.hub.subscribe().await;
                }
                Ok(Err(RecvError::Closed)) => {
                    return Err(End::interrupted("the server is stopping"));
                }
                Err(_) => {
                    return Err(End::interrupted(
                        "this replica has not reached the cursor yet (is it from another database?)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sends what committed after `cursor` up to `position`, a page at a time.
    async fn catch_up(&mut self, cursor: Cursor, position: &Snapshot) -> Result<(), End> {
        let rest_of_batch = cursor
            .last
            .map(|last| (cursor.after.clone(), cursor.upto.clone(), Some(last)));
        let until_position =
            (cursor.upto != *position).then(|| (cursor.upto.clone(), position.clone(), None));
        for (after, upto, mut last) in rest_of_batch.into_iter().chain(until_position) {
            loop {
                let page = self.read_page(&after, &upto, last).await?;
                for event in &page {
                    if let Some(message) = self.watcher.view.message(event) {
                        let cursor = Cursor::within(&after, &upto, event.key);
                        self.send_event(message, event, &cursor).await?;
                    }
                }
                match page.last() {
                    Some(event) if page.len() as i64 == CATCH_UP_PAGE => last = Some(event.key),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    async fn read_page(
        &self,
        after: &Snapshot,
        upto: &Snapshot,
        last: Option<super::cursor::EventKey>,
    ) -> Result<Vec<events::Event>, End> {
        let read = async {
            let mut conn = self.watcher.pool.acquire().await?;
            events::between(&mut conn, after, upto, last, CATCH_UP_PAGE).await
        };
        read.await.map_err(|error: ApiError| {
            tracing::warn!(%error, "cannot read the changes a resumed watcher missed");
            End::interrupted("the database cannot be read")
        })
    }

    /// Follows the hub's batches from `position` on.
    async fn follow(&mut self, mut subscription: Subscription) -> Result<(), End> {
        let mut position = subscription.position.clone();
        let mut stopping = self.watcher.hub.stopping();
        let mut recheck = tokio::time::interval(TOKEN_RECHECK_EVERY);
        loop {
            let quiet_until = self.last_sent + CHECKPOINT_EVERY;
            tokio::select! {
                batch = subscription.batches.recv() => match batch {
                    Ok(batch) => {
                        for event in &batch.events {
                            if let Some(message) = self.watcher.view.message(event) {
                                let cursor = Cursor::within(&batch.after, &batch.upto, event.key);
                                self.send_event(message, event, &cursor).await?;
                            }
                        }
                        position = batch.upto.clone();
                    }
                    Err(RecvError::Lagged(_)) => {
                        return Err(End::new(
                            ErrorReason::WatcherTooSlow,
                            "the stream was read more slowly than changes came; resume from the cursor",
                        ));
                    }
                    Err(RecvError::Closed) => return Err(End::interrupted("the server is stopping")),
                },
                () = tokio::time::sleep_until(quiet_until) => {
                    self.send(checkpoint(true), &Cursor::at(position.clone())).await?;
                }
                _ = recheck.tick() => self.check_token().await?,
                // Gone: no need to wait for the next message to find out.
                () = self.messages.closed() => return Ok(()),
                () = tokio::time::sleep_until(expiry(self.watcher.expires_at)) => {
                    return Err(token_expired());
                }
                () = hub::stopped(&mut stopping) => {
                    return Err(End::interrupted("the server is shutting down"));
                }
            }
        }
    }

    /// Ends the stream once the token expires or its session ends.
    async fn check_token(&self) -> Result<(), End> {
        match self.watcher.verifier.verify(&self.watcher.token).await {
            Ok(_) => Ok(()),
            Err(error) => Err(End::new(
                error.reason(),
                format!("{error}; resume from the cursor with a new token"),
            )),
        }
    }

    async fn send_event(
        &mut self,
        message: Message,
        event: &events::Event,
        cursor: &Cursor,
    ) -> Result<(), End> {
        self.send_with_time(message, Some(event.time), cursor).await
    }

    async fn send(&mut self, message: Message, cursor: &Cursor) -> Result<(), End> {
        self.send_with_time(message, None, cursor).await
    }

    /// Queues one message; while the stream is full, the token may expire and
    /// the server may stop, and either ends the wait.
    async fn send_with_time(
        &mut self,
        message: Message,
        time: Option<time::OffsetDateTime>,
        cursor: &Cursor,
    ) -> Result<(), End> {
        let response = WatchPostsResponse {
            cursor: cursor.encode(),
            event_time: time.map(timestamp),
            event: Some(message),
        };
        let expiry = expiry(self.watcher.expires_at);
        let mut stopping = self.watcher.hub.stopping();
        tokio::select! {
            sent = self.messages.send(response) => {
                // The caller went away: end quietly.
                sent.map_err(|_| End::interrupted("the caller went away"))?;
            }
            () = tokio::time::sleep_until(expiry) => return Err(token_expired()),
            () = hub::stopped(&mut stopping) => {
                return Err(End::interrupted("the server is shutting down"));
            }
        }
        self.last_sent = tokio::time::Instant::now();
        Ok(())
    }
}

fn token_expired() -> End {
    End::new(
        ErrorReason::TokenExpired,
        "the access token expired; resume from the cursor with a new token",
    )
}

fn checkpoint(caught_up: bool) -> Message {
    Message::Checkpoint(Checkpoint { caught_up })
}

/// When a token with `exp` expires, on tokio's clock.
fn expiry(expires_at: u64) -> tokio::time::Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(expires_at).saturating_sub(now);
    tokio::time::Instant::now() + left
}
