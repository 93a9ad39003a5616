//! Changing one's password and deleting one's account.

use std::time::{Duration, Instant};

use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use auth_service::{AuthSettings, Config};
use futures::future::join_all;
use sqlx::PgPool;
use tonic::Status;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, assert_bad_request, assert_reason, authorized, spawn_app_with,
};

const NEW_PASSWORD: &str = "staple battery horse";

/// Ended sessions learned every 100 ms, and `adjust`ed.
fn config(adjust: impl FnOnce(&mut AuthSettings)) -> Config {
    let mut auth = AuthSettings {
        revoked_sessions_reload_ms: 100,
        ..AuthSettings::default()
    };
    adjust(&mut auth);
    Config {
        auth,
        ..Config::ephemeral()
    }
}

async fn login(app: &TestApp, email: &str, password: &str) -> proto::LoginResponse {
    app.login(email, password).await.expect("login succeeds")
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn change_password_refuses_a_wrong_current_password_and_bad_fields(pool: PgPool) {
    let app = spawn_app_with(pool, config(|_| {})).await;
    let (_, token) = app.signed_in_user("alice@example.com").await;

    let wrong = app
        .change_password(&token, "not the password", NEW_PASSWORD)
        .await
        .unwrap_err();

    assert_reason(
        &wrong,
        ErrorReason::InvalidCredentials,
        "a wrong current password",
    );
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "no current password",
            "",
            NEW_PASSWORD,
            &["current_password"],
        ),
        ("a short new password", PASSWORD, "short", &["new_password"]),
        ("both", "", "", &["current_password", "new_password"]),
    ];
    for (case, current, new, fields) in cases {
        let status = app.change_password(&token, current, new).await.unwrap_err();
        assert_bad_request(&status, fields, case);
    }
    let unsigned = app
        .users
        .clone()
        .change_password(proto::ChangePasswordRequest {
            current_password: PASSWORD.to_owned(),
            new_password: NEW_PASSWORD.to_owned(),
        })
        .await
        .unwrap_err();
    assert_reason(&unsigned, ErrorReason::TokenMissing, "without a token");
    login(&app, "alice@example.com", PASSWORD).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn change_password_ends_the_other_sessions_and_keeps_the_callers(pool: PgPool) {
    let app = spawn_app_with(pool, config(|_| {})).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    let this = login(&app, "alice@example.com", PASSWORD).await;
    let others = [
        login(&app, "alice@example.com", PASSWORD).await,
        login(&app, "alice@example.com", PASSWORD).await,
    ];

    let ended = app
        .change_password(&this.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .expect("the right current password changes it");

    assert_eq!(ended, 2);
    for other in &others {
        let refresh = app.refresh(&other.refresh_token).await.unwrap_err();
        assert_reason(
            &refresh,
            ErrorReason::RefreshTokenInvalid,
            "another session's refresh token",
        );
        let refused = app.refused_soon(&other.access_token).await;
        assert_reason(
            &refused,
            ErrorReason::TokenRevoked,
            "another session's access token",
        );
    }
    app.verify(&this.access_token)
        .await
        .expect("the caller's session goes on");
    app.refresh(&this.refresh_token)
        .await
        .expect("and refreshes");
    let old = app.login("alice@example.com", PASSWORD).await.unwrap_err();
    assert_reason(
        &old,
        ErrorReason::InvalidCredentials,
        "the old password no longer logs in",
    );
    login(&app, "alice@example.com", NEW_PASSWORD).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn delete_user_needs_the_callers_own_id_and_password(pool: PgPool) {
    let app = spawn_app_with(pool, config(|_| {})).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;
    let (bob, _) = app.signed_in_user("bob@example.com").await;

    let other = app
        .delete_user(&token, &bob.id, PASSWORD)
        .await
        .unwrap_err();
    assert_reason(
        &other,
        ErrorReason::NotAccountOwner,
        "another user's account, with the right password",
    );
    let wrong = app
        .delete_user(&token, &alice.id, "not the password")
        .await
        .unwrap_err();
    assert_reason(&wrong, ErrorReason::InvalidCredentials, "a wrong password");
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("no id", "", PASSWORD, &["id"]),
        ("not a UUID", "alice", PASSWORD, &["id"]),
        ("no password", &alice.id, "", &["password"]),
        ("neither", "", "", &["id", "password"]),
    ];
    for (case, id, password, fields) in cases {
        let status = app.delete_user(&token, id, password).await.unwrap_err();
        assert_bad_request(&status, fields, case);
    }
    for (email, case) in [
        ("alice@example.com", "alice is still there"),
        ("bob@example.com", "bob too"),
    ] {
        app.login(email, PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"));
    }
}

/// How many rows of each table in the `auth` schema mention `needle`, in any
/// column, for the tables where some do.
async fn auth_rows_mentioning(app: &TestApp, needle: &str) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables
          where table_schema = 'auth' and table_type = 'BASE TABLE' order by table_name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(tables.len() >= 7, "every table of the schema: {tables:?}");
    let mut found = Vec::new();
    for table in tables {
        let sql = format!(
            "select count(*) from auth.{table} as r where position(lower($1) in lower(r::text)) > 0"
        );
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(needle)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if rows > 0 {
            found.push((table, rows));
        }
    }
    found
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn deleting_an_account_leaves_no_row_of_it_in_the_auth_schema(pool: PgPool) {
    let app = spawn_app_with(pool, config(|_| {})).await;
    // Registered with a request id, with two sessions (one refreshed, so a
    // spent refresh token is kept), a failed login counted for the email, a
    // post and a like.
    let alice = app
        .users
        .clone()
        .create_user(proto::CreateUserRequest {
            email: "Alice@Example.com".to_owned(),
            password: PASSWORD.to_owned(),
            request_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let (bob, _) = app.signed_in_user("bob@example.com").await;
    let first = login(&app, "alice@example.com", PASSWORD).await;
    let second = login(&app, "alice@example.com", PASSWORD).await;
    app.refresh(&first.refresh_token).await.unwrap();
    app.login_from("203.0.113.7", "alice@example.com", "a wrong guess")
        .await
        .unwrap_err();
    let alice_id = Uuid::parse_str(&alice.id).unwrap();
    let post_id = Uuid::now_v7();
    sqlx::query("insert into posts.posts (id, owner_id, title, content) values ($1, $2, 't', 'c')")
        .bind(post_id)
        .bind(alice_id)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("insert into votes.votes (post_id, user_id) values ($1, $2), ($1, $3)")
        .bind(post_id)
        .bind(alice_id)
        .bind(Uuid::parse_str(&bob.id).unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(!auth_rows_mentioning(&app, &alice.id).await.is_empty());
    assert!(
        !auth_rows_mentioning(&app, "alice@example.com")
            .await
            .is_empty()
    );

    app.delete_user(&second.access_token, &alice.id, PASSWORD)
        .await
        .expect("the owner deletes their account");

    for needle in [alice.id.as_str(), "alice@example.com"] {
        assert_eq!(
            auth_rows_mentioning(&app, needle).await,
            [],
            "no row of the auth schema mentions {needle}"
        );
    }
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from posts.posts where owner_id = $1)
              + (select count(*) from votes.votes where user_id = $1 or post_id = $2)",
    )
    .bind(alice_id)
    .bind(post_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "the posts and likes went with the account");
    let login = app.login("alice@example.com", PASSWORD).await.unwrap_err();
    assert_reason(
        &login,
        ErrorReason::InvalidCredentials,
        "login after deletion",
    );
    let refresh = app.refresh(&second.refresh_token).await.unwrap_err();
    assert_reason(
        &refresh,
        ErrorReason::RefreshTokenInvalid,
        "refresh after deletion",
    );
    let revoked: Vec<String> = app
        .revoked_sessions(None)
        .await
        .sessions
        .into_iter()
        .map(|session| session.id)
        .collect();
    for session in [&first, &second] {
        assert!(revoked.contains(&session.session_id), "{revoked:?}");
        let refused = app.refused_soon(&session.access_token).await;
        assert_reason(
            &refused,
            ErrorReason::TokenRevoked,
            "a token of the account",
        );
    }
    login_ok(&app, "bob@example.com").await;
}

async fn login_ok(app: &TestApp, email: &str) {
    app.login(email, PASSWORD)
        .await
        .unwrap_or_else(|status| panic!("{email} still logs in: {status:?}"));
}

/// ChangePassword from `address`, as the gateway names the client.
async fn change_password_from(
    app: &TestApp,
    address: &str,
    token: &str,
    current: &str,
) -> Result<(), Status> {
    let mut request = authorized(
        proto::ChangePasswordRequest {
            current_password: current.to_owned(),
            new_password: NEW_PASSWORD.to_owned(),
        },
        Some(token),
    );
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().unwrap());
    app.users.clone().change_password(request).await?;
    Ok(())
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn wrong_passwords_to_change_it_are_throttled_like_failed_logins(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        config(|auth| {
            auth.login_free_failures_per_account = 2;
            auth.login_free_failures_per_address = 0;
        }),
    )
    .await;
    let (_, token) = app.signed_in_user("alice@example.com").await;
    const THIEF: &str = "203.0.113.7";

    for guess in ["guess 1", "guess 2"] {
        let status = change_password_from(&app, THIEF, &token, guess)
            .await
            .unwrap_err();
        assert_reason(&status, ErrorReason::InvalidCredentials, guess);
    }
    let throttled = change_password_from(&app, THIEF, &token, PASSWORD)
        .await
        .unwrap_err();

    assert_reason(
        &throttled,
        ErrorReason::LoginThrottled,
        "even the right password, from that address, for now",
    );
    assert!(
        throttled.get_details_retry_info().is_some(),
        "{throttled:?}"
    );
    let login = app
        .login_from(THIEF, "alice@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_reason(
        &login,
        ErrorReason::LoginThrottled,
        "one count with the account's logins",
    );
    let user_id = app.verify(&token).await.unwrap().user_id;
    let delete = {
        let mut request = authorized(
            proto::DeleteUserRequest {
                id: user_id,
                password: PASSWORD.to_owned(),
            },
            Some(&token),
        );
        request
            .metadata_mut()
            .insert("x-forwarded-for", THIEF.parse().unwrap());
        app.users.clone().delete_user(request).await.unwrap_err()
    };
    assert_reason(&delete, ErrorReason::LoginThrottled, "DeleteUser too");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn password_checks_wait_their_hashing_turn_and_a_deadline_the_queue_would_miss_is_refused(
    pool: PgPool,
) {
    let app = spawn_app_with(
        pool,
        config(|auth| {
            auth.password_hashing_concurrency = 1;
            auth.password_hashing_queue = 16;
        }),
    )
    .await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;
    let started = Instant::now();
    let mut burst: Vec<_> = (0..12)
        .map(|_| {
            let mut auth = app.auth.clone();
            tokio::spawn(async move {
                auth.login(proto::LoginRequest {
                    email: "alice@example.com".to_owned(),
                    password: PASSWORD.to_owned(),
                })
                .await
            })
        })
        .collect();
    burst.remove(0).await.unwrap().expect("the first login");
    let one_hash = started.elapsed();

    let mut change = authorized(
        proto::ChangePasswordRequest {
            current_password: PASSWORD.to_owned(),
            new_password: NEW_PASSWORD.to_owned(),
        },
        Some(&token),
    );
    change.set_timeout(one_hash * 2);
    let mut delete = authorized(
        proto::DeleteUserRequest {
            id: alice.id.clone(),
            password: PASSWORD.to_owned(),
        },
        Some(&token),
    );
    delete.set_timeout(one_hash * 2);
    let statuses = [
        (
            app.users.clone().change_password(change).await.unwrap_err(),
            "ChangePassword",
        ),
        (
            app.users.clone().delete_user(delete).await.unwrap_err(),
            "DeleteUser",
        ),
    ];

    for (status, case) in statuses {
        assert_reason(&status, ErrorReason::PasswordHashingBusy, case);
        let retry = status
            .get_details_retry_info()
            .and_then(|retry| retry.retry_delay);
        assert!(
            retry.is_some_and(|delay| delay >= Duration::from_millis(100)),
            "{case}: {status:?}"
        );
    }
    for login in join_all(burst).await {
        login.unwrap().expect("the queued logins are answered");
    }
    login_ok(&app, "alice@example.com").await;
}
