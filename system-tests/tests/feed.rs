//! WatchPosts against the running services: changes arrive as they commit, in
//! commit order, each once, filtered by who may see them; streams end with a
//! status that says where to resume.

use std::time::Duration;

use agora_proto::{
    auth::v1::{DeleteUserRequest, LogoutRequest},
    errors::ErrorReason,
    posts::v1::{
        UpdatePostRequest, WatchPostsRequest, WatchPostsResponse,
        post_service_client::PostServiceClient, watch_posts_response::Event,
    },
    votes::v1::VoteDirection,
};
use gateway::embedded::{PerService, Quotas};
use posts_service::{FeedSettings, WatcherBuffer};
use sqlx::PgPool;
use system_tests::{
    AuthSettings, PASSWORD, Person, System, as_person, assert_bad_request, assert_reason, new_post,
    spawn_system, spawn_system_configured,
};
use tonic::{Status, Streaming};
use tonic_types::StatusExt;

/// How long a test waits for a message it expects.
const PATIENCE: Duration = Duration::from_secs(10);

async fn watch(
    system: &System,
    who: &Person,
    request: WatchPostsRequest,
) -> Result<Streaming<WatchPostsResponse>, Status> {
    Ok(system
        .post_client
        .clone()
        .watch_posts(as_person(who, request))
        .await?
        .into_inner())
}

async fn watch_from(system: &System, who: &Person, cursor: &str) -> Streaming<WatchPostsResponse> {
    let request = WatchPostsRequest {
        cursor: cursor.to_owned(),
        ..Default::default()
    };
    watch(system, who, request).await.expect("the watch starts")
}

async fn next(stream: &mut Streaming<WatchPostsResponse>) -> Result<WatchPostsResponse, Status> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message in time")
        .map(|message| message.expect("the stream goes on"))
}

async fn next_ok(stream: &mut Streaming<WatchPostsResponse>) -> WatchPostsResponse {
    next(stream).await.expect("a message, not an error")
}

/// The next message that is not a checkpoint.
async fn next_change(stream: &mut Streaming<WatchPostsResponse>) -> WatchPostsResponse {
    loop {
        let message = next_ok(stream).await;
        if !matches!(message.event, Some(Event::Checkpoint(_))) {
            return message;
        }
    }
}

/// A watch by `who` from now, past its first checkpoint.
async fn watching(system: &System, who: &Person) -> Streaming<WatchPostsResponse> {
    let mut stream = watch(system, who, WatchPostsRequest::default())
        .await
        .expect("the watch starts");
    started(&mut stream).await;
    stream
}

/// The status that ends `stream`, whatever comes before it.
async fn ending(stream: &mut Streaming<WatchPostsResponse>) -> Status {
    loop {
        if let Err(status) = next(stream).await {
            return status;
        }
    }
}

/// Reads the first checkpoint and answers its cursor.
async fn started(stream: &mut Streaming<WatchPostsResponse>) -> String {
    let first = next_ok(stream).await;
    assert!(
        matches!(first.event, Some(Event::Checkpoint(ref c)) if c.caught_up),
        "a watch from now starts with a caught-up checkpoint: {first:?}"
    );
    first.cursor
}

fn created_title(message: &WatchPostsResponse) -> &str {
    match &message.event {
        Some(Event::Created(post)) => &post.title,
        other => panic!("expected a created post, got {other:?}"),
    }
}

fn cursor_of(status: &Status) -> String {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("cursor").cloned())
        .unwrap_or_else(|| panic!("the status names a cursor: {status:?}"))
}

async fn post(system: &System, who: &Person, title: &str, published: Option<bool>) -> String {
    system
        .create_post(who, title, "content", published)
        .await
        .expect("the post is created")
        .id
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_new_post_and_a_like_reach_a_watcher(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let mut stream = watching(&system, &bob).await;

    let id = post(&system, &alice, "Hello", None).await;
    let created = next_change(&mut stream).await;
    assert_eq!(created_title(&created), "Hello");
    let Some(Event::Created(post)) = &created.event else {
        unreachable!()
    };
    assert_eq!((post.id.as_str(), post.like_count), (id.as_str(), Some(0)));
    assert!(created.event_time.is_some());

    system.vote(&bob, &id, VoteDirection::Add).await.unwrap();
    let liked = next_change(&mut stream).await;
    match liked.event {
        Some(Event::LikeCountChanged(change)) => {
            assert_eq!(
                (change.post_id.as_str(), change.like_count),
                (id.as_str(), 1)
            );
        }
        other => panic!("expected a like count, got {other:?}"),
    }

    let mut update = system.get_post(&alice, &id).await.unwrap();
    update.title = "Hello again".to_owned();
    system
        .post_client
        .clone()
        .update_post(as_person(
            &alice,
            UpdatePostRequest {
                post: Some(update),
                update_mask: None,
            },
        ))
        .await
        .unwrap();
    match next_change(&mut stream).await.event {
        Some(Event::Updated(post)) => assert_eq!(post.title, "Hello again"),
        other => panic!("expected an update, got {other:?}"),
    }
    system.delete_post(&alice, &id).await.unwrap();
    match next_change(&mut stream).await.event {
        Some(Event::Deleted(removed)) => assert_eq!(removed.id, id),
        other => panic!("expected a deletion, got {other:?}"),
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn drafts_reach_their_owner_alone(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let mut bobs = watching(&system, &bob).await;
    let mut alices = watching(&system, &alice).await;

    let draft = post(&system, &alice, "Secret draft", Some(false)).await;
    system
        .vote(&alice, &draft, VoteDirection::Add)
        .await
        .unwrap();
    post(&system, &alice, "Public", None).await;
    assert_eq!(
        created_title(&next_change(&mut alices).await),
        "Secret draft"
    );
    assert!(matches!(
        next_change(&mut alices).await.event,
        Some(Event::LikeCountChanged(_))
    ));
    assert_eq!(created_title(&next_change(&mut alices).await), "Public");
    // Bob's first change is the public post: the draft and its like passed him by.
    assert_eq!(created_title(&next_change(&mut bobs).await), "Public");

    // Published, the draft enters Bob's view; made a draft again, it leaves it.
    for published in [true, false] {
        let mut post = system.get_post(&alice, &draft).await.unwrap();
        post.published = Some(published);
        system
            .post_client
            .clone()
            .update_post(as_person(
                &alice,
                UpdatePostRequest {
                    post: Some(post),
                    update_mask: None,
                },
            ))
            .await
            .unwrap();
    }
    assert_eq!(created_title(&next_change(&mut bobs).await), "Secret draft");
    assert!(
        matches!(next_change(&mut bobs).await.event, Some(Event::Deleted(ref r)) if r.id == draft)
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_resumed_watch_misses_nothing_and_repeats_nothing(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let mut stream = watching(&system, &bob).await;
    for n in 0..3 {
        post(&system, &alice, &format!("before {n}"), None).await;
    }
    let mut cursor = String::new();
    for n in 0..2 {
        let message = next_change(&mut stream).await;
        assert_eq!(created_title(&message), format!("before {n}"));
        cursor = message.cursor;
    }
    // The connection drops with "before 2" unread; more is written meanwhile.
    drop(stream);
    for n in 0..3 {
        post(&system, &alice, &format!("after {n}"), None).await;
    }

    let mut resumed = watch_from(&system, &bob, &cursor).await;
    let first = next_ok(&mut resumed).await;
    assert!(matches!(first.event, Some(Event::Checkpoint(ref c)) if !c.caught_up));
    let mut titles = Vec::new();
    loop {
        let message = next_ok(&mut resumed).await;
        match &message.event {
            Some(Event::Checkpoint(c)) if c.caught_up => break,
            _ => titles.push(created_title(&message).to_owned()),
        }
    }
    assert_eq!(titles, ["before 2", "after 0", "after 1", "after 2"]);
    // And it goes on live.
    post(&system, &alice, "live", None).await;
    assert_eq!(created_title(&next_change(&mut resumed).await), "live");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_transaction_that_commits_late_is_not_skipped(pool: PgPool) {
    let system = spawn_system(pool.clone()).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let mut stream = watching(&system, &bob).await;

    // An early transaction takes its id and writes, then waits to commit while
    // a later one commits first.
    let mut early = pool.begin().await.unwrap();
    sqlx::query(
        "insert into posts.posts (id, owner_id, title, content) values (gen_random_uuid(), $1::uuid, 'early', 'x')",
    )
    .bind(&alice.id)
    .execute(&mut *early)
    .await
    .unwrap();
    post(&system, &alice, "late", None).await;
    let late = next_change(&mut stream).await;
    assert_eq!(created_title(&late), "late");
    early.commit().await.unwrap();
    assert_eq!(created_title(&next_change(&mut stream).await), "early");

    // A watch resumed just after "late" gets "early" too.
    let mut resumed = watch_from(&system, &bob, &late.cursor).await;
    assert_eq!(created_title(&next_change(&mut resumed).await), "early");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_slow_watcher_is_cut_off_with_its_cursor(pool: PgPool) {
    let quotas = Quotas {
        posts: posts_service::QuotaSettings {
            posts_per_minute: 0,
            searches_per_minute: 0,
        },
        ..Quotas::default()
    };
    let feed = FeedSettings {
        buffer: WatcherBuffer { watcher_buffer: 2 },
        ..FeedSettings::default()
    };
    let system = spawn_system_configured(
        pool,
        PerService::ephemeral(),
        (AuthSettings::default(), quotas, feed),
    )
    .await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    // Bob on a connection of his own, with HTTP/2's smallest windows: unread,
    // his stream soon holds the server's sends up (and any stream on it).
    let bobs_channel = tonic::transport::Endpoint::from_shared(system.posts.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut bobs_client = PostServiceClient::new(bobs_channel);
    let request = as_person(&bob, WatchPostsRequest::default());
    let mut stream = bobs_client.watch_posts(request).await.unwrap().into_inner();
    started(&mut stream).await;

    // Bob reads nothing while Alice writes far more than the buffers hold. She
    // watches too, and reads each post before writing the next, so that each
    // is a batch of its own (the buffer counts batches).
    let mut alices_client = PostServiceClient::connect(system.posts.url())
        .await
        .unwrap();
    let request = as_person(&alice, WatchPostsRequest::default());
    let mut alices = alices_client
        .watch_posts(request)
        .await
        .unwrap()
        .into_inner();
    started(&mut alices).await;
    let content = "x".repeat(10_000);
    const POSTS: usize = 60;
    for n in 0..POSTS {
        let request = new_post(&format!("post {n}"), &content, None);
        system
            .post_client
            .clone()
            .create_post(as_person(&alice, request))
            .await
            .unwrap();
        assert_eq!(
            created_title(&next_change(&mut alices).await),
            format!("post {n}")
        );
    }
    let mut seen = Vec::new();
    let status = loop {
        match next(&mut stream).await {
            Ok(message) if matches!(message.event, Some(Event::Checkpoint(_))) => {}
            Ok(message) => seen.push(created_title(&message).to_owned()),
            Err(status) => break status,
        }
    };
    assert_reason(&status, ErrorReason::WatcherTooSlow, "a slow watcher");
    assert!(seen.len() < POSTS, "cut off before the end: {}", seen.len());

    let mut resumed = watch_from(&system, &bob, &cursor_of(&status)).await;
    while seen.len() < POSTS {
        let message = next_change(&mut resumed).await;
        seen.push(created_title(&message).to_owned());
    }
    let expected: Vec<String> = (0..POSTS).map(|n| format!("post {n}")).collect();
    assert_eq!(seen, expected, "every post once, in order, across the cut");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn streams_end_with_where_to_resume(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let carol = system.sign_up("carol@example.com").await;

    // Carol's session ends: her stream ends within a token check.
    let mut carols = watching(&system, &carol).await;
    system
        .auth_client
        .clone()
        .logout(as_person(&carol, LogoutRequest {}))
        .await
        .unwrap();
    let status = ending(&mut carols).await;
    assert_reason(
        &status,
        ErrorReason::TokenRevoked,
        "a watch whose session ended",
    );
    cursor_of(&status);

    // A deleted account's posts leave the view with it.
    let id = post(&system, &alice, "Soon gone", None).await;
    let mut bobs = watching(&system, &bob).await;
    system
        .user_client
        .clone()
        .delete_user(as_person(
            &alice,
            DeleteUserRequest {
                id: alice.id.clone(),
                password: PASSWORD.to_owned(),
            },
        ))
        .await
        .unwrap();
    assert!(
        matches!(next_change(&mut bobs).await.event, Some(Event::Deleted(ref r)) if r.id == id)
    );

    // Shutdown ends the stream with UNAVAILABLE and a cursor.
    let System { posts, .. } = system;
    let stopping = tokio::spawn(posts.stop());
    let status = ending(&mut bobs).await;
    assert_reason(
        &status,
        ErrorReason::StreamInterrupted,
        "a watch at shutdown",
    );
    cursor_of(&status);
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the server stops without waiting out its grace")
        .unwrap();
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn bad_and_expired_cursors_are_refused(pool: PgPool) {
    let system = spawn_system(pool.clone()).await;
    let alice = system.sign_up("alice@example.com").await;
    for (cursor, case) in [
        ("nope", "not base64"),
        ("MX5hOmI6", "base64 of no cursor"),
        (
            "MX45OTk5OTk5OTk6OTk5OTk5OTk5Og",
            "a snapshot this database has not reached",
        ),
    ] {
        let request = WatchPostsRequest {
            cursor: cursor.to_owned(),
            ..Default::default()
        };
        let status = watch(&system, &alice, request)
            .await
            .err()
            .unwrap_or_else(|| panic!("{case}"));
        assert_bad_request(&status, &["cursor"], case);
    }
    let status = watch(
        &system,
        &alice,
        WatchPostsRequest {
            owner_id: "x".to_owned(),
            ..Default::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert_bad_request(&status, &["owner_id"], "a bad owner_id");

    let mut stream = watching(&system, &alice).await;
    post(&system, &alice, "old news", None).await;
    let old = next_change(&mut stream).await.cursor;
    drop(stream);
    // Whatever is kept beyond the cursor's batch is purged.
    post(&system, &alice, "newer", None).await;
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("update posts.post_events set event_time = event_time - interval '2 hours'")
        .execute(&mut *conn)
        .await
        .unwrap();
    // A change is purged only once every transaction older than it has ended,
    // anywhere on the server (other tests run beside this one): "old news",
    // the older, goes first.
    let purged = loop {
        let purged = posts_service::purge_post_events(&mut conn, Duration::from_secs(3600))
            .await
            .unwrap();
        if purged > 0 {
            break purged;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(purged <= 2, "only the two changes are that old: {purged}");
    let status = watch(
        &system,
        &alice,
        WatchPostsRequest {
            cursor: old,
            ..Default::default()
        },
    )
    .await
    .expect_err("refused");
    assert_reason(
        &status,
        ErrorReason::CursorExpired,
        "a cursor older than what is kept",
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_stream_ends_when_its_token_expires(pool: PgPool) {
    let auth = AuthSettings {
        token_ttl_secs: 3,
        ..AuthSettings::default()
    };
    let settings = (auth, Quotas::default(), FeedSettings::default());
    let system = spawn_system_configured(pool, PerService::ephemeral(), settings).await;
    let alice = system.sign_up("alice@example.com").await;
    let mut stream = watch(&system, &alice, WatchPostsRequest::default())
        .await
        .unwrap();
    let start = started(&mut stream).await;
    let status = ending(&mut stream).await;
    assert_reason(
        &status,
        ErrorReason::TokenExpired,
        "a watch whose token expired",
    );
    assert_eq!(cursor_of(&status), start, "resume where the stream stood");
}
