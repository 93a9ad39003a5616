//! Agora's benchmark. It starts the whole system in this process (auth-, posts-
//! and votes-service on loopback ports, the gateway in front of them) on a scratch
//! database, drives the main calls from many concurrent callers for a few seconds
//! each, and prints throughput, latency, and ratios measured in the same run: what
//! the gateway costs over calling a service directly, what the HTTP/JSON facade
//! costs over gRPC, and what a page of 100 posts costs over a page of 10.
//!
//! `cargo run --release -p bench` (see `--help`). Traffic stays on loopback and
//! every loop is bounded in time.

mod load;
mod system;

use std::time::Duration;

use agora_proto::{
    auth::v1::LoginRequest,
    posts::v1::{GetPostRequest, ListPostsRequest},
    votes::v1::{VoteDirection, VoteRequest},
};
use clap::Parser;
use load::{Report, measure};
use system::System;

/// Measures Agora's main calls and prints the figures.
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
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Concurrent callers in each scenario (logins use one per CPU core).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let system = System::start(&args.database_url, args.concurrency).await?;

    println!(
        "Agora benchmark: {} s per scenario, {} concurrent callers, {} CPU cores, {} build",
        args.seconds,
        args.concurrency,
        cores,
        if cfg!(debug_assertions) {
            "DEBUG (use --release for real figures)"
        } else {
            "release"
        }
    );
    let mut report = Report::default();
    let post_id = system.post_ids[0].clone();
    let post_uuid: uuid::Uuid = post_id.parse()?;

    let get_post = |client: tonic::transport::Channel| {
        let system = &system;
        let post_id = post_id.clone();
        move |worker: usize| {
            let mut posts =
                agora_proto::posts::v1::post_service_client::PostServiceClient::new(client.clone());
            let request = system.as_caller(
                worker,
                GetPostRequest {
                    id: post_id.clone(),
                },
            );
            async move {
                posts
                    .get_post(request)
                    .await
                    .map(drop)
                    .map_err(|status| status.to_string())
            }
        }
    };
    let direct = measure(
        "GetPost, direct to posts-service",
        args.concurrency,
        duration,
        get_post(system.posts_direct.clone()),
    )
    .await;
    let edge = measure(
        "GetPost, through the gateway",
        args.concurrency,
        duration,
        get_post(system.edge.clone()),
    )
    .await;
    let http = measure(
        "GET /posts/{id}, HTTP/JSON facade",
        args.concurrency,
        duration,
        |worker| {
            let request = system
                .http
                .get(format!("{}/posts/{post_id}", system.http_base))
                .bearer_auth(&system.tokens[worker]);
            async move {
                let response = request.send().await.map_err(|error| error.to_string())?;
                match response.status() {
                    reqwest::StatusCode::OK => response
                        .bytes()
                        .await
                        .map(drop)
                        .map_err(|error| error.to_string()),
                    status => Err(status.to_string()),
                }
            }
        },
    )
    .await;

    // The statements one GetPost runs (posts-service's read, auth-service's owner
    // look-up, votes-service's count), straight through a pool of the size every
    // service has: the ceiling a GetPost cannot pass.
    let sql_ceiling = measure(
        "GetPost's 3 SQL statements, through a pool",
        args.concurrency,
        duration,
        |_| {
            let pool = system.pool.clone();
            let (post, viewer) = (post_uuid, system.owner_id);
            async move {
                get_post_statements(&pool, post, viewer)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;

    let list = |page_size: i32| {
        let system = &system;
        move |worker: usize| {
            let mut posts = agora_proto::posts::v1::post_service_client::PostServiceClient::new(
                system.edge.clone(),
            );
            let request = system.as_caller(
                worker,
                ListPostsRequest {
                    page_size,
                    ..Default::default()
                },
            );
            async move {
                posts
                    .list_posts(request)
                    .await
                    .map(drop)
                    .map_err(|status| status.to_string())
            }
        }
    };
    let page_10 = measure(
        "ListPosts, 10 per page",
        args.concurrency,
        duration,
        list(10),
    )
    .await;
    let page_100 = measure(
        "ListPosts, 100 per page",
        args.concurrency,
        duration,
        list(100),
    )
    .await;

    let votes = measure(
        "Vote, like then unlike",
        args.concurrency,
        duration,
        |worker| {
            let mut votes = agora_proto::votes::v1::vote_service_client::VoteServiceClient::new(
                system.edge.clone(),
            );
            // Each caller likes a post of its own, so the two calls always succeed.
            let post_id = system.post_ids[worker].clone();
            let like = system.as_caller(
                worker,
                VoteRequest {
                    post_id: post_id.clone(),
                    direction: VoteDirection::Add.into(),
                },
            );
            let unlike = system.as_caller(
                worker,
                VoteRequest {
                    post_id,
                    direction: VoteDirection::Remove.into(),
                },
            );
            async move {
                votes
                    .vote(like)
                    .await
                    .map_err(|status| status.to_string())?;
                votes
                    .vote(unlike)
                    .await
                    .map(drop)
                    .map_err(|status| status.to_string())
            }
        },
    )
    .await;

    let logins = measure(
        "Login (argon2id, m=19 MiB, t=2)",
        cores,
        duration,
        |worker| {
            let mut auth = agora_proto::auth::v1::auth_service_client::AuthServiceClient::new(
                system.edge.clone(),
            );
            let request = LoginRequest {
                email: System::email(worker),
                password: system::PASSWORD.to_owned(),
            };
            async move {
                auth.login(request)
                    .await
                    .map(drop)
                    .map_err(|status| status.to_string())
            }
        },
    )
    .await;

    let all = [
        &sql_ceiling,
        &direct,
        &edge,
        &http,
        &page_10,
        &page_100,
        &votes,
        &logins,
    ];
    for stats in all {
        report.add(stats);
    }
    report.ratio(
        "GetPost through the gateway / its SQL through a pool",
        edge.per_second() / sql_ceiling.per_second(),
    );
    report.ratio(
        "gateway throughput / direct to posts-service",
        edge.per_second() / direct.per_second(),
    );
    report.ratio(
        "HTTP/JSON facade throughput / gRPC through the gateway",
        http.per_second() / edge.per_second(),
    );
    report.ratio(
        "ListPosts median latency, 100 per page / 10 per page",
        page_100.median_ms() / page_10.median_ms(),
    );
    report.ratio(
        "ListPosts rows per second, 100 per page / 10 per page",
        10.0 * page_100.per_second() / page_10.per_second(),
    );
    print!("{report}");

    system.stop().await;
    let failed: u64 = all.iter().map(|s| s.errors).sum();
    if failed > 0 {
        return Err(format!("{failed} calls failed; see the errors above").into());
    }
    Ok(())
}

/// What one GetPost asks of PostgreSQL, as the three services ask it.
async fn get_post_statements(
    pool: &sqlx::PgPool,
    post: uuid::Uuid,
    viewer: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    use sqlx::Row as _;
    let row = sqlx::query(
        "select id, owner_id, title, content, published, create_time, update_time, revision
           from posts.visible_posts($2) where id = $1",
    )
    .bind(post)
    .bind(viewer)
    .fetch_one(pool)
    .await?;
    let owner: uuid::Uuid = row.try_get("owner_id")?;
    sqlx::query("select id, email, create_time from auth.users where id = any($1)")
        .bind(vec![owner])
        .fetch_all(pool)
        .await?;
    sqlx::query(
        "select requested.id, count(votes.user_id), coalesce(bool_or(votes.user_id = $2), false)
           from unnest($1::uuid[]) as requested (id)
           left join votes.votes on votes.post_id = requested.id
          group by requested.id",
    )
    .bind(vec![post])
    .bind(viewer)
    .fetch_all(pool)
    .await?;
    Ok(())
}
