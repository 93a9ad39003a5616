use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use futures::future::join_all;
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{PASSWORD, assert_bad_request, assert_reason, authorized, spawn_app};

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn create_user_stores_an_argon2id_hash_and_returns_no_secret(pool: PgPool) {
    let app = spawn_app(pool).await;

    let user = app
        .create_user("  Alice@Example.com ", PASSWORD)
        .await
        .unwrap();

    let id = Uuid::parse_str(&user.id).expect("the id is a UUID");
    assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");
    assert_eq!(
        user.email, "Alice@Example.com",
        "the email is trimmed, its case kept"
    );
    assert!(user.create_time.is_some());
    let stored: String = sqlx::query_scalar("select password_hash from auth.users where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "OWASP argon2id parameters: {stored}"
    );
    assert!(!stored.contains(PASSWORD));
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn an_email_is_taken_whatever_its_case(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("bob@example.com", PASSWORD).await.unwrap();

    let status = app
        .create_user(" BOB@Example.COM", "another password")
        .await
        .unwrap_err();

    assert_reason(
        &status,
        ErrorReason::EmailAlreadyRegistered,
        "a taken email",
    );
    let count: i64 = sqlx::query_scalar("select count(*) from auth.users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "no second row");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn simultaneous_registrations_of_one_email_give_exactly_one_user(pool: PgPool) {
    let app = spawn_app(pool).await;

    let spellings = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.com",
        "race@EXAMPLE.com",
    ];
    let attempts = spellings
        .iter()
        .cycle()
        .take(8)
        .map(|email| app.create_user(email, PASSWORD));
    let results = join_all(attempts).await;

    let created = results.iter().filter(|r| r.is_ok()).count();
    let taken = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|s| s.code() == Code::AlreadyExists))
        .count();
    assert_eq!((created, taken), (1, 7), "{results:?}");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn create_user_rejects_bad_fields_before_hashing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let long_local = "a".repeat(250);
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("empty email", "", PASSWORD, &["email"]),
        ("blank email", "   ", PASSWORD, &["email"]),
        ("no at sign", "alice.example.com", PASSWORD, &["email"]),
        ("no domain dot", "alice@localhost", PASSWORD, &["email"]),
        ("two at signs", "a@b@example.com", PASSWORD, &["email"]),
        ("NUL in the email", "a\0b@example.com", PASSWORD, &["email"]),
        (
            "email over 254 characters",
            &format!("{long_local}@example.com"),
            PASSWORD,
            &["email"],
        ),
        ("empty password", "p1@example.com", "", &["password"]),
        (
            "7-character password",
            "p2@example.com",
            "1234567",
            &["password"],
        ),
        (
            "129-character password",
            "p3@example.com",
            &"x".repeat(129),
            &["password"],
        ),
        (
            "1 MB password",
            "p4@example.com",
            &"x".repeat(1_000_000),
            &["password"],
        ),
        ("both wrong", "nope", "short", &["email", "password"]),
    ];
    for (case, email, password, fields) in cases {
        let status = app.create_user(email, password).await.unwrap_err();
        assert_bad_request(&status, fields, case);
    }
    let count: i64 = sqlx::query_scalar("select count(*) from auth.users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing stored");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn passwords_of_8_and_128_characters_are_accepted(pool: PgPool) {
    let app = spawn_app(pool).await;

    app.create_user("short@example.com", "12345678")
        .await
        .expect("8 characters");
    // 128 characters of 4 bytes each: the limit counts characters, not bytes.
    app.create_user("long@example.com", &"🔑".repeat(128))
        .await
        .expect("128 characters");
    app.login("long@example.com", &"🔑".repeat(128))
        .await
        .expect("and it logs in");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn get_user_shows_the_email_only_to_the_user_themself(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, alices_token) = app.signed_in_user("alice@example.com").await;
    let (_, bobs_token) = app.signed_in_user("bob@example.com").await;

    let seen_by_alice = app.get_user(&alice.id, Some(&alices_token)).await.unwrap();
    let seen_by_bob = app.get_user(&alice.id, Some(&bobs_token)).await.unwrap();

    assert_eq!(seen_by_alice, alice, "the whole user, email included");
    assert_eq!(
        seen_by_bob,
        proto::User {
            email: String::new(),
            ..alice
        },
        "another person sees the public profile: no email"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn get_user_errors(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;

    let anonymous = app.get_user(&alice.id, None).await.unwrap_err();
    assert_eq!(
        anonymous.code(),
        Code::Unauthenticated,
        "no token: {anonymous:?}"
    );

    let malformed = app.get_user("not-a-uuid", Some(&token)).await.unwrap_err();
    assert_bad_request(&malformed, &["id"], "malformed id");

    let empty = app.get_user("", Some(&token)).await.unwrap_err();
    assert_bad_request(&empty, &["id"], "empty id");

    let unknown = app
        .get_user(&Uuid::now_v7().to_string(), Some(&token))
        .await
        .unwrap_err();
    assert_reason(&unknown, ErrorReason::UserNotFound, "an unknown id");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn batch_get_users_answers_in_the_order_asked_with_emails(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;
    let bob = app.create_user("bob@example.com", PASSWORD).await.unwrap();
    let ids = vec![bob.id.clone(), alice.id.clone(), bob.id.clone()];

    let users = batch_get_users(&app, ids, false, &token).await.unwrap();

    assert_eq!(
        users,
        vec![bob.clone(), alice, bob],
        "AIP-231: one user per id, in request order, repeats included, emails \
         included (an internal method, for other services)"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn batch_get_users_fails_for_an_unknown_id_unless_missing_ones_are_allowed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;
    let bob = app.create_user("bob@example.com", PASSWORD).await.unwrap();
    let ids = vec![bob.id.clone(), Uuid::now_v7().to_string(), alice.id.clone()];

    let status = batch_get_users(&app, ids.clone(), false, &token)
        .await
        .unwrap_err();
    assert_reason(&status, ErrorReason::UserNotFound, "one unknown id");

    let partial = batch_get_users(&app, ids, true, &token).await.unwrap();
    assert_eq!(
        partial,
        vec![bob, alice],
        "allow_missing leaves the unknown out and keeps the order"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn batch_get_users_limits_and_checks_ids(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;

    let too_many = (0..101).map(|_| Uuid::now_v7().to_string()).collect();
    let status = batch_get_users(&app, too_many, false, &token)
        .await
        .unwrap_err();
    assert_bad_request(&status, &["ids"], "101 ids");

    let malformed = vec![alice.id.clone(), "x".to_owned()];
    let status = batch_get_users(&app, malformed, false, &token)
        .await
        .unwrap_err();
    assert_bad_request(&status, &["ids[1]"], "a malformed id, named by its index");

    let status = batch_get_users(&app, vec![], false, &token)
        .await
        .unwrap_err();
    assert_bad_request(&status, &["ids"], "no ids");

    let status = app
        .users
        .clone()
        .batch_get_users(proto::BatchGetUsersRequest {
            ids: vec![alice.id],
            allow_missing: false,
        })
        .await
        .unwrap_err();
    assert_reason(&status, ErrorReason::TokenMissing, "no token");
}

async fn batch_get_users(
    app: &crate::helpers::TestApp,
    ids: Vec<String>,
    allow_missing: bool,
    token: &str,
) -> Result<Vec<proto::User>, tonic::Status> {
    let request = proto::BatchGetUsersRequest { ids, allow_missing };
    Ok(app
        .users
        .clone()
        .batch_get_users(authorized(request, Some(token)))
        .await?
        .into_inner()
        .users)
}

/// Registers `email` with `password` and `request_id` (AIP-155).
async fn create_user_with_request_id(
    app: &crate::helpers::TestApp,
    email: &str,
    password: &str,
    request_id: Uuid,
) -> Result<proto::User, tonic::Status> {
    let request = proto::CreateUserRequest {
        email: email.to_owned(),
        password: password.to_owned(),
        request_id: request_id.to_string(),
    };
    let response = app.users.clone().create_user(request).await?;
    Ok(response.into_inner().user.expect("a created user"))
}

/// The number of rows `query` counts.
async fn count(app: &crate::helpers::TestApp, query: &'static str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_retry_with_the_same_request_id_returns_the_first_user_and_stores_no_second(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let request_id = Uuid::now_v7();
    let first = create_user_with_request_id(&app, "Alice@Example.com", PASSWORD, request_id)
        .await
        .unwrap();

    let retry = create_user_with_request_id(&app, " alice@example.COM", PASSWORD, request_id)
        .await
        .expect("the same email in another case, and the same password");

    assert_eq!(retry, first, "the first answer, email as stored");
    assert_eq!(count(&app, "select count(*) from auth.users").await, 1);
    assert_eq!(
        count(&app, "select count(*) from auth.create_user_requests").await,
        1
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_request_id_used_with_another_email_or_password_is_refused_and_writes_nothing(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let request_id = Uuid::now_v7();
    create_user_with_request_id(&app, "alice@example.com", PASSWORD, request_id)
        .await
        .unwrap();
    let cases = [
        ("another email", "bob@example.com", PASSWORD),
        ("another password", "alice@example.com", "another password"),
        ("both", "bob@example.com", "another password"),
    ];

    for (case, email, password) in cases {
        let status = create_user_with_request_id(&app, email, password, request_id)
            .await
            .unwrap_err();

        assert_reason(&status, ErrorReason::RequestIdReused, case);
    }
    assert_eq!(count(&app, "select count(*) from auth.users").await, 1);
    app.login("alice@example.com", PASSWORD)
        .await
        .expect("the first password still logs in");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn ten_simultaneous_registrations_with_one_request_id_store_one_user_and_answer_it_to_all(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let request_id = Uuid::now_v7();

    let attempts = (0..10)
        .map(|_| create_user_with_request_id(&app, "race@example.com", PASSWORD, request_id));
    let results = join_all(attempts).await;

    let users: Vec<proto::User> = results
        .into_iter()
        .map(|result| result.expect("every attempt succeeds"))
        .collect();
    assert!(
        users.iter().all(|user| *user == users[0]),
        "one answer: {users:?}"
    );
    assert_eq!(count(&app, "select count(*) from auth.users").await, 1);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_failed_registration_does_not_keep_its_request_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("taken@example.com", PASSWORD)
        .await
        .unwrap();
    let request_id = Uuid::now_v7();
    let taken = create_user_with_request_id(&app, "taken@example.com", PASSWORD, request_id)
        .await
        .unwrap_err();

    let corrected = create_user_with_request_id(&app, "free@example.com", PASSWORD, request_id)
        .await
        .expect("the id was not used up");

    assert_reason(&taken, ErrorReason::EmailAlreadyRegistered, "a taken email");
    assert_eq!(corrected.email, "free@example.com");
    assert_eq!(count(&app, "select count(*) from auth.users").await, 2);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_request_id_older_than_a_day_no_longer_deduplicates(pool: PgPool) {
    let app = spawn_app(pool).await;
    let request_id = Uuid::now_v7();
    create_user_with_request_id(&app, "alice@example.com", PASSWORD, request_id)
        .await
        .unwrap();
    sqlx::query(
        "update auth.create_user_requests set create_time = now() - interval '1 day 1 second'",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let retry = create_user_with_request_id(&app, "alice@example.com", PASSWORD, request_id)
        .await
        .unwrap_err();
    let other = create_user_with_request_id(&app, "bob@example.com", "other password", request_id)
        .await
        .expect("an expired id is no reuse, purged or not");

    assert_reason(
        &retry,
        ErrorReason::EmailAlreadyRegistered,
        "a retry after a day registers anew",
    );
    assert_eq!(other.email, "bob@example.com");
    assert_eq!(count(&app, "select count(*) from auth.users").await, 2);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_purge_deletes_request_ids_older_than_a_day_and_keeps_the_others(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
    for (request_id, email) in [(old, "old@example.com"), (recent, "recent@example.com")] {
        create_user_with_request_id(&app, email, PASSWORD, request_id)
            .await
            .unwrap();
    }
    sqlx::query(
        "update auth.create_user_requests set create_time = now() - interval '1 day 1 second'
          where request_id = $1",
    )
    .bind(old)
    .execute(&app.pool)
    .await
    .unwrap();

    let mut conn = app.pool.acquire().await.unwrap();
    let purged = auth_service::purge_expired_request_ids(&mut conn)
        .await
        .unwrap();

    assert_eq!(purged, 1);
    let kept: Vec<Uuid> = sqlx::query_scalar("select request_id from auth.create_user_requests")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(kept, [recent]);
    assert_eq!(
        count(&app, "select count(*) from auth.users").await,
        2,
        "the users stay"
    );
}
