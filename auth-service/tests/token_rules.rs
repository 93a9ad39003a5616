//! The access-token rules beyond the signature, through real gRPC calls: the JOSE
//! header's `typ` and `crit`, and how long a token may live. Tokens are forged
//! with auth-service's own signing key, so only the rule under test is broken,
//! and each is sent to auth-service (which verifies with its own keys) and to
//! posts-service (which fetches them from auth-service).

use agora_proto::{
    auth::v1::{self as auth, GetUserRequest},
    errors::ErrorReason,
    posts::v1::ListPostsRequest,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;
use system_tests::{Person, System, assert_reason, spawn_system};
use tonic::{Code, Request, Status};
use uuid::Uuid;

/// auth-service's newest signing key and its id, read from its table.
async fn real_signing_key(pool: &PgPool) -> (EncodingKey, String) {
    let (kid, der): (String, Vec<u8>) = sqlx::query_as(
        "select kid, private_key from auth.signing_keys order by create_time desc limit 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (EncodingKey::from_ed_der(&der), kid)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of a valid ten-minute token for `user_id`.
fn claims_for(user_id: &str) -> Value {
    let now = now();
    json!({
        "sub": user_id, "iat": now, "nbf": now, "exp": now + 600,
        "iss": "agora-auth", "aud": "agora", "jti": Uuid::now_v7().to_string(),
        "sid": Uuid::now_v7().to_string(),
    })
}

/// An EdDSA header with `typ`, or none.
fn header(typ: Option<&str>) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = typ.map(str::to_owned);
    header
}

/// Signs tokens with the real key.
struct Forger {
    key: EncodingKey,
    kid: String,
}

impl Forger {
    async fn new(system: &System) -> Self {
        let (key, kid) = real_signing_key(&system.pool).await;
        Self { key, kid }
    }

    fn sign(&self, mut header: Header, claims: &Value) -> String {
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The token, sent to a protected method of auth-service, one of posts-service,
/// and auth-service's VerifyToken: the same answer from each, `Ok` or the status.
async fn answers(system: &System, person: &Person, token: &str, case: &str) -> Result<(), Status> {
    let get_user = GetUserRequest {
        id: person.id.clone(),
    };
    let auth_answer = system
        .user_client
        .clone()
        .get_user(bearer(token, get_user))
        .await
        .map(drop);
    let posts_answer = system
        .post_client
        .clone()
        .list_posts(bearer(token, ListPostsRequest::default()))
        .await
        .map(drop);
    let verify = auth::VerifyTokenRequest {
        access_token: token.to_owned(),
    };
    let verify_answer = system
        .auth_client
        .clone()
        .verify_token(verify)
        .await
        .map(drop);
    let code = |answer: &Result<(), Status>| answer.as_ref().map_err(Status::code).err();
    assert_eq!(
        code(&auth_answer),
        code(&posts_answer),
        "{case}: auth-service and posts-service agree: {auth_answer:?} {posts_answer:?}"
    );
    assert_eq!(
        code(&auth_answer),
        code(&verify_answer),
        "{case}: VerifyToken agrees: {verify_answer:?}"
    );
    posts_answer
}

/// Asserts that every service refuses `token` with `reason` and a message that
/// names the rule, twice (a refusal is never remembered as valid).
async fn assert_refused(
    system: &System,
    person: &Person,
    token: &str,
    reason: ErrorReason,
    message: &str,
    case: &str,
) {
    for attempt in ["first", "second"] {
        let status = answers(system, person, token, case)
            .await
            .expect_err(&format!("{case}: refused ({attempt} call)"));
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_reason(&status, reason, case);
        assert_eq!(status.message(), message, "{case}");
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn login_issues_at_jwt_tokens(pool: PgPool) {
    let system = spawn_system(pool).await;

    let alice = system.sign_up("alice@example.com").await;

    let [header, _, _]: [&str; 3] = alice
        .token
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["typ"], "at+jwt", "RFC 9068: {header}");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header.get("crit").is_none());
    answers(&system, &alice, &alice.token, "the issued token")
        .await
        .expect("every service accepts it");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn tokens_typed_at_jwt_or_legacy_are_accepted_and_other_types_refused(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let forger = Forger::new(&system).await;
    let claims = claims_for(&alice.id);

    for (case, typ) in [
        ("at+jwt", Some("at+jwt")),
        ("application/at+jwt", Some("application/at+jwt")),
        ("legacy JWT", Some("JWT")),
        ("legacy, without typ", None),
    ] {
        let token = forger.sign(header(typ), &claims);
        answers(&system, &alice, &token, case)
            .await
            .unwrap_or_else(|status| panic!("{case}: accepted, not {status:?}"));
    }

    for typ in ["evil", "JWE", "id+jwt", "secevent+jwt", ""] {
        let token = forger.sign(header(Some(typ)), &claims);
        assert_refused(
            &system,
            &alice,
            &token,
            ErrorReason::TokenInvalid,
            "not an access token: wrong typ",
            &format!("typ {typ:?}"),
        )
        .await;
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_header_with_crit_is_refused(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let forger = Forger::new(&system).await;
    let claims = claims_for(&alice.id);

    let mut names_b64 = header(Some("at+jwt"));
    names_b64.crit = Some(vec!["b64".to_owned()]);
    names_b64.extras.insert("b64", true);
    let mut empty = header(Some("at+jwt"));
    empty.crit = Some(Vec::new());
    let mut null = header(Some("at+jwt"));
    null.extras.insert("crit", Value::Null);

    for (case, header) in [
        ("crit naming b64", names_b64),
        ("crit empty", empty),
        ("crit null", null),
    ] {
        let token = forger.sign(header, &claims);
        assert_refused(
            &system,
            &alice,
            &token,
            ErrorReason::TokenInvalid,
            "access token with critical header parameters",
            case,
        )
        .await;
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn tokens_living_too_long_or_issued_in_the_future_are_refused(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let forger = Forger::new(&system).await;
    let now = now();
    let with = |changes: &[(&str, Value)]| {
        let mut claims = claims_for(&alice.id);
        for (claim, value) in changes {
            claims[*claim] = value.clone();
        }
        forger.sign(header(Some("at+jwt")), &claims)
    };

    let too_long = "access token lifetime too long";
    let cases = [
        (
            "exp 2^62",
            with(&[("exp", json!(1_u64 << 62))]),
            ErrorReason::TokenInvalid,
            too_long,
        ),
        (
            "an hour and a second",
            with(&[("exp", json!(now + 3601))]),
            ErrorReason::TokenInvalid,
            too_long,
        ),
        (
            "issued two hours ago, valid for ten more minutes",
            with(&[("iat", json!(now - 7200)), ("nbf", json!(now - 7200))]),
            ErrorReason::TokenInvalid,
            too_long,
        ),
        (
            "iat an hour in the future",
            with(&[("iat", json!(now + 3600)), ("exp", json!(now + 3600 + 600))]),
            ErrorReason::TokenNotYetValid,
            "access token issued in the future",
        ),
        (
            "iat a minute in the future",
            with(&[("iat", json!(now + 60))]),
            ErrorReason::TokenNotYetValid,
            "access token issued in the future",
        ),
        (
            "no iat",
            {
                let mut claims = claims_for(&alice.id);
                claims.as_object_mut().unwrap().remove("iat");
                forger.sign(header(Some("at+jwt")), &claims)
            },
            ErrorReason::TokenMalformed,
            "malformed access token",
        ),
    ];
    for (case, token, reason, message) in &cases {
        assert_refused(&system, &alice, token, *reason, message, case).await;
    }

    let longest = with(&[("exp", json!(now + 3600))]);
    answers(&system, &alice, &longest, "exactly an hour")
        .await
        .expect("the longest lifetime auth-service issues is accepted");
}
