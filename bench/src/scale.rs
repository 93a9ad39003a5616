//! The benchmark at size (`--posts N`): the same calls on a small dataset (10,000
//! posts) and on one of N posts, each through the all-in-one gateway over gRPC,
//! and how much dearer each became. The datasets are seeded by a few set-based
//! statements (seconds for a million posts) and, with `--keep`, kept between
//! runs under a name that says their size.
//!
//! Both datasets hold 100,000 users (one password hash for all), 10% of posts as
//! drafts, 20% titled "Rust post …", ten "Zebra" posts spread over the whole
//! history, ten likes on each of the 10,000 newest posts after the first, and
//! one post, the newest, liked by all 100,000 users. A like storm (200 people
//! liking one post at once, then taking it back) checks that its count stays
//! exact.

use std::{error::Error, sync::Arc, time::Duration};

use agora_proto::{
    posts::v1::{
        CreatePostRequest, GetPostRequest, ListPostsRequest, Post,
        post_service_client::PostServiceClient,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use serde::Serialize;
use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};
use tonic::{Request, transport::Channel};
use uuid::Uuid;

use crate::{
    load::{CallError, Summary, closed_loop},
    processes::Servers,
    scenarios::{bearer, grpc_error, log_in_callers},
    seed,
};

/// The size every other is compared with.
pub const SMALL: u64 = 10_000;
const USERS: u64 = 100_000;
/// The seed's shape; a kept dataset of another version is seeded again.
const SEED_VERSION: i32 = 2;
const PAGE_SIZE: i32 = 10;
const STORM_LIKERS: usize = 200;
/// Posts seeded for the Vote call, one per caller at most.
const VOTE_TARGETS: u64 = 200;
/// The most a call may cost at size, as a multiple of its cost at [`SMALL`].
const RATIO_TARGET: f64 = 1.5;
/// The deepest page of the course's paging, at size: its median, for one caller.
const DEEP_SKIP_P50_TARGET_MS: f64 = 60.0;

/// What is measured at each size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ScaleCall {
    GetPost,
    GetHotPost,
    GetPostTenLikes,
    PageWithHotPost,
    PageTenLikes,
    FirstPage,
    PageByToken,
    Skip5000,
    SkipHalf,
    SearchCommon,
    SearchRare,
    SearchShortCommon,
    SearchShortRare,
    CreatePost,
    Vote,
}

impl ScaleCall {
    const ALL: [ScaleCall; 15] = [
        ScaleCall::GetPost,
        ScaleCall::GetHotPost,
        ScaleCall::GetPostTenLikes,
        ScaleCall::PageWithHotPost,
        ScaleCall::PageTenLikes,
        ScaleCall::FirstPage,
        ScaleCall::PageByToken,
        ScaleCall::Skip5000,
        ScaleCall::SkipHalf,
        ScaleCall::SearchCommon,
        ScaleCall::SearchRare,
        ScaleCall::SearchShortCommon,
        ScaleCall::SearchShortRare,
        ScaleCall::CreatePost,
        ScaleCall::Vote,
    ];

    fn name(self) -> &'static str {
        match self {
            ScaleCall::GetPost => "GetPost (random post)",
            ScaleCall::GetHotPost => "GetPost (100,000 likes)",
            ScaleCall::GetPostTenLikes => "GetPost (10 likes)",
            ScaleCall::PageWithHotPost => "a page with the 100,000-like post",
            ScaleCall::PageTenLikes => "a page of 10-like posts",
            ScaleCall::FirstPage => "first page",
            ScaleCall::PageByToken => "second page, by page token",
            ScaleCall::Skip5000 => "skip=5000",
            ScaleCall::SkipHalf => "skip=half the posts, 1 caller",
            ScaleCall::SearchCommon => "search \"rust\" (20% match)",
            ScaleCall::SearchRare => "search \"zebra\" (10 match)",
            ScaleCall::SearchShortCommon => "search \"ru\" (2 chars, 20%)",
            ScaleCall::SearchShortRare => "search \"7z\" (2 chars, none)",
            ScaleCall::CreatePost => "CreatePost",
            ScaleCall::Vote => "Vote (like + unlike)",
        }
    }

    /// What the call at size is held to, if anything.
    fn target(self) -> Target {
        match self {
            ScaleCall::SkipHalf => Target::P50Ms(DEEP_SKIP_P50_TARGET_MS),
            // A short search the trigram index cannot serve, matching nothing,
            // reads every title: it only has to stay usable.
            ScaleCall::SearchShortRare => Target::None,
            _ => Target::Ratio(RATIO_TARGET),
        }
    }

    /// One caller for the deepest page, as the target says; the rest with all.
    fn callers(self, concurrency: usize) -> usize {
        if self == ScaleCall::SkipHalf {
            1
        } else {
            concurrency
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
enum Target {
    Ratio(f64),
    P50Ms(f64),
    None,
}

/// One dataset, seeded or found.
struct Dataset {
    posts: u64,
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl Dataset {
    /// The dataset of `posts` posts on the server of `admin_url`: kept from an
    /// earlier run if `keep` and its seed is this version's, else made anew.
    async fn open(admin_url: &str, posts: u64, keep: bool) -> Result<Self, Box<dyn Error>> {
        let admin: PgConnectOptions = admin_url.parse()?;
        let name = if keep {
            format!("agora_bench_scale_{posts}")
        } else {
            format!("agora_bench_scale_{posts}_{}", Uuid::now_v7().simple())
        };
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&name);
        let dataset = Self {
            posts,
            admin,
            name,
            url: url.to_string(),
        };
        if keep && dataset.is_seeded().await {
            println!("reusing {} ({posts} posts)", dataset.name);
            return Ok(dataset);
        }
        dataset.drop().await;
        let started = std::time::Instant::now();
        // Created and migrated as the services do it.
        let pool =
            service_kit::database::connect(&service_kit::DatabaseArgs::new(dataset.url.as_str()))
                .await?;
        pool.close().await;
        dataset.seed().await?;
        println!(
            "seeded {} ({posts} posts) in {:.1} s",
            dataset.name,
            started.elapsed().as_secs_f64()
        );
        Ok(dataset)
    }

    async fn is_seeded(&self) -> bool {
        let Ok(mut conn) = PgConnection::connect(&self.url).await else {
            return false;
        };
        sqlx::query_scalar::<_, i32>("select version from public.bench_seed")
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten()
            == Some(SEED_VERSION)
    }

    async fn seed(&self) -> Result<(), Box<dyn Error>> {
        let mut conn = PgConnection::connect(&self.url).await?;
        seed::insert_users(&mut conn, USERS).await?;
        let (users, posts) = (USERS as i64, self.posts as i64);
        // A seed is history, not news: WatchPosts' outboxes do not record it.
        sqlx::raw_sql(
            "alter table posts.posts disable trigger posts_record_events;
             alter table votes.like_counts disable trigger votes_record_like_count_events;",
        )
        .execute(&mut conn)
        .await?;
        // Post n is n seconds old, by user 1000 + n % 1000 (the benchmark's
        // callers, users 0 to 199, own none); every tenth (n % 10 = 3) a draft;
        // the ten "Zebra" posts spread evenly over the whole history.
        sqlx::query(
            "insert into posts.posts (id, owner_id, title, content, published,
                                      create_time, update_time)
             select ('00000001-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                    ('00000000-0000-4000-8000-' || lpad(to_hex(1000 + n % 1000), 12, '0'))::uuid,
                    case when n % ($1 / 10) = $1 / 20 then 'Zebra crossing ' || n
                         when n % 5 = 0 then 'Rust post ' || n
                         else 'Post ' || n end,
                    repeat('Some words. ', 40), n % 10 <> 3,
                    now() - make_interval(secs => n), now() - make_interval(secs => n)
               from generate_series(0, $1 - 1) as n",
        )
        .bind(posts)
        .execute(&mut conn)
        .await?;
        // Behind all of them, one post for each caller to like and unlike, so
        // that no post the benchmark needs sits among the newest.
        sqlx::query(
            "insert into posts.posts (id, owner_id, title, content, create_time, update_time)
             select ('00000001-0000-4000-8000-' || lpad(to_hex($1 + c), 12, '0'))::uuid,
                    ('00000000-0000-4000-8000-' || lpad(to_hex(1000 + c), 12, '0'))::uuid,
                    'Vote target ' || c, 'Liked and unliked by the benchmark.',
                    now() - make_interval(secs => $1 + c), now() - make_interval(secs => $1 + c)
               from generate_series(0, $2 - 1) as c",
        )
        .bind(posts)
        .bind(VOTE_TARGETS as i64)
        .execute(&mut conn)
        .await?;
        // The likes, with their counts made in one pass rather than by the
        // trigger, like by like.
        sqlx::raw_sql("alter table votes.votes disable trigger votes_count_likes")
            .execute(&mut conn)
            .await?;
        sqlx::query(
            "insert into votes.votes (post_id, user_id)
             select '00000001-0000-4000-8000-000000000000'::uuid,
                    ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid
               from generate_series(0, $1 - 1) as u
             union all
             select ('00000001-0000-4000-8000-' || lpad(to_hex(p), 12, '0'))::uuid,
                    ('00000000-0000-4000-8000-' || lpad(to_hex((p + 100 * k) % 1000), 12, '0'))::uuid
               from generate_series(1, least($2, 10000) - 1) as p, generate_series(0, 9) as k
              where p % 10 <> 3",
        )
        .bind(users)
        .bind(posts)
        .execute(&mut conn)
        .await?;
        sqlx::raw_sql(
            "insert into votes.like_counts (post_id, like_count)
             select post_id, count(*) from votes.votes group by post_id;
             alter table votes.votes enable trigger votes_count_likes;
             alter table posts.posts enable trigger posts_record_events;
             alter table votes.like_counts enable trigger votes_record_like_count_events;
             create table public.bench_seed (version integer not null);",
        )
        .execute(&mut conn)
        .await?;
        sqlx::query("insert into public.bench_seed (version) values ($1)")
            .bind(SEED_VERSION)
            .execute(&mut conn)
            .await?;
        // Statistics, and the visibility map that index-only scans need.
        sqlx::raw_sql("vacuum analyze").execute(&mut conn).await?;
        Ok(())
    }

    async fn drop(&self) {
        seed::drop_database(&self.admin, &self.name).await;
    }
}

/// Post `n` of a dataset.
fn post_id(n: u64) -> Uuid {
    Uuid::from_u128(0x0000_0001_0000_4000_8000_0000_0000_0000 | u128::from(n))
}

/// Posts the benchmark writes are titled so, and removed before each size is
/// measured, so that a kept dataset stays as seeded.
const BENCH_TITLE_PREFIX: &str = "Bench: ";

fn bench_post(what: &str) -> Post {
    Post {
        title: format!("{BENCH_TITLE_PREFIX}{what}"),
        content: "Written by the benchmark.".to_owned(),
        ..Default::default()
    }
}

/// gRPC through the gateway, as seeded users `0..callers`.
struct ScaleClient {
    grpc: Channel,
    tokens: Vec<String>,
    posts: u64,
    /// The second page's token, as the first page gave it.
    second_page: String,
}

impl ScaleClient {
    async fn log_in(servers: &Servers, callers: usize, posts: u64) -> Result<Self, Box<dyn Error>> {
        let (grpc, tokens) = log_in_callers(servers, callers).await?;
        let mut client = Self {
            grpc,
            tokens,
            posts,
            second_page: String::new(),
        };
        let first = PostServiceClient::new(client.grpc.clone())
            .list_posts(client.as_caller(0, list(0, "", String::new())))
            .await?;
        client.second_page = first.into_inner().next_page_token;
        Ok(client)
    }

    /// A new post of `caller`'s; its id.
    async fn create(&self, caller: usize, what: &str) -> Result<String, tonic::Status> {
        let request = CreatePostRequest {
            post: Some(bench_post(what)),
            request_id: String::new(),
        };
        let created = PostServiceClient::new(self.grpc.clone())
            .create_post(self.as_caller(caller, request))
            .await?;
        Ok(created
            .into_inner()
            .post
            .map(|post| post.id)
            .unwrap_or_default())
    }

    /// The first page of seeded user `owner`'s posts.
    async fn owners_page(&self, caller: usize, owner: u64) -> Result<(), tonic::Status> {
        let request = ListPostsRequest {
            page_size: PAGE_SIZE,
            owner_id: Uuid::from_u128(
                0x0000_0000_0000_4000_8000_0000_0000_0000 | u128::from(owner),
            )
            .to_string(),
            ..Default::default()
        };
        let page = PostServiceClient::new(self.grpc.clone())
            .list_posts(self.as_caller(caller, request))
            .await?;
        match page.into_inner().posts.len() {
            0 => Err(tonic::Status::internal(format!(
                "user {owner} has no posts"
            ))),
            _ => Ok(()),
        }
    }

    fn as_caller<T>(&self, caller: usize, message: T) -> Request<T> {
        bearer(&self.tokens[caller % self.tokens.len()], message)
    }

    async fn call(self: Arc<Self>, call: ScaleCall, caller: usize) -> Result<(), CallError> {
        let mut posts = PostServiceClient::new(self.grpc.clone());
        let get = |n: u64| GetPostRequest {
            id: post_id(n).to_string(),
        };
        let outcome = match call {
            ScaleCall::GetPost => {
                let n = spread(caller, self.posts);
                // Drafts (n % 10 = 3) are their owners' alone.
                let n = if n % 10 == 3 { n + 1 } else { n };
                posts
                    .get_post(self.as_caller(caller, get(n)))
                    .await
                    .map(drop)
            }
            ScaleCall::GetHotPost => posts
                .get_post(self.as_caller(caller, get(0)))
                .await
                .map(drop),
            ScaleCall::GetPostTenLikes => posts
                .get_post(self.as_caller(caller, get(1)))
                .await
                .map(drop),
            // The owners of posts 0 (the hot one) and 1.
            ScaleCall::PageWithHotPost => self.owners_page(caller, 1000).await,
            ScaleCall::PageTenLikes => self.owners_page(caller, 1001).await,
            ScaleCall::FirstPage => self.list(caller, 0, "", String::new()).await,
            ScaleCall::PageByToken => self.list(caller, 0, "", self.second_page.clone()).await,
            ScaleCall::Skip5000 => self.list(caller, 5_000, "", String::new()).await,
            ScaleCall::SkipHalf => {
                let half = (self.posts / 2) as i32;
                self.list(caller, half, "", String::new()).await
            }
            ScaleCall::SearchCommon => self.list(caller, 0, "rust", String::new()).await,
            ScaleCall::SearchRare => self.list(caller, 0, "zebra", String::new()).await,
            ScaleCall::SearchShortCommon => self.list(caller, 0, "ru", String::new()).await,
            ScaleCall::SearchShortRare => self.list(caller, 0, "7z", String::new()).await,
            ScaleCall::CreatePost => {
                let request = CreatePostRequest {
                    post: Some(bench_post("new post")),
                    request_id: String::new(),
                };
                posts
                    .create_post(self.as_caller(caller, request))
                    .await
                    .map(drop)
            }
            ScaleCall::Vote => {
                // A seeded post no one likes, one per caller.
                let post = post_id(self.posts + caller as u64 % VOTE_TARGETS).to_string();
                let mut votes = VoteServiceClient::new(self.grpc.clone());
                let mut outcome = Ok(());
                for direction in [VoteDirection::Add, VoteDirection::Remove] {
                    let request = VoteRequest {
                        post_id: post.clone(),
                        direction: direction.into(),
                    };
                    outcome = votes.vote(self.as_caller(caller, request)).await.map(drop);
                    if outcome.is_err() {
                        break;
                    }
                }
                outcome
            }
        };
        outcome.map_err(grpc_error)
    }

    async fn list(
        &self,
        caller: usize,
        skip: i32,
        search: &str,
        page_token: String,
    ) -> Result<(), tonic::Status> {
        let request = list(skip, search, page_token);
        let page = PostServiceClient::new(self.grpc.clone())
            .list_posts(self.as_caller(caller, request))
            .await?
            .into_inner();
        // A search that must find nothing, or a page past the end, is empty;
        // any other is full, or the figure would measure less work.
        let empty_expected = search == "7z";
        if page.posts.is_empty() != empty_expected {
            return Err(tonic::Status::internal(format!(
                "skip {skip}, search {search:?}: {} posts",
                page.posts.len()
            )));
        }
        Ok(())
    }
}

fn list(skip: i32, search: &str, page_token: String) -> ListPostsRequest {
    ListPostsRequest {
        page_size: PAGE_SIZE,
        page_token,
        skip,
        search: search.to_owned(),
        ..Default::default()
    }
}

/// A post number below `bound`, different for each call (a multiplicative hash
/// of a counter shared by the callers).
fn spread(caller: usize, bound: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed) ^ caller as u64;
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % bound
}

/// What one size measured.
#[derive(Debug, Serialize)]
pub struct SizeResults {
    pub posts: u64,
    pub calls: Vec<(ScaleCall, Summary)>,
    pub storm: StormOutcome,
}

/// The like storm: `STORM_LIKERS` people like one post at once, then take it
/// back at once; the kept count must equal the rows each time.
#[derive(Debug, Serialize)]
pub struct StormOutcome {
    pub likes_answered: usize,
    pub count_after_likes: i64,
    pub rows_after_likes: i64,
    pub count_after_unlikes: i64,
    pub exact: bool,
}

/// Measures every call at [`SMALL`] and at `posts`; the results and the number
/// of failed calls.
pub async fn run(
    admin_url: &str,
    posts: u64,
    keep: bool,
    concurrency: usize,
    duration: Duration,
    verbose: bool,
) -> Result<(Vec<SizeResults>, u64), Box<dyn Error>> {
    let mut results = Vec::new();
    for size in [SMALL, posts] {
        let dataset = Dataset::open(admin_url, size, keep).await?;
        let measured = measure_size(&dataset, concurrency, duration, verbose).await;
        if keep {
            remove_bench_posts(&dataset.url).await?;
        } else {
            dataset.drop().await;
        }
        results.push(measured?);
    }
    let failed = results
        .iter()
        .flat_map(|size| &size.calls)
        .map(|(_, summary)| summary.failed)
        .sum();
    Ok((results, failed))
}

async fn measure_size(
    dataset: &Dataset,
    concurrency: usize,
    duration: Duration,
    verbose: bool,
) -> Result<SizeResults, Box<dyn Error>> {
    remove_bench_posts(&dataset.url).await?;
    let servers = Servers::start(false, &dataset.url, verbose).await?;
    let callers = concurrency.max(STORM_LIKERS);
    let client = Arc::new(ScaleClient::log_in(&servers, callers, dataset.posts).await?);
    let mut calls = Vec::new();
    for call in ScaleCall::ALL {
        // Warm: caches, connections, plans.
        for caller in 0..3 {
            client
                .clone()
                .call(call, caller)
                .await
                .map_err(|error| format!("warm-up {}: {error:?}", call.name()))?;
        }
        let what = format!("{} at {} posts", call.name(), dataset.posts);
        let client = client.clone();
        let summary = closed_loop(&what, call.callers(concurrency), duration, move |caller| {
            client.clone().call(call, caller)
        })
        .await;
        calls.push((call, summary));
    }
    let storm = like_storm(&client, dataset).await?;
    Ok(SizeResults {
        posts: dataset.posts,
        calls,
        storm,
    })
}

/// Removes what the benchmark wrote into a kept dataset, before and after each
/// run, so that it stays as seeded (and vacuumed: index-only scans need the
/// visibility map).
async fn remove_bench_posts(url: &str) -> Result<(), Box<dyn Error>> {
    let mut conn = PgConnection::connect(url).await?;
    let removed = sqlx::query("delete from posts.posts where title like $1 || '%'")
        .bind(BENCH_TITLE_PREFIX)
        .execute(&mut conn)
        .await?
        .rows_affected();
    if removed > 0 {
        sqlx::raw_sql("vacuum analyze posts.posts, votes.votes, votes.like_counts")
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

async fn like_storm(
    client: &ScaleClient,
    dataset: &Dataset,
) -> Result<StormOutcome, Box<dyn Error>> {
    let post: Uuid = client.create(0, "like storm").await?.parse()?;
    let vote = |caller: usize, direction: VoteDirection| {
        let mut votes = VoteServiceClient::new(client.grpc.clone());
        let request = client.as_caller(
            caller,
            VoteRequest {
                post_id: post.to_string(),
                direction: direction.into(),
            },
        );
        async move { votes.vote(request).await }
    };
    let mut conn = PgConnection::connect(&dataset.url).await?;
    let liked =
        futures::future::join_all((0..STORM_LIKERS).map(|caller| vote(caller, VoteDirection::Add)))
            .await;
    let likes_answered = liked.iter().filter(|outcome| outcome.is_ok()).count();
    let (count_after_likes, rows_after_likes) = kept_and_stored_likes(&mut conn, post).await?;
    futures::future::join_all((0..STORM_LIKERS).map(|caller| vote(caller, VoteDirection::Remove)))
        .await;
    let (count_after_unlikes, rows_after_unlikes) = kept_and_stored_likes(&mut conn, post).await?;
    Ok(StormOutcome {
        likes_answered,
        count_after_likes,
        rows_after_likes,
        count_after_unlikes,
        exact: likes_answered == STORM_LIKERS
            && count_after_likes == STORM_LIKERS as i64
            && rows_after_likes == count_after_likes
            && count_after_unlikes == 0
            && rows_after_unlikes == 0,
    })
}

/// A post's kept like count, and its rows of likes.
async fn kept_and_stored_likes(
    conn: &mut PgConnection,
    post: Uuid,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "select coalesce((select like_count from votes.like_counts where post_id = $1), 0),
                (select count(*) from votes.votes where post_id = $1)",
    )
    .bind(post)
    .fetch_one(conn)
    .await
}

/// The figures side by side, each call's cost ratio and its verdict.
pub fn report(results: &[SizeResults]) -> String {
    use std::fmt::Write as _;
    let [small, large] = results else {
        return String::from("(no results)\n");
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nAt size: {} posts against {} (gRPC through the all-in-one gateway)\n",
        large.posts, small.posts
    );
    let _ = writeln!(
        out,
        "| call | calls/s at {} | p50 ms | calls/s at {} | p50 ms | cost ratio | target | |",
        small.posts, large.posts
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|---|");
    for ((call, before), (_, after)) in small.calls.iter().zip(&large.calls) {
        let ratio = before.per_second / after.per_second.max(f64::MIN_POSITIVE);
        let (target, met) = match call.target() {
            Target::Ratio(most) => (format!("≤ {most}x"), ratio <= most),
            Target::P50Ms(most) => (format!("p50 ≤ {most} ms"), after.p50_ms <= most),
            Target::None => ("usable".to_owned(), after.failed == 0),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.0} | {:.2} | {ratio:.2}x | {target} | {} |",
            call.name(),
            before.per_second,
            before.p50_ms,
            after.per_second,
            after.p50_ms,
            if met { "ok" } else { "MISSED" }
        );
    }
    // The hot post against a post with ten likes, at size.
    let rate = |call: ScaleCall| {
        large
            .calls
            .iter()
            .find(|(measured, _)| *measured == call)
            .map_or(f64::NAN, |(_, summary)| summary.per_second)
    };
    let _ = writeln!(
        out,
        "\nAt {} posts, one call against another:\n",
        large.posts
    );
    let _ = writeln!(out, "| call | against | cost ratio | target | |");
    let _ = writeln!(out, "|---|---|---:|---|---|");
    for (call, baseline) in [
        (ScaleCall::GetHotPost, ScaleCall::GetPostTenLikes),
        (ScaleCall::PageWithHotPost, ScaleCall::PageTenLikes),
        (ScaleCall::SearchCommon, ScaleCall::FirstPage),
        (ScaleCall::SearchRare, ScaleCall::FirstPage),
    ] {
        let ratio = rate(baseline) / rate(call);
        let _ = writeln!(
            out,
            "| {} | {} | {ratio:.2}x | ≤ {RATIO_TARGET}x | {} |",
            call.name(),
            baseline.name(),
            if ratio <= RATIO_TARGET {
                "ok"
            } else {
                "MISSED"
            }
        );
    }
    for size in [small, large] {
        let storm = &size.storm;
        let _ = writeln!(
            out,
            "\nLike storm at {} posts: {STORM_LIKERS} likers at once, {} answered; \
             kept count {} for {} rows, then {} after the unlikes: {}",
            size.posts,
            storm.likes_answered,
            storm.count_after_likes,
            storm.rows_after_likes,
            storm.count_after_unlikes,
            if storm.exact { "exact" } else { "NOT EXACT" }
        );
    }
    out
}
