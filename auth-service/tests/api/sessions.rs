//! Sessions: refresh tokens, their rotation and reuse, expiry, listing, logging
//! out, and the revocations verifiers learn.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use auth_service::{AuthSettings, Config};
use futures::future::join_all;
use sqlx::PgPool;
use tonic::{Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, assert_bad_request, assert_reason, spawn_app, spawn_app_with,
};

/// auth-service's own verifier learning ended sessions every 100 ms, and
/// sessions lasting `idle` since their last use and `max_age` since their
/// login.
fn sessions_config(idle: Duration, max_age: Duration) -> Config {
    Config {
        auth: AuthSettings {
            revoked_sessions_reload_ms: 100,
            session_idle_timeout_secs: idle.as_secs(),
            session_max_age_secs: max_age.as_secs(),
            ..AuthSettings::default()
        },
        ..Config::ephemeral()
    }
}

/// The defaults, with ended sessions learned every 100 ms.
fn quick_revocations() -> Config {
    let defaults = AuthSettings::default();
    sessions_config(defaults.session_idle_timeout(), defaults.session_max_age())
}

async fn registered(app: &TestApp, email: &str) {
    app.create_user(email, PASSWORD)
        .await
        .expect("registration succeeds");
}

async fn login(app: &TestApp, email: &str) -> proto::LoginResponse {
    app.login(email, PASSWORD).await.expect("login succeeds")
}

fn seconds_from_now(timestamp: Option<prost_types::Timestamp>) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    timestamp.expect("a timestamp").seconds - now
}

async fn count(app: &TestApp, sql: &'static str, id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Moves the session's times back by `secs`: as if that much time had passed.
async fn age_session(app: &TestApp, session_id: &str, column: &str, secs: u64) {
    let sql = format!(
        "update auth.sessions set {column} = {column} - make_interval(secs => $2) where id = $1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::parse_str(session_id).unwrap())
        .bind(secs as f64)
        .execute(&app.pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn login_returns_a_refresh_token_stored_only_as_its_hash(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = app
        .create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();

    let login = login(&app, "alice@example.com").await;

    let token = &login.refresh_token;
    assert_eq!(login.user_id, user.id);
    assert!(token.starts_with("agrt_"), "{token}");
    assert_eq!(
        token.len(),
        48,
        "a prefix and 32 bytes in base64url: {token}"
    );
    let expires_in = seconds_from_now(login.refresh_token_expire_time);
    assert!(
        (30 * 86_400 - 60..=30 * 86_400).contains(&expires_in),
        "the idle timeout, 30 days, from now: {expires_in} s"
    );
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id
          where t.hash = sha256(convert_to($1, 'UTF8')) and s.id = $2::uuid
            and t.spent_time is null",
    )
    .bind(token)
    .bind(&login.session_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "its SHA-256, in the login's session");
    let anywhere: i64 = sqlx::query_scalar(
        "select count(*) from auth.refresh_tokens r where r::text like '%' || $1 || '%'",
    )
    .bind(&token[5..])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(anywhere, 0, "the token itself is not stored");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_refresh_rotates_both_tokens_in_the_same_session_and_spends_the_old_one(pool: PgPool) {
    let app = spawn_app(pool).await;
    registered(&app, "alice@example.com").await;
    let login = login(&app, "alice@example.com").await;

    let refreshed = app
        .refresh(&login.refresh_token)
        .await
        .expect("a fresh refresh token refreshes");

    assert_eq!(refreshed.token_type, "bearer");
    assert_eq!(refreshed.session_id, login.session_id, "the same session");
    assert_eq!(refreshed.user_id, login.user_id, "of the same user");
    assert_ne!(refreshed.refresh_token, login.refresh_token);
    assert_ne!(refreshed.access_token, login.access_token);
    assert_eq!(
        refreshed.expires_in,
        Some(prost_types::Duration {
            seconds: 1800,
            nanos: 0
        })
    );
    let verified = app
        .verify(&refreshed.access_token)
        .await
        .expect("the new access token verifies");
    assert_eq!(verified.session_id, login.session_id);
    let spent = count(
        &app,
        "select count(*) from auth.refresh_tokens where session_id = $1 and spent_time is not null",
        &login.session_id,
    )
    .await;
    assert_eq!(
        spent, 1,
        "the old token is kept, spent, for reuse detection"
    );
    app.refresh(&refreshed.refresh_token)
        .await
        .expect("the new refresh token refreshes in turn");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_spent_refresh_token_presented_again_ends_its_session(pool: PgPool) {
    let app = spawn_app_with(pool, quick_revocations()).await;
    registered(&app, "alice@example.com").await;
    let login = login(&app, "alice@example.com").await;
    let other = self::login(&app, "alice@example.com").await;
    let refreshed = app.refresh(&login.refresh_token).await.unwrap();

    let reused = app.refresh(&login.refresh_token).await.unwrap_err();

    assert_reason(
        &reused,
        ErrorReason::RefreshTokenReused,
        "a spent token presented again",
    );
    let after = app.refresh(&refreshed.refresh_token).await.unwrap_err();
    assert_reason(
        &after,
        ErrorReason::RefreshTokenInvalid,
        "the newest token of the ended session",
    );
    for (token, case) in [
        (&refreshed.access_token, "the newest access token"),
        (&login.access_token, "the first access token"),
    ] {
        let refused = app.refused_soon(token).await;
        assert_reason(&refused, ErrorReason::TokenRevoked, case);
    }
    let revoked = app.revoked_sessions(None).await;
    assert!(
        revoked
            .sessions
            .iter()
            .any(|session| session.id == login.session_id),
        "{revoked:?}"
    );
    app.verify(&other.access_token)
        .await
        .expect("the user's other session goes on");
    app.refresh(&other.refresh_token)
        .await
        .expect("and refreshes");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn of_concurrent_refreshes_with_one_token_exactly_one_succeeds(pool: PgPool) {
    let app = spawn_app(pool).await;
    registered(&app, "alice@example.com").await;
    let login = login(&app, "alice@example.com").await;

    let refreshes = (0..8).map(|_| {
        let mut auth = app.auth.clone();
        let refresh_token = login.refresh_token.clone();
        tokio::spawn(async move {
            auth.refresh_token(proto::RefreshTokenRequest { refresh_token })
                .await
                .map(tonic::Response::into_inner)
        })
    });
    let results: Vec<_> = join_all(refreshes)
        .await
        .into_iter()
        .map(|joined| joined.expect("the task runs"))
        .collect();

    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let losers: Vec<&Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for status in &losers {
        assert!(
            matches!(
                agora_proto::errors::reason_of(status),
                Some(ErrorReason::RefreshTokenReused | ErrorReason::RefreshTokenInvalid)
            ),
            "a loser sees the token spent, or its session ended by then: {status:?}"
        );
    }
    assert!(
        losers
            .iter()
            .any(|status| agora_proto::errors::reason_of(status)
                == Some(ErrorReason::RefreshTokenReused)),
        "the first loser sees it spent"
    );
    let winner = app.refresh(&winners[0].refresh_token).await.unwrap_err();
    assert_reason(
        &winner,
        ErrorReason::RefreshTokenInvalid,
        "a reuse ended the session, the winner's new token with it",
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_session_expires_after_its_idle_timeout_and_its_longest_lifetime(pool: PgPool) {
    let idle = Duration::from_secs(5);
    let max_age = Duration::from_secs(10);
    let app = spawn_app_with(pool, sessions_config(idle, max_age)).await;
    registered(&app, "alice@example.com").await;
    let idle_one = login(&app, "alice@example.com").await;
    let kept_alive = login(&app, "alice@example.com").await;
    let old_one = login(&app, "alice@example.com").await;
    assert!(
        seconds_from_now(idle_one.refresh_token_expire_time) <= 5,
        "expires after the idle timeout"
    );

    // Six seconds without a refresh; four, then a refresh; eleven since the
    // login, but refreshed a moment ago.
    age_session(&app, &idle_one.session_id, "last_use_time", 6).await;
    age_session(&app, &kept_alive.session_id, "last_use_time", 4).await;
    age_session(&app, &old_one.session_id, "create_time", 11).await;

    let idle_refused = app.refresh(&idle_one.refresh_token).await.unwrap_err();
    assert_reason(
        &idle_refused,
        ErrorReason::RefreshTokenExpired,
        "unused longer than the idle timeout",
    );
    let old_refused = app.refresh(&old_one.refresh_token).await.unwrap_err();
    assert_reason(
        &old_refused,
        ErrorReason::RefreshTokenExpired,
        "older than the longest lifetime, though used recently",
    );
    let refreshed = app
        .refresh(&kept_alive.refresh_token)
        .await
        .expect("used within the idle timeout");
    age_session(&app, &kept_alive.session_id, "last_use_time", 4).await;
    app.refresh(&refreshed.refresh_token)
        .await
        .expect("each refresh starts the idle timeout again");
    let listed: Vec<String> = app
        .list_sessions(&kept_alive.access_token)
        .await
        .unwrap()
        .into_iter()
        .map(|session| session.id)
        .collect();
    assert_eq!(
        listed,
        [kept_alive.session_id],
        "expired sessions are not listed"
    );
}

/// A login with this user agent, from this address (as the gateway names it).
async fn login_as(app: &TestApp, user_agent: &str, address: &str) -> proto::LoginResponse {
    let mut request = Request::new(proto::LoginRequest {
        email: "alice@example.com".to_owned(),
        password: PASSWORD.to_owned(),
    });
    request
        .metadata_mut()
        .insert("user-agent", user_agent.parse().unwrap());
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().unwrap());
    app.auth.clone().login(request).await.unwrap().into_inner()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn list_sessions_shows_the_callers_sessions_most_recently_used_first(pool: PgPool) {
    let app = spawn_app(pool).await;
    registered(&app, "alice@example.com").await;
    registered(&app, "bob@example.com").await;
    let laptop = login_as(&app, "laptop-app/1.0", "198.51.100.20").await;
    let phone = login_as(&app, "phone-app/2.0", "203.0.113.7").await;
    login(&app, "bob@example.com").await;
    app.refresh(&laptop.refresh_token).await.unwrap();

    let sessions = app.list_sessions(&phone.access_token).await.unwrap();

    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [laptop.session_id.as_str(), phone.session_id.as_str()],
        "alice's two, the one refreshed last first; not bob's"
    );
    let current: Vec<bool> = sessions.iter().map(|s| s.current).collect();
    assert_eq!(current, [false, true], "the session of the caller's token");
    assert!(
        sessions[0].client.starts_with("laptop-app/1.0")
            && sessions[0].client.ends_with(" from 198.51.100.20"),
        "the user agent and the address: {:?}",
        sessions[0].client
    );
    assert!(sessions[1].last_use_time.unwrap().seconds >= sessions[1].create_time.unwrap().seconds);
    assert!(seconds_from_now(sessions[1].expire_time) > 29 * 86_400);

    let refused = app.list_sessions("not a token").await.unwrap_err();
    assert_reason(&refused, ErrorReason::TokenMalformed, "a token is needed");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn logout_ends_the_callers_session_and_no_other(pool: PgPool) {
    let app = spawn_app_with(pool, quick_revocations()).await;
    registered(&app, "alice@example.com").await;
    let leaving = login(&app, "alice@example.com").await;
    let staying = login(&app, "alice@example.com").await;

    app.logout(&leaving.access_token)
        .await
        .expect("logout succeeds");

    let refresh = app.refresh(&leaving.refresh_token).await.unwrap_err();
    assert_reason(
        &refresh,
        ErrorReason::RefreshTokenInvalid,
        "the refresh token dies at once",
    );
    let refused = app.refused_soon(&leaving.access_token).await;
    assert_reason(
        &refused,
        ErrorReason::TokenRevoked,
        "the access token within seconds",
    );
    app.refresh(&staying.refresh_token)
        .await
        .expect("the other session goes on");
    let listed = app.list_sessions(&staying.access_token).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, staying.session_id);
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn logout_all_ends_every_session_of_the_caller(pool: PgPool) {
    let app = spawn_app_with(pool, quick_revocations()).await;
    registered(&app, "alice@example.com").await;
    registered(&app, "bob@example.com").await;
    let sessions = [
        login(&app, "alice@example.com").await,
        login(&app, "alice@example.com").await,
        login(&app, "alice@example.com").await,
    ];
    let bob = login(&app, "bob@example.com").await;

    let ended = app.logout_all(&sessions[1].access_token).await.unwrap();

    assert_eq!(ended, 3);
    for session in &sessions {
        let refresh = app.refresh(&session.refresh_token).await.unwrap_err();
        assert_reason(&refresh, ErrorReason::RefreshTokenInvalid, "refresh");
        let refused = app.refused_soon(&session.access_token).await;
        assert_reason(&refused, ErrorReason::TokenRevoked, "access token");
    }
    app.refresh(&bob.refresh_token)
        .await
        .expect("another user's session goes on");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_login_beyond_100_sessions_ends_the_least_recently_used(pool: PgPool) {
    let app = spawn_app_with(pool, quick_revocations()).await;
    let user = app
        .create_user("alice@example.com", PASSWORD)
        .await
        .unwrap();
    let oldest = login(&app, "alice@example.com").await;
    // 99 more, all used after the first.
    sqlx::query(
        "insert into auth.sessions (id, user_id, access_token_expire_time, last_use_time)
         select gen_random_uuid(), $1, now() + interval '30 minutes', now() + make_interval(secs => n)
           from generate_series(1, 99) as n",
    )
    .bind(Uuid::parse_str(&user.id).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();

    login(&app, "alice@example.com").await;

    let sessions = count(
        &app,
        "select count(*) from auth.sessions where user_id = $1",
        &user.id,
    )
    .await;
    assert_eq!(sessions, 100);
    let refresh = app.refresh(&oldest.refresh_token).await.unwrap_err();
    assert_reason(
        &refresh,
        ErrorReason::RefreshTokenInvalid,
        "the least recently used ended",
    );
    let refused = app.refused_soon(&oldest.access_token).await;
    assert_reason(&refused, ErrorReason::TokenRevoked, "and its access token");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn revoked_sessions_are_listed_since_a_time_that_trails_the_clock(pool: PgPool) {
    let app = spawn_app(pool).await;
    registered(&app, "alice@example.com").await;
    let ended = login(&app, "alice@example.com").await;
    let live = login(&app, "alice@example.com").await;
    let before = app.revoked_sessions(None).await;
    assert!(before.sessions.is_empty(), "{before:?}");

    app.logout(&ended.access_token).await.unwrap();

    let all = app.revoked_sessions(None).await;
    let ids: Vec<&str> = all.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [ended.session_id.as_str()]);
    assert_eq!(
        all.sessions[0].expire_time.as_ref().unwrap().seconds,
        ended.expire_time.as_ref().unwrap().seconds,
        "kept until the session's last access token expires"
    );
    let lag = -seconds_from_now(all.as_of);
    assert!((4..=6).contains(&lag), "as_of trails the clock: {lag} s");
    let since_before = app.revoked_sessions(before.as_of).await;
    assert_eq!(
        since_before.sessions.len(),
        1,
        "ended since the first answer"
    );
    let in_future = prost_types::Timestamp {
        seconds: all.as_of.as_ref().unwrap().seconds + 3600,
        nanos: 0,
    };
    assert!(
        app.revoked_sessions(Some(in_future))
            .await
            .sessions
            .is_empty(),
        "nothing ended after `since`"
    );
    assert!(
        !all.sessions.iter().any(|s| s.id == live.session_id),
        "a live session is not listed"
    );
}

/// Clients named in `x-forwarded-for`.
const ATTACKER: &str = "203.0.113.7";
const OWNER: &str = "198.51.100.20";

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn invalid_refresh_tokens_are_throttled_per_client_address(pool: PgPool) {
    let config = Config {
        auth: AuthSettings {
            login_free_failures_per_address: 3,
            ..AuthSettings::default()
        },
        ..Config::ephemeral()
    };
    let app = spawn_app_with(pool, config).await;
    registered(&app, "alice@example.com").await;
    let login = login(&app, "alice@example.com").await;
    let unknown = format!("agrt_{}", "A".repeat(43));

    for (token, case) in [
        ("garbage", "not a refresh token"),
        (unknown.as_str(), "well formed but never issued"),
        ("agrt_short", "too short"),
    ] {
        let status = app.refresh_from(Some(ATTACKER), token).await.unwrap_err();
        assert_reason(&status, ErrorReason::RefreshTokenInvalid, case);
    }
    let throttled = app
        .refresh_from(Some(ATTACKER), &login.refresh_token)
        .await
        .unwrap_err();

    assert_reason(
        &throttled,
        ErrorReason::LoginThrottled,
        "even a valid token, from that address, for now",
    );
    let wait = throttled
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("RetryInfo says how long to wait");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    let login_there = app
        .login_from(ATTACKER, "alice@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_reason(
        &login_there,
        ErrorReason::LoginThrottled,
        "the login throttle's count",
    );
    app.refresh_from(Some(OWNER), &login.refresh_token)
        .await
        .expect("another address is not slowed");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_refresh_needs_a_token(pool: PgPool) {
    let app = spawn_app(pool).await;

    let status = app.refresh(" ").await.unwrap_err();

    assert_bad_request(&status, &["refresh_token"], "an empty refresh token");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_purge_deletes_expired_sessions_and_revocations_whose_tokens_expired(pool: PgPool) {
    let app = spawn_app(pool).await;
    registered(&app, "alice@example.com").await;
    let idle = login(&app, "alice@example.com").await;
    let old = login(&app, "alice@example.com").await;
    let live = login(&app, "alice@example.com").await;
    let ended_long_ago = login(&app, "alice@example.com").await;
    let ended_lately = login(&app, "alice@example.com").await;
    app.refresh(&live.refresh_token).await.unwrap();
    for ended in [&ended_long_ago, &ended_lately] {
        app.logout(&ended.access_token).await.unwrap();
    }
    age_session(&app, &idle.session_id, "last_use_time", 31 * 86_400).await;
    age_session(&app, &old.session_id, "create_time", 91 * 86_400).await;
    // Its last access token expired two minutes ago.
    sqlx::query(
        "update auth.revoked_sessions set expire_time = now() - interval '2 minutes'
          where session_id = $1",
    )
    .bind(Uuid::parse_str(&ended_long_ago.session_id).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();

    let mut conn = app.pool.acquire().await.unwrap();
    let purged = auth_service::purge_sessions(&mut conn, &AuthSettings::default())
        .await
        .unwrap();

    assert_eq!(purged, 3, "two expired sessions and one revocation");
    let sessions: HashSet<String> = sqlx::query_scalar("select id::text from auth.sessions")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(sessions, HashSet::from([live.session_id.clone()]));
    let tokens: HashSet<String> =
        sqlx::query_scalar("select distinct session_id::text from auth.refresh_tokens")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(tokens, sessions, "refresh tokens go with their sessions");
    let revoked: Vec<String> =
        sqlx::query_scalar("select session_id::text from auth.revoked_sessions")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        revoked,
        [ended_lately.session_id],
        "a revocation is kept while its access tokens may be valid"
    );
}
