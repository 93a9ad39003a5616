//! Per-person quotas: past its quota, a person's CreatePost, Vote or search is
//! refused with RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, naming the quota and
//! saying when to try again, before any SQL runs; other people keep theirs.
//! Quotas here are small, so that tests use them up in a few calls.

use std::time::Duration;

use agora_proto::{errors::ErrorReason, posts::v1::ListPostsRequest, votes::v1::VoteDirection};
use gateway::embedded::Quotas;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use system_tests::{
    Addresses, Person, System, assert_bad_request, assert_reason, spawn_system_with,
    telemetry::{Cost, cost_of},
};
use tonic::Status;
use tonic_types::StatusExt;

const POSTS: u32 = 3;
const SEARCHES: u32 = 2;
const VOTES: u32 = 3;

/// The services with quotas of [`POSTS`] posts, [`SEARCHES`] searches and
/// [`VOTES`] votes a minute.
async fn spawn_with_small_quotas(pool: PgPool) -> System {
    let quotas = Quotas {
        posts: posts_service::QuotaSettings {
            posts_per_minute: POSTS,
            searches_per_minute: SEARCHES,
        },
        votes: votes_service::QuotaSettings {
            votes_per_minute: VOTES,
        },
    };
    spawn_system_with(pool, Addresses::ephemeral(), quotas).await
}

/// Asserts QUOTA_EXCEEDED for the quota `name` of `per_minute` calls, whose
/// `RetryInfo` is one call's worth of the minute at most, and more than nothing.
fn assert_quota_exceeded(status: &Status, name: &str, per_minute: u32, case: &str) {
    assert_reason(status, ErrorReason::QuotaExceeded, case);
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(
        info.metadata.get("quota").map(String::as_str),
        Some(name),
        "{case}: the quota named"
    );
    let wait = status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .unwrap_or_else(|| panic!("{case}: a RetryInfo with a delay"));
    let one_call = Duration::from_secs(60) / per_minute;
    assert!(
        wait > Duration::ZERO && wait <= one_call,
        "{case}: a wait of {wait:?}, at most {one_call:?}"
    );
}

/// Asserts that `cost` is one call, which ran no SQL.
fn assert_one_call_without_sql(cost: &Cost, case: &str) {
    assert_eq!(
        cost.rpcs.values().sum::<usize>(),
        1,
        "{case}: one call seen: {cost:?}"
    );
    assert_eq!(cost.statements, 0, "{case}: no SQL: {cost:?}");
}

async fn stored_posts(system: &System, owner: &Person) -> i64 {
    sqlx::query_scalar("select count(*) from posts.posts where owner_id = $1::uuid")
        .bind(&owner.id)
        .fetch_one(&system.pool)
        .await
        .expect("count posts")
}

fn search(text: &str) -> ListPostsRequest {
    ListPostsRequest {
        search: text.to_owned(),
        ..Default::default()
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_create_post_past_the_quota_is_refused_before_any_sql_and_others_keep_theirs(
    pool: PgPool,
) {
    let system = spawn_with_small_quotas(pool).await;
    let (alice, bob) = (
        system.sign_up("alice@example.com").await,
        system.sign_up("bob@example.com").await,
    );
    for n in 0..POSTS {
        system
            .create_post(&alice, &format!("post {n}"), "within the quota", None)
            .await
            .unwrap_or_else(|status| panic!("post {n} is within the quota: {status:?}"));
    }

    let (refused, cost) =
        cost_of(system.create_post(&alice, "One too many", "past the quota", None)).await;

    let status = refused.expect_err("the post past the quota is refused");
    assert_quota_exceeded(&status, "create_post", POSTS, "CreatePost past the quota");
    assert_one_call_without_sql(&cost, "a refused call");
    assert_eq!(
        stored_posts(&system, &alice).await,
        i64::from(POSTS),
        "nothing written"
    );
    system
        .create_post(&bob, "Bob's own", "another person's quota", None)
        .await
        .expect("bob has his own quota");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_create_post_with_bad_fields_is_answered_as_such_and_costs_no_quota(pool: PgPool) {
    let system = spawn_with_small_quotas(pool).await;
    let alice = system.sign_up("alice@example.com").await;

    for n in 0..POSTS + 2 {
        let status = system
            .create_post(&alice, "", "no title", None)
            .await
            .expect_err("a post without a title");
        assert_bad_request(&status, &["post.title"], &format!("bad post {n}"));
    }

    for n in 0..POSTS {
        system
            .create_post(
                &alice,
                &format!("post {n}"),
                "the whole quota is left",
                None,
            )
            .await
            .unwrap_or_else(|status| panic!("post {n} is within the quota: {status:?}"));
    }
    let status = system
        .create_post(&alice, "", "no title", None)
        .await
        .expect_err("a post without a title, past the quota");
    assert_bad_request(&status, &["post.title"], "bad fields come first");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn likes_and_likes_taken_back_share_one_quota_per_person(pool: PgPool) {
    let system = spawn_with_small_quotas(pool).await;
    let (alice, bob, carol) = (
        system.sign_up("alice@example.com").await,
        system.sign_up("bob@example.com").await,
        system.sign_up("carol@example.com").await,
    );
    let post = system
        .create_post(&alice, "Hello", "to like", None)
        .await
        .unwrap();
    let directions = [
        VoteDirection::Add,
        VoteDirection::Remove,
        VoteDirection::Add,
    ];
    assert_eq!(directions.len(), VOTES as usize);
    for (n, direction) in directions.into_iter().enumerate() {
        system
            .vote(&bob, &post.id, direction)
            .await
            .unwrap_or_else(|status| panic!("vote {n} is within the quota: {status:?}"));
    }

    let (refused, cost) = cost_of(system.vote(&bob, &post.id, VoteDirection::Remove)).await;

    let status = refused.expect_err("the vote past the quota is refused");
    assert_quota_exceeded(&status, "vote", VOTES, "taking a like back past the quota");
    assert_one_call_without_sql(&cost, "a refused call");
    assert_eq!(
        system.stored_likes(&post.id).await,
        1,
        "bob's like stays, as nothing was done"
    );
    assert_eq!(
        system
            .vote(&carol, &post.id, VoteDirection::Add)
            .await
            .expect("carol has her own quota"),
        2
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn searches_past_the_quota_are_refused_and_lists_without_a_search_are_free(pool: PgPool) {
    let system = spawn_with_small_quotas(pool).await;
    let (alice, bob) = (
        system.sign_up("alice@example.com").await,
        system.sign_up("bob@example.com").await,
    );
    system
        .create_post(&alice, "Rust at scale", "findable", None)
        .await
        .unwrap();
    for n in 0..SEARCHES {
        let page = system
            .list_posts(&alice, search("rust"))
            .await
            .unwrap_or_else(|status| panic!("search {n} is within the quota: {status:?}"));
        assert_eq!(page.posts.len(), 1, "search {n} finds the post");
    }
    let by_owner = ListPostsRequest {
        owner_id: alice.id.clone(),
        ..Default::default()
    };
    for (case, request) in [
        ("a plain list", ListPostsRequest::default()),
        ("by owner", by_owner),
    ] {
        for n in 0..SEARCHES + 2 {
            system
                .list_posts(&alice, request.clone())
                .await
                .unwrap_or_else(|status| panic!("{case} {n} is not counted: {status:?}"));
        }
    }

    let (refused, cost) = cost_of(system.list_posts(&alice, search("rust"))).await;

    let status = refused.expect_err("the search past the quota is refused");
    assert_quota_exceeded(&status, "search", SEARCHES, "a search past the quota");
    assert_one_call_without_sql(&cost, "a refused call");
    let page = system
        .list_posts(&bob, search("rust"))
        .await
        .expect("bob has his own quota");
    assert_eq!(page.posts.len(), 1);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn over_http_a_used_up_quota_is_429(pool: PgPool) {
    let system = spawn_with_small_quotas(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let gateway = system.spawn_gateway(|_| {}).await;
    let http = Client::new();
    let create = || {
        http.post(format!("http://{}/posts/", gateway.http))
            .bearer_auth(&alice.token)
            .json(&json!({"title": "Over HTTP", "content": "Hello"}))
            .send()
    };
    for n in 0..POSTS {
        let response = create().await.expect("the facade answers");
        assert_eq!(response.status(), StatusCode::CREATED, "post {n}");
    }

    let response = create().await.expect("the facade answers");

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(
        (1..=60 / u64::from(POSTS)).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let body: Value = response.json().await.expect("a JSON body");
    let detail = body["detail"].as_str().expect("a detail");
    assert!(detail.contains("create_post"), "{detail}");
    assert_eq!(stored_posts(&system, &alice).await, i64::from(POSTS));
}
