//! Token attacks: every forged, stale or misdirected token gets UNAUTHENTICATED.

use agora_proto::{
    auth::v1 as proto,
    errors::{ErrorReason, reason_of},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, foreign_signing_key, spawn_app};

/// auth-service's own signing key, read from its table, to forge tokens that are
/// correctly signed but wrong in some other way.
async fn real_signing_key(app: &TestApp) -> (EncodingKey, String) {
    let (kid, der): (String, Vec<u8>) = sqlx::query_as(
        "select kid, private_key from auth.signing_keys order by create_time desc limit 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (EncodingKey::from_ed_der(&der), kid)
}

fn sign(claims: &Value, key: &EncodingKey, algorithm: Algorithm, kid: &str) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn valid_claims(user_id: &str) -> Value {
    let now = now();
    json!({
        "sub": user_id, "iat": now, "nbf": now, "exp": now + 600,
        "iss": "agora-auth", "aud": "agora", "jti": Uuid::now_v7().to_string(),
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn forged_and_invalid_tokens_are_unauthenticated(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, genuine) = app.signed_in_user("alice@example.com").await;
    let (key, kid) = real_signing_key(&app).await;
    let claims = valid_claims(&alice.id);
    let control = sign(&claims, &key, Algorithm::EdDSA, &kid);
    app.get_user(&alice.id, Some(&control))
        .await
        .expect("the forging kit makes valid tokens");

    let public_key = URL_SAFE_NO_PAD.decode(&app.jwks().await[0].x).unwrap();
    let other_key = foreign_signing_key();
    let [header, payload, signature]: [&str; 3] =
        genuine.split('.').collect::<Vec<_>>().try_into().unwrap();
    let someone_else = with(
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap(),
        "sub",
        json!(Uuid::now_v7().to_string()),
    );
    let an_hour_ago = now() - 3600;

    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not.a.token".to_owned()),
        ("one segment", "abc".to_owned()),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims)
            ),
        ),
        (
            "alg none with kid",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": kid})),
                b64(&claims)
            ),
        ),
        (
            "HS256 keyed with the public key",
            sign(
                &claims,
                &EncodingKey::from_secret(&public_key),
                Algorithm::HS256,
                &kid,
            ),
        ),
        (
            "another Ed25519 key, same kid",
            sign(&claims, &other_key, Algorithm::EdDSA, &kid),
        ),
        (
            "unknown kid",
            sign(&claims, &other_key, Algorithm::EdDSA, "no-such-key"),
        ),
        ("no kid", {
            let header = Header::new(Algorithm::EdDSA);
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }),
        (
            "tampered payload",
            format!("{header}.{}.{signature}", b64(&someone_else)),
        ),
        ("signature removed", format!("{header}.{payload}.")),
        (
            "expired",
            sign(
                &with(
                    with(claims.clone(), "exp", json!(an_hour_ago)),
                    "iat",
                    json!(an_hour_ago - 600),
                ),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "not yet valid",
            sign(
                &with(claims.clone(), "nbf", json!(now() + 600)),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "wrong issuer",
            sign(
                &with(claims.clone(), "iss", json!("someone-else")),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "wrong audience",
            sign(
                &with(claims.clone(), "aud", json!("another-app")),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "no exp",
            sign(
                &without(claims.clone(), "exp"),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "no sub",
            sign(
                &without(claims.clone(), "sub"),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "no iss",
            sign(
                &without(claims.clone(), "iss"),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "no aud",
            sign(
                &without(claims.clone(), "aud"),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "sub not a UUID",
            sign(
                &with(claims.clone(), "sub", json!("admin")),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
        (
            "exp as a string",
            sign(
                &with(claims.clone(), "exp", json!((now() + 600).to_string())),
                &key,
                Algorithm::EdDSA,
                &kid,
            ),
        ),
    ];

    for (case, token) in &cases {
        let status = app.get_user(&alice.id, Some(token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        let reason = reason_of(&status);
        match *case {
            "expired" => assert_eq!(reason, Some(ErrorReason::TokenExpired), "{case}"),
            "not yet valid" => assert_eq!(reason, Some(ErrorReason::TokenNotYetValid), "{case}"),
            "unknown kid" => assert_eq!(reason, Some(ErrorReason::TokenKeyUnknown), "{case}"),
            _ => assert!(
                matches!(
                    reason,
                    Some(ErrorReason::TokenInvalid | ErrorReason::TokenMalformed)
                ),
                "{case}: {reason:?}"
            ),
        }
        assert!(
            status.message().contains("token"),
            "{case}: a short reason: {:?}",
            status.message()
        );

        let verify = proto::VerifyTokenRequest {
            access_token: token.clone(),
        };
        let status = app.auth.clone().verify_token(verify).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "VerifyToken, {case}: {status:?}"
        );
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn malformed_authorization_metadata_is_unauthenticated(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (alice, token) = app.signed_in_user("alice@example.com").await;

    let cases = [
        ("no scheme", token.clone()),
        ("basic scheme", format!("Basic {token}")),
        ("bearer without a token", "Bearer ".to_owned()),
        ("bearer with garbage", "Bearer x".to_owned()),
    ];
    for (case, value) in cases {
        let mut request = tonic::Request::new(proto::GetUserRequest {
            id: alice.id.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        let status = app.users.clone().get_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }

    let mut lowercase_scheme = tonic::Request::new(proto::GetUserRequest {
        id: alice.id.clone(),
    });
    lowercase_scheme
        .metadata_mut()
        .insert("authorization", format!("bearer {token}").parse().unwrap());
    app.users
        .clone()
        .get_user(lowercase_scheme)
        .await
        .expect("the scheme is case-insensitive");
}
