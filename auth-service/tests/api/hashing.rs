//! Password hashing under load: admission control, and hashes made before it.

use std::time::{Duration, Instant};

use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use argon2::{Argon2, PasswordHasher as _};
use auth_service::{AuthSettings, Config};
use futures::future::join_all;
use sqlx::PgPool;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, assert_reason, spawn_app, spawn_app_with};

/// One hash at a time, and at most `queue` waiting.
fn one_hasher(queue: usize) -> Config {
    Config {
        auth: AuthSettings {
            password_hashing_concurrency: 1,
            password_hashing_queue: queue,
            ..AuthSettings::default()
        },
        ..Config::ephemeral()
    }
}

/// `count` logins for alice sent at once, each on its own task.
fn login_burst(
    app: &TestApp,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<tonic::Response<proto::LoginResponse>, Status>>> {
    (0..count)
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
        .collect()
}

fn assert_busy(status: &Status, case: &str) {
    assert_reason(status, ErrorReason::PasswordHashingBusy, case);
    let delay = status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .unwrap_or_else(|| panic!("{case}: RetryInfo says when to try again: {status:?}"));
    assert!(delay >= Duration::from_millis(100), "{case}: {delay:?}");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn logins_beyond_the_queue_are_refused_at_once_and_the_rest_succeed(pool: PgPool) {
    let app = spawn_app_with(pool, one_hasher(1)).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    let results = join_all(login_burst(&app, 20)).await;

    let (mut succeeded, mut refused) = (0, 0);
    for result in results {
        match result.expect("the task runs") {
            Ok(_) => succeeded += 1,
            Err(status) => {
                assert_busy(&status, "a login beyond the queue");
                refused += 1;
            }
        }
    }
    assert!(
        succeeded >= 1 && refused >= 1,
        "with one hashing and one waiting, 20 at once cannot all be served: \
         {succeeded} succeeded, {refused} refused"
    );
    app.login("alice@example.com", PASSWORD)
        .await
        .expect("once the burst is over, logins succeed again");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_login_whose_deadline_the_queue_would_miss_is_refused_without_waiting(pool: PgPool) {
    let app = spawn_app_with(pool, one_hasher(16)).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    let started = Instant::now();
    let mut queued = login_burst(&app, 12);
    // When the first answer arrives, the other eleven were sent long ago and
    // wait for the hasher: about eleven hashes' worth of work.
    queued
        .remove(0)
        .await
        .unwrap()
        .expect("the first login of the burst");
    let one_hash = started.elapsed();

    // Twice one login's time: enough to be answered, far less than the queue.
    let mut request = Request::new(proto::LoginRequest {
        email: "alice@example.com".to_owned(),
        password: PASSWORD.to_owned(),
    });
    request.set_timeout(one_hash * 2);
    let status = app.auth.clone().login(request).await.unwrap_err();

    assert_ne!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_ne!(status.code(), Code::Cancelled, "{status:?}");
    assert_busy(
        &status,
        "refused before waiting, not timed out in the queue",
    );
    for login in join_all(queued).await {
        login
            .unwrap()
            .expect("the logins queued without a deadline are all answered");
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_hash_stored_by_the_earlier_code_still_logs_in(pool: PgPool) {
    let app = spawn_app(pool).await;
    // What registration stored before hashing reused its memory.
    let old_hash = Argon2::default()
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string();
    sqlx::query("insert into auth.users (id, email, password_hash) values ($1, $2, $3)")
        .bind(Uuid::now_v7())
        .bind("old@example.com")
        .bind(&old_hash)
        .execute(&app.pool)
        .await
        .unwrap();

    app.login("old@example.com", PASSWORD)
        .await
        .expect("the right password matches the old hash");
    let wrong = app
        .login("old@example.com", "not the password")
        .await
        .unwrap_err();

    assert_reason(
        &wrong,
        ErrorReason::InvalidCredentials,
        "a wrong password against an old hash",
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn registrations_beyond_the_queue_are_refused_too(pool: PgPool) {
    let app = spawn_app_with(pool, one_hasher(0)).await;

    let registrations = (0..12).map(|i| {
        let mut users = app.users.clone();
        async move {
            users
                .create_user(proto::CreateUserRequest {
                    email: format!("user{i}@example.com"),
                    password: PASSWORD.to_owned(),
                    request_id: String::new(),
                })
                .await
        }
    });
    let results = join_all(registrations).await;

    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for status in &refused {
        assert_busy(status, "a registration beyond the queue");
    }
    let registered: i64 = sqlx::query_scalar("select count(*) from auth.users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        !refused.is_empty() && registered >= 1,
        "{} refused, {registered} registered",
        refused.len()
    );
    assert_eq!(
        registered as usize + refused.len(),
        12,
        "a refused registration stores nothing"
    );
}
