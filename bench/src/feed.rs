//! The live feed (`--feed`): many people watching `WatchPosts` while others
//! write. `--watchers` streams are opened through the gateway, shared over a
//! few HTTP/2 connections as real clients' would be; once every one has had
//! its first checkpoint, a few writers create posts and like and unlike at a
//! steady rate, and every change each watcher receives is timed from its
//! `event_time` (set by the database just before the write's commit) to its
//! arrival here, on the same machine's clock.
//!
//! Every watcher must receive every write's change exactly once: each one
//! counts what it received by kind and adds up a fingerprint of each change
//! (the post's id, and the new like count), compared with what the writers
//! were answered.
//!
//! A thousand streams in this one process are a client load of their own, so
//! the answers are not decoded as messages: [`WatchCodec`] reads from each
//! only its kind, its `event_time` and what the fingerprint needs, and skips
//! the rest without allocating. The benchmark's own CPU over the window is
//! printed beside the servers'.

use std::{
    error::Error,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agora_proto::{
    posts::v1::{
        CreatePostRequest, Post, WatchPostsRequest, post_service_client::PostServiceClient,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use hdrhistogram::Histogram;
use prost::{
    DecodeError, Message as _,
    bytes::Buf,
    encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field},
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};

use crate::{
    cpu::{self, CpuTime},
    processes::Servers,
    scenarios::{bearer, log_in_callers},
    seed::{self, USERS},
};

/// Streams opened on one HTTP/2 connection unless told otherwise: well under
/// the 256 a server accepts at once on one connection
/// (`MAX_CONCURRENT_STREAMS`), as a client multiplexing many views on a few
/// connections would.
pub const STREAMS_PER_CONNECTION: usize = 125;
/// What a server accepts at once on one connection by default.
const MAX_CONCURRENT_STREAMS: usize = 256;
/// The writers, each a seeded user of its own with a post of its own to like.
pub const WRITERS: usize = 4;
/// How long every stream has to receive its first checkpoint.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the last write every change has to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Once every expected change has arrived: how long to wait for duplicates.
const SETTLE: Duration = Duration::from_millis(300);
const WATCH_POSTS: &str = "/agora.posts.v1.PostService/WatchPosts";
const CONTENT: &str = "Written by the benchmark for its watchers.";

/// What is measured, as given on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub watchers: usize,
    /// HTTP/2 connections the watchers share; none for one per
    /// [`STREAMS_PER_CONNECTION`].
    pub connections: Option<usize>,
    /// Writes per second, all writers together.
    pub write_rate: u32,
    /// How long the writers write.
    pub window: Duration,
    pub split: bool,
}

/// What a run of the feed measured.
#[derive(Debug, Clone, Serialize)]
pub struct Feed {
    pub topology: &'static str,
    pub watchers: usize,
    pub connections: usize,
    /// Seconds from the first stream opened to the last first checkpoint.
    pub open_seconds: f64,
    pub writers: usize,
    pub write_rate_offered: u32,
    pub writes: u64,
    pub creates: u64,
    pub votes: u64,
    pub writes_failed: u64,
    pub writes_per_second: f64,
    /// Each write's latency, counted from when it was due.
    pub write_p50_ms: f64,
    pub write_p99_ms: f64,
    /// Changes received by all watchers together.
    pub delivered: u64,
    /// From the first write to the last change received.
    pub delivery_seconds: f64,
    pub delivered_per_second: f64,
    /// Commit to delivery: arrival here minus the change's `event_time`.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Changes whose `event_time` was after their arrival (clock steps): counted
    /// as 0 ms.
    pub early: u64,
    /// Watchers that received every write's change exactly once.
    pub watchers_complete: usize,
    /// Changes a watcher should have received and did not, all watchers.
    pub lost: u64,
    /// Changes a watcher received more often than written, all watchers.
    pub duplicated: u64,
    /// Watchers whose counts were right but whose changes were not those
    /// written (another post, another like count).
    pub wrong: usize,
    /// Changes of a kind no write made (`updated`, `deleted`), or without
    /// `event_time`.
    pub unexpected: u64,
    /// Streams that ended before the end, and the first error.
    pub streams_ended: usize,
    pub first_error: Option<String>,
    /// CPU seconds over the writes and the delivery, by the servers, by
    /// PostgreSQL and by this benchmark (the watchers and writers); Linux only.
    pub cpu_servers_seconds: Option<f64>,
    pub cpu_database_seconds: Option<f64>,
    pub cpu_bench_seconds: Option<f64>,
    /// The seconds those were counted over: from the first write until every
    /// change had arrived (or the wait for them ended), and 0.3 s more.
    pub cpu_over_seconds: f64,
}

impl Feed {
    /// Whether every watcher received every write's change exactly once, and
    /// nothing else.
    pub fn complete(&self) -> bool {
        self.watchers_complete == self.watchers
            && self.lost == 0
            && self.duplicated == 0
            && self.wrong == 0
            && self.unexpected == 0
            && self.streams_ended == 0
    }
}

/// Opens the watchers, waits for each one's first checkpoint, writes for the
/// window, and waits for the changes to arrive.
pub async fn run(servers: &Servers, settings: Settings) -> Result<Feed, Box<dyn Error>> {
    let watchers = settings.watchers;
    // One user per watcher while there are users; writers among them.
    let users = watchers.min(USERS as usize).max(WRITERS);
    eprintln!("feed: logging {users} users in");
    let (grpc, tokens) = log_in_callers(servers, users).await?;
    let connections = settings
        .connections
        .unwrap_or_else(|| watchers.div_ceil(STREAMS_PER_CONNECTION))
        .clamp(1, watchers);
    if watchers > connections * MAX_CONCURRENT_STREAMS {
        return Err(format!(
            "{watchers} streams on {connections} connections: more than the \
             {MAX_CONCURRENT_STREAMS} a server accepts at once on one"
        )
        .into());
    }
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(servers).await?);
    }

    eprintln!("feed: opening {watchers} streams on {connections} connections");
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    let opening = Instant::now();
    let handles: Vec<_> = (0..watchers)
        .map(|n| {
            tokio::spawn(watch(
                channels[n % connections].clone(),
                tokens[n % tokens.len()].clone(),
                progress.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let opened = wait_for_checkpoints(&progress, watchers).await;
    let open_seconds = opening.elapsed().as_secs_f64();
    if let Err(error) = opened {
        stop.cancel();
        let first = first_error(handles).await;
        return Err(format!("{error}; the first stream error: {first}").into());
    }

    eprintln!(
        "feed: {watchers} watchers checkpointed in {open_seconds:.2} s; writing at {}/s for {} s",
        settings.write_rate,
        settings.window.as_secs_f64()
    );
    let (cpu_before, bench_before) = (CpuTime::now(servers), cpu::of_this_process());
    let started = Instant::now();
    let writes = write(
        &grpc,
        &tokens[..WRITERS],
        settings.write_rate,
        settings.window,
    )
    .await;
    let writing = started.elapsed();

    // Every change to every watcher, then a moment more for duplicates.
    let expected = writes.succeeded() * watchers as u64;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while progress.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let (cpu_after, bench_after) = (CpuTime::now(servers), cpu::of_this_process());
    let cpu_seconds = started.elapsed().as_secs_f64();
    stop.cancel();

    let mut all = Vec::with_capacity(watchers);
    for handle in handles {
        all.push(
            handle
                .await
                .map_err(|error| format!("a watcher panicked: {error}"))?,
        );
    }
    // Per call of one: the CPU spent over the window, in ms.
    let cpu = cpu_before
        .zip(cpu_after)
        .and_then(|(before, after)| before.per_call(after, 1));
    let bench = bench_before
        .zip(bench_after)
        .map(|(before, after)| after.saturating_sub(before).as_secs_f64());
    Ok(tally(
        settings,
        connections,
        open_seconds,
        &writes,
        writing,
        started,
        &all,
        cpu.map(|cpu| (cpu.servers_ms / 1000.0, cpu.database_ms / 1000.0)),
        bench,
        cpu_seconds,
    ))
}

/// A connection of its own to the gateway.
pub async fn connect(servers: &Servers) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{}", servers.grpc))?
        .connect()
        .await
}

async fn wait_for_checkpoints(progress: &Progress, watchers: usize) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let (ready, ended) = (
            progress.checkpointed.load(Ordering::Relaxed),
            progress.ended.load(Ordering::Relaxed),
        );
        if ended > 0 {
            return Err(format!(
                "{ended} of {watchers} streams ended before their first checkpoint"
            ));
        }
        if ready >= watchers {
            return Ok(());
        }
        if started.elapsed() > OPEN_TIMEOUT {
            return Err(format!(
                "only {ready} of {watchers} streams had their first checkpoint after {} s",
                OPEN_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn first_error(handles: Vec<tokio::task::JoinHandle<Watched>>) -> String {
    for handle in handles {
        if let Ok(Watched {
            error: Some(error), ..
        }) = handle.await
        {
            return error;
        }
    }
    "none".to_owned()
}

/// What every watcher shares: how many have had their first checkpoint, how
/// many streams ended, and how many changes all have received.
#[derive(Debug, Default)]
pub struct Progress {
    pub checkpointed: AtomicUsize,
    pub ended: AtomicUsize,
    pub delivered: AtomicU64,
}

/// What one watcher received.
#[derive(Debug, Default)]
pub struct Watched {
    pub created: u64,
    pub like_counts: u64,
    /// Updates, deletions, unknown kinds, and changes without `event_time`.
    pub unexpected: u64,
    pub checkpoints: u64,
    /// The wrapping sum of the changes' fingerprints.
    pub fingerprints: u64,
    /// Commit to delivery of each change, µs.
    pub latencies_us: Vec<u32>,
    pub early: u64,
    pub last_received: Option<Instant>,
    /// Why the stream ended before it was stopped.
    pub error: Option<String>,
}

/// One watcher: WatchPosts from now, as `token`'s user, on `channel`, tallied
/// until `stop`. Its first checkpoint and its end, if it ends first, are told
/// to `progress`.
pub async fn watch(
    channel: Channel,
    token: String,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> Watched {
    let mut watched = Watched::default();
    let mut grpc = tonic::client::Grpc::new(channel);
    let opened = async {
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let request = bearer(&token, WatchPostsRequest::default());
        let path = PathAndQuery::from_static(WATCH_POSTS);
        grpc.server_streaming(request, path, WatchCodec).await
    };
    let mut stream = match stop.run_until_cancelled(opened).await {
        None => return watched,
        Some(Ok(response)) => response.into_inner(),
        Some(Err(status)) => {
            watched.error = Some(format!("opening: {status}"));
            progress.ended.fetch_add(1, Ordering::Relaxed);
            return watched;
        }
    };
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = stream.message() => message,
        };
        let received = match message {
            Ok(Some(received)) => received,
            Ok(None) => {
                watched.error = Some("the stream ended".to_owned());
                break;
            }
            Err(status) => {
                watched.error = Some(status.to_string());
                break;
            }
        };
        if watched.checkpoints == 0 && received.kind != Kind::Checkpoint {
            watched.error = Some("the first message was not a checkpoint".to_owned());
            break;
        }
        match received.kind {
            Kind::Checkpoint => {
                if watched.checkpoints == 0 {
                    progress.checkpointed.fetch_add(1, Ordering::Relaxed);
                }
                watched.checkpoints += 1;
                continue;
            }
            Kind::Created => watched.created += 1,
            Kind::LikeCount => watched.like_counts += 1,
            Kind::Other => watched.unexpected += 1,
        }
        progress.delivered.fetch_add(1, Ordering::Relaxed);
        watched.last_received = Some(Instant::now());
        watched.fingerprints = watched.fingerprints.wrapping_add(received.fingerprint);
        match received.event_time_us {
            Some(event_time) => {
                let latency = received.received_us - event_time;
                if latency < 0 {
                    watched.early += 1;
                }
                watched
                    .latencies_us
                    .push(latency.clamp(0, i64::from(u32::MAX)) as u32);
            }
            None => watched.unexpected += 1,
        }
    }
    if watched.error.is_some() {
        progress.ended.fetch_add(1, Ordering::Relaxed);
    }
    watched
}

/// What the writers did, all together.
#[derive(Debug)]
struct Writes {
    creates: u64,
    votes: u64,
    failed: u64,
    /// Each successful write's latency, µs, from when it was due (so that a
    /// writer falling behind its schedule shows).
    latencies_us: Histogram<u64>,
    /// The wrapping sum of the fingerprints of the changes the writes made.
    fingerprints: u64,
    first_error: Option<String>,
}

impl Default for Writes {
    fn default() -> Self {
        Self {
            creates: 0,
            votes: 0,
            failed: 0,
            latencies_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            fingerprints: 0,
            first_error: None,
        }
    }
}

impl Writes {
    fn succeeded(&self) -> u64 {
        self.creates + self.votes
    }

    fn add(&mut self, other: Writes) {
        self.creates += other.creates;
        self.votes += other.votes;
        self.failed += other.failed;
        self.latencies_us
            .add(&other.latencies_us)
            .expect("histograms of the same bounds add up");
        self.fingerprints = self.fingerprints.wrapping_add(other.fingerprints);
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// `rate` writes per second for `window`, by one writer per token, in turns:
/// write `k` of all is due at `k / rate` seconds. Each writer creates a post,
/// likes its own post, takes the like back, and again.
async fn write(grpc: &Channel, tokens: &[String], rate: u32, window: Duration) -> Writes {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = tokio::time::Instant::now();
    let writers: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(writer, token)| {
            let (grpc, token, count) = (grpc.clone(), token.clone(), tokens.len());
            tokio::spawn(async move {
                let mut posts = PostServiceClient::new(grpc.clone());
                let mut votes = VoteServiceClient::new(grpc);
                let post_id = seed::unliked_post(writer as u64).to_string();
                let mut writes = Writes::default();
                for k in 0.. {
                    let due = interval.mul_f64((writer + k * count) as f64);
                    if due >= window {
                        break;
                    }
                    let due = started + due;
                    tokio::time::sleep_until(due).await;
                    let outcome = match k % 3 {
                        0 => {
                            let request = CreatePostRequest {
                                post: Some(Post {
                                    title: format!("Feed post {writer}-{k}"),
                                    content: CONTENT.to_owned(),
                                    ..Default::default()
                                }),
                                request_id: String::new(),
                            };
                            posts
                                .create_post(bearer(&token, request))
                                .await
                                .map(|answer| {
                                    let id = answer.into_inner().post.unwrap_or_default().id;
                                    (true, fingerprint(Kind::Created, id.as_bytes(), 0))
                                })
                        }
                        turn => {
                            let direction = if turn == 1 {
                                VoteDirection::Add
                            } else {
                                VoteDirection::Remove
                            };
                            let request = VoteRequest {
                                post_id: post_id.clone(),
                                direction: direction.into(),
                            };
                            votes.vote(bearer(&token, request)).await.map(|answer| {
                                let count = answer.into_inner().like_count;
                                (
                                    false,
                                    fingerprint(Kind::LikeCount, post_id.as_bytes(), count),
                                )
                            })
                        }
                    };
                    match outcome {
                        Ok((created, print)) => {
                            writes
                                .latencies_us
                                .saturating_record(due.elapsed().as_micros() as u64);
                            if created {
                                writes.creates += 1;
                            } else {
                                writes.votes += 1;
                            }
                            writes.fingerprints = writes.fingerprints.wrapping_add(print);
                        }
                        Err(status) => {
                            writes.failed += 1;
                            writes.first_error.get_or_insert(status.to_string());
                        }
                    }
                }
                writes
            })
        })
        .collect();
    let mut total = Writes::default();
    for writer in writers {
        match writer.await {
            Ok(writes) => total.add(writes),
            Err(error) => {
                total.failed += 1;
                total
                    .first_error
                    .get_or_insert(format!("a writer panicked: {error}"));
            }
        }
    }
    if let Some(error) = &total.first_error {
        eprintln!(
            "feed: {} writes failed, the first with: {error}",
            total.failed
        );
    }
    total
}

/// Adds up the watchers against the writes.
#[allow(clippy::too_many_arguments)]
fn tally(
    settings: Settings,
    connections: usize,
    open_seconds: f64,
    writes: &Writes,
    writing: Duration,
    started: Instant,
    all: &[Watched],
    cpu: Option<(f64, f64)>,
    bench_cpu: Option<f64>,
    cpu_seconds: f64,
) -> Feed {
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut max_us, mut early, mut delivered, mut unexpected) = (0u32, 0, 0, 0);
    let (mut lost, mut duplicated, mut wrong, mut complete, mut ended) = (0, 0, 0, 0, 0);
    let mut first_error = None;
    let mut last = started;
    for watched in all {
        for &latency in &watched.latencies_us {
            latencies.saturating_record(u64::from(latency));
            max_us = max_us.max(latency);
        }
        early += watched.early;
        unexpected += watched.unexpected;
        delivered += watched.created + watched.like_counts + watched.unexpected;
        last = last.max(watched.last_received.unwrap_or(started));
        let counts_right = watched.created == writes.creates && watched.like_counts == writes.votes;
        for (got, written) in [
            (watched.created, writes.creates),
            (watched.like_counts, writes.votes),
        ] {
            lost += written.saturating_sub(got);
            duplicated += got.saturating_sub(written);
        }
        let right = counts_right && watched.fingerprints == writes.fingerprints;
        if counts_right && !right {
            wrong += 1;
        }
        if let Some(error) = &watched.error {
            ended += 1;
            first_error.get_or_insert_with(|| error.clone());
        }
        if right && watched.unexpected == 0 && watched.error.is_none() {
            complete += 1;
        }
    }
    let quantile_ms = |q| latencies.value_at_quantile(q) as f64 / 1000.0;
    let delivery_seconds = last.duration_since(started).as_secs_f64();
    Feed {
        topology: if settings.split {
            "split"
        } else {
            "all-in-one"
        },
        watchers: settings.watchers,
        connections,
        open_seconds,
        writers: WRITERS,
        write_rate_offered: settings.write_rate,
        writes: writes.succeeded() + writes.failed,
        creates: writes.creates,
        votes: writes.votes,
        writes_failed: writes.failed,
        writes_per_second: writes.succeeded() as f64 / writing.as_secs_f64(),
        write_p50_ms: writes.latencies_us.value_at_quantile(0.5) as f64 / 1000.0,
        write_p99_ms: writes.latencies_us.value_at_quantile(0.99) as f64 / 1000.0,
        delivered,
        delivery_seconds,
        delivered_per_second: delivered as f64 / delivery_seconds.max(f64::MIN_POSITIVE),
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        max_ms: f64::from(max_us) / 1000.0,
        early,
        watchers_complete: complete,
        lost,
        duplicated,
        wrong,
        unexpected,
        streams_ended: ended,
        first_error,
        cpu_servers_seconds: cpu.map(|(servers, _)| servers),
        cpu_database_seconds: cpu.map(|(_, database)| database),
        cpu_bench_seconds: bench_cpu,
        cpu_over_seconds: cpu_seconds,
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\nLive feed, WatchPosts through the {} gateway: {} watchers on {} HTTP/2 connections \
             ({} streams each at most), every one at its first checkpoint \
             {:.2} s after the first opened; {} writers offering {} writes/s (CreatePost, a like, \
             its removal, in turns)\n",
            self.topology,
            self.watchers,
            self.connections,
            self.watchers.div_ceil(self.connections),
            self.open_seconds,
            self.writers,
            self.write_rate_offered,
        )?;
        writeln!(
            f,
            "  writes       {:>8} ({:.1}/s): {} CreatePost, {} Vote; {} failed; p50 {:.2} ms, \
             p99 {:.2} ms from when each was due",
            self.writes,
            self.writes_per_second,
            self.creates,
            self.votes,
            self.writes_failed,
            self.write_p50_ms,
            self.write_p99_ms,
        )?;
        writeln!(
            f,
            "  delivered    {:>8} changes, {:.0}/s over {:.2} s (all watchers together, from \
             the first write to the last change received)",
            self.delivered, self.delivered_per_second, self.delivery_seconds
        )?;
        writeln!(
            f,
            "  commit to delivery (arrival − event_time): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms{}",
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            if self.early > 0 {
                format!(
                    " ({} arrived before their event_time: clock steps?)",
                    self.early
                )
            } else {
                String::new()
            }
        )?;
        if self.complete() {
            writeln!(
                f,
                "  every watcher received every write's change exactly once: yes ({} each)",
                self.creates + self.votes
            )?;
        } else {
            writeln!(
                f,
                "  every watcher received every write's change exactly once: NO: {} of {} \
                 watchers complete; {} changes lost, {} duplicated, {} watchers with other \
                 changes than written, {} unexpected changes, {} streams ended (the first: {})",
                self.watchers_complete,
                self.watchers,
                self.lost,
                self.duplicated,
                self.wrong,
                self.unexpected,
                self.streams_ended,
                self.first_error.as_deref().unwrap_or("none"),
            )?;
        }
        if self.writes_failed > 0 {
            writeln!(
                f,
                "  ({} writes failed: a failed write may have committed, so the check above is \
                 not conclusive)",
                self.writes_failed
            )?;
        }
        if let (Some(servers), Some(database), Some(bench)) = (
            self.cpu_servers_seconds,
            self.cpu_database_seconds,
            self.cpu_bench_seconds,
        ) {
            writeln!(
                f,
                "  CPU from the first write until all had arrived, {:.2} s on {} cores: servers \
                 {servers:.2} s, PostgreSQL {database:.2} s, this benchmark (watchers and \
                 writers) {bench:.2} s",
                self.cpu_over_seconds,
                std::thread::available_parallelism().map_or(1, usize::from),
            )?;
        }
        Ok(())
    }
}

/// The kind of a WatchPosts message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Checkpoint,
    Created,
    LikeCount,
    Other,
}

/// What the watchers need of a WatchPostsResponse.
#[derive(Debug)]
struct Received {
    kind: Kind,
    /// µs since the Unix epoch.
    event_time_us: Option<i64>,
    received_us: i64,
    fingerprint: u64,
}

/// WatchPosts' codec for the watchers: the request encoded as usual, the
/// answers read for their kind, `event_time` and fingerprint only.
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WatchPostsRequest;
    type Decode = Received;
    type Encoder = RequestEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = WatchPostsRequest;
    type Error = Status;

    fn encode(&mut self, item: WatchPostsRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = Received;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Received>, Status> {
        let received_us = now_us();
        read_response(src, received_us)
            .map(Some)
            .map_err(|error| Status::internal(format!("a WatchPostsResponse: {error}")))
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as i64)
}

/// WatchPostsResponse: `event_time` = 2 (Timestamp), `created` = 3 (Post, `id`
/// = 1), `updated` = 4, `deleted` = 5, `like_count_changed` = 6
/// (`post_id` = 1, `like_count` = 2), `checkpoint` = 7; the rest skipped.
fn read_response(buf: &mut impl Buf, received_us: i64) -> Result<Received, Malformed> {
    let mut received = Received {
        kind: Kind::Other,
        event_time_us: None,
        received_us,
        fingerprint: 0,
    };
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(buf)?;
        match (tag, wire_type) {
            (2, WireType::LengthDelimited) => {
                let (mut seconds, mut nanos) = (0i64, 0i64);
                read_fields(buf, |tag, wire_type, buf| match (tag, wire_type) {
                    (1, WireType::Varint) => {
                        seconds = decode_varint(buf)? as i64;
                        Ok(())
                    }
                    (2, WireType::Varint) => {
                        nanos = i64::from(decode_varint(buf)? as i32);
                        Ok(())
                    }
                    _ => Ok(skip_field(wire_type, tag, buf, DecodeContext::default())?),
                })?;
                received.event_time_us = Some(seconds * 1_000_000 + nanos / 1_000);
            }
            (3 | 6, WireType::LengthDelimited) => {
                let kind = if tag == 3 {
                    Kind::Created
                } else {
                    Kind::LikeCount
                };
                let (mut id, mut count) = (Fnv::new(), 0i64);
                read_fields(buf, |field, wire_type, buf| match (field, wire_type) {
                    (1, WireType::LengthDelimited) => {
                        let len = length(buf)?;
                        id.read(buf, len);
                        Ok(())
                    }
                    (2, WireType::Varint) if kind == Kind::LikeCount => {
                        count = decode_varint(buf)? as i64;
                        Ok(())
                    }
                    _ => Ok(skip_field(wire_type, field, buf, DecodeContext::default())?),
                })?;
                received.kind = kind;
                received.fingerprint = combine(kind, id.0, count);
            }
            (7, WireType::LengthDelimited) => {
                received.kind = Kind::Checkpoint;
                skip_field(wire_type, tag, buf, DecodeContext::default())?;
            }
            _ => skip_field(wire_type, tag, buf, DecodeContext::default())?,
        }
    }
    Ok(received)
}

/// The fields of a length-delimited message, each handed to `field`.
fn read_fields<B: Buf>(
    buf: &mut B,
    mut field: impl FnMut(u32, WireType, &mut B) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let len = length(buf)?;
    let end = buf.remaining() - len;
    while buf.remaining() > end {
        let (tag, wire_type) = decode_key(buf)?;
        field(tag, wire_type, buf)?;
    }
    if buf.remaining() != end {
        return Err(Malformed("a field ran past its message"));
    }
    Ok(())
}

/// Why an answer could not be read.
#[derive(Debug)]
struct Malformed(&'static str);

impl From<DecodeError> for Malformed {
    fn from(_: DecodeError) -> Self {
        Malformed("not protobuf")
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A length prefix, checked against what is left.
fn length(buf: &mut impl Buf) -> Result<usize, Malformed> {
    let len = decode_varint(buf)?;
    if len > buf.remaining() as u64 {
        return Err(Malformed("a length past the message's end"));
    }
    Ok(len as usize)
}

/// A change's fingerprint: its kind, its post's id (as sent) and, for a like
/// count, the new count.
fn fingerprint(kind: Kind, id: &[u8], count: i64) -> u64 {
    let mut hash = Fnv::new();
    hash.update(id);
    combine(kind, hash.0, count)
}

fn combine(kind: Kind, id: u64, count: i64) -> u64 {
    mix(id ^ mix(count as u64 ^ ((kind as u64) << 56)))
}

/// SplitMix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits: cheap, and fed straight from the receive buffer.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// The next `len` bytes of `buf`, which holds them.
    fn read(&mut self, buf: &mut impl Buf, mut len: usize) {
        while len > 0 {
            let chunk = buf.chunk();
            let n = chunk.len().min(len);
            self.update(&chunk[..n]);
            buf.advance(n);
            len -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_proto::posts::v1::{
        Checkpoint, LikeCountChanged, WatchPostsResponse, watch_posts_response::Event,
    };
    use prost::Message as _;

    use super::*;

    fn read(message: &WatchPostsResponse) -> Received {
        let bytes = message.encode_to_vec();
        read_response(&mut bytes.as_slice(), 0).expect("decodes")
    }

    #[test]
    fn reads_kind_time_and_fingerprint_as_the_writers_compute_it() {
        let time = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        let created = read(&WatchPostsResponse {
            cursor: "somewhere".to_owned(),
            event_time: Some(time),
            event: Some(Event::Created(Post {
                id: "0190-abc".to_owned(),
                title: "A title".to_owned(),
                content: "Some content".to_owned(),
                like_count: Some(0),
                ..Default::default()
            })),
        });
        assert_eq!(created.kind, Kind::Created);
        assert_eq!(created.event_time_us, Some(1_700_000_000_123_456));
        assert_eq!(
            created.fingerprint,
            fingerprint(Kind::Created, b"0190-abc", 0)
        );

        let liked = read(&WatchPostsResponse {
            cursor: "further".to_owned(),
            event_time: Some(time),
            event: Some(Event::LikeCountChanged(LikeCountChanged {
                post_id: "0190-abc".to_owned(),
                like_count: 11,
            })),
        });
        assert_eq!(liked.kind, Kind::LikeCount);
        assert_eq!(
            liked.fingerprint,
            fingerprint(Kind::LikeCount, b"0190-abc", 11)
        );
        assert_ne!(
            liked.fingerprint,
            fingerprint(Kind::LikeCount, b"0190-abc", 10)
        );

        let checkpoint = read(&WatchPostsResponse {
            cursor: "here".to_owned(),
            event_time: None,
            event: Some(Event::Checkpoint(Checkpoint { caught_up: true })),
        });
        assert_eq!(checkpoint.kind, Kind::Checkpoint);
        assert_eq!(checkpoint.event_time_us, None);
    }
}
