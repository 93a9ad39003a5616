//! `GET /posts/stream`: posts-service's WatchPosts as Server-Sent Events, for
//! browsers and any HTTP client. Each message becomes one event whose `id` is
//! its cursor, so a client that reconnects with `Last-Event-ID` (as
//! `EventSource` does by itself) continues right after the last event it got,
//! with nothing missed and nothing twice.
//!
//! The answer starts only once the stream's first message (a checkpoint, which
//! the service sends at once) has come: an error before it (a bad token, a
//! malformed or expired cursor) is then an ordinary HTTP error with its status
//! and `{"detail"}`, which a client can act on, rather than a 200 whose only
//! event is an error. An error that ends the stream later is one last `error`
//! event saying where to resume.

use std::{collections::HashMap, convert::Infallible, time::Duration};

use agora_proto::{
    errors::{ErrorReason, reason_of},
    posts::v1::{self as posts, watch_posts_response::Event as Change},
};
use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{
    StreamExt as _,
    stream::{self, Stream},
};
use serde::{Deserialize, Serialize};
use service_kit::{deadline::Deadline, retry::read_once_more_if_unavailable};
use tokio::sync::watch;
use tonic::{Status, Streaming};
use tonic_types::StatusExt as _;
use utoipa::{IntoParams, ToSchema};

use super::{
    Facade,
    errors::{ErrorBody, HttpError, ValidationErrorBody},
    extract::{Bearer, Query},
    posts::{PostOut, PostWithVotes},
};

const UPSTREAM: &str = "posts-service";

/// How long the stream's first message may take. The service sends it at once;
/// this is the bound a unary answer has on the way to the service (the
/// channels' call timeout), so a stuck upstream is a 504, not a request that
/// hangs without even its headers.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A comment this often keeps proxies and load balancers, which close
/// connections idle for a minute or so, from closing a quiet stream. The
/// service's own checkpoints come only every 30 seconds.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How long `EventSource` waits before reconnecting after the connection ends:
/// long enough not to hammer a gateway that is restarting, short enough to be
/// well within the hour for which the service keeps changes to resume from.
const RECONNECT_AFTER: Duration = Duration::from_secs(3);

/// The query of `GET /posts/stream`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct WatchParams {
    /// Only posts whose title contains this, ignoring case, as `GET /posts/`.
    #[param(default = "", max_length = 100)]
    pub search: String,
    /// Only posts by this user.
    #[param(format = Uuid)]
    pub owner_id: String,
    /// Where to start, for a first connection that already has a cursor (the
    /// `id` of an event received before); `Last-Event-ID` takes precedence.
    /// Empty: from now.
    pub cursor: String,
}

/// The data of a `deleted` event: the post left the view.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostRemovedOut {
    #[schema(format = "uuid")]
    pub id: String,
}

/// The data of a `like_count_changed` event.
#[derive(Debug, Serialize, ToSchema)]
pub struct LikeCountOut {
    #[schema(format = "uuid")]
    pub post_id: String,
    pub like_count: i64,
}

/// The data of a `checkpoint` event.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointOut {
    /// False only while a resumed stream is still catching up.
    pub caught_up: bool,
}

/// The data of the `error` event that ends a stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamErrorOut {
    /// What went wrong, in a short sentence.
    pub detail: String,
    /// The error's reason, such as `TOKEN_EXPIRED`, `WATCHER_TOO_SLOW`,
    /// `STREAM_INTERRUPTED` or `CURSOR_EXPIRED`; `null` when it has none.
    pub reason: Option<String>,
    /// Where to resume (as `Last-Event-ID`, also the event's own `id`); `null`
    /// when there is nowhere to resume from (`CURSOR_EXPIRED`: list the posts
    /// again, then watch from now).
    pub cursor: Option<String>,
}

/// Watch the posts you may see change, as Server-Sent Events.
///
/// The stream holds what `GET /posts/` with the same `search` (and `owner_id`)
/// shows, kept current, in the order the changes were committed. Every event's
/// `id` is a cursor: reconnect with it as `Last-Event-ID` (or, on a first
/// connection, as `cursor`) to continue right after it, nothing missed and
/// nothing twice, for as long as changes are kept (an hour by default).
/// Each event's `data` is JSON:
///
/// - `checkpoint` (`CheckpointOut`, `{"caught_up": bool}`): first, once a
///   resumed stream has caught up, and every 30 seconds without other events;
/// - `created` (`PostWithVotes`): a post entered the view (created, published,
///   or retitled to match), as `GET /posts/{id}` shows it but with `owner`
///   `null`; `votes` is 0 for a new post;
/// - `updated` (`PostWithVotes`): a post in the view changed; `owner` and
///   `votes` are `null` (like counts come as `like_count_changed`);
/// - `deleted` (`PostRemovedOut`, `{"id"}`): a post left the view (deleted,
///   made a draft, or retitled not to match);
/// - `like_count_changed` (`LikeCountOut`, `{"post_id", "like_count"}`);
/// - `error` (`StreamErrorOut`, `{"detail", "reason", "cursor"}`), the last
///   event: the stream ended (`TOKEN_EXPIRED`: reconnect with a fresh token;
///   `WATCHER_TOO_SLOW`, `STREAM_INTERRUPTED`: reconnect; `CURSOR_EXPIRED`:
///   list again, then watch from now) and `cursor` is where to resume.
///
/// The first event says `retry: 3000`; comments (`:`) keep a quiet connection
/// open every 15 seconds.
#[utoipa::path(
    get,
    path = "/posts/stream",
    operation_id = "watch_posts",
    tag = "Posts",
    params(
        WatchParams,
        ("Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received: continue right after it"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "Server-Sent Events: `checkpoint`, `created`, `updated`, `deleted`, \
                `like_count_changed`, and a last `error`; each `id` is a cursor to resume from",
            body = String,
            example = "retry: 3000\nid: 0000000000000a2c\nevent: checkpoint\ndata: {\"caught_up\":true}\n\n"),
        (status = 401, description = "No valid access token, or it expired", body = ErrorBody),
        (status = 410, description = "The cursor is older than the changes kept (an hour by default): list the posts again, then watch from now", body = ErrorBody),
        (status = 422, description = "A cursor this API did not issue, a search over 100 characters, or an owner_id that is not a UUID", body = ValidationErrorBody),
    ),
)]
pub async fn watch(
    bearer: Bearer,
    State(facade): State<Facade>,
    Query(params): Query<WatchParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    // Read as it came even when it is not text: ignoring it would start the
    // stream from now and silently lose what the client missed, where the
    // service refuses it as a cursor it did not issue.
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_owned())
        .filter(|id| !id.is_empty());
    let from_header = last_event_id.is_some();
    let request = posts::WatchPostsRequest {
        cursor: last_event_id.unwrap_or(params.cursor),
        search: params.search,
        owner_id: params.owner_id,
    };
    // Nothing has been sent yet, so a stream that broke before its first
    // message may be opened once more, as any read.
    let opening = read_once_more_if_unavailable(Deadline::none(), || {
        let mut posts = facade.upstreams.posts();
        let request = bearer.stream_request(request.clone());
        async move {
            let mut messages = posts.watch_posts(request).await?.into_inner();
            let first = messages.message().await?;
            Ok((first, messages))
        }
    });
    let (first, messages) = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, opening)
        .await
        .map_err(|_| {
            HttpError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{UPSTREAM} did not answer in time"),
            )
        })?
        .map_err(|status| refusal(&status, from_header))?;
    let first = first.ok_or_else(|| HttpError::incomplete_answer(UPSTREAM, "a first message"))?;

    let mut feed = Feed {
        messages,
        cursor: None,
        stopping: facade.stopping.clone(),
    };
    // The first message like any other, except that a bad one is an HTTP
    // error: nothing has been answered yet.
    let first = feed.event(first)?.retry(RECONNECT_AFTER);
    let events = stream::once(async move { Ok::<_, Infallible>(first) }).chain(feed.into_events());
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
        .into_response();
    // nginx buffers answers unless told not to, which would hold events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The HTTP answer to a stream that failed before its first message.
fn refusal(status: &Status, cursor_from_header: bool) -> HttpError {
    // 410 Gone, not the 400 OUT_OF_RANGE is elsewhere: the changes after this
    // cursor are gone for good, so no retry of this request can succeed, and a
    // client (`EventSource` among them) must not reconnect with it again but
    // list the posts afresh and watch from now. A 4xx other than 410 reads as
    // "your request is wrong", which it was not when it was made.
    if reason_of(status) == Some(ErrorReason::CursorExpired) {
        return HttpError::new(StatusCode::GONE, status.message());
    }
    let error = HttpError::from_status(UPSTREAM, status);
    if cursor_from_header {
        error.relocating(&["query", "cursor"], &["header", "last-event-id"])
    } else {
        error
    }
}

/// An open WatchPosts stream, turned into events.
struct Feed {
    messages: Streaming<posts::WatchPostsResponse>,
    /// The cursor of the last event sent: everything up to it was delivered.
    cursor: Option<String>,
    /// Becomes true when the gateway shuts down.
    stopping: watch::Receiver<bool>,
}

impl Feed {
    /// The events after the first: one per message, then, if the stream ends
    /// with an error, an `error` event.
    fn into_events(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        stream::unfold(Some(self), |feed| async move {
            let mut feed = feed?;
            let next = tokio::select! {
                next = feed.messages.message() => next,
                () = shutting_down(&mut feed.stopping) => Err(ErrorReason::StreamInterrupted.status(
                    "the gateway is shutting down: reconnect to resume",
                    &[],
                    Default::default(),
                )),
            };
            match next {
                Ok(Some(message)) => match feed.event(message) {
                    Ok(event) => Some((Ok(event), Some(feed))),
                    Err(error) => {
                        let end = feed.end(error.detail.to_string(), None, feed.cursor.clone());
                        Some((Ok(end), None))
                    }
                },
                Ok(None) => None,
                Err(status) => Some((Ok(feed.ended_by(&status)), None)),
            }
        })
    }

    /// The event for `message`.
    fn event(&mut self, message: posts::WatchPostsResponse) -> Result<Event, HttpError> {
        let cursor = message.cursor;
        // An `id` with a line break would end the field early (axum refuses
        // one), and an empty one would make the client forget where it is.
        if cursor.is_empty() || cursor.contains(['\n', '\r', '\0']) {
            return Err(HttpError::incomplete_answer(UPSTREAM, "a cursor"));
        }
        let change = message
            .event
            .ok_or_else(|| HttpError::incomplete_answer(UPSTREAM, "an event"))?;
        // The contract leaves owners out of events (auth-service is not asked
        // for each change); emails are shown only with an owner.
        let no_emails = HashMap::new();
        let post = |post: posts::Post| -> Result<PostWithVotes, HttpError> {
            PostOut::with_votes(post, &no_emails)
        };
        let (name, data) = match change {
            Change::Created(created) => ("created", json(&post(created)?)),
            Change::Updated(updated) => ("updated", json(&post(updated)?)),
            Change::Deleted(removed) => ("deleted", json(&PostRemovedOut { id: removed.id })),
            Change::LikeCountChanged(changed) => (
                "like_count_changed",
                json(&LikeCountOut {
                    post_id: changed.post_id,
                    like_count: changed.like_count,
                }),
            ),
            Change::Checkpoint(checkpoint) => (
                "checkpoint",
                json(&CheckpointOut {
                    caught_up: checkpoint.caught_up,
                }),
            ),
        };
        let event = Event::default().id(&cursor).event(name).data(data);
        self.cursor = Some(cursor);
        Ok(event)
    }

    /// The `error` event for the status that ended the stream.
    fn ended_by(&self, status: &Status) -> Event {
        let reason = reason_of(status);
        // A status our own channel made (the connection to the replica broke)
        // carries no reason; to the client it is what the service's
        // STREAM_INTERRUPTED is: reconnect and resume, here or elsewhere.
        let reason = match (reason, std::error::Error::source(status)) {
            (None, Some(_)) => Some(ErrorReason::StreamInterrupted),
            (reason, _) => reason,
        };
        let said = status
            .get_details_error_info()
            .and_then(|info| info.metadata.get("cursor").cloned())
            .filter(|cursor| !cursor.is_empty() && !cursor.contains(['\n', '\r', '\0']));
        // Where the service says to resume, else right after the last event
        // sent; nowhere once the cursor expired, where resuming cannot help.
        let cursor = match reason {
            Some(ErrorReason::CursorExpired) => None,
            _ => said.or_else(|| self.cursor.clone()),
        };
        let detail = HttpError::from_status(UPSTREAM, status).detail.to_string();
        self.end(
            detail,
            reason.map(|reason| reason.reason().to_owned()),
            cursor,
        )
    }

    /// The last event of a stream. Its `id` is the cursor to resume from, so
    /// that `EventSource`'s own reconnection sends it as `Last-Event-ID`;
    /// without one (the cursor expired) the id is left as it was, so a
    /// reconnection is refused (410) rather than silently starting from now.
    fn end(&self, detail: String, reason: Option<String>, cursor: Option<String>) -> Event {
        let event = Event::default().event("error");
        let event = match &cursor {
            Some(cursor) => event.id(cursor),
            None => event,
        };
        event.data(json(&StreamErrorOut {
            detail,
            reason,
            cursor,
        }))
    }
}

/// Completes once the gateway starts shutting down; never if it cannot tell.
async fn shutting_down(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn json(data: &impl Serialize) -> String {
    serde_json::to_string(data).expect("event data serializes")
}
