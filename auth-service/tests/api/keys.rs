//! Where the signing key comes from, and verifiers that fetch the public keys.

use std::sync::Arc;

use access_token::{AuthServiceKeys, TokenError, TokenVerifier};
use auth_service::Config;
use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
use service_kit::TokenKeysArgs;
use sqlx::PgPool;
use tonic::transport::Channel;

use crate::helpers::{foreign_signing_key, spawn_app, spawn_app_with};

async fn published_kids(app: &crate::helpers::TestApp) -> Vec<String> {
    let keys = app.jwks().await;
    for key in &keys {
        assert_eq!(
            (
                key.kty.as_str(),
                key.crv.as_str(),
                key.alg.as_str(),
                key.r#use.as_str()
            ),
            ("OKP", "Ed25519", "EdDSA", "sig")
        );
    }
    keys.into_iter().map(|key| key.kid).collect()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("tokens name their key")
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_restart_keeps_issued_tokens_valid(pool: PgPool) {
    let first = spawn_app(pool.clone()).await;
    let (alice, token) = first.signed_in_user("alice@example.com").await;
    let kids_before = published_kids(&first).await;
    first.stop().await;

    let second = spawn_app(pool).await;

    assert_eq!(
        published_kids(&second).await,
        kids_before,
        "the same key after a restart"
    );
    assert_eq!(kids_before, vec![kid_of(&token)]);
    second
        .get_user(&alice.id, Some(&token))
        .await
        .expect("a token from before the restart");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_configured_key_file_signs_the_tokens(pool: PgPool) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let path = std::env::temp_dir().join(format!("agora-test-key-{}.pem", uuid::Uuid::now_v7()));
    std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let config = Config {
        auth: auth_service::AuthSettings {
            signing_key_file: Some(path.clone()),
            ..Default::default()
        },
        ..Config::ephemeral()
    };

    let app = spawn_app_with(pool, config).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;

    assert_eq!(published_kids(&app).await, vec![kid_of(&token)]);
    app.get_user(&alice.id, Some(&token)).await.unwrap();
    let stored: i64 = sqlx::query_scalar("select count(*) from auth.signing_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        stored, 0,
        "no key is made in the database when a file is given"
    );
    std::fs::remove_file(path).unwrap();
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn an_unusable_key_file_stops_start_up_with_a_clear_error(pool: PgPool) {
    let path = std::env::temp_dir().join(format!("agora-test-key-{}.pem", uuid::Uuid::now_v7()));
    std::fs::write(&path, "not a key").unwrap();
    let missing = std::env::temp_dir().join("agora-no-such-key.pem");

    for (file, expected) in [
        (&path, "not an Ed25519 private key"),
        (&missing, "cannot read the signing key file"),
    ] {
        let config = Config {
            auth: auth_service::AuthSettings {
                signing_key_file: Some(file.clone()),
                ..Default::default()
            },
            ..Config::ephemeral()
        };
        let error = service_kit::service::build_with_pool(&config, pool.clone())
            .await
            .err()
            .expect("start-up fails");
        assert!(error.to_string().contains(expected), "{error}");
    }
    std::fs::remove_file(path).unwrap();
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_remote_verifier_keeps_working_while_auth_service_is_down(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;
    let channel = Channel::from_shared(format!("http://{}", app.address))
        .unwrap()
        .connect_lazy();
    let verifier = Arc::new(TokenVerifier::new(AuthServiceKeys::new(channel.clone())));

    let caller = verifier
        .verify(&token)
        .await
        .expect("keys fetched from auth-service");
    assert_eq!(caller.user_id.to_string(), alice.id);
    app.stop().await;

    let caller = verifier
        .verify(&token)
        .await
        .expect("cached keys still verify");
    assert_eq!(caller.user_id.to_string(), alice.id);
    let foreign = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("unknown".to_owned());
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "x"}),
            &foreign_signing_key(),
        )
        .unwrap()
    };
    assert_eq!(
        verifier.verify(&foreign).await.unwrap_err(),
        TokenError::UnknownKey,
        "the source answered moments ago without this key"
    );
    let cold = TokenVerifier::new(AuthServiceKeys::new(channel));
    assert_eq!(
        cold.verify(&token).await.unwrap_err(),
        TokenError::KeysUnavailable,
        "no keys yet and none to be had: unavailable, not a forgery"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn services_verify_with_keys_from_auth_service_or_a_jwks_file(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;
    let set = jsonwebtoken::jwk::JwkSet {
        keys: app
            .jwks()
            .await
            .iter()
            .filter_map(access_token::jwk_from_proto)
            .collect(),
    };
    let path = std::env::temp_dir().join(format!("agora-test-jwks-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&path, serde_json::to_string(&set).unwrap()).unwrap();

    let from_service = TokenKeysArgs::new(format!("http://{}", app.address));
    let from_file = TokenKeysArgs {
        jwks_file: Some(path.clone()),
        ..TokenKeysArgs::new("http://127.0.0.1:1")
    };
    for (case, args) in [("auth-service", from_service), ("JWKS file", from_file)] {
        let caller = args
            .verifier()
            .unwrap()
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(caller.user_id.to_string(), alice.id, "{case}");
    }

    let garbage = TokenKeysArgs {
        jwks_file: Some(std::env::temp_dir().join("agora-no-such-jwks.json")),
        ..TokenKeysArgs::new("")
    };
    assert!(
        garbage.verifier().is_err(),
        "a missing JWKS file is a configuration error"
    );
    std::fs::remove_file(path).unwrap();
}

fn sealed_with(secret: &str) -> Config {
    Config {
        auth: auth_service::AuthSettings {
            signing_keys_secret: Some(secret.to_owned().into()),
            ..Default::default()
        },
        ..Config::ephemeral()
    }
}

/// Each stored key: whether it is sealed, and its stored bytes.
async fn stored_keys(pool: &PgPool) -> Vec<(bool, Vec<u8>)> {
    sqlx::query_as("select sealed, private_key from auth.signing_keys order by kid")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn signing_keys_are_sealed_at_rest_with_the_secret_and_keep_their_tokens_valid(pool: PgPool) {
    let secret = "lIv+0QE5yqgHRcPLvbXuDDJ3g7RImV4OYFtojd6DG0Q=";
    let unsealed = spawn_app(pool.clone()).await;
    let (alice, token) = unsealed.signed_in_user("alice@example.com").await;
    let kids = published_kids(&unsealed).await;
    unsealed.stop().await;
    let [(false, clear)] = &stored_keys(&pool).await[..] else {
        panic!("one key, in the clear, without a secret");
    };

    let sealed = spawn_app_with(pool.clone(), sealed_with(secret)).await;

    let [(true, stored)] = &stored_keys(&pool).await[..] else {
        panic!("the key is sealed at the first start with a secret");
    };
    assert_ne!(stored, clear);
    assert!(
        !stored.windows(32).any(|window| clear.ends_with(window)),
        "the private key does not appear in what is stored"
    );
    assert_eq!(published_kids(&sealed).await, kids, "the same key");
    sealed
        .get_user(&alice.id, Some(&token))
        .await
        .expect("a token from before the key was sealed");
    let (_, new_token) = sealed.signed_in_user("bob@example.com").await;
    assert_eq!(kid_of(&new_token), kids[0], "it signs as before");
    sealed.stop().await;

    // The commands need the secret too: a key stored in the clear beside
    // sealed ones would undo the sealing.
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
    url.set_path(&database);
    let (status, printed) = system_tests::process::run(
        "auth-service",
        &[("DATABASE_URL", url.to_string())],
        &["rotate-signing-key"],
    )
    .await;
    assert!(!status.success(), "{printed}");
    assert!(printed.contains("set SIGNING_KEYS_SECRET"), "{printed}");
    let (status, printed) = system_tests::process::run(
        "auth-service",
        &[
            ("DATABASE_URL", url.to_string()),
            ("SIGNING_KEYS_SECRET", secret.to_owned()),
        ],
        &["rotate-signing-key"],
    )
    .await;
    assert!(status.success(), "{printed}");
    assert!(
        stored_keys(&pool).await.iter().all(|(sealed, _)| *sealed),
        "the new key is sealed too"
    );

    for (secret, expected) in [
        (None, "sealed: set SIGNING_KEYS_SECRET"),
        (
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            "does not open",
        ),
        (Some("too short"), "32 random bytes in base64"),
    ] {
        let config = match secret {
            Some(secret) => sealed_with(secret),
            None => Config::ephemeral(),
        };
        let error = service_kit::service::build_with_pool(&config, pool.clone())
            .await
            .err()
            .expect("start-up fails");
        assert!(error.to_string().contains(expected), "{secret:?}: {error}");
    }
}
