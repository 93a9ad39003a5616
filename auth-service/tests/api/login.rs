use std::time::Duration;

use access_token::{AUDIENCE, ISSUER};
use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use auth_service::{AuthSettings, Config};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt;

use uuid::Uuid;

use crate::helpers::{PASSWORD, assert_bad_request, assert_reason, spawn_app, spawn_app_with};

fn json_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn login_issues_an_eddsa_bearer_token_for_the_user(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = app
        .create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    let login = app
        .login("ALICE@example.com ", PASSWORD)
        .await
        .expect("email case and spaces do not matter");

    assert_eq!(login.token_type, "bearer");
    assert_eq!(
        login.expires_in,
        Some(prost_types::Duration {
            seconds: 1800,
            nanos: 0
        }),
        "the default lifetime is 30 minutes, as a Duration"
    );
    assert!(login.refresh_token.is_empty(), "no refresh tokens yet");
    let header = json_part(&login.access_token, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string(), "{header}");
    let claims = json_part(&login.access_token, 1);
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert!(
        claims["jti"].is_string() && claims["iat"].is_u64(),
        "{claims}"
    );
    assert_eq!(
        claims["sid"], login.session_id,
        "the session id is the token's sid claim"
    );
    Uuid::parse_str(&login.session_id).expect("a session id is a UUID");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        1800
    );
    assert_eq!(
        login.expire_time.unwrap().seconds as u64,
        claims["exp"].as_u64().unwrap()
    );

    let verified = app
        .auth
        .clone()
        .verify_token(proto::VerifyTokenRequest {
            access_token: login.access_token.clone(),
        })
        .await
        .expect("auth-service vouches for its own token")
        .into_inner();
    assert_eq!(verified.user_id, user.id);
    assert_eq!(verified.token_id, claims["jti"].as_str().unwrap());
    assert_eq!(verified.session_id, login.session_id);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn every_login_gets_its_own_token_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    let first = app
        .login("alice@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;
    let second = app
        .login("alice@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;

    assert_ne!(json_part(&first, 1)["jti"], json_part(&second, 1)["jti"]);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn unknown_email_and_wrong_password_get_the_same_answer(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    let wrong_password = app
        .login("alice@example.com", "not the password")
        .await
        .unwrap_err();
    let unknown_email = app.login("nobody@example.com", PASSWORD).await.unwrap_err();
    let malformed_email = app.login("nobody", PASSWORD).await.unwrap_err();

    for status in [&wrong_password, &unknown_email, &malformed_email] {
        assert_reason(status, ErrorReason::InvalidCredentials, "a failed login");
        assert_eq!(
            status.message(),
            wrong_password.message(),
            "one message for every failure"
        );
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn login_rejects_missing_and_oversized_fields(pool: PgPool) {
    let app = spawn_app(pool).await;
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("empty email", "", PASSWORD, &["email"]),
        ("empty password", "alice@example.com", "", &["password"]),
        ("both empty", "", "", &["email", "password"]),
        ("NUL in the email", "a\0b@example.com", PASSWORD, &["email"]),
        (
            "1 MB password",
            "alice@example.com",
            &"x".repeat(1_000_000),
            &["password"],
        ),
        (
            "email over 254 characters",
            &format!("{}@example.com", "a".repeat(250)),
            PASSWORD,
            &["email"],
        ),
    ];
    for (case, email, password, fields) in cases {
        let status = app.login(email, password).await.unwrap_err();
        assert_bad_request(&status, fields, case);
    }
}

fn throttled_after(failures: u32) -> Config {
    let auth = AuthSettings {
        login_max_failures: failures,
        ..AuthSettings::default()
    };
    Config {
        auth,
        ..Config::ephemeral()
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn repeated_failed_logins_for_an_email_are_refused_for_a_while(pool: PgPool) {
    let app = spawn_app_with(pool, throttled_after(3)).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    app.create_user("bob@example.com", PASSWORD).await.unwrap();

    for attempt in 1..=3 {
        let status = app
            .login("alice@example.com", "a wrong guess")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "guess {attempt}");
    }
    let refused = app.login("ALICE@example.com", PASSWORD).await.unwrap_err();

    assert_reason(
        &refused,
        ErrorReason::LoginThrottled,
        "even the right password, for now",
    );
    let retry = refused
        .get_details_retry_info()
        .expect("RetryInfo tells when to try again");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(900),
        "{delay:?}"
    );
    app.login("bob@example.com", PASSWORD)
        .await
        .expect("other emails are not affected");

    // An unregistered email is treated alike, so refusals reveal nothing.
    for _ in 1..=3 {
        app.login("nobody@example.com", "a wrong guess")
            .await
            .unwrap_err();
    }
    let status = app.login("nobody@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_successful_login_starts_the_count_afresh(pool: PgPool) {
    let app = spawn_app_with(pool, throttled_after(3)).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    for round in 1..=3 {
        for _ in 1..=2 {
            app.login("alice@example.com", "a wrong guess")
                .await
                .unwrap_err();
        }
        app.login("alice@example.com", PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("round {round}: {status:?}"));
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn replicas_share_one_failure_count(pool: PgPool) {
    let replica_a = spawn_app_with(pool.clone(), throttled_after(4)).await;
    let replica_b = spawn_app_with(pool, throttled_after(4)).await;
    replica_a
        .create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    // Two failures at each replica: fewer than either allows alone.
    for replica in [&replica_a, &replica_b, &replica_a, &replica_b] {
        let status = replica
            .login("alice@example.com", "a wrong guess")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    for (replica, app) in [("a", &replica_a), ("b", &replica_b)] {
        let refused = app.login("alice@example.com", PASSWORD).await.unwrap_err();
        assert_reason(&refused, ErrorReason::LoginThrottled, replica);
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn logins_are_answered_again_once_the_window_has_ended(pool: PgPool) {
    let mut config = throttled_after(2);
    config.auth.login_failure_window_secs = 1;
    let app = spawn_app_with(pool, config).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    for _ in 1..=2 {
        app.login("alice@example.com", "a wrong guess")
            .await
            .unwrap_err();
    }
    let refused = app.login("alice@example.com", PASSWORD).await.unwrap_err();
    let wait = refused
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("a time to retry");
    assert!(wait <= Duration::from_secs(1), "{wait:?}");

    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    app.login("alice@example.com", PASSWORD)
        .await
        .expect("the window has ended");
}
