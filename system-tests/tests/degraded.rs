//! A neighbour that is down costs only what needs it: posts are still read and
//! written, and say in the contract what is missing instead of failing or making
//! a number up; a token whose account is gone writes nothing; a call that ends
//! unanswered is logged for what it was, not as an internal error.

use std::time::Duration;

use agora_proto::{
    errors::ErrorReason,
    posts::v1::{GetPostRequest, ListPostsRequest},
    votes::v1::VoteDirection,
};
use sqlx::PgPool;
use system_tests::{
    System, as_person, assert_reason, new_post, spawn_system, spawn_with_liked_post,
    telemetry::{cost_of, cost_so_far},
};

async fn stored_posts(system: &System) -> i64 {
    sqlx::query_scalar("select count(*) from posts.posts")
        .fetch_one(&system.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn without_votes_service_posts_are_answered_with_like_counts_unknown(pool: PgPool) {
    let (system, alice, bob, post) = spawn_with_liked_post(pool).await;
    let System {
        votes,
        post_client,
        pool,
        auth: _auth,
        posts: _posts,
        ..
    } = system;
    votes.stop().await;

    let read = post_client
        .clone()
        .get_post(as_person(
            &bob,
            GetPostRequest {
                id: post.id.clone(),
            },
        ))
        .await
        .expect("a read needs no like count")
        .into_inner()
        .post
        .unwrap();
    let created = post_client
        .clone()
        .create_post(as_person(
            &alice,
            new_post("Written", "while votes-service is down", None),
        ))
        .await
        .expect("a write that needs no neighbour succeeds, and says so")
        .into_inner()
        .post
        .unwrap();

    let page = post_client
        .clone()
        .list_posts(as_person(&bob, ListPostsRequest::default()))
        .await
        .expect("nor does a page")
        .into_inner()
        .posts;
    for (case, post) in [
        ("GetPost", &read),
        ("ListPosts", &page[1]),
        ("CreatePost", &created),
    ] {
        assert_eq!(
            (post.like_count, post.liked_by_caller),
            (None, None),
            "{case}: unknown, not zero"
        );
        assert!(
            post.owner.is_some(),
            "{case}: owners still come from auth-service"
        );
    }
    assert_eq!(page.len(), 2);
    let stored: i64 = sqlx::query_scalar("select count(*) from posts.posts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        stored, 2,
        "the post written while votes-service was down, once"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn without_auth_service_posts_keep_their_owner_ids_and_remembered_profiles(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let seen = system
        .create_post(&alice, "Seen", "before the outage", None)
        .await
        .unwrap();
    // Bob's post goes straight into the table: posts-service never looked him up.
    sqlx::query(
        "insert into posts.posts (id, owner_id, title, content) values (gen_random_uuid(), $1::uuid, 'Unseen', 'owner')",
    )
    .bind(&bob.id)
    .execute(&system.pool)
    .await
    .unwrap();
    let System {
        auth,
        post_client,
        votes: _votes,
        posts: _posts,
        ..
    } = system;
    auth.stop().await;

    let page = post_client
        .clone()
        .list_posts(as_person(&alice, ListPostsRequest::default()))
        .await
        .expect("tokens still verify with the keys posts-service holds")
        .into_inner()
        .posts;

    let by_title = |title: &str| page.iter().find(|post| post.title == title).unwrap();
    let remembered = by_title("Seen");
    assert_eq!(remembered.id, seen.id);
    assert_eq!(
        remembered.owner.as_ref().map(|owner| owner.id.as_str()),
        Some(alice.id.as_str()),
        "a profile seen before, which cannot have changed"
    );
    let unseen = by_title("Unseen");
    assert_eq!(unseen.owner_id, bob.id, "the owner id is always known");
    assert_eq!(
        unseen.owner, None,
        "an owner never looked up is marked missing"
    );
    assert_eq!(unseen.like_count, Some(0), "votes-service still counts");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_token_whose_account_was_deleted_likes_nothing(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let post = system
        .create_post(&alice, "Hello", "World", None)
        .await
        .unwrap();
    sqlx::query("delete from auth.users where id = $1::uuid")
        .bind(&bob.id)
        .execute(&system.pool)
        .await
        .unwrap();

    let status = system
        .vote(&bob, &post.id, VoteDirection::Add)
        .await
        .unwrap_err();

    assert_reason(
        &status,
        ErrorReason::AccountDeleted,
        "a like by a deleted account",
    );
    assert_eq!(system.stored_likes(&post.id).await, 0, "no row written");
    assert_eq!(stored_posts(&system).await, 1);
}

const CREATE_POST: &str = "/agora.posts.v1.PostService/CreatePost";

/// Waits, boundedly, until the services have logged `code` as a call's ending.
async fn until_logged(code: &str) -> bool {
    for _ in 0..500 {
        if cost_so_far().endings.contains_key(code) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn calls_ended_unanswered_are_logged_as_deadline_exceeded_or_cancelled(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let create = || as_person(&alice, new_post("Held up", "Waits for the table", None));
    // Every new post waits while the table is locked (for less than the
    // service's lock timeout), so these calls end unanswered.
    let mut lock = system.pool.begin().await.unwrap();
    sqlx::query("lock table posts.posts in exclusive mode")
        .execute(&mut *lock)
        .await
        .unwrap();

    let (_, cost) = cost_of(async {
        let mut hurried = create();
        hurried.set_timeout(Duration::from_millis(50));
        let _ = system.post_client.clone().create_post(hurried).await;
        assert!(until_logged("4").await, "DEADLINE_EXCEEDED logged");

        // The client gives up, once the server has taken the call, and resets
        // the stream.
        let mut client = system.post_client.clone();
        let request = create();
        let abandoned = tokio::spawn(async move { client.create_post(request).await });
        let creates = || cost_so_far().rpcs.get(CREATE_POST).copied().unwrap_or(0);
        for _ in 0..500 {
            if creates() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(creates(), 2, "the server took the second call");
        abandoned.abort();
        assert!(until_logged("1").await, "CANCELLED logged");
    })
    .await;
    lock.rollback().await.unwrap();

    for internal_or_unknown in ["13", "2"] {
        assert!(
            !cost.endings.contains_key(internal_or_unknown),
            "nothing logged as code {internal_or_unknown}: {cost:?}"
        );
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_token_whose_account_was_deleted_writes_no_post(pool: PgPool) {
    let system = spawn_system(pool).await;
    let bob = system.sign_up("bob@example.com").await;
    sqlx::query("delete from auth.users where id = $1::uuid")
        .bind(&bob.id)
        .execute(&system.pool)
        .await
        .unwrap();

    let plain = system
        .create_post(&bob, "Ghost", "writes", None)
        .await
        .unwrap_err();
    let with_request_id = system
        .post_client
        .clone()
        .create_post(as_person(
            &bob,
            agora_proto::posts::v1::CreatePostRequest {
                request_id: uuid::Uuid::now_v7().to_string(),
                ..new_post("Ghost", "retries", None)
            },
        ))
        .await
        .unwrap_err();

    for (case, status) in [("plain", &plain), ("with a request id", &with_request_id)] {
        assert_reason(status, ErrorReason::AccountDeleted, case);
    }
    assert_eq!(stored_posts(&system).await, 0, "nothing written");
}
