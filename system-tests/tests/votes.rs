//! votes-service (`agora.votes.v1.VoteService`) driven through the running system:
//! likes are checked against what `GetPost` shows and against the rows of
//! `votes.votes`.

use agora_proto::{
    errors::ErrorReason,
    votes::v1::{CountVotesRequest, PostVotes, VoteDirection, VoteRequest},
};
use futures::future::join_all;
use sqlx::PgPool;
use system_tests::{
    Person, System, as_person, assert_bad_request, assert_reason, spawn_system, spawn_with_post,
};
use tonic::{Code, Request, Status};
use uuid::Uuid;

/// All rows of `votes.votes`, whatever the post.
async fn all_stored_likes(system: &System) -> i64 {
    sqlx::query_scalar("select count(*) from votes.votes")
        .fetch_one(&system.pool)
        .await
        .expect("count all likes")
}

/// Whether `person` has a row in `votes.votes` for `post_id`.
async fn stored_like_of(system: &System, person: &Person, post_id: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from votes.votes where post_id = $1::uuid and user_id = $2::uuid)",
    )
    .bind(post_id)
    .bind(&person.id)
    .fetch_one(&system.pool)
    .await
    .expect("look up a like")
}

fn assert_invalid_field(status: &Status, field: &str, case: &str) {
    assert_bad_request(status, &[field], case);
}

fn vote_request(post_id: &str, direction: i32) -> VoteRequest {
    VoteRequest {
        post_id: post_id.to_owned(),
        direction,
    }
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("valid metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_like_is_counted_and_shown_to_the_liker_only(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;
    let carol = system.sign_up("carol@example.com").await;

    let count = system
        .vote(&bob, &post.id, VoteDirection::Add)
        .await
        .expect("bob likes the post");

    assert_eq!(count, 1, "the count after the first like");
    assert!(stored_like_of(&system, &bob, &post.id).await, "bob's row");
    let seen_by_bob = system.get_post(&bob, &post.id).await.unwrap();
    assert_eq!(
        (seen_by_bob.like_count, seen_by_bob.liked_by_caller),
        (Some(1), Some(true)),
        "bob sees his like"
    );
    let seen_by_alice = system.get_post(&alice, &post.id).await.unwrap();
    assert_eq!(
        (seen_by_alice.like_count, seen_by_alice.liked_by_caller),
        (Some(1), Some(false)),
        "alice sees bob's like as not hers"
    );

    let count = system
        .vote(&carol, &post.id, VoteDirection::Add)
        .await
        .expect("carol likes the post");

    assert_eq!(count, 2, "the count after a second person's like");
    assert_eq!(system.stored_likes(&post.id).await, 2);
    for (case, person, liked) in [
        ("alice", &alice, false),
        ("bob", &bob, true),
        ("carol", &carol, true),
    ] {
        let seen = system.get_post(person, &post.id).await.unwrap();
        assert_eq!(
            (seen.like_count, seen.liked_by_caller),
            (Some(2), Some(liked)),
            "{case}: GetPost after two likes"
        );
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn liking_a_post_twice_is_already_exists_and_keeps_one_row(pool: PgPool) {
    let (system, _alice, post) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;
    system
        .vote(&bob, &post.id, VoteDirection::Add)
        .await
        .unwrap();

    let status = system
        .vote(&bob, &post.id, VoteDirection::Add)
        .await
        .unwrap_err();

    assert_reason(&status, ErrorReason::AlreadyLiked, "a second like");
    assert_eq!(system.stored_likes(&post.id).await, 1, "still one row");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn removing_a_like_deletes_its_row_and_removing_it_again_is_not_found(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;
    system
        .vote(&bob, &post.id, VoteDirection::Add)
        .await
        .unwrap();
    system
        .vote(&alice, &post.id, VoteDirection::Add)
        .await
        .unwrap();

    let count = system
        .vote(&bob, &post.id, VoteDirection::Remove)
        .await
        .expect("bob takes his like back");

    assert_eq!(count, 1, "alice's like is left");
    assert!(
        !stored_like_of(&system, &bob, &post.id).await,
        "bob's row is gone"
    );
    assert!(
        stored_like_of(&system, &alice, &post.id).await,
        "alice's row stays"
    );

    let count = system
        .vote(&alice, &post.id, VoteDirection::Remove)
        .await
        .expect("alice takes her like back");

    assert_eq!(count, 0, "the count after the last like is removed");
    assert_eq!(system.stored_likes(&post.id).await, 0, "no rows left");

    let again = system
        .vote(&bob, &post.id, VoteDirection::Remove)
        .await
        .unwrap_err();

    assert_reason(&again, ErrorReason::NotLiked, "removing again");
    assert_eq!(system.stored_likes(&post.id).await, 0);

    let relike = system
        .vote(&bob, &post.id, VoteDirection::Add)
        .await
        .expect("a removed like can be given again");
    assert_eq!(relike, 1);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn removing_a_like_never_given_is_not_found(pool: PgPool) {
    let (system, _alice, post) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;

    let status = system
        .vote(&bob, &post.id, VoteDirection::Remove)
        .await
        .unwrap_err();

    assert_reason(&status, ErrorReason::NotLiked, "no like to remove");
    assert_eq!(system.stored_likes(&post.id).await, 0);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn voting_on_an_unknown_post_is_not_found(pool: PgPool) {
    let (system, alice, _post) = spawn_with_post(pool).await;
    let unknown = Uuid::now_v7().to_string();

    for (case, direction) in [
        ("add", VoteDirection::Add),
        ("remove", VoteDirection::Remove),
    ] {
        let status = system.vote(&alice, &unknown, direction).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{case}: {status:?}");
    }
    assert_eq!(all_stored_likes(&system).await, 0, "nothing stored");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn vote_rejects_a_malformed_post_id_or_direction(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let add = VoteDirection::Add as i32;
    let cases: &[(&str, &str, i32, &str)] = &[
        ("malformed post id", "nope", add, "post_id"),
        ("empty post id", "", add, "post_id"),
        (
            "post id with a trailing space",
            &format!("{} ", post.id),
            add,
            "post_id",
        ),
        (
            "unspecified direction",
            &post.id,
            VoteDirection::Unspecified as i32,
            "direction",
        ),
        ("undefined direction 7", &post.id, 7, "direction"),
        ("negative direction", &post.id, -1, "direction"),
    ];

    for (case, post_id, direction, field) in cases {
        let request = as_person(&alice, vote_request(post_id, *direction));
        let status = system
            .vote_client
            .clone()
            .vote(request)
            .await
            .expect_err(case);
        assert_invalid_field(&status, field, case);
    }
    assert_eq!(all_stored_likes(&system).await, 0, "nothing stored");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_person_may_like_their_own_post(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;

    let count = system
        .vote(&alice, &post.id, VoteDirection::Add)
        .await
        .expect("alice likes her own post");

    assert_eq!(count, 1);
    assert!(stored_like_of(&system, &alice, &post.id).await);
    let seen = system.get_post(&alice, &post.id).await.unwrap();
    assert_eq!(
        (seen.like_count, seen.liked_by_caller),
        (Some(1), Some(true))
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn another_persons_draft_cannot_be_liked_but_its_owner_can_like_it(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let bob = system.sign_up("bob@example.com").await;
    let draft = system
        .create_post(&alice, "Draft", "Not yet", Some(false))
        .await
        .unwrap();
    assert_eq!(draft.published, Some(false), "the post is a draft");

    let status = system
        .vote(&bob, &draft.id, VoteDirection::Add)
        .await
        .unwrap_err();

    assert_reason(
        &status,
        ErrorReason::PostNotFound,
        "bob likes alice's draft",
    );
    assert_eq!(system.stored_likes(&draft.id).await, 0, "no row for bob");

    let count = system
        .vote(&alice, &draft.id, VoteDirection::Add)
        .await
        .expect("alice likes her own draft");

    assert_eq!(count, 1);
    assert!(stored_like_of(&system, &alice, &draft.id).await);
    assert!(!stored_like_of(&system, &bob, &draft.id).await);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn calls_without_a_valid_token_are_unauthenticated(pool: PgPool) {
    let (system, _alice, post) = spawn_with_post(pool).await;
    let add = VoteDirection::Add as i32;
    let tokens: &[(&str, Option<&str>)] = &[
        ("no token", None),
        ("garbage token", Some("garbage")),
        ("empty token", Some("")),
    ];

    for (case, token) in tokens {
        let vote = vote_request(&post.id, add);
        let request = match token {
            None => Request::new(vote),
            Some(token) => with_token(token, vote),
        };
        let status = system
            .vote_client
            .clone()
            .vote(request)
            .await
            .expect_err(case);
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "Vote, {case}: {status:?}"
        );

        let count = CountVotesRequest {
            post_ids: vec![post.id.clone()],
        };
        let request = match token {
            None => Request::new(count),
            Some(token) => with_token(token, count),
        };
        let status = system
            .vote_client
            .clone()
            .count_votes(request)
            .await
            .expect_err(case);
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "CountVotes, {case}: {status:?}"
        );
    }
    assert_eq!(system.stored_likes(&post.id).await, 0, "nothing stored");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn simultaneous_likes_by_one_person_give_exactly_one_like(pool: PgPool) {
    let (system, _alice, post) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;

    let attempts = (0..50).map(|_| system.vote(&bob, &post.id, VoteDirection::Add));
    let results = join_all(attempts).await;

    let liked: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let taken = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|s| s.code() == Code::AlreadyExists))
        .count();
    assert_eq!((liked.len(), taken), (1, 49), "{results:?}");
    assert_eq!(liked, [1], "the one success counts one like");
    assert_eq!(system.stored_likes(&post.id).await, 1, "exactly one row");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn likes_racing_the_posts_deletion_succeed_or_are_not_found_and_leave_no_rows(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let emails: Vec<String> = (0..10).map(|n| format!("fan{n}@example.com")).collect();
    let fans = join_all(emails.iter().map(|email| system.sign_up(email))).await;

    // Warm up votes-service (connection, token keys) so the likes start as
    // promptly as the delete does.
    let warm_up = CountVotesRequest {
        post_ids: vec![post.id.clone()],
    };
    let counted = system
        .vote_client
        .clone()
        .count_votes(as_person(&alice, warm_up))
        .await
        .expect("votes-service answers");
    assert_eq!(counted.into_inner().posts[0].like_count, 0, "no likes yet");

    let likes = join_all(
        fans.iter()
            .map(|fan| system.vote(fan, &post.id, VoteDirection::Add)),
    );
    let (results, deleted) = tokio::join!(likes, system.delete_post(&alice, &post.id));

    deleted.expect("the owner deletes the post");
    for (fan, result) in fans.iter().zip(&results) {
        match result {
            // The count is the like's own statement's view: at least its own like.
            Ok(count) => assert!(
                (1..=10).contains(count),
                "{}: a like before the delete counts 1 to 10, got {count}",
                fan.email
            ),
            Err(status) => assert_eq!(
                status.code(),
                Code::NotFound,
                "{}: a like after the delete: {status:?}",
                fan.email
            ),
        }
    }
    assert_eq!(system.stored_likes(&post.id).await, 0, "no orphaned likes");
    let gone = system.get_post(&alice, &post.id).await.unwrap_err();
    assert_reason(&gone, ErrorReason::PostNotFound, "the post is gone");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn count_votes_answers_each_distinct_id_once_for_the_caller(pool: PgPool) {
    let (system, alice, liked_by_both) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;
    let liked_by_bob = system
        .create_post(&alice, "Second", "Another post", None)
        .await
        .unwrap();
    let unliked = system
        .create_post(&alice, "Third", "Nobody likes this", None)
        .await
        .unwrap();
    system
        .vote(&alice, &liked_by_both.id, VoteDirection::Add)
        .await
        .unwrap();
    system
        .vote(&bob, &liked_by_both.id, VoteDirection::Add)
        .await
        .unwrap();
    system
        .vote(&bob, &liked_by_bob.id, VoteDirection::Add)
        .await
        .unwrap();
    let unknown = Uuid::now_v7().to_string();
    let post_ids = vec![
        liked_by_both.id.clone(),
        liked_by_bob.id.clone(),
        unliked.id.clone(),
        unknown.clone(),
        liked_by_both.id.clone(),
        unknown.clone(),
    ];
    let entry = |post_id: &str, like_count, liked_by_caller| PostVotes {
        post_id: post_id.to_owned(),
        like_count,
        liked_by_caller,
    };
    let cases = [
        (
            "alice",
            &alice,
            vec![
                entry(&liked_by_both.id, 2, true),
                entry(&liked_by_bob.id, 1, false),
                entry(&unliked.id, 0, false),
                entry(&unknown, 0, false),
            ],
        ),
        (
            "bob",
            &bob,
            vec![
                entry(&liked_by_both.id, 2, true),
                entry(&liked_by_bob.id, 1, true),
                entry(&unliked.id, 0, false),
                entry(&unknown, 0, false),
            ],
        ),
    ];

    for (case, caller, mut expected) in cases {
        let request = as_person(
            caller,
            CountVotesRequest {
                post_ids: post_ids.clone(),
            },
        );
        let mut answered = system
            .vote_client
            .clone()
            .count_votes(request)
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"))
            .into_inner()
            .posts;

        answered.sort_by(|a, b| a.post_id.cmp(&b.post_id));
        expected.sort_by(|a, b| a.post_id.cmp(&b.post_id));
        assert_eq!(answered, expected, "{case}: one entry per distinct id");
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn count_votes_needs_at_least_one_id(pool: PgPool) {
    let (system, alice, _post) = spawn_with_post(pool).await;

    let status = system
        .vote_client
        .clone()
        .count_votes(as_person(&alice, CountVotesRequest { post_ids: vec![] }))
        .await
        .unwrap_err();

    assert_invalid_field(&status, "post_ids", "no ids");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn count_votes_takes_100_ids_and_rejects_101_or_a_malformed_id(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let ids = |n: usize| -> Vec<String> { (0..n).map(|_| Uuid::now_v7().to_string()).collect() };

    let hundred = system
        .vote_client
        .clone()
        .count_votes(as_person(&alice, CountVotesRequest { post_ids: ids(100) }))
        .await
        .expect("100 ids are allowed")
        .into_inner()
        .posts;
    assert_eq!(hundred.len(), 100, "one entry for each of 100 ids");

    let cases: &[(&str, Vec<String>, &str)] = &[
        ("101 ids", ids(101), "post_ids"),
        (
            "malformed id",
            vec![post.id.clone(), "nope".to_owned()],
            "post_ids[1]",
        ),
        ("empty id", vec![String::new()], "post_ids[0]"),
    ];
    for (case, post_ids, field) in cases {
        let request = as_person(
            &alice,
            CountVotesRequest {
                post_ids: post_ids.clone(),
            },
        );
        let status = system
            .vote_client
            .clone()
            .count_votes(request)
            .await
            .expect_err(case);
        assert_invalid_field(&status, field, case);
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn deleting_a_post_deletes_its_likes_and_no_others(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let bob = system.sign_up("bob@example.com").await;
    let other = system
        .create_post(&alice, "Kept", "This one stays", None)
        .await
        .unwrap();
    for (person, post_id) in [(&alice, &post.id), (&bob, &post.id), (&bob, &other.id)] {
        system
            .vote(person, post_id, VoteDirection::Add)
            .await
            .unwrap();
    }
    assert_eq!(system.stored_likes(&post.id).await, 2, "before the delete");

    system.delete_post(&alice, &post.id).await.unwrap();

    assert_eq!(
        system.stored_likes(&post.id).await,
        0,
        "the post's likes are gone"
    );
    assert_eq!(
        system.stored_likes(&other.id).await,
        1,
        "the other post's like stays"
    );
    let status = system
        .vote(&bob, &post.id, VoteDirection::Remove)
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "no like left to remove: {status:?}"
    );
}

/// Posts whose kept like count (`votes.like_counts`, migration 0010) differs
/// from their rows in `votes.votes`, with both figures.
async fn miscounted_posts(system: &System) -> Vec<(Uuid, i64, i64)> {
    sqlx::query_as(
        "select coalesce(counted.post_id, stored.post_id),
                coalesce(counted.like_count, 0), coalesce(stored.likes, 0)
           from votes.like_counts as counted
           full join (select post_id, count(*) as likes from votes.votes group by post_id) as stored
             on stored.post_id = counted.post_id
          where coalesce(counted.like_count, 0) <> coalesce(stored.likes, 0)",
    )
    .fetch_all(&system.pool)
    .await
    .expect("compare the counts")
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn kept_like_counts_stay_exact_through_races_and_cascaded_deletes(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let other = system
        .create_post(&alice, "Another", "Liked too", None)
        .await
        .unwrap();
    let emails: Vec<String> = (0..12).map(|n| format!("fan{n}@example.com")).collect();
    let fans = join_all(emails.iter().map(|email| system.sign_up(email))).await;

    // Everyone likes both posts at once; then half take one like back while
    // the author likes hers.
    let likes = fans.iter().flat_map(|fan| {
        [&post.id, &other.id].map(|post_id| system.vote(fan, post_id, VoteDirection::Add))
    });
    assert!(join_all(likes).await.iter().all(Result::is_ok));
    let removals = fans[..6]
        .iter()
        .map(|fan| system.vote(fan, &post.id, VoteDirection::Remove));
    let (removed, own) = tokio::join!(
        join_all(removals),
        system.vote(&alice, &post.id, VoteDirection::Add)
    );
    assert!(removed.iter().all(Result::is_ok) && own.is_ok());
    assert_eq!(miscounted_posts(&system).await, []);
    assert_eq!(
        system.get_post(&alice, &post.id).await.unwrap().like_count,
        Some(7)
    );

    // A deleted account's likes leave its counts with it (the cascade).
    sqlx::query("delete from auth.users where id = $1::uuid")
        .bind(&fans[11].id)
        .execute(&system.pool)
        .await
        .unwrap();
    assert_eq!(miscounted_posts(&system).await, []);
    assert_eq!(
        system.get_post(&alice, &post.id).await.unwrap().like_count,
        Some(6)
    );
    assert_eq!(
        system.get_post(&alice, &other.id).await.unwrap().like_count,
        Some(11)
    );

    // A deleted post takes its count along.
    system.delete_post(&alice, &post.id).await.unwrap();
    let kept: i64 =
        sqlx::query_scalar("select count(*) from votes.like_counts where post_id = $1::uuid")
            .bind(&post.id)
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert_eq!(kept, 0, "no count outlives its post");
    assert_eq!(miscounted_posts(&system).await, []);
}
