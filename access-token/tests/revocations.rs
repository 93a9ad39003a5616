//! A verifier learns which sessions ended from a revocation source, and refuses
//! their tokens on every call, remembered ones included; while the source fails,
//! it keeps what it knows and accepts the rest.
//!
//! Time is Tokio's, paused: the verifier polls every [`EVERY`], and the tests
//! stand half an interval off its polls, so each step sees exactly one more.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use access_token::{
    AUDIENCE, Claims, ISSUER, REVOCATION_REFRESH_INTERVAL, RevocationSource, RevocationSourceError,
    Revoked, StaticKeys, TOKEN_TYPE, TokenError, TokenVerifier,
};
use agora_proto::errors::{ErrorReason, reason_of};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, KeypairBytes},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk, jwk::JwkSet};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{Layer, layer::SubscriberExt};
use uuid::Uuid;

const EVERY: Duration = REVOCATION_REFRESH_INTERVAL;

#[tokio::test(start_paused = true)]
async fn a_token_of_an_ended_session_is_refused_even_when_remembered() {
    let app = TestApp::start();
    let (ended, other) = (Uuid::now_v7(), Uuid::now_v7());
    let token = app.token(Some(ended));
    app.verifier.verify(&token).await.expect("a live session");

    app.auth.end(ended, in_ten_minutes());
    app.next_poll().await;

    let refused = app.verifier.verify(&token).await;
    assert_eq!(refused, Err(TokenError::Revoked), "remembered, yet refused");
    let status = tonic::Status::from(refused.unwrap_err());
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason_of(&status), Some(ErrorReason::TokenRevoked));
    assert_eq!(
        app.verifier.verify(&app.token(Some(ended))).await,
        Err(TokenError::Revoked),
        "another token of the session, never seen"
    );
    assert!(
        app.verifier.verify(&app.token(Some(other))).await.is_ok(),
        "another session goes on"
    );
    assert!(
        app.metrics
            .render()
            .contains(r#"token_verifications_total{outcome="TOKEN_REVOKED"} 2"#),
        "refusals counted by reason:\n{}",
        app.metrics.render()
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_without_sid_is_unaffected() {
    let app = TestApp::start();
    let session = Uuid::now_v7();
    app.auth.end(session, in_ten_minutes());
    app.next_poll().await;

    assert!(app.verifier.verify(&app.token(None)).await.is_ok());
    assert_eq!(
        app.verifier.verify(&app.token(Some(session))).await,
        Err(TokenError::Revoked),
        "while a token naming the session is refused"
    );
}

#[tokio::test(start_paused = true)]
async fn each_fetch_asks_from_the_as_of_of_the_last_answer() {
    let app = TestApp::start();
    for _ in 0..3 {
        app.next_poll().await;
    }
    assert_eq!(
        app.auth.asked(),
        [None, Some(as_of(1)), Some(as_of(2))],
        "everything first, then what ended since the last answer"
    );

    app.auth.set_down(true);
    app.next_poll().await;
    app.next_poll().await;
    app.auth.set_down(false);
    app.next_poll().await;
    assert_eq!(
        app.auth.asked()[3..],
        [Some(as_of(3)), Some(as_of(3)), Some(as_of(3))],
        "a failed fetch leaves `since` where it was, so nothing is missed"
    );
}

#[tokio::test(start_paused = true)]
async fn ended_sessions_are_forgotten_once_their_tokens_expired() {
    let app = TestApp::start();
    // Kept as long as its tokens, which the verifier accepts up to 10 seconds
    // past `exp`.
    let leeway = Duration::from_secs(10);
    let (expired, expiring, live) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let now = SystemTime::now();
    app.auth.end(expired, now - leeway - Duration::from_secs(1));
    app.auth
        .end(expiring, now - leeway + Duration::from_millis(500));
    app.auth.end(live, in_ten_minutes());
    app.next_poll().await;
    assert_eq!(
        app.gauge("token_revocations_known"),
        2.0,
        "expired on arrival"
    );
    let token = app.token(Some(expiring));
    assert_eq!(app.verifier.verify(&token).await, Err(TokenError::Revoked));

    // Expiries are on the wall clock, which Tokio's paused time does not move.
    std::thread::sleep(Duration::from_millis(600));
    app.next_poll().await;

    assert_eq!(
        app.gauge("token_revocations_known"),
        1.0,
        "forgotten though the source did not mention it again"
    );
    assert!(
        app.verifier.verify(&token).await.is_ok(),
        "no longer remembered (a real token would have expired with its session)"
    );
    assert_eq!(
        app.verifier.verify(&app.token(Some(live))).await,
        Err(TokenError::Revoked)
    );
}

#[tokio::test(start_paused = true)]
async fn while_the_source_fails_known_sessions_stay_refused_and_others_are_accepted() {
    let app = TestApp::start();
    let (before, during) = (Uuid::now_v7(), Uuid::now_v7());
    app.auth.end(before, in_ten_minutes());
    app.next_poll().await;
    assert_eq!(app.gauge("token_revocations_age_seconds"), 0.0);

    app.auth.set_down(true);
    app.auth.end(during, in_ten_minutes());
    for _ in 0..3 {
        app.next_poll().await;
    }

    assert_eq!(
        app.verifier.verify(&app.token(Some(before))).await,
        Err(TokenError::Revoked),
        "what is known stays refused"
    );
    assert!(
        app.verifier.verify(&app.token(Some(during))).await.is_ok(),
        "what ended meanwhile is not known yet"
    );
    assert!(
        app.verifier
            .verify(&app.token(Some(Uuid::now_v7())))
            .await
            .is_ok()
    );
    assert_eq!(
        app.gauge("token_revocations_age_seconds"),
        (3 * EVERY).as_secs_f64(),
        "seconds since the last fetch that worked"
    );
    assert_eq!(app.gauge("token_revocations_known"), 1.0);
    assert_eq!(
        app.logs.take(),
        [(tracing::Level::WARN, 1)],
        "one warning for the whole outage"
    );

    app.auth.set_down(false);
    app.next_poll().await;
    app.next_poll().await;

    assert_eq!(
        app.verifier.verify(&app.token(Some(during))).await,
        Err(TokenError::Revoked),
        "learned once the source answers"
    );
    assert_eq!(app.gauge("token_revocations_age_seconds"), 0.0);
    assert_eq!(app.gauge("token_revocations_known"), 2.0);
    assert_eq!(
        app.logs.take(),
        [(tracing::Level::INFO, 1)],
        "one line when it works again"
    );
}

#[tokio::test(start_paused = true)]
async fn until_the_source_first_answers_every_valid_token_is_accepted() {
    let app = TestApp::with_source_down();
    app.auth.end(Uuid::now_v7(), in_ten_minutes());
    app.next_poll().await;
    app.next_poll().await;

    assert!(
        app.verifier
            .verify(&app.token(Some(Uuid::now_v7())))
            .await
            .is_ok()
    );
    assert_eq!(
        app.gauge("token_revocations_age_seconds"),
        EVERY.as_secs_f64(),
        "the age counts from the start (the first poll) while no fetch has worked"
    );
    assert_eq!(app.gauge("token_revocations_known"), 0.0);
    assert_eq!(app.logs.take(), [(tracing::Level::WARN, 1)]);
}

#[tokio::test(start_paused = true)]
async fn keeping_revocations_fresh_ends_with_the_verifier() {
    let app = TestApp::start();
    app.next_poll().await;
    let weak = Arc::downgrade(&app.verifier);
    let asked = app.auth.clone();
    drop(app);
    tokio::time::sleep(EVERY * 3).await;
    assert!(
        weak.upgrade().is_none(),
        "the poller holds no strong reference"
    );
    assert_eq!(asked.asked().len(), 1, "and stops asking");
}

/// A verifier kept fresh by a fake auth-service, with its metrics and logs.
struct TestApp {
    verifier: Arc<TokenVerifier>,
    auth: FakeAuthService,
    key: EncodingKey,
    metrics: PrometheusHandle,
    logs: Logs,
    _metrics: metrics::LocalRecorderGuard<'static>,
    _logs: tracing::subscriber::DefaultGuard,
}

impl TestApp {
    fn start() -> Self {
        Self::started(FakeAuthService::default())
    }

    fn with_source_down() -> Self {
        let auth = FakeAuthService::default();
        auth.set_down(true);
        Self::started(auth)
    }

    /// Polls at once, then every [`EVERY`]; the test's clock stands half an
    /// interval off once the first poll is done.
    fn started(auth: FakeAuthService) -> Self {
        // Tokio's test runtime runs every task on this thread: the poller
        // records and logs here.
        let recorder: &'static _ = Box::leak(Box::new(PrometheusBuilder::new().build_recorder()));
        let metrics = recorder.handle();
        let guard = metrics::set_default_local_recorder(recorder);
        let logs = Logs::default();
        let log_guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logs.clone()));
        let (key, jwk) = new_key("k");
        let verifier = Arc::new(
            TokenVerifier::new(StaticKeys(JwkSet { keys: vec![jwk] }))
                .with_revocations(auth.clone()),
        );
        verifier.keep_revocations_fresh(EVERY);
        Self {
            verifier,
            auth,
            key,
            metrics,
            logs,
            _metrics: guard,
            _logs: log_guard,
        }
    }

    /// Lets the first poll, or the next one, happen.
    async fn next_poll(&self) {
        let polls = self.auth.asked().len();
        let wait = if polls == 0 { EVERY / 2 } else { EVERY };
        tokio::time::sleep(wait).await;
        assert_eq!(self.auth.asked().len(), polls + 1, "one poll per step");
    }

    /// A valid access token of a new user, naming `session`.
    fn token(&self, session: Option<Uuid>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: Uuid::now_v7().to_string(),
            iat: now,
            exp: now + 600,
            nbf: Some(now),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: Uuid::now_v7().to_string(),
            sid: session.map(|session| session.to_string()),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some("k".to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    /// The gauge's value on the metrics page.
    fn gauge(&self, name: &str) -> f64 {
        let page = self.metrics.render();
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in:\n{page}"))
            .parse()
            .unwrap()
    }
}

fn in_ten_minutes() -> SystemTime {
    SystemTime::now() + Duration::from_secs(600)
}

/// The `as_of` of the fake's `n`th answer.
fn as_of(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n)
}

/// auth-service's answers, kept in memory: each answer moves its clock one
/// tick, and lists the sessions ended at or after `since`.
#[derive(Clone, Default)]
struct FakeAuthService(Arc<Mutex<Fake>>);

#[derive(Default)]
struct Fake {
    /// Ended sessions: the id, when its tokens expire, and the clock then.
    ended: Vec<(Uuid, SystemTime, SystemTime)>,
    answers: u64,
    asked: Vec<Option<SystemTime>>,
    down: bool,
}

impl FakeAuthService {
    fn end(&self, session: Uuid, expires: SystemTime) {
        let mut fake = self.0.lock().unwrap();
        let now = as_of(fake.answers);
        fake.ended.push((session, expires, now));
    }

    fn set_down(&self, down: bool) {
        self.0.lock().unwrap().down = down;
    }

    /// The `since` of every request so far.
    fn asked(&self) -> Vec<Option<SystemTime>> {
        self.0.lock().unwrap().asked.clone()
    }
}

impl RevocationSource for FakeAuthService {
    fn revoked_since(
        &self,
        since: Option<SystemTime>,
    ) -> Pin<Box<dyn Future<Output = Result<Revoked, RevocationSourceError>> + Send + '_>> {
        let mut fake = self.0.lock().unwrap();
        fake.asked.push(since);
        let answer = if fake.down {
            Err(RevocationSourceError(
                "UNAVAILABLE: connection refused".to_owned(),
            ))
        } else {
            fake.answers += 1;
            let sessions = fake
                .ended
                .iter()
                .filter(|(_, _, ended)| since.is_none_or(|since| *ended >= since))
                .map(|&(session, expires, _)| (session, expires))
                .collect();
            Ok(Revoked {
                sessions,
                as_of: as_of(fake.answers),
            })
        };
        Box::pin(async move { answer })
    }
}

/// Counts the warnings and info lines logged, by level.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<tracing::Level>>>);

impl Logs {
    /// The levels logged since last asked (INFO and above), each with how many.
    fn take(&self) -> Vec<(tracing::Level, usize)> {
        let mut counted: Vec<(tracing::Level, usize)> = Vec::new();
        for level in self.0.lock().unwrap().drain(..) {
            match counted.iter_mut().find(|(seen, _)| *seen == level) {
                Some((_, count)) => *count += 1,
                None => counted.push((level, 1)),
            }
        }
        counted
    }
}

impl<S: tracing::Subscriber> Layer<S> for Logs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level <= tracing::Level::INFO {
            self.0.lock().unwrap().push(level);
        }
    }
}

fn new_key(kid: &str) -> (EncodingKey, Jwk) {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    // PKCS#8 v1 (the private key alone), the form jsonwebtoken reads.
    let der = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_der()
    .unwrap();
    let encoding = EncodingKey::from_ed_der(der.as_bytes());
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    (encoding, jwk)
}
