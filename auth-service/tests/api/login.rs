use std::time::{Duration, Instant};

use access_token::{AUDIENCE, ISSUER};
use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use auth_service::{AuthSettings, Config};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sqlx::PgPool;
use tonic::Status;
use tonic_types::StatusExt;

use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, assert_bad_request, assert_reason, spawn_app, spawn_app_with,
};

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
    assert!(
        !login.refresh_token.is_empty() && login.refresh_token_expire_time.is_some(),
        "a refresh token of the new session (see sessions.rs)"
    );
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

/// Two clients, as the gateway names them in `x-forwarded-for`.
const ATTACKER: &str = "203.0.113.7";
const OWNER: &str = "198.51.100.20";

/// Logins slowed after `per_account` failures for one email and `per_address`
/// failures from one address (0: that count is off), by 1 second doubled per
/// further failure.
fn throttled(per_account: u32, per_address: u32) -> Config {
    let auth = AuthSettings {
        login_free_failures_per_account: per_account,
        login_free_failures_per_address: per_address,
        login_delay_base_ms: 1000,
        ..AuthSettings::default()
    };
    Config {
        auth,
        ..Config::ephemeral()
    }
}

/// The time to wait that a LOGIN_THROTTLED refusal carries.
fn throttled_for(status: &Status, case: &str) -> Duration {
    assert_reason(status, ErrorReason::LoginThrottled, case);
    status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .unwrap_or_else(|| panic!("{case}: RetryInfo tells when to try again: {status:?}"))
}

async fn fail(app: &TestApp, address: &str, email: &str, case: &str) {
    let status = app
        .login_from(address, email, "a wrong guess")
        .await
        .unwrap_err();
    assert_reason(&status, ErrorReason::InvalidCredentials, case);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn delays_grow_with_each_failure_and_early_logins_are_refused_at_once(pool: PgPool) {
    let app = spawn_app_with(pool, throttled(2, 0)).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    app.create_user("bob@example.com", PASSWORD).await.unwrap();

    fail(&app, ATTACKER, "alice@example.com", "guess 1").await;
    fail(&app, ATTACKER, "alice@example.com", "guess 2").await;
    let started = Instant::now();
    let refused = app
        .login_from(ATTACKER, "ALICE@example.com", PASSWORD)
        .await
        .unwrap_err();
    let answered_in = started.elapsed();

    let first = throttled_for(
        &refused,
        "even the right password, from this address, for now",
    );
    assert!(
        first > Duration::from_millis(500) && first <= Duration::from_secs(1),
        "the first delay is the base, 1 s: {first:?}"
    );
    assert!(
        answered_in < first / 2,
        "answered at once, not after sleeping or hashing: {answered_in:?}"
    );
    app.login_from(ATTACKER, "bob@example.com", PASSWORD)
        .await
        .expect("other emails are not slowed by the account's count");

    tokio::time::sleep(first).await;
    fail(
        &app,
        ATTACKER,
        "alice@example.com",
        "guess 3, after the delay",
    )
    .await;
    let second = throttled_for(
        &app.login_from(ATTACKER, "alice@example.com", PASSWORD)
            .await
            .unwrap_err(),
        "after one more failure",
    );
    assert!(
        second > Duration::from_millis(1500) && second <= Duration::from_secs(2),
        "the delay doubled: {second:?}"
    );

    // An unregistered email is treated alike, so refusals reveal nothing.
    fail(&app, ATTACKER, "nobody@example.com", "unknown 1").await;
    fail(&app, ATTACKER, "nobody@example.com", "unknown 2").await;
    let unknown = app
        .login_from(ATTACKER, "nobody@example.com", PASSWORD)
        .await
        .unwrap_err();
    throttled_for(&unknown, "an unknown email");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_owner_logs_in_from_another_address_while_their_email_is_under_attack(pool: PgPool) {
    let app = spawn_app_with(pool, throttled(2, 0)).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    fail(&app, ATTACKER, "alice@example.com", "guess 1").await;
    fail(&app, ATTACKER, "alice@example.com", "guess 2").await;
    let refused = app
        .login_from(ATTACKER, "alice@example.com", PASSWORD)
        .await
        .unwrap_err();
    throttled_for(&refused, "the attacker, even with the right password");

    app.login_from(OWNER, "alice@example.com", PASSWORD)
        .await
        .expect("an address that has not failed is not slowed by the account's count");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn an_address_over_its_allowance_is_slowed_for_every_email(pool: PgPool) {
    let app = spawn_app_with(pool, throttled(0, 3)).await;
    app.create_user("dave@example.com", PASSWORD).await.unwrap();

    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        fail(&app, ATTACKER, email, email).await;
    }
    let refused = app
        .login_from(ATTACKER, "dave@example.com", PASSWORD)
        .await
        .unwrap_err();

    throttled_for(&refused, "an email this address never tried");
    app.login_from(OWNER, "dave@example.com", PASSWORD)
        .await
        .expect("other addresses are not slowed");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_successful_login_does_not_clear_the_address_count(pool: PgPool) {
    let app = spawn_app_with(pool, throttled(0, 3)).await;
    app.create_user("mallory@example.com", PASSWORD)
        .await
        .unwrap();

    fail(&app, ATTACKER, "alice@example.com", "guess 1").await;
    fail(&app, ATTACKER, "bob@example.com", "guess 2").await;
    app.login_from(ATTACKER, "mallory@example.com", PASSWORD)
        .await
        .expect("the attacker's own account");
    fail(&app, ATTACKER, "carol@example.com", "guess 3").await;
    let refused = app
        .login_from(ATTACKER, "mallory@example.com", PASSWORD)
        .await
        .unwrap_err();

    throttled_for(
        &refused,
        "three failures from this address, a success among them",
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_successful_login_starts_the_account_count_afresh(pool: PgPool) {
    let app = spawn_app_with(pool, throttled(3, 0)).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    for round in 1..=3 {
        for _ in 1..=2 {
            fail(&app, OWNER, "alice@example.com", "a typo").await;
        }
        app.login_from(OWNER, "alice@example.com", PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("round {round}: {status:?}"));
    }
    let counted: Vec<String> = sqlx::query_scalar("select key from auth.login_failures")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        counted,
        [format!("address:{OWNER}")],
        "only the address keeps a count"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_forwarded_address_is_believed_only_from_trusted_callers(pool: PgPool) {
    let trusting = spawn_app_with(pool.clone(), throttled(5, 20)).await;
    let mut config = throttled(5, 20);
    config.auth.trusted_callers = "10.0.0.0/8".parse().unwrap();
    let distrusting = spawn_app_with(pool.clone(), config).await;
    let counted = || async {
        let keys: Vec<String> = sqlx::query_scalar(
            "select key from auth.login_failures where key like 'address:%' order by key",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        sqlx::query("delete from auth.login_failures")
            .execute(&pool)
            .await
            .unwrap();
        keys
    };

    fail(
        &trusting,
        ATTACKER,
        "alice@example.com",
        "via a trusted caller",
    )
    .await;
    assert_eq!(
        counted().await,
        [format!("address:{ATTACKER}")],
        "loopback is trusted"
    );

    fail(
        &distrusting,
        ATTACKER,
        "alice@example.com",
        "via an untrusted caller",
    )
    .await;
    assert_eq!(
        counted().await,
        ["address:127.0.0.1"],
        "an untrusted caller's header is ignored: the caller is the client"
    );

    trusting
        .login("alice@example.com", "a wrong guess")
        .await
        .unwrap_err();
    assert_eq!(
        counted().await,
        ["address:127.0.0.1"],
        "a trusted caller that names no client is the client"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn replicas_share_one_failure_count(pool: PgPool) {
    let replica_a = spawn_app_with(pool.clone(), throttled(4, 0)).await;
    let replica_b = spawn_app_with(pool, throttled(4, 0)).await;
    replica_a
        .create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    // Two failures at each replica: fewer than either allows alone.
    for (guess, replica) in [&replica_a, &replica_b, &replica_a, &replica_b]
        .into_iter()
        .enumerate()
    {
        fail(
            replica,
            ATTACKER,
            "alice@example.com",
            &format!("guess {guess}"),
        )
        .await;
    }
    for (replica, app) in [("a", &replica_a), ("b", &replica_b)] {
        let refused = app
            .login_from(ATTACKER, "alice@example.com", PASSWORD)
            .await
            .unwrap_err();
        throttled_for(&refused, replica);
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn logins_are_answered_again_once_the_window_has_ended(pool: PgPool) {
    let mut config = throttled(2, 0);
    // A delay longer than the window ends with the window.
    config.auth.login_delay_base_ms = 60_000;
    config.auth.login_failure_window_secs = 1;
    let app = spawn_app_with(pool, config).await;
    app.create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    for _ in 1..=2 {
        fail(&app, ATTACKER, "alice@example.com", "a guess").await;
    }
    let refused = app
        .login_from(ATTACKER, "alice@example.com", PASSWORD)
        .await
        .unwrap_err();
    let wait = throttled_for(&refused, "within the window");
    assert!(wait <= Duration::from_secs(1), "{wait:?}");

    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    app.login_from(ATTACKER, "alice@example.com", PASSWORD)
        .await
        .expect("the window has ended");
}
