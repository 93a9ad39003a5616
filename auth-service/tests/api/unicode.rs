//! Passwords and emails through Unicode's many spellings of one text: passwords
//! are hashed in NFKC, emails are unique and found by their NFKC, case-folded
//! key (migration 0006), and what was stored before keeps working.

use std::time::{Duration, Instant};

use agora_proto::errors::ErrorReason;
use argon2::{Argon2, PasswordHasher as _};
use auth_service::{AuthSettings, Config};
use service_kit::database::MIGRATOR;
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, assert_bad_request, assert_reason, spawn_app_with};

/// A password in composed form (NFC, what most keyboards type) and the same
/// password decomposed (NFD, what some systems hand over, macOS file names and
/// some input methods among them).
const COMPOSED: &str = "cr\u{e8}me br\u{fb}l\u{e9}e pour l\u{2019}\u{e9}t\u{e9}";
const DECOMPOSED: &str = "cre\u{300}me bru\u{302}le\u{301}e pour l\u{2019}e\u{301}te\u{301}";

/// Throttling out of the way: these tests fail logins on purpose.
fn config() -> Config {
    Config {
        auth: AuthSettings {
            login_free_failures_per_account: 0,
            login_free_failures_per_address: 0,
            ..AuthSettings::default()
        },
        ..Config::ephemeral()
    }
}

async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, config()).await
}

/// A user as the code before migration 0006 stored them: a hash of the password
/// exactly as typed, and no mark of how it was made.
async fn insert_unnormalized_user(pool: &PgPool, email: &str, password: &str) -> Uuid {
    let id = Uuid::now_v7();
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string();
    sqlx::query("insert into auth.users (id, email, password_hash) values ($1, $2, $3)")
        .bind(id)
        .bind(email)
        .bind(hash)
        .execute(pool)
        .await
        .unwrap();
    id
}

async fn stored_hash(pool: &PgPool, email: &str) -> (String, String) {
    sqlx::query_as("select password_hash, password_normalization from auth.users where email = $1")
        .bind(email)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits for the rehash a login leaves to the background, up to ten seconds.
async fn normalized_hash_of(pool: &PgPool, email: &str) -> String {
    let started = Instant::now();
    loop {
        let (hash, normalization) = stored_hash(pool, email).await;
        if normalization == "nfkc" {
            return hash;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hash of {email} is still of the password as typed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn user_id(login: &agora_proto::auth::v1::LoginResponse) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let claims = login.access_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_password_logs_in_in_any_of_its_unicode_forms(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("alice@example.com", COMPOSED)
        .await
        .unwrap();
    // Full-width letters and a circled digit, as an East Asian input method may
    // type them: NFKC makes them plain letters and digits.
    app.create_user(
        "bob@example.com",
        "\u{ff33}\u{ff25}\u{ff23}\u{ff32}\u{ff25}\u{ff34} \u{2460}",
    )
    .await
    .unwrap();

    for (case, email, password) in [
        (
            "registered composed, typed composed",
            "alice@example.com",
            COMPOSED,
        ),
        (
            "registered composed, typed decomposed",
            "alice@example.com",
            DECOMPOSED,
        ),
        (
            "registered full-width, typed plain",
            "bob@example.com",
            "SECRET 1",
        ),
    ] {
        app.login(email, password)
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"));
    }
    let (_, normalization) = stored_hash(&app.pool, "alice@example.com").await;
    assert_eq!(
        normalization, "nfkc",
        "new hashes are made from the NFKC form"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn password_length_is_counted_after_normalization(pool: PgPool) {
    let app = spawn_app(pool).await;
    // 128 accented letters, decomposed: 256 code points typed, 128 hashed.
    let long = "e\u{301}".repeat(128);
    // 8 code points typed, 4 characters once composed.
    let short = "e\u{301}".repeat(4);
    // U+FDFA ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM is 18 characters in NFKC.
    let expanding = "\u{fdfa}".repeat(8);

    app.create_user("long@example.com", &long)
        .await
        .expect("128 characters once normalised are within the limit");
    app.login("long@example.com", &long)
        .await
        .expect("and log in as typed");
    app.login("long@example.com", &"\u{e9}".repeat(128))
        .await
        .expect("and composed");
    for (case, email, password) in [
        ("4 characters composed", "short@example.com", &short),
        (
            "144 characters normalised",
            "expanding@example.com",
            &expanding,
        ),
    ] {
        let status = app.create_user(email, password).await.unwrap_err();
        assert_bad_request(&status, &["password"], case);
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_hash_of_the_password_as_typed_logs_in_and_is_replaced_by_one_of_its_nfkc_form(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    insert_unnormalized_user(&app.pool, "old@example.com", DECOMPOSED).await;
    let (old_hash, normalization) = stored_hash(&app.pool, "old@example.com").await;
    assert_eq!(normalization, "none", "what rows without the mark get");

    // Checked once, in the form the hash was made from: the password as typed.
    let status = app.login("old@example.com", COMPOSED).await.unwrap_err();
    assert_reason(
        &status,
        ErrorReason::InvalidCredentials,
        "another form than the one hashed, before the rehash",
    );
    app.login("old@example.com", DECOMPOSED)
        .await
        .expect("the password exactly as first typed");

    let new_hash = normalized_hash_of(&app.pool, "old@example.com").await;
    assert_ne!(new_hash, old_hash, "a new hash, of the NFKC form");
    assert!(
        new_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "made with the current parameters: {new_hash}"
    );
    for password in [COMPOSED, DECOMPOSED] {
        app.login("old@example.com", password)
            .await
            .unwrap_or_else(|status| panic!("{password:?} after the rehash: {status:?}"));
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn an_old_hash_of_a_password_already_in_nfkc_is_only_marked(pool: PgPool) {
    let app = spawn_app(pool).await;
    insert_unnormalized_user(&app.pool, "old@example.com", PASSWORD).await;
    let (old_hash, _) = stored_hash(&app.pool, "old@example.com").await;

    app.login("old@example.com", PASSWORD).await.unwrap();

    assert_eq!(
        normalized_hash_of(&app.pool, "old@example.com").await,
        old_hash,
        "the hash was already of the NFKC form: no second hash"
    );
}

/// The middle one of `times`.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn every_failed_login_hashes_once_whatever_the_account(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("new@example.com", PASSWORD).await.unwrap();
    insert_unnormalized_user(&app.pool, "old@example.com", PASSWORD).await;
    // A wrong password that NFKC changes: a login that tried both forms of it
    // against an old hash would hash twice.
    let cases = [
        ("unknown email", "nobody@example.com", DECOMPOSED),
        ("wrong password, new hash", "new@example.com", DECOMPOSED),
        ("wrong password, old hash", "old@example.com", DECOMPOSED),
    ];
    let mut times = vec![Vec::new(); cases.len()];
    app.login("new@example.com", PASSWORD)
        .await
        .expect("a warm-up login");
    // Interleaved, so that load from elsewhere falls on every case alike.
    for _ in 0..9 {
        for ((case, email, password), times) in cases.iter().zip(&mut times) {
            let started = Instant::now();
            let status = app.login(email, password).await.unwrap_err();
            times.push(started.elapsed());
            assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        }
    }

    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let reference = medians[1];
    for ((case, ..), median) in cases.iter().zip(&medians) {
        let ratio = median.as_secs_f64() / reference.as_secs_f64();
        assert!(
            (0.67..1.5).contains(&ratio),
            "{case}: {median:?} against {reference:?} for a wrong password with a new \
             hash; every failure takes one hash ({medians:?})"
        );
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn an_email_is_taken_in_any_of_its_compatibility_forms(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("kelvin@example.com", PASSWORD)
        .await
        .unwrap();
    app.create_user("office@example.com", PASSWORD)
        .await
        .unwrap();

    for (case, lookalike) in [
        ("U+212A KELVIN SIGN", "\u{212a}elvin@example.com"),
        (
            "full-width letters",
            "\u{ff2b}\u{ff25}\u{ff2c}\u{ff36}\u{ff29}\u{ff2e}@example.com",
        ),
        ("U+FB03 LATIN SMALL LIGATURE FFI", "o\u{fb03}ce@example.com"),
        ("KELVIN SIGN and capitals", "\u{212a}ELVIN@EXAMPLE.COM"),
    ] {
        let status = app
            .create_user(lookalike, "another password")
            .await
            .unwrap_err();
        assert_reason(&status, ErrorReason::EmailAlreadyRegistered, case);
        app.login(lookalike, PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{case}: logs in as the one account: {status:?}"));
    }
    let count: i64 = sqlx::query_scalar("select count(*) from auth.users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "no look-alike rows");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn lookalike_accounts_from_before_the_migration_stay_apart(pool: PgPool) {
    // The schema before 0006, with look-alikes its case-insensitive index let in.
    MIGRATOR.undo(&pool, 5).await.expect("0006 reverts");
    let older = insert_unnormalized_user(&pool, "office@example.com", "the older one").await;
    let later = insert_unnormalized_user(&pool, "o\u{fb03}ce@example.com", "the later one").await;
    let unrelated = insert_unnormalized_user(&pool, "other@example.com", PASSWORD).await;
    MIGRATOR
        .run(&pool)
        .await
        .expect("0006 applies over existing look-alikes");
    let app = spawn_app(pool).await;

    let lookalikes: Vec<Uuid> =
        sqlx::query_scalar("select id from auth.users where email_lookalike order by id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(lookalikes, [later], "only the later one is marked");
    for (case, email, password, expected) in [
        (
            "the older, exactly",
            "office@example.com",
            "the older one",
            Some(older),
        ),
        (
            "the older, in capitals",
            "OFFICE@example.com",
            "the older one",
            Some(older),
        ),
        (
            "the older, by the later's spelling",
            "o\u{fb03}ce@example.com",
            "the older one",
            None,
        ),
        (
            "the later, exactly",
            "o\u{fb03}ce@example.com",
            "the later one",
            Some(later),
        ),
        (
            "the later, in capitals",
            "O\u{fb03}CE@example.com",
            "the later one",
            None,
        ),
        (
            "an unrelated user",
            "OTHER@example.com",
            PASSWORD,
            Some(unrelated),
        ),
    ] {
        match (app.login(email, password).await, expected) {
            (Ok(login), Some(id)) => assert_eq!(user_id(&login), id.to_string(), "{case}"),
            (Err(status), None) => assert_reason(&status, ErrorReason::InvalidCredentials, case),
            (result, _) => panic!("{case}: {result:?}"),
        }
    }
    let status = app
        .create_user("Office@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_reason(
        &status,
        ErrorReason::EmailAlreadyRegistered,
        "the key stays taken",
    );

    MIGRATOR
        .undo(&app.pool, 5)
        .await
        .expect("0006 reverts with look-alikes present");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn failed_logins_count_against_the_account_whatever_the_spelling(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        Config {
            auth: AuthSettings {
                login_free_failures_per_account: 3,
                ..AuthSettings::default()
            },
            ..Config::ephemeral()
        },
    )
    .await;
    app.create_user("kelvin@example.com", PASSWORD)
        .await
        .unwrap();

    for spelling in [
        "\u{212a}elvin@example.com",
        "\u{ff2b}elvin@example.com",
        "k\u{ff45}lvin@example.com",
    ] {
        let status = app.login(spelling, "a wrong guess").await.unwrap_err();
        assert_reason(&status, ErrorReason::InvalidCredentials, spelling);
    }
    let status = app.login("KELVIN@example.com", PASSWORD).await.unwrap_err();

    assert_reason(
        &status,
        ErrorReason::LoginThrottled,
        "three look-alike spellings are three failures of one account",
    );
}
