//! posts-service through its gRPC API, wired to auth- and votes-service.

use agora_proto::{
    errors::ErrorReason,
    posts::v1::{
        CreatePostRequest, DeletePostRequest, GetPostRequest, ListPostsRequest, Post,
        UpdatePostRequest,
    },
    votes::v1::VoteDirection,
};
use prost_types::FieldMask;
use sqlx::PgPool;
use system_tests::{
    Person, System, as_person, assert_bad_request, assert_reason, spawn_system,
    spawn_with_liked_post, telemetry::cost_of,
};
use tonic::Code;
use uuid::Uuid;

fn list(page_size: i32) -> ListPostsRequest {
    ListPostsRequest {
        page_size,
        ..Default::default()
    }
}

fn titles(posts: &[Post]) -> Vec<&str> {
    posts.iter().map(|post| post.title.as_str()).collect()
}

/// Inserts `count` published posts by `owner` straight into the table, titled
/// "post 0", "post 1", … from oldest to newest.
async fn insert_posts(system: &System, owner: &Person, count: i32) {
    sqlx::query(
        "insert into posts.posts (id, owner_id, title, content, create_time, update_time)
         select gen_random_uuid(), $1::uuid, 'post ' || n, 'content ' || n,
                now() - make_interval(secs => $2 - n), now() - make_interval(secs => $2 - n)
           from generate_series(0, $2 - 1) as n",
    )
    .bind(&owner.id)
    .bind(count)
    .execute(&system.pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn create_post_stores_it_for_the_caller(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;

    let post = system
        .create_post(&alice, "  Hello  ", " First post\n\twith a tab ", None)
        .await
        .unwrap();

    assert_eq!(Uuid::parse_str(&post.id).unwrap().get_version_num(), 7);
    assert_eq!(
        (post.title.as_str(), post.content.as_str()),
        ("Hello", "First post\n\twith a tab")
    );
    assert_eq!(
        post.published,
        Some(true),
        "published unless told otherwise"
    );
    assert_eq!(post.owner_id, alice.id);
    let owner = post.owner.as_ref().expect("the owner is shown");
    assert_eq!(owner.id, alice.id);
    assert_eq!(
        (post.like_count, post.liked_by_caller),
        (Some(0), Some(false)),
        "a known count of zero is present, not absent"
    );
    assert_eq!(post.create_time, post.update_time);
    assert_eq!(post.etag, "1", "a new post's first version");

    let draft = system
        .create_post(&alice, "Draft", "Not yet", Some(false))
        .await
        .unwrap();
    assert_eq!(draft.published, Some(false));
    let stored: i64 = sqlx::query_scalar("select count(*) from posts.posts")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn create_post_rejects_bad_fields(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let cases: &[(&str, &str, &str, &str)] = &[
        ("empty title", "", "content", "post.title"),
        ("blank title", " \t ", "content", "post.title"),
        (
            "title of invisible characters",
            "\u{200B}\u{FEFF}\u{2060}",
            "content",
            "post.title",
        ),
        (
            "content of a zero-width space",
            "title",
            "\u{200B}",
            "post.content",
        ),
        (
            "title of 201 characters",
            &"é".repeat(201),
            "content",
            "post.title",
        ),
        (
            "newline in the title",
            "two\nlines",
            "content",
            "post.title",
        ),
        ("empty content", "title", "", "post.content"),
        (
            "content of 10,001 characters",
            "title",
            &"界".repeat(10_001),
            "post.content",
        ),
        ("NUL in the content", "title", "a\0b", "post.content"),
        (
            "escape in the content",
            "title",
            "\u{1b}[31mred",
            "post.content",
        ),
        (
            "carriage return in the content",
            "title",
            "a\r\nb",
            "post.content",
        ),
    ];
    for (case, title, content, field) in cases {
        let status = system
            .create_post(&alice, title, content, None)
            .await
            .unwrap_err();
        assert_bad_request(&status, &[field], case);
    }
    let status = system.create_post(&alice, "", "", None).await.unwrap_err();
    assert_bad_request(
        &status,
        &["post.title", "post.content"],
        "every bad field at once",
    );

    system
        .create_post(&alice, &"é".repeat(200), &"界".repeat(10_000), None)
        .await
        .expect("the limits themselves fit");
    let stored: i64 = sqlx::query_scalar("select count(*) from posts.posts")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "no bad post was stored");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn get_post_shows_owner_likes_and_the_callers_like(pool: PgPool) {
    let (system, alice, bob, post) = spawn_with_liked_post(pool).await;

    let seen_by_bob = system.get_post(&bob, &post.id).await.unwrap();
    let seen_by_alice = system.get_post(&alice, &post.id).await.unwrap();

    assert_eq!(
        (seen_by_bob.like_count, seen_by_bob.liked_by_caller),
        (Some(1), Some(true))
    );
    assert_eq!(
        (seen_by_alice.like_count, seen_by_alice.liked_by_caller),
        (Some(1), Some(false))
    );
    assert_eq!(
        seen_by_bob.owner.unwrap().id,
        alice.id,
        "the owner's public profile, which has no email"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn get_post_errors_and_drafts(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let draft = system
        .create_post(&alice, "Draft", "Secret", Some(false))
        .await
        .unwrap();

    assert_eq!(
        system.get_post(&alice, &draft.id).await.unwrap().title,
        "Draft",
        "the owner sees a draft"
    );
    let hidden = system.get_post(&bob, &draft.id).await.unwrap_err();
    assert_reason(
        &hidden,
        ErrorReason::PostNotFound,
        "another person's draft does not exist for bob",
    );

    let unknown = system
        .get_post(&bob, &Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_reason(&unknown, ErrorReason::PostNotFound, "an unknown post");
    assert_eq!(
        unknown.message(),
        hidden.message(),
        "a draft and a missing post look alike"
    );
    for malformed in ["", "42", "not-a-uuid"] {
        let status = system.get_post(&bob, malformed).await.unwrap_err();
        assert_bad_request(&status, &["id"], malformed);
    }
}

/// `message` as `who` sends it: with their token, or with none.
fn sent_by<T>(who: Option<&Person>, message: T) -> tonic::Request<T> {
    match who {
        Some(person) => as_person(person, message),
        None => tonic::Request::new(message),
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn every_post_rpc_needs_a_valid_token(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let post = system
        .create_post(&alice, "Hello", "World", None)
        .await
        .unwrap();
    let forged = Person {
        token: "garbage".to_owned(),
        ..alice.clone()
    };
    let mut client = system.post_client.clone();

    for who in [None, Some(&forged)] {
        let id = post.id.clone();
        let create = CreatePostRequest {
            post: Some(new_post("t", "c", None)),
            request_id: String::new(),
        };
        let update = replace(&id, "t", "c", None);
        let outcomes = [
            (
                "create",
                client.create_post(sent_by(who, create)).await.map(drop),
            ),
            (
                "get",
                client
                    .get_post(sent_by(who, GetPostRequest { id: id.clone() }))
                    .await
                    .map(drop),
            ),
            (
                "list",
                client.list_posts(sent_by(who, list(10))).await.map(drop),
            ),
            (
                "update",
                client.update_post(sent_by(who, update)).await.map(drop),
            ),
            (
                "delete",
                client
                    .delete_post(sent_by(
                        who,
                        DeletePostRequest {
                            id,
                            etag: String::new(),
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ];
        for (rpc, outcome) in outcomes {
            let reason = match who {
                None => ErrorReason::TokenMissing,
                Some(_) => ErrorReason::TokenMalformed,
            };
            assert_reason(&outcome.unwrap_err(), reason, rpc);
        }
    }
    assert_eq!(
        system.get_post(&alice, &post.id).await.unwrap().title,
        "Hello",
        "nothing changed"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn list_posts_shows_published_posts_and_own_drafts_newest_first(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    system
        .create_post(&alice, "first", "a", None)
        .await
        .unwrap();
    system
        .create_post(&bob, "bob's draft", "b", Some(false))
        .await
        .unwrap();
    system
        .create_post(&alice, "alice's draft", "c", Some(false))
        .await
        .unwrap();
    let liked = system.create_post(&bob, "second", "d", None).await.unwrap();
    system
        .vote(&alice, &liked.id, VoteDirection::Add)
        .await
        .unwrap();

    let for_alice = system.list_posts(&alice, list(0)).await.unwrap();
    let for_bob = system.list_posts(&bob, list(0)).await.unwrap();

    assert_eq!(
        titles(&for_alice.posts),
        ["second", "alice's draft", "first"]
    );
    assert_eq!(titles(&for_bob.posts), ["second", "bob's draft", "first"]);
    assert_eq!(for_alice.next_page_token, "", "one page holds them all");
    let second = &for_alice.posts[0];
    assert_eq!(
        (second.like_count, second.liked_by_caller),
        (Some(1), Some(true))
    );
    assert_eq!(second.owner.as_ref().unwrap().id, bob.id);
    assert_eq!(
        (
            for_bob.posts[0].like_count,
            for_bob.posts[0].liked_by_caller
        ),
        (Some(1), Some(false))
    );

    let alices_only = ListPostsRequest {
        owner_id: alice.id.clone(),
        ..list(0)
    };
    let posts = system.list_posts(&bob, alices_only).await.unwrap().posts;
    assert_eq!(
        titles(&posts),
        ["first"],
        "filtered by owner, drafts still hidden"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn search_matches_title_substrings_with_wildcards_taken_literally(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    for title in [
        "100% Rust",
        "100 percent",
        "snake_case",
        "snakeXcase",
        "back\\slash",
        "Rusty nails",
    ] {
        system
            .create_post(&alice, title, "content", None)
            .await
            .unwrap();
    }
    let search = |text: &str| ListPostsRequest {
        search: text.to_owned(),
        ..list(0)
    };

    let cases: &[(&str, &[&str])] = &[
        ("rust", &["Rusty nails", "100% Rust"]),
        ("100%", &["100% Rust"]),
        ("%", &["100% Rust"]),
        ("_", &["snake_case"]),
        ("snake_", &["snake_case"]),
        ("\\", &["back\\slash"]),
        ("nothing like it", &[]),
    ];
    for (text, expected) in cases {
        let posts = system.list_posts(&alice, search(text)).await.unwrap().posts;
        assert_eq!(titles(&posts), *expected, "search {text:?}");
    }
    let status = system
        .list_posts(&alice, search(&"x".repeat(101)))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "a search over 100 characters"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn page_tokens_walk_to_the_end_without_gaps_or_repeats_despite_new_posts(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    insert_posts(&system, &alice, 25).await;

    let mut seen = Vec::new();
    let mut request = list(10);
    let mut pages = 0;
    loop {
        let page = system.list_posts(&alice, request.clone()).await.unwrap();
        pages += 1;
        seen.extend(page.posts.iter().map(|post| post.title.clone()));
        // A post written meanwhile is newer than the cursor: it must not shift the pages.
        system
            .create_post(&alice, &format!("new {pages}"), "meanwhile", None)
            .await
            .unwrap();
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }

    let expected: Vec<String> = (0..25).rev().map(|n| format!("post {n}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn limit_and_skip_page_like_the_course_api(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    insert_posts(&system, &alice, 25).await;
    let page = |skip| ListPostsRequest {
        page_size: 10,
        skip,
        ..Default::default()
    };

    let third = system.list_posts(&alice, page(20)).await.unwrap();
    assert_eq!(
        titles(&third.posts),
        ["post 4", "post 3", "post 2", "post 1", "post 0"]
    );
    assert_eq!(third.next_page_token, "", "the last page");
    let second = system.list_posts(&alice, page(10)).await.unwrap();
    assert_eq!(second.posts.first().unwrap().title, "post 14");
    let after_second = ListPostsRequest {
        page_token: second.next_page_token,
        ..list(10)
    };
    assert_eq!(
        system
            .list_posts(&alice, after_second)
            .await
            .unwrap()
            .posts
            .len(),
        5,
        "tokens continue an offset page"
    );
    assert!(
        system
            .list_posts(&alice, page(25))
            .await
            .unwrap()
            .posts
            .is_empty(),
        "past the end"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn page_sizes_default_to_10_and_cap_at_100(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    insert_posts(&system, &alice, 105).await;

    assert_eq!(
        system
            .list_posts(&alice, list(0))
            .await
            .unwrap()
            .posts
            .len(),
        10
    );
    let capped = system.list_posts(&alice, list(1000)).await.unwrap();
    assert_eq!(capped.posts.len(), 100);
    assert!(!capped.next_page_token.is_empty());
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn bad_paging_requests_are_invalid_arguments(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    insert_posts(&system, &alice, 3).await;
    let token = system
        .list_posts(&alice, list(1))
        .await
        .unwrap()
        .next_page_token;

    let cases = [
        ("negative page size", list(-1)),
        (
            "negative skip",
            ListPostsRequest {
                skip: -1,
                ..list(10)
            },
        ),
        (
            "token and skip",
            ListPostsRequest {
                page_token: token.clone(),
                skip: 1,
                ..list(1)
            },
        ),
        (
            "token of another search",
            ListPostsRequest {
                page_token: token.clone(),
                search: "post".into(),
                ..list(1)
            },
        ),
        (
            "garbage token",
            ListPostsRequest {
                page_token: "garbage".into(),
                ..list(1)
            },
        ),
        (
            "NUL in the search",
            ListPostsRequest {
                search: "a\0b".into(),
                ..list(1)
            },
        ),
        (
            "malformed owner",
            ListPostsRequest {
                owner_id: "bob".into(),
                ..list(1)
            },
        ),
    ];
    for (case, request) in cases {
        let status = system.list_posts(&alice, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_page_costs_the_same_few_queries_and_calls_whatever_its_size(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let others = [
        system.sign_up("bob@example.com").await,
        system.sign_up("carol@example.com").await,
    ];
    insert_posts(&system, &alice, 60).await;
    for other in &others {
        insert_posts(&system, other, 20).await;
    }
    // Warm the connections and key caches, so only the page's own work is
    // counted; and let WatchPosts' listener, which reads what the inserts
    // announced (at most every 25 ms), finish its reads first.
    system.list_posts(&alice, list(1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let (small, small_cost) = cost_of(system.list_posts(&alice, list(2))).await;
    let (large, large_cost) = cost_of(system.list_posts(&alice, list(100))).await;

    assert_eq!(
        (small.unwrap().posts.len(), large.unwrap().posts.len()),
        (2, 100)
    );
    assert_eq!(
        small_cost, large_cost,
        "a page of 100 costs what a page of 2 does"
    );
    let rpcs = |method: &str| large_cost.rpcs.get(method).copied().unwrap_or(0);
    assert_eq!(rpcs("/agora.posts.v1.PostService/ListPosts"), 1);
    assert_eq!(
        rpcs("/agora.auth.v1.UserService/BatchGetUsers"),
        1,
        "{large_cost:?}"
    );
    assert_eq!(
        rpcs("/agora.votes.v1.VoteService/CountVotes"),
        1,
        "{large_cost:?}"
    );
    assert_eq!(large_cost.rpcs.len(), 3, "no other calls: {large_cost:?}");
    assert_eq!(
        large_cost.statements, 3,
        "one query in each service: {large_cost:?}"
    );
}

fn new_post(title: &str, content: &str, published: Option<bool>) -> Post {
    Post {
        title: title.to_owned(),
        content: content.to_owned(),
        published,
        ..Default::default()
    }
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|path| path.to_string()).collect(),
    })
}

/// An update of the post `id` to these values, with `update_mask`.
fn update(
    id: &str,
    update_mask: Option<FieldMask>,
    title: &str,
    content: &str,
    published: Option<bool>,
) -> UpdatePostRequest {
    UpdatePostRequest {
        post: Some(Post {
            id: id.to_owned(),
            ..new_post(title, content, published)
        }),
        update_mask,
    }
}

/// A full replacement (`*`), as the HTTP facade's PUT sends.
fn replace(id: &str, title: &str, content: &str, published: Option<bool>) -> UpdatePostRequest {
    update(id, mask(&["*"]), title, content, published)
}

fn patch(
    id: &str,
    paths: &[&str],
    title: &str,
    content: &str,
    published: Option<bool>,
) -> UpdatePostRequest {
    update(id, mask(paths), title, content, published)
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_replace_sets_every_field_and_publishes_unless_told_otherwise(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let draft = system
        .create_post(&alice, "Draft", "Old", Some(false))
        .await
        .unwrap();

    let replaced = system
        .update_post(&alice, replace(&draft.id, " New title ", "New body", None))
        .await
        .unwrap();

    assert_eq!(
        (
            replaced.title.as_str(),
            replaced.content.as_str(),
            replaced.published
        ),
        ("New title", "New body", Some(true))
    );
    assert_eq!(replaced.create_time, draft.create_time);
    let time = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
    assert!(
        time(replaced.update_time) > time(draft.update_time),
        "the update time moves"
    );
    let hidden = system
        .update_post(&alice, replace(&draft.id, "Again", "Body", Some(false)))
        .await
        .unwrap();
    assert_eq!(hidden.published, Some(false), "false when given");

    let status = system
        .update_post(&alice, replace(&draft.id, "", "", None))
        .await
        .unwrap_err();
    assert_bad_request(
        &status,
        &["post.title", "post.content"],
        "a replace needs both",
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_patch_changes_only_the_fields_it_names(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let post = system
        .create_post(&alice, "Title", "Body", None)
        .await
        .unwrap();

    let retitled = system
        .update_post(&alice, patch(&post.id, &["title"], "New title", "", None))
        .await
        .unwrap();
    assert_eq!(
        (
            retitled.title.as_str(),
            retitled.content.as_str(),
            retitled.published
        ),
        ("New title", "Body", Some(true))
    );
    let hidden = system
        .update_post(&alice, patch(&post.id, &["published"], "", "", Some(false)))
        .await
        .unwrap();
    assert_eq!(
        (hidden.title.as_str(), hidden.published),
        ("New title", Some(false))
    );
    let both = system
        .update_post(
            &alice,
            patch(
                &post.id,
                &["content", "published"],
                "",
                "Body 2",
                Some(true),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        (both.title.as_str(), both.content.as_str(), both.published),
        ("New title", "Body 2", Some(true))
    );

    let cases = [
        (
            "unknown path",
            patch(&post.id, &["author"], "", "", None),
            "update_mask",
        ),
        (
            "empty mask and nothing set",
            patch(&post.id, &[], "", "", None),
            "update_mask",
        ),
        (
            "only output-only paths",
            patch(&post.id, &["owner_id", "like_count"], "", "", None),
            "update_mask",
        ),
        (
            "a star among other paths",
            patch(&post.id, &["*", "title"], "T", "C", None),
            "update_mask",
        ),
        (
            "empty title",
            patch(&post.id, &["title"], " ", "", None),
            "post.title",
        ),
        (
            "control character",
            patch(&post.id, &["content"], "", "a\0b", None),
            "post.content",
        ),
        (
            "no post id",
            patch("", &["title"], "T", "", None),
            "post.id",
        ),
        (
            "an etag this service never issued",
            UpdatePostRequest {
                post: Some(Post {
                    etag: "W/\"x\"".to_owned(),
                    ..update(&post.id, None, "T", "", None).post.unwrap()
                }),
                update_mask: None,
            },
            "post.etag",
        ),
        (
            "no post at all",
            UpdatePostRequest {
                post: None,
                update_mask: mask(&["title"]),
            },
            "post",
        ),
    ];
    for (case, request, field) in cases {
        let status = system.update_post(&alice, request).await.unwrap_err();
        assert_bad_request(&status, &[field], case);
    }
    assert_eq!(
        system.get_post(&alice, &post.id).await.unwrap().content,
        "Body 2",
        "bad patches changed nothing"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn only_the_owner_may_change_or_delete_a_post(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let post = system
        .create_post(&alice, "Alice's", "Mine", None)
        .await
        .unwrap();
    let draft = system
        .create_post(&alice, "Alice's draft", "Mine", Some(false))
        .await
        .unwrap();
    let row = |id: String| {
        let pool = system.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, bool)>(
                "select title, content, published from posts.posts where id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let before = row(post.id.clone()).await;

    let update = system
        .update_post(&bob, replace(&post.id, "Bob's now", "Taken", None))
        .await
        .unwrap_err();
    let patch = system
        .update_post(&bob, patch(&post.id, &["title"], "Bob's now", "", None))
        .await
        .unwrap_err();
    let delete = system.delete_post(&bob, &post.id).await.unwrap_err();
    for (rpc, status) in [("replace", &update), ("patch", &patch), ("delete", &delete)] {
        assert_reason(status, ErrorReason::NotPostOwner, rpc);
    }
    assert_eq!(row(post.id.clone()).await, before, "the post is unchanged");

    let draft_update = system
        .update_post(&bob, replace(&draft.id, "x", "y", None))
        .await
        .unwrap_err();
    let draft_delete = system.delete_post(&bob, &draft.id).await.unwrap_err();
    assert_reason(
        &draft_update,
        ErrorReason::PostNotFound,
        "a draft stays hidden",
    );
    assert_reason(
        &draft_delete,
        ErrorReason::PostNotFound,
        "a draft stays hidden",
    );

    let unknown = Uuid::now_v7().to_string();
    let status = system
        .update_post(&alice, replace(&unknown, "x", "y", None))
        .await
        .unwrap_err();
    assert_reason(
        &status,
        ErrorReason::PostNotFound,
        "update of an unknown post",
    );
    let status = system.delete_post(&alice, &unknown).await.unwrap_err();
    assert_reason(
        &status,
        ErrorReason::PostNotFound,
        "delete of an unknown post",
    );
    let status = system.delete_post(&alice, "nope").await.unwrap_err();
    assert_bad_request(&status, &["id"], "a malformed id");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn deleting_a_post_takes_its_likes_with_it(pool: PgPool) {
    let (system, alice, _bob, post) = spawn_with_liked_post(pool).await;

    system.delete_post(&alice, &post.id).await.unwrap();

    let gone = system.get_post(&alice, &post.id).await.unwrap_err();
    assert_reason(&gone, ErrorReason::PostNotFound, "a deleted post");
    assert_eq!(system.stored_likes(&post.id).await, 0);
    let again = system.delete_post(&alice, &post.id).await.unwrap_err();
    assert_reason(&again, ErrorReason::PostNotFound, "already gone");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn an_update_without_a_mask_changes_only_the_fields_that_are_set(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let draft = system
        .create_post(&alice, "Title", "Body", Some(false))
        .await
        .unwrap();

    let retitled = system
        .update_post(&alice, update(&draft.id, None, "New title", "", None))
        .await
        .unwrap();

    assert_eq!(
        (
            retitled.title.as_str(),
            retitled.content.as_str(),
            retitled.published
        ),
        ("New title", "Body", Some(false)),
        "AIP-134: no mask means the fields set; the draft stays a draft"
    );
    let published = system
        .update_post(&alice, update(&draft.id, None, "", "", Some(true)))
        .await
        .unwrap();
    assert_eq!(
        (published.title.as_str(), published.published),
        ("New title", Some(true)),
        "a present `published` is a field that is set"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn create_post_requires_a_post_and_a_well_formed_request_id(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let mut client = system.post_client.clone();

    let cases = [
        (
            "no post",
            CreatePostRequest {
                post: None,
                request_id: String::new(),
            },
            "post",
        ),
        (
            "a request id that is not a UUID",
            CreatePostRequest {
                post: Some(new_post("T", "C", None)),
                request_id: "retry-1".to_owned(),
            },
            "request_id",
        ),
    ];
    for (case, request, field) in cases {
        let status = client
            .create_post(as_person(&alice, request))
            .await
            .unwrap_err();
        assert_bad_request(&status, &[field], case);
    }
    let request = CreatePostRequest {
        post: Some(new_post("T", "C", None)),
        request_id: Uuid::now_v7().to_string(),
    };
    client
        .create_post(as_person(&alice, request))
        .await
        .expect("a UUID request id is accepted");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn output_only_fields_sent_by_a_client_are_ignored(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let chosen_id = Uuid::now_v7().to_string();
    let request = CreatePostRequest {
        post: Some(Post {
            id: chosen_id.clone(),
            owner_id: bob.id.clone(),
            like_count: Some(99),
            liked_by_caller: Some(true),
            etag: "42".to_owned(),
            create_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..new_post("Mine", "Really", None)
        }),
        request_id: String::new(),
    };

    let post = system
        .post_client
        .clone()
        .create_post(as_person(&alice, request))
        .await
        .expect("output-only fields are no error")
        .into_inner()
        .post
        .unwrap();

    assert_ne!(post.id, chosen_id, "the service picks the id");
    assert_eq!(
        post.owner_id, alice.id,
        "the caller owns it, whatever was sent"
    );
    assert_eq!(
        (post.like_count, post.liked_by_caller, post.etag.as_str()),
        (Some(0), Some(false), "1")
    );
    assert_ne!(post.create_time.unwrap().seconds, 0);

    let renamed = system
        .update_post(
            &alice,
            patch(
                &post.id,
                &["title", "owner_id", "create_time"],
                "Ours",
                "",
                None,
            ),
        )
        .await
        .expect("output-only paths in a mask are ignored");
    assert_eq!(
        (renamed.title.as_str(), renamed.owner_id.as_str()),
        ("Ours", alice.id.as_str())
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn an_etag_makes_a_change_happen_only_to_the_version_read(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let post = system
        .create_post(&alice, "Title", "Body", None)
        .await
        .unwrap();
    let with_etag = |etag: &str, title: &str| {
        let mut request = update(&post.id, None, title, "", None);
        request.post.as_mut().unwrap().etag = etag.to_owned();
        request
    };

    // Two editors read version 1; the first to write wins.
    let first = system
        .update_post(&alice, with_etag(&post.etag, "First editor"))
        .await
        .expect("the etag is current");
    assert_ne!(first.etag, post.etag, "every change makes a new etag");
    let stale = system
        .update_post(&alice, with_etag(&post.etag, "Second editor"))
        .await
        .unwrap_err();
    assert_reason(&stale, ErrorReason::EtagMismatch, "a stale etag");
    assert_eq!(
        system.get_post(&alice, &post.id).await.unwrap().title,
        "First editor",
        "the second editor overwrote nothing"
    );

    let delete = |etag: &str| DeletePostRequest {
        id: post.id.clone(),
        etag: etag.to_owned(),
    };
    let mut client = system.post_client.clone();
    let stale = client
        .delete_post(as_person(&alice, delete(&post.etag)))
        .await
        .unwrap_err();
    assert_reason(
        &stale,
        ErrorReason::EtagMismatch,
        "a delete with a stale etag",
    );
    client
        .delete_post(as_person(&alice, delete(&first.etag)))
        .await
        .expect("a delete with the current etag");
    let gone = system.get_post(&alice, &post.id).await.unwrap_err();
    assert_reason(&gone, ErrorReason::PostNotFound, "deleted");
}

/// Creates `post` as `who` with `request_id` (AIP-155).
async fn create_with_request_id(
    system: &System,
    who: &Person,
    post: Post,
    request_id: Uuid,
) -> Result<Post, tonic::Status> {
    let request = CreatePostRequest {
        post: Some(post),
        request_id: request_id.to_string(),
    };
    let response = system
        .post_client
        .clone()
        .create_post(as_person(who, request))
        .await?;
    Ok(response.into_inner().post.expect("a post"))
}

/// The number of rows `query` counts.
async fn count(system: &System, query: &'static str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(&system.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_retry_with_the_same_request_id_returns_the_first_post_and_stores_no_second(
    pool: PgPool,
) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let request_id = Uuid::now_v7();
    let first =
        create_with_request_id(&system, &alice, new_post("Title", "Body", None), request_id)
            .await
            .unwrap();

    let retry = create_with_request_id(
        &system,
        &alice,
        new_post("  Title ", "Body\n", Some(true)),
        request_id,
    )
    .await
    .expect("the same post after trimming, published by default, is the same request");

    assert_eq!(retry, first, "the first answer");
    assert_eq!(count(&system, "select count(*) from posts.posts").await, 1);
    assert_eq!(
        count(&system, "select count(*) from posts.create_post_requests").await,
        1
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_retry_answers_the_post_as_it_is_now_or_post_not_found_once_deleted(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let request_id = Uuid::now_v7();
    let create = || create_with_request_id(&system, &alice, new_post("T", "C", None), request_id);
    let first = create().await.unwrap();
    let renamed = system
        .update_post(&alice, patch(&first.id, &["title"], "Renamed", "", None))
        .await
        .unwrap();

    let after_the_update = create().await.expect("a retry after an update");
    system.delete_post(&alice, &first.id).await.unwrap();
    let after_the_delete = create().await.unwrap_err();

    assert_eq!(after_the_update, renamed, "the post read again");
    assert_reason(
        &after_the_delete,
        ErrorReason::PostNotFound,
        "a retry whose post was deleted",
    );
    assert_eq!(
        count(&system, "select count(*) from posts.posts").await,
        0,
        "the retry did not create the post again"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_request_id_used_for_another_post_is_refused_and_writes_nothing(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let request_id = Uuid::now_v7();
    let first =
        create_with_request_id(&system, &alice, new_post("Title", "Body", None), request_id)
            .await
            .unwrap();
    let cases = [
        ("another title", new_post("Other", "Body", None)),
        ("another content", new_post("Title", "Other", None)),
        ("a draft", new_post("Title", "Body", Some(false))),
    ];

    for (case, post) in cases {
        let status = create_with_request_id(&system, &alice, post, request_id)
            .await
            .unwrap_err();

        assert_reason(&status, ErrorReason::RequestIdReused, case);
    }
    assert_eq!(count(&system, "select count(*) from posts.posts").await, 1);
    assert_eq!(
        system.get_post(&alice, &first.id).await.unwrap(),
        first,
        "the first post is unchanged"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn ten_simultaneous_creates_with_one_request_id_store_one_post_and_answer_it_to_all(
    pool: PgPool,
) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let request_id = Uuid::now_v7();

    let attempts = (0..10)
        .map(|_| create_with_request_id(&system, &alice, new_post("T", "C", None), request_id));
    let results = futures::future::join_all(attempts).await;

    let posts: Vec<Post> = results
        .into_iter()
        .map(|result| result.expect("every attempt succeeds"))
        .collect();
    assert!(
        posts.iter().all(|post| *post == posts[0]),
        "one answer: {posts:?}"
    );
    assert_eq!(count(&system, "select count(*) from posts.posts").await, 1);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn two_people_may_use_the_same_request_id_independently(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let request_id = Uuid::now_v7();

    let alices = create_with_request_id(&system, &alice, new_post("A", "C", None), request_id)
        .await
        .unwrap();
    let bobs = create_with_request_id(&system, &bob, new_post("B", "C", None), request_id)
        .await
        .expect("another person's id is no reuse");

    assert_ne!(alices.id, bobs.id);
    assert_eq!(
        (alices.owner_id, bobs.owner_id),
        (alice.id, bob.id),
        "each owns their own"
    );
    assert_eq!(count(&system, "select count(*) from posts.posts").await, 2);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_request_id_older_than_a_day_creates_a_new_post(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let request_id = Uuid::now_v7();
    let create = || create_with_request_id(&system, &alice, new_post("T", "C", None), request_id);
    let first = create().await.unwrap();
    sqlx::query(
        "update posts.create_post_requests set create_time = now() - interval '1 day 1 second'",
    )
    .execute(&system.pool)
    .await
    .unwrap();

    let second = create()
        .await
        .expect("an expired id is taken over, purged or not");
    let third = create().await.unwrap();

    assert_ne!(second.id, first.id, "a new post");
    assert_eq!(third, second, "and the id now stands for it");
    assert_eq!(count(&system, "select count(*) from posts.posts").await, 2);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_purge_deletes_request_ids_older_than_a_day_and_keeps_the_others(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
    for request_id in [old, recent] {
        create_with_request_id(&system, &alice, new_post("T", "C", None), request_id)
            .await
            .unwrap();
    }
    sqlx::query(
        "update posts.create_post_requests set create_time = now() - interval '1 day 1 second'
          where request_id = $1",
    )
    .bind(old)
    .execute(&system.pool)
    .await
    .unwrap();

    let mut conn = system.pool.acquire().await.unwrap();
    let purged = posts_service::purge_expired_request_ids(&mut conn)
        .await
        .unwrap();

    assert_eq!(purged, 1);
    let kept: Vec<Uuid> = sqlx::query_scalar("select request_id from posts.create_post_requests")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(kept, [recent]);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_search_finds_matches_behind_thousands_of_newer_posts_and_pages_through_them(
    pool: PgPool,
) {
    // A search first walks the newest posts in order, then asks the trigram
    // index for what the walk did not find (listing.rs): these matches lie
    // behind 3,000 newer posts, beyond the walk.
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    for n in 0..13 {
        let owner = if n % 2 == 0 { &alice } else { &bob };
        system
            .create_post(owner, &format!("Zebra sighting {n}"), "stripes", None)
            .await
            .unwrap();
    }
    system
        .create_post(&alice, "An ox", "horns", None)
        .await
        .unwrap();
    sqlx::query(
        "update posts.posts set create_time = create_time - interval '1 day',
                                update_time = update_time - interval '1 day'",
    )
    .execute(&system.pool)
    .await
    .unwrap();
    insert_posts(&system, &bob, 3_000).await;

    let search = |text: &str, owner_id: &str, page_token: String| ListPostsRequest {
        search: text.to_owned(),
        owner_id: owner_id.to_owned(),
        page_token,
        ..list(5)
    };
    let mut found = Vec::new();
    let mut token = String::new();
    loop {
        let page = system
            .list_posts(&alice, search("ZEBRA", "", token))
            .await
            .unwrap();
        found.extend(page.posts.iter().map(|post| post.title.clone()));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = (0..13)
        .rev()
        .map(|n| format!("Zebra sighting {n}"))
        .collect();
    assert_eq!(found, expected, "every match, newest first, once");

    // With an owner, and by skip as the course pages.
    let alices = system
        .list_posts(&alice, search("zebra", &alice.id, String::new()))
        .await
        .unwrap();
    assert_eq!(
        titles(&alices.posts),
        [
            "Zebra sighting 12",
            "Zebra sighting 10",
            "Zebra sighting 8",
            "Zebra sighting 6",
            "Zebra sighting 4"
        ]
    );
    let skipped = system
        .list_posts(
            &alice,
            ListPostsRequest {
                skip: 10,
                ..search("zebra", "", String::new())
            },
        )
        .await
        .unwrap();
    assert_eq!(
        titles(&skipped.posts),
        ["Zebra sighting 2", "Zebra sighting 1", "Zebra sighting 0"]
    );
    // Too short for the trigram index: walked to the end instead.
    let short = system
        .list_posts(&alice, search("ox", "", String::new()))
        .await
        .unwrap();
    assert_eq!(titles(&short.posts), ["An ox"]);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_word_common_in_old_posts_only_is_found_by_walking_on(pool: PgPool) {
    // More old matches than the trigram index is asked for (listing.rs): the
    // search walks on in order past the newest posts, which do not match.
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    sqlx::query(
        "insert into posts.posts (id, owner_id, title, content, create_time, update_time)
         select gen_random_uuid(), $1::uuid, 'Old news ' || n, 'content',
                now() - interval '1 day' - make_interval(secs => n),
                now() - interval '1 day' - make_interval(secs => n)
           from generate_series(0, 5199) as n",
    )
    .bind(&alice.id)
    .execute(&system.pool)
    .await
    .unwrap();
    insert_posts(&system, &alice, 600).await;

    let page = system
        .list_posts(
            &alice,
            ListPostsRequest {
                search: "old news".into(),
                ..list(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        titles(&page.posts),
        ["Old news 0", "Old news 1", "Old news 2"]
    );
    let next = system
        .list_posts(
            &alice,
            ListPostsRequest {
                search: "old news".into(),
                page_token: page.next_page_token,
                ..list(2)
            },
        )
        .await
        .unwrap();
    assert_eq!(titles(&next.posts), ["Old news 3", "Old news 4"]);
}
