//! WatchPosts through the gateway, with the real binaries over a real database:
//! over gRPC in the split topology (the edge forwarding over the network to
//! posts-service), over gRPC-Web and Connect as browsers send them (HTTP/1.1),
//! and as Server-Sent Events from the facade's `GET /posts/stream`, resumed with
//! `Last-Event-ID`. Every stream here outlives the binaries' request timeout,
//! which must bound only the wait for a stream's start.
//!
//! Needs `DATABASE_URL` and the debug binaries (`cargo build -p auth-service -p
//! posts-service -p votes-service -p gateway`). Every wait is bounded.

use std::time::{Duration, Instant};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::ErrorReason,
    posts::v1::{
        Post, WatchPostsRequest, WatchPostsResponse, post_service_client::PostServiceClient,
        watch_posts_response::Event as Change,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use prost::Message as _;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use system_tests::{
    PASSWORD, assert_reason, bearer, new_post,
    process::{Env, Running, ScratchDatabase, Topology, all_in_one_gateway, terminate_all},
};
use tonic::{Streaming, transport::Channel};

/// Every binary's `REQUEST_TIMEOUT_SECS` where a test holds a stream open
/// longer: shorter than the streams, long enough for a registration on a busy
/// machine.
const REQUEST_TIMEOUT_SECS: u64 = 5;

/// The longest one awaited message, event or answer may take.
const WAIT: Duration = Duration::from_secs(10);

fn short_request_timeout() -> Env {
    vec![("REQUEST_TIMEOUT_SECS", REQUEST_TIMEOUT_SECS.to_string())]
}

fn edge_at(grpc_port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .expect("a valid URL")
        .connect_lazy()
}

/// Registers `email` and logs in, through the edge: the user id and an access
/// token.
async fn sign_up(edge: &Channel, email: &str) -> (String, String) {
    let user = UserServiceClient::new(edge.clone())
        .create_user(CreateUserRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            request_id: String::new(),
        })
        .await
        .expect("signed up")
        .into_inner()
        .user
        .expect("a user");
    let token = AuthServiceClient::new(edge.clone())
        .login(LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .expect("logged in")
        .into_inner()
        .access_token;
    (user.id, token)
}

async fn create_post(edge: &Channel, token: &str, title: &str) -> Post {
    PostServiceClient::new(edge.clone())
        .create_post(bearer(token, new_post(title, "Some content.", None)))
        .await
        .expect("the post is created")
        .into_inner()
        .post
        .expect("a post")
}

/// Likes `post_id` over gRPC: the new like count.
async fn like(edge: &Channel, token: &str, post_id: &str) -> i64 {
    let request = VoteRequest {
        post_id: post_id.to_owned(),
        direction: VoteDirection::Add.into(),
    };
    VoteServiceClient::new(edge.clone())
        .vote(bearer(token, request))
        .await
        .expect("the like is taken")
        .into_inner()
        .like_count
}

async fn watch(edge: &Channel, token: &str, cursor: &str) -> Streaming<WatchPostsResponse> {
    let request = WatchPostsRequest {
        cursor: cursor.to_owned(),
        ..Default::default()
    };
    PostServiceClient::new(edge.clone())
        .watch_posts(bearer(token, request))
        .await
        .expect("the stream opens")
        .into_inner()
}

/// The next message of a gRPC stream.
async fn next(stream: &mut Streaming<WatchPostsResponse>) -> WatchPostsResponse {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
        .expect("a message, not the end")
}

/// The next message of a gRPC stream that is a change, not a checkpoint.
async fn next_change(stream: &mut Streaming<WatchPostsResponse>) -> WatchPostsResponse {
    loop {
        let message = next(stream).await;
        if !matches!(message.event, Some(Change::Checkpoint(_))) {
            return message;
        }
    }
}

#[tokio::test]
async fn a_like_reaches_a_grpc_watcher_through_the_edge_long_after_the_request_timeout() {
    let database = ScratchDatabase::new();
    let topology = Topology::<1>::new(&database.url)
        .with("REQUEST_TIMEOUT_SECS", REQUEST_TIMEOUT_SECS.to_string());
    let Running {
        auth,
        votes,
        posts: [posts],
        gateway,
    } = topology.start().await;
    let edge = topology.edge();
    let (_, alice) = sign_up(&edge, "alice@example.com").await;
    let (_, bob) = sign_up(&edge, "bob@example.com").await;

    let mut stream = watch(&edge, &bob, "").await;
    let first = next(&mut stream).await;
    assert!(
        matches!(first.event, Some(Change::Checkpoint(_))),
        "a stream starts with a checkpoint: {first:?}"
    );
    // The post is made once the stream stands somewhere, so it must come.
    let post = create_post(&edge, &alice, "Watched").await;
    let created = next_change(&mut stream).await;
    match &created.event {
        Some(Change::Created(created)) => assert_eq!(created.id, post.id),
        other => panic!("the new post, as the next change: {other:?}"),
    }
    // Quiet for longer than the request timeout of every binary and the
    // 10-second call timeout of the gateway's channel to posts-service: a
    // stream is bounded by neither.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(like(&edge, &bob, &post.id).await, 1);
    let change = next_change(&mut stream).await;
    match &change.event {
        Some(Change::LikeCountChanged(changed)) => {
            assert_eq!(
                (changed.post_id.as_str(), changed.like_count),
                (post.id.as_str(), 1)
            );
        }
        other => panic!("the like, as the next change: {other:?}"),
    }
    assert_ne!(change.cursor, first.cursor, "every message has its cursor");

    // posts-service stopping ends the stream with where to resume, and the
    // edge passes that ending through as it came.
    assert!(posts.terminate().await.success(), "posts-service stops");
    let ended = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends in time")
        .expect_err("the stream ends with an error");
    assert_reason(
        &ended,
        ErrorReason::StreamInterrupted,
        "posts-service shutting down",
    );
    let info = tonic_types::StatusExt::get_details_error_info(&ended).expect("an ErrorInfo");
    assert!(
        info.metadata.get("cursor").is_some_and(|c| !c.is_empty()),
        "where to resume: {info:?}"
    );

    terminate_all([gateway, votes, auth]).await;
    database.drop_now().await;
}

/// A message in the 5-byte envelope gRPC, gRPC-Web and Connect share.
fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![flags];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The envelopes of a streaming HTTP/1.1 answer, read as they come.
struct Envelopes {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Envelopes {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next envelope: its flags and message.
    async fn next(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes(self.buffer[1..5].try_into().expect("4 bytes"));
                let end = 5 + length as usize;
                if self.buffer.len() >= end {
                    let message = self.buffer[5..end].to_vec();
                    let flags = self.buffer[0];
                    self.buffer.drain(..end);
                    return (flags, message);
                }
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("more of the stream in time")
                .expect("the stream reads")
                .expect("the stream goes on");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next message, failing on the end of the stream (flags other than 0).
    async fn message(&mut self, what: &str) -> Vec<u8> {
        let (flags, message) = self.next().await;
        assert_eq!(
            flags,
            0,
            "{what}: a message, not the end: {}",
            String::from_utf8_lossy(&message)
        );
        message
    }
}

/// The next message of a Connect stream in JSON that is not a checkpoint.
async fn connect_change(stream: &mut Envelopes) -> Value {
    loop {
        let message: Value = serde_json::from_slice(&stream.message("Connect").await).unwrap();
        if message.get("checkpoint").is_none() {
            return message;
        }
    }
}

/// The next message of a gRPC-Web stream that is not a checkpoint.
async fn grpc_web_change(stream: &mut Envelopes) -> WatchPostsResponse {
    loop {
        let message = WatchPostsResponse::decode(&*stream.message("gRPC-Web").await).unwrap();
        if !matches!(message.event, Some(Change::Checkpoint(_))) {
            return message;
        }
    }
}

#[tokio::test]
async fn a_like_reaches_connect_and_grpc_web_streams_and_a_get_of_the_stream_is_refused() {
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, _) = all_in_one_gateway(&database.url, short_request_timeout()).await;
    let edge = edge_at(grpc_port);
    let (_, alice) = sign_up(&edge, "alice@example.com").await;
    let (_, bob) = sign_up(&edge, "bob@example.com").await;
    let url = format!("http://127.0.0.1:{grpc_port}/agora.posts.v1.PostService/WatchPosts");
    let authorization = format!("Bearer {bob}");
    let http = Client::new();

    // Connect, as connect-web sends a server stream: one enveloped message.
    let connect = http
        .post(&url)
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("authorization", &authorization)
        .body(envelope(0, b"{}"))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(connect.status(), StatusCode::OK);
    assert_eq!(
        connect.headers()["content-type"],
        "application/connect+json"
    );
    let mut connect = Envelopes::new(connect);
    // gRPC-Web, as grpc-web's JavaScript client sends it.
    let request = WatchPostsRequest::default().encode_to_vec();
    let grpc_web = http
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", &authorization)
        .body(envelope(0, &request))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(grpc_web.status(), StatusCode::OK);
    let mut grpc_web = Envelopes::new(grpc_web);

    let first: Value = serde_json::from_slice(&connect.message("Connect").await).unwrap();
    assert!(first["checkpoint"].is_object(), "{first}");
    assert!(first["cursor"].as_str().is_some_and(|c| !c.is_empty()));
    let first = WatchPostsResponse::decode(&*grpc_web.message("gRPC-Web").await).unwrap();
    assert!(
        matches!(first.event, Some(Change::Checkpoint(_))),
        "{first:?}"
    );

    // A post made once both streams stand somewhere, then, past the request
    // timeout (which bounds an in-process call's start only), a like of it.
    let post = create_post(&edge, &alice, "Watched from a browser").await;
    let created = connect_change(&mut connect).await;
    assert_eq!(created["created"]["id"], post.id.as_str(), "{created}");
    let created = grpc_web_change(&mut grpc_web).await;
    assert!(
        matches!(&created.event, Some(Change::Created(created)) if created.id == post.id),
        "{created:?}"
    );
    tokio::time::sleep(Duration::from_secs(REQUEST_TIMEOUT_SECS + 2)).await;
    assert_eq!(like(&edge, &alice, &post.id).await, 1);

    let changed = connect_change(&mut connect).await;
    assert_eq!(
        changed["likeCountChanged"],
        json!({"postId": post.id, "likeCount": "1"}),
        "{changed}"
    );
    match grpc_web_change(&mut grpc_web).await.event {
        Some(Change::LikeCountChanged(changed)) => {
            assert_eq!((changed.post_id, changed.like_count), (post.id.clone(), 1));
        }
        other => panic!("the like over gRPC-Web: {other:?}"),
    }

    // Connect's GET is for unary calls only: a stream is told to POST.
    let response = http
        .get(format!("{url}?connect=v1&encoding=json&message=%7B%7D"))
        .header("authorization", &authorization)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    let text = response.text().await.unwrap();
    assert!(text.contains("application/connect+json"), "{text}");

    drop((connect, grpc_web));
    assert!(gateway.terminate().await.success(), "the gateway stops");
    database.drop_now().await;
}

/// One event of a Server-Sent Events stream; keep-alive comments come as
/// events with only `comments`.
#[derive(Debug, Default, Clone)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
    retry: Option<u64>,
    comments: usize,
}

impl SseEvent {
    fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|error| {
            panic!("the data of {self:?} is JSON: {error}");
        })
    }

    fn is_comment(&self) -> bool {
        self.id.is_none() && self.event.is_none() && self.data.is_empty() && self.retry.is_none()
    }

    /// What a change names: the post, or for a like count the post and count.
    fn subject(&self) -> Value {
        let data = self.json();
        match self.name() {
            "created" | "updated" => data["Post"]["id"].clone(),
            "deleted" => data["id"].clone(),
            _ => data,
        }
    }
}

/// A `GET /posts/stream` answer, read as it comes.
struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Sse {
    /// The next event or keep-alive comment; `None` once the stream ended.
    async fn next_block(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let block = String::from_utf8(self.buffer[..end].to_vec()).expect("UTF-8");
                self.buffer.drain(..end + 2);
                return Some(parse_event(&block));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("more of the stream in time")
                .expect("the stream reads")?;
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next event, passing over keep-alive comments.
    async fn next(&mut self) -> SseEvent {
        loop {
            let event = self.next_block().await.expect("the stream goes on");
            if !event.is_comment() {
                return event;
            }
        }
    }

    /// The next event that is not a checkpoint.
    async fn next_change(&mut self) -> SseEvent {
        loop {
            let event = self.next().await;
            if event.name() != "checkpoint" {
                return event;
            }
        }
    }

    /// The changes up to the checkpoint that says the stream caught up.
    async fn changes_until_caught_up(&mut self) -> Vec<SseEvent> {
        let mut changes = Vec::new();
        loop {
            let event = self.next().await;
            if event.name() != "checkpoint" {
                changes.push(event);
            } else if event.json()["caught_up"] == true {
                return changes;
            }
        }
    }
}

fn parse_event(block: &str) -> SseEvent {
    let mut event = SseEvent::default();
    let mut data = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            event.comments += 1;
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => event.retry = value.parse().ok(),
            other => panic!("an SSE field: {other:?} in {block:?}"),
        }
    }
    event.data = data.join("\n");
    event
}

/// A query string, name and value.
type Pairs<'a> = &'a [(&'a str, &'a str)];

/// The HTTP facade of a gateway, as a person with a token uses it.
struct Facade {
    base: String,
    client: Client,
    token: String,
}

impl Facade {
    /// `GET /posts/stream` with this query and `Last-Event-ID`, answered as is.
    async fn open(&self, query: Pairs<'_>, last_event_id: Option<&str>) -> reqwest::Response {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let mut request = self
            .client
            .get(format!("{}/posts/stream?{query}", self.base))
            .bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        tokio::time::timeout(WAIT, request.send())
            .await
            .expect("the stream is answered in time")
            .expect("the facade answers")
    }

    /// [`Facade::open`], which must start a stream of events.
    async fn stream(&self, query: Pairs<'_>, last_event_id: Option<&str>) -> Sse {
        let response = self.open(query, last_event_id).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{:?}",
            response.headers()
        );
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Sse {
            response,
            buffer: Vec::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the facade answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// A person of the all-in-one gateway at these ports, with the facade.
async fn facade_as(grpc_port: u16, http_port: u16, email: &str) -> (Channel, Facade) {
    let edge = edge_at(grpc_port);
    let (_, token) = sign_up(&edge, email).await;
    let facade = Facade {
        base: format!("http://127.0.0.1:{http_port}"),
        client: Client::new(),
        token,
    };
    (edge, facade)
}

#[tokio::test]
async fn events_show_a_new_post_and_resume_after_last_event_id_without_gap_or_duplicate() {
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, http_port) = all_in_one_gateway(&database.url, Env::new()).await;
    let (edge, alice) = facade_as(grpc_port, http_port, "alice@example.com").await;

    let mut events = alice.stream(&[], None).await;
    let first = events.next().await;
    assert_eq!(first.name(), "checkpoint", "{first:?}");
    assert_eq!(first.json(), json!({"caught_up": true}));
    assert_eq!(first.retry, Some(3000), "how soon to reconnect");
    let before_any_post = first.id.clone().expect("every event has an id");

    let created = alice
        .send(
            reqwest::Method::POST,
            "/posts/",
            Some(json!({"title": "First", "content": "Hello."})),
        )
        .await;
    let first_id = created["id"].as_str().expect("an id").to_owned();
    let event = events.next_change().await;
    assert_eq!(event.name(), "created", "{event:?}");
    // The post as `GET /posts/{id}` shows it, but for its owner, which events
    // leave out; a new post has no likes.
    let mut shown = alice
        .send(reqwest::Method::GET, &format!("/posts/{first_id}"), None)
        .await;
    shown["Post"]["owner"] = Value::Null;
    assert_eq!(event.json()["Post"], shown["Post"], "{event:?}");
    assert_eq!(event.json()["votes"], 0, "{event:?}");
    let resume_from = event.id.clone().expect("an id");
    drop(events);

    // While nobody watches: another post, a like and a change.
    let second = alice
        .send(
            reqwest::Method::POST,
            "/posts/",
            Some(json!({"title": "Second", "content": "Again."})),
        )
        .await;
    let second_id = second["id"].as_str().expect("an id").to_owned();
    assert_eq!(like(&edge, &alice.token, &first_id).await, 1);
    alice
        .send(
            reqwest::Method::PATCH,
            &format!("/posts/{second_id}"),
            Some(json!({"title": "Second, retitled"})),
        )
        .await;
    // (A deletion here would take the post's history with it: the resumed
    // stream would hold only the deletion.)
    let missed = [
        ("created", json!(second_id)),
        (
            "like_count_changed",
            json!({"post_id": first_id, "like_count": 1}),
        ),
        ("updated", json!(second_id)),
    ];
    let named = |changes: &[SseEvent]| -> Vec<(String, Value)> {
        changes
            .iter()
            .map(|change| (change.name().to_owned(), change.subject()))
            .collect()
    };
    let missed: Vec<(String, Value)> = missed
        .into_iter()
        .map(|(name, subject)| (name.to_owned(), subject))
        .collect();

    // Resumed as `EventSource` reconnects: everything after the last event
    // received, in order, and nothing before it.
    let mut resumed = alice.stream(&[], Some(&resume_from)).await;
    let changes = resumed.changes_until_caught_up().await;
    assert_eq!(named(&changes), missed, "{changes:#?}");
    assert_eq!(
        changes[2].json()["Post"]["title"],
        "Second, retitled",
        "{changes:#?}"
    );
    assert_eq!(changes[2].json()["votes"], Value::Null, "{changes:#?}");
    let mut ids: Vec<&str> = changes.iter().filter_map(|c| c.id.as_deref()).collect();
    ids.push(&resume_from);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), changes.len() + 1, "every event has its own id");
    // And then live again, with nothing repeated.
    let third = alice
        .send(
            reqwest::Method::POST,
            "/posts/",
            Some(json!({"title": "Third", "content": "Live."})),
        )
        .await;
    let next = resumed.next_change().await;
    assert_eq!(
        (next.name(), next.subject()),
        ("created", third["id"].clone()),
        "{next:?}"
    );
    drop(resumed);

    // A first connection that has a cursor already gives it in the query; the
    // header, which a reconnection sends, takes precedence.
    let mut from_query = alice.stream(&[("cursor", &resume_from)], None).await;
    let changes = from_query.changes_until_caught_up().await;
    assert_eq!(named(&changes[..3]), missed, "{changes:#?}");
    let mut both = alice
        .stream(&[("cursor", &before_any_post)], Some(&resume_from))
        .await;
    let changes = both.changes_until_caught_up().await;
    assert_eq!(
        named(&changes[..3]),
        missed,
        "the header wins: {changes:#?}"
    );
    drop((from_query, both));

    assert!(gateway.terminate().await.success(), "the gateway stops");
    database.drop_now().await;
}

#[tokio::test]
async fn a_quiet_stream_is_kept_alive_and_ends_with_where_to_resume_when_the_gateway_stops() {
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, http_port) =
        all_in_one_gateway(&database.url, short_request_timeout()).await;
    let (_, alice) = facade_as(grpc_port, http_port, "alice@example.com").await;
    let mut events = alice
        .stream(&[("search", "nothing matches this")], None)
        .await;
    let first = events.next().await;
    let cursor = first.id.clone().expect("an id");

    // Nothing to send: a comment within 15 seconds keeps proxies from closing
    // the connection, long after the request timeout.
    let started = Instant::now();
    let kept_alive = events.next_block().await.expect("the stream goes on");
    assert!(kept_alive.is_comment(), "{kept_alive:?}");
    assert!(
        started.elapsed() < Duration::from_secs(17),
        "{:?}",
        started.elapsed()
    );

    // Stopping, the gateway ends the stream saying where to resume, rather
    // than holding its stop for the grace and then cutting the connection.
    let started = Instant::now();
    let (stopped, last) = tokio::join!(gateway.terminate(), events.next());
    assert!(stopped.success(), "the gateway stops cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopped without waiting out the grace: {:?}",
        started.elapsed()
    );
    assert_eq!(last.name(), "error", "{last:?}");
    // The gateway's facade and its embedded posts-service both end the stream
    // as the stop starts; either may say so first.
    let data = last.json();
    assert_eq!(
        (&data["reason"], &data["cursor"]),
        (&json!("STREAM_INTERRUPTED"), &json!(cursor)),
        "{data}"
    );
    assert!(
        data["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("shutting down")),
        "{data}"
    );
    assert_eq!(last.id.as_deref(), Some(cursor.as_str()), "{last:?}");
    assert!(events.next_block().await.is_none(), "the last event");
    database.drop_now().await;
}

#[tokio::test]
async fn a_bad_token_or_cursor_is_an_http_error_and_an_expired_cursor_is_gone() {
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, http_port) = all_in_one_gateway(&database.url, Env::new()).await;
    let (edge, alice) = facade_as(grpc_port, http_port, "alice@example.com").await;

    // No token, or not a token: 401 before any event, as every /posts route.
    for token in [None, Some("not-a-token")] {
        let mut request = alice.client.get(format!("{}/posts/stream", alice.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert!(body["detail"].is_string(), "{body}");
    }

    // What the service refuses is FastAPI's 422, naming where the value was.
    let long_search = "x".repeat(101);
    let cases: [(Pairs, Option<&str>, Value); 4] = [
        (
            &[("cursor", "not-a-cursor")],
            None,
            json!(["query", "cursor"]),
        ),
        (
            &[],
            Some("not-a-cursor"),
            json!(["header", "last-event-id"]),
        ),
        (
            &[("search", &long_search)],
            None,
            json!(["query", "search"]),
        ),
        (
            &[("owner_id", "nobody")],
            None,
            json!(["query", "owner_id"]),
        ),
    ];
    for (query, last_event_id, loc) in cases {
        let response = alice.open(query, last_event_id).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query:?} {last_event_id:?}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"][0]["loc"], loc, "{body}");
    }

    // A cursor from before the changes kept: 410 Gone, and OUT_OF_RANGE
    // CURSOR_EXPIRED over gRPC.
    let mut events = alice.stream(&[], None).await;
    let old = events.next().await.id.expect("an id");
    drop(events);
    alice
        .send(
            reqwest::Method::POST,
            "/posts/",
            Some(json!({"title": "After the cursor", "content": "Soon forgotten."})),
        )
        .await;
    purge_every_change(&database.url).await;
    for (query, last_event_id) in [
        (vec![], Some(old.as_str())),
        (vec![("cursor", old.as_str())], None),
    ] {
        let response = alice.open(&query, last_event_id).await;
        assert_eq!(response.status(), StatusCode::GONE, "{query:?}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains("older")),
            "{body}"
        );
    }
    let request = WatchPostsRequest {
        cursor: old.clone(),
        ..Default::default()
    };
    let refused = match PostServiceClient::new(edge.clone())
        .watch_posts(bearer(&alice.token, request))
        .await
    {
        Err(status) => status,
        Ok(stream) => stream
            .into_inner()
            .message()
            .await
            .expect_err("an expired cursor starts no stream"),
    };
    assert_reason(&refused, ErrorReason::CursorExpired, "an expired cursor");

    assert!(gateway.terminate().await.success(), "the gateway stops");
    database.drop_now().await;
}

/// Runs posts-service's purge with no retention until it has deleted the
/// changes made so far (one of another transaction still open would wait).
async fn purge_every_change(database_url: &str) {
    let mut conn = PgConnection::connect(database_url)
        .await
        .expect("the scratch database");
    let started = Instant::now();
    loop {
        let purged = posts_service::purge_post_events(&mut conn, Duration::ZERO)
            .await
            .expect("the purge runs");
        if purged > 0 {
            return;
        }
        assert!(started.elapsed() < WAIT, "nothing to purge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
