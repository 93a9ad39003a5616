//! Checks access tokens against cached public keys, and refuses those of
//! sessions that have ended.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use agora_proto::errors::ErrorReason;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use uuid::Uuid;

use crate::{AUDIENCE, Caller, Claims, ISSUER, KeySource, RevocationSource, keys::is_eddsa};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 10;
/// The longest an access token may live (`exp - iat`) unless a verifier is told
/// otherwise with [`TokenVerifier::with_max_lifetime`]: auth-service's longest
/// `TOKEN_TTL_SECS`, so a token signed with a leaked or misused key cannot last
/// for years.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// A token naming an unknown key makes the verifier ask its source again, but not
/// more often than this, so forged `kid`s cannot flood auth-service.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// How often a verifier kept fresh ([`TokenVerifier::keep_keys_fresh`]) fetches
/// the key set although no token named an unknown key: a key removed from the
/// set (say, after it leaked) stops being trusted, and the tokens it signed stop
/// being remembered, within this bound and the time a fetch takes.
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// How often a verifier kept fresh ([`TokenVerifier::keep_revocations_fresh`])
/// asks which sessions have ended: the access tokens of an ended session are
/// refused within this bound plus the time a fetch takes. (The source's `as_of`
/// trails its clock so that a late commit is not missed; that repeats some
/// sessions, it delays none.)
pub const REVOCATION_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// The shortest interval between two fetches of the ended sessions.
const MIN_REVOCATION_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// A fetch of the ended sessions that takes longer counts as failed.
const REVOCATION_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token was refused. The messages are safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing access token")]
    Missing,
    /// Two `authorization` values: which one counts would depend on who reads
    /// them, so neither does.
    #[error("more than one authorization value; send exactly one access token")]
    Duplicated,
    #[error("malformed access token")]
    Malformed,
    /// The header's `typ` says it is something other than an access token.
    #[error("not an access token: wrong typ")]
    WrongType,
    /// The header names extensions that must be understood (`crit`); Agora
    /// understands none.
    #[error("access token with critical header parameters")]
    CriticalHeader,
    /// `iat` is later than now, beyond the clock skew tolerated.
    #[error("access token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` is longer than the verifier's maximum lifetime.
    #[error("access token lifetime too long")]
    LifetimeTooLong,
    #[error("access token expired")]
    Expired,
    #[error("access token not yet valid")]
    NotYetValid,
    #[error("access token signed with an unknown key")]
    UnknownKey,
    /// Genuine, but its session has ended (a logout, a password change, the
    /// account deleted...).
    #[error("access token revoked: its session has ended, log in again")]
    Revoked,
    /// The token names a key not seen yet, and the keys cannot be fetched now.
    #[error("cannot verify access tokens right now, try again")]
    KeysUnavailable,
    #[error("invalid access token")]
    Invalid,
}

impl TokenError {
    /// The reason clients branch on; it also decides the status code.
    pub fn reason(&self) -> ErrorReason {
        match self {
            TokenError::Missing => ErrorReason::TokenMissing,
            TokenError::Duplicated | TokenError::Malformed => ErrorReason::TokenMalformed,
            TokenError::Expired => ErrorReason::TokenExpired,
            TokenError::NotYetValid | TokenError::IssuedInFuture => ErrorReason::TokenNotYetValid,
            TokenError::WrongType | TokenError::CriticalHeader | TokenError::LifetimeTooLong => {
                ErrorReason::TokenInvalid
            }
            TokenError::UnknownKey => ErrorReason::TokenKeyUnknown,
            TokenError::Revoked => ErrorReason::TokenRevoked,
            TokenError::KeysUnavailable => ErrorReason::TokenKeysUnavailable,
            TokenError::Invalid => ErrorReason::TokenInvalid,
        }
    }
}

impl From<TokenError> for tonic::Status {
    fn from(error: TokenError) -> Self {
        error
            .reason()
            .status(error.to_string(), &[], Default::default())
    }
}

/// Tokens remembered as verified, at most: every caller active within a token's
/// lifetime, at well under a kilobyte each.
const MAX_VERIFIED: usize = 10_000;

/// Verifies EdDSA access tokens: the header's `alg`, `typ` and `crit`; the
/// signature; `exp`, `nbf`, `iat` and the lifetime between them; `iss`, `aud`,
/// `sub`, `jti`.
///
/// A token that verified is remembered until its `exp`, so the signature math is
/// done once per token in each process, however many calls carry it. It is
/// forgotten sooner when the key that signed it leaves the key set.
///
/// Given a [`RevocationSource`] ([`TokenVerifier::with_revocations`]) and kept
/// fresh ([`TokenVerifier::keep_revocations_fresh`]), it also refuses the tokens
/// whose `sid` names a session that has ended, remembered ones included.
pub struct TokenVerifier {
    source: Box<dyn KeySource>,
    revocation_source: Option<Box<dyn RevocationSource>>,
    /// Ended sessions, each with when its last access token expires.
    revoked: RwLock<HashMap<Uuid, SystemTime>>,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    /// Verified tokens (the whole token, so a changed byte is another token) and
    /// the key that signed each.
    verified: RwLock<HashMap<Arc<str>, Verified>>,
    /// When the keys were last fetched, and whether that worked; the lock also
    /// makes concurrent refreshes one.
    last_refresh: tokio::sync::Mutex<Option<(Instant, bool)>>,
    /// [`MIN_REFRESH_INTERVAL`]; a field so that tests can shorten it.
    min_refresh_interval: Duration,
    /// The longest `exp - iat` accepted, in seconds.
    max_lifetime_secs: u64,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(source: impl KeySource) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Self {
            source: Box::new(source),
            revocation_source: None,
            revoked: RwLock::new(HashMap::new()),
            keys: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
            last_refresh: tokio::sync::Mutex::new(None),
            min_refresh_interval: MIN_REFRESH_INTERVAL,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME.as_secs(),
            validation,
        }
    }

    /// Refuses tokens whose `exp - iat` is longer than `max_lifetime` (by default
    /// [`DEFAULT_MAX_LIFETIME`]). It must be at least the issuer's token lifetime.
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime_secs = max_lifetime.as_secs();
        self
    }

    /// Refuses the tokens of sessions that `source` says have ended, once
    /// [`TokenVerifier::keep_revocations_fresh`] asks it. Tokens without `sid`
    /// are unaffected.
    pub fn with_revocations(mut self, source: impl RevocationSource) -> Self {
        self.revocation_source = Some(Box::new(source));
        self
    }

    /// Asks the revocation source which sessions have ended, at once and then
    /// every `every` ([`REVOCATION_REFRESH_INTERVAL`] by default), each time
    /// since the `as_of` of the last answer, for as long as the verifier lives.
    /// A session is remembered until its last token expires (plus the clock skew
    /// tolerated). Does nothing without [`TokenVerifier::with_revocations`].
    /// Needs a Tokio runtime.
    ///
    /// While the source cannot be reached (and before it first answers), the
    /// sessions known stay refused and every other token is accepted: refusing
    /// all of them would turn an auth-service outage into a total one. The
    /// exposure is a token of a session ended meanwhile, for at most its
    /// remaining lifetime. One warning is logged when fetches start failing and
    /// one info line when they work again; the gauges
    /// `token_revocations_age_seconds` (since the last fetch that worked, or
    /// since the start while none has) and `token_revocations_known` tell how
    /// current the verifier is.
    pub fn keep_revocations_fresh(self: &Arc<Self>, every: Duration) {
        if self.revocation_source.is_none() {
            return;
        }
        let every = every.max(MIN_REVOCATION_REFRESH_INTERVAL);
        let verifier = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut poll = RevocationPoll::new();
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // The first tick is at once: nothing ended is known yet.
                ticks.tick().await;
                let Some(verifier) = verifier.upgrade() else {
                    return;
                };
                verifier.refresh_revocations(&mut poll).await;
            }
        });
    }

    /// Fetches the sessions ended since the last answer, and forgets those whose
    /// tokens have all expired.
    async fn refresh_revocations(&self, poll: &mut RevocationPoll) {
        let Some(source) = &self.revocation_source else {
            return;
        };
        let fetched =
            tokio::time::timeout(REVOCATION_FETCH_TIMEOUT, source.revoked_since(poll.since))
                .await
                .unwrap_or_else(|_| {
                    Err(crate::RevocationSourceError("no answer in time".to_owned()))
                });
        // An entry outlives its expiry by the skew tolerated on `exp`.
        let leeway = Duration::from_secs(LEEWAY_SECONDS);
        let now = SystemTime::now();
        let known = {
            let mut revoked = self
                .revoked
                .write()
                .expect("revoked sessions lock poisoned");
            if let Ok(answer) = &fetched {
                for &(session, expires) in &answer.sessions {
                    let entry = revoked.entry(session).or_insert(expires);
                    *entry = (*entry).max(expires);
                }
            }
            revoked.retain(|_, expires| expires.checked_add(leeway).is_none_or(|end| end > now));
            revoked.len()
        };
        match fetched {
            Ok(answer) => {
                poll.since = Some(answer.as_of);
                poll.last_success = Some(tokio::time::Instant::now());
                if poll.failing {
                    tracing::info!(known, "ended sessions fetched again");
                    poll.failing = false;
                }
            }
            Err(error) if !poll.failing => {
                tracing::warn!(%error, known,
                    "cannot fetch the ended sessions; refusing those known, accepting other tokens");
                poll.failing = true;
            }
            Err(error) => tracing::debug!(%error, "still cannot fetch the ended sessions"),
        }
        let age = poll.last_success.unwrap_or(poll.started).elapsed();
        metrics::gauge!("token_revocations_age_seconds").set(age.as_secs_f64());
        metrics::gauge!("token_revocations_known").set(known as f64);
    }

    /// Whether the caller's session has ended: a read lock and a lookup.
    fn is_revoked(&self, caller: &Caller) -> bool {
        caller.session_id.is_some_and(|session| {
            self.revoked
                .read()
                .expect("revoked sessions lock poisoned")
                .contains_key(&session)
        })
    }

    /// Fetches the key set every `every` (at most every few seconds) for as long
    /// as the verifier lives, besides fetching it when a token names an unknown
    /// key. A fetch that fails keeps the keys already known: while the source is
    /// down, tokens they signed stay valid, and the bound holds again once it is
    /// back. Needs a Tokio runtime.
    pub fn keep_keys_fresh(self: &Arc<Self>, every: Duration) {
        let every = every.max(self.min_refresh_interval);
        let verifier = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once; keys are fetched when first needed.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(verifier) = verifier.upgrade() else {
                    return;
                };
                // Due whenever the last fetch was, or the bound would be two intervals.
                verifier.refresh_unless_tried_within(Duration::ZERO).await;
            }
        });
    }

    /// Checks `token` (without the `Bearer ` prefix) and returns whose it is.
    pub async fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let refused = |error: TokenError| {
            metrics::counter!("token_verifications_total",
                "outcome" => error.reason().reason())
            .increment(1);
            Err(error)
        };
        let (caller, outcome) = match self.remembered(token) {
            Some(caller) => (caller, "remembered"),
            None => match self.verify_signature(token).await {
                Ok((caller, kid)) => {
                    // Even if revoked: asked again, it costs a lookup, not a signature.
                    self.remember(token, caller, kid);
                    (caller, "verified")
                }
                Err(error) => return refused(error),
            },
        };
        // On every call: a session may end after its tokens were remembered.
        if self.is_revoked(&caller) {
            return refused(TokenError::Revoked);
        }
        metrics::counter!("token_verifications_total", "outcome" => outcome).increment(1);
        Ok(caller)
    }

    /// A token verified before whose `exp` has not passed.
    fn remembered(&self, token: &str) -> Option<Caller> {
        let verified = self.verified.read().expect("verified tokens lock poisoned");
        let entry = verified.get(token)?;
        (unix_now() < entry.caller.expires_at).then_some(entry.caller)
    }

    fn remember(&self, token: &str, caller: Caller, kid: String) {
        let mut verified = self
            .verified
            .write()
            .expect("verified tokens lock poisoned");
        if verified.len() >= MAX_VERIFIED {
            let now = unix_now();
            verified.retain(|_, entry| now < entry.caller.expires_at);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(token.into(), Verified { caller, kid });
    }

    async fn verify_signature(&self, token: &str) -> Result<(Caller, String), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        check_type(header.typ.as_deref())?;
        if names_critical_parameters(token)? {
            return Err(TokenError::CriticalHeader);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = match self.cached_key(&kid) {
            Some(key) => key,
            None => {
                let fetched = self.refresh().await;
                match self.cached_key(&kid) {
                    Some(key) => key,
                    None if fetched => return Err(TokenError::UnknownKey),
                    None => return Err(TokenError::KeysUnavailable),
                }
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            })?
            .claims;
        self.check_lifetime(&claims)?;
        let uuid = |text: &str| Uuid::parse_str(text).map_err(|_| TokenError::Invalid);
        let caller = Caller {
            user_id: uuid(&claims.sub)?,
            token_id: uuid(&claims.jti)?,
            session_id: claims.sid.as_deref().map(uuid).transpose()?,
            expires_at: claims.exp,
        };
        Ok((caller, kid))
    }

    /// `iat` is not in the future, and `exp` is at most the maximum lifetime after
    /// it. (A token without `iat` does not get here: [`Claims`] requires it.)
    fn check_lifetime(&self, claims: &Claims) -> Result<(), TokenError> {
        if claims.iat > unix_now().saturating_add(LEEWAY_SECONDS) {
            return Err(TokenError::IssuedInFuture);
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime_secs {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(())
    }

    fn cached_key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .expect("key cache lock poisoned")
            .get(kid)
            .cloned()
    }

    /// Fetches the keys unless that was tried moments ago; whether the latest
    /// fetch worked.
    async fn refresh(&self) -> bool {
        self.refresh_unless_tried_within(self.min_refresh_interval)
            .await
    }

    /// Fetches the keys unless that was tried within `recent`; whether the
    /// latest fetch worked.
    async fn refresh_unless_tried_within(&self, recent: Duration) -> bool {
        let mut last_refresh = self.last_refresh.lock().await;
        if let Some((at, worked)) = *last_refresh
            && at.elapsed() < recent
        {
            return worked;
        }
        let worked = match self.source.fetch().await {
            Ok(set) => {
                let fresh: HashMap<_, _> = set
                    .keys
                    .iter()
                    .filter(|jwk| is_eddsa(jwk))
                    .filter_map(|jwk| {
                        let kid = jwk.common.key_id.clone()?;
                        let key = DecodingKey::from_jwk(jwk).ok()?;
                        Some((kid, Arc::new(key)))
                    })
                    .collect();
                tracing::debug!(keys = fresh.len(), "token verification keys refreshed");
                // A key gone from the set takes the tokens it signed with it.
                self.verified
                    .write()
                    .expect("verified tokens lock poisoned")
                    .retain(|_, entry| fresh.contains_key(&entry.kid));
                *self.keys.write().expect("key cache lock poisoned") = fresh;
                true
            }
            // Keep the keys we have: tokens they signed stay valid while the source is down.
            Err(error) => {
                tracing::warn!(%error, "keeping cached token verification keys");
                false
            }
        };
        *last_refresh = Some((Instant::now(), worked));
        worked
    }
}

/// Accepts the JOSE `typ` of an access token (RFC 9068: `at+jwt`, or its long
/// form `application/at+jwt`; media types ignore letter case).
fn check_type(typ: Option<&str>) -> Result<(), TokenError> {
    match typ.map(str::to_ascii_lowercase).as_deref() {
        Some("at+jwt" | "application/at+jwt") => Ok(()),
        // Legacy: auth-service issued `typ: JWT` before it said `at+jwt`; a token
        // without `typ` is taken as that same legacy form. Such tokens stay valid
        // until they expire, at most the maximum token lifetime (an hour) after
        // the last auth-service replica still issuing them is replaced; then this
        // arm can go. Accepting them is safe meanwhile: auth-service's keys sign
        // access tokens and nothing else, so no other kind of token can pass.
        Some("jwt") | None => Ok(()),
        Some(_) => Err(TokenError::WrongType),
    }
}

/// Whether the JOSE header has a `crit` member (RFC 7515 §4.1.11), whatever its
/// value. jsonwebtoken reads `"crit": null` as no `crit`, so the header is read
/// here as plain JSON.
fn names_critical_parameters(token: &str) -> Result<bool, TokenError> {
    let segment = token.split('.').next().unwrap_or_default();
    let json = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    Ok(header.contains_key("crit"))
}

/// Where [`TokenVerifier::keep_revocations_fresh`] stands.
struct RevocationPoll {
    /// The `as_of` of the last answer.
    since: Option<SystemTime>,
    started: tokio::time::Instant,
    last_success: Option<tokio::time::Instant>,
    /// Whether the last fetch failed, so that an outage is logged once.
    failing: bool,
}

impl RevocationPoll {
    fn new() -> Self {
        Self {
            since: None,
            started: tokio::time::Instant::now(),
            last_success: None,
            failing: false,
        }
    }
}

/// A token that verified, and the key that signed it.
struct Verified {
    caller: Caller,
    kid: String,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ed25519_dalek::{
        SigningKey,
        pkcs8::{EncodePrivateKey, KeypairBytes},
    };
    use jsonwebtoken::{
        EncodingKey, Header,
        jwk::{Jwk, JwkSet},
    };

    use super::*;
    use crate::{Claims, KeySourceError, TOKEN_TYPE};

    /// A key source whose set the test changes.
    #[derive(Clone, Default)]
    struct Swappable(Arc<Mutex<JwkSet>>);

    impl KeySource for Swappable {
        fn fetch(
            &self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<JwkSet, KeySourceError>> + Send + '_>,
        > {
            let keys = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(keys) })
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

    fn token(key: &EncodingKey, kid: &str) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: Uuid::now_v7().to_string(),
            iat: now,
            exp: now + 600,
            nbf: Some(now),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: Uuid::now_v7().to_string(),
            sid: None,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    #[tokio::test]
    async fn a_remembered_token_is_forgotten_when_its_key_leaves_the_set() {
        let (old_key, old_jwk) = new_key("old");
        let (new_key, new_jwk) = new_key("new");
        let source = Swappable::default();
        *source.0.lock().unwrap() = JwkSet {
            keys: vec![old_jwk],
        };
        let mut verifier = TokenVerifier::new(source.clone());
        verifier.min_refresh_interval = Duration::ZERO;
        let old_token = token(&old_key, "old");
        let caller = verifier.verify(&old_token).await.expect("a genuine token");
        assert_eq!(verifier.verify(&old_token).await, Ok(caller), "remembered");

        let mut tampered = old_token.clone();
        tampered.pop();
        assert!(
            verifier.verify(&tampered).await.is_err(),
            "a changed byte is another token, checked anew"
        );

        // The old key is retired; a token of the new one makes the verifier look.
        *source.0.lock().unwrap() = JwkSet {
            keys: vec![new_jwk],
        };
        verifier
            .verify(&token(&new_key, "new"))
            .await
            .expect("the new key is fetched");
        assert_eq!(
            verifier.verify(&old_token).await,
            Err(TokenError::UnknownKey),
            "the old key's tokens went with it"
        );
    }

    #[tokio::test]
    async fn a_verifier_kept_fresh_stops_trusting_a_removed_key_within_the_interval() {
        let (key, jwk) = new_key("leaked");
        let source = Swappable::default();
        *source.0.lock().unwrap() = JwkSet { keys: vec![jwk] };
        let mut verifier = TokenVerifier::new(source.clone());
        verifier.min_refresh_interval = Duration::ZERO;
        let verifier = Arc::new(verifier);
        let every = Duration::from_millis(50);
        verifier.keep_keys_fresh(every);
        let token = token(&key, "leaked");
        verifier.verify(&token).await.expect("a genuine token");

        // No token names an unknown key, yet the removal is seen.
        *source.0.lock().unwrap() = JwkSet::default();
        tokio::time::sleep(every * 4).await;
        assert!(
            verifier.keys.read().unwrap().is_empty(),
            "keys fetched again"
        );
        assert_eq!(
            verifier.verify(&token).await,
            Err(TokenError::UnknownKey),
            "neither remembered nor verifiable any more"
        );
    }

    #[tokio::test]
    async fn keeping_keys_fresh_ends_with_the_verifier() {
        let source = Swappable::default();
        let mut verifier = TokenVerifier::new(source.clone());
        verifier.min_refresh_interval = Duration::ZERO;
        let verifier = Arc::new(verifier);
        verifier.keep_keys_fresh(Duration::from_millis(10));
        let weak = Arc::downgrade(&verifier);
        drop(verifier);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            weak.upgrade().is_none(),
            "the refresher holds no strong reference"
        );
    }

    /// A verifier of tokens signed by one key, `kid` "k", and that key.
    fn one_key_verifier() -> (TokenVerifier, EncodingKey) {
        let (key, jwk) = new_key("k");
        let verifier = TokenVerifier::new(crate::StaticKeys(JwkSet { keys: vec![jwk] }));
        (verifier, key)
    }

    /// Valid claims, as JSON so that tests can change or drop any of them.
    fn claims_json() -> serde_json::Value {
        let now = unix_now();
        serde_json::json!({
            "sub": Uuid::now_v7().to_string(), "iat": now, "nbf": now, "exp": now + 600,
            "iss": ISSUER, "aud": AUDIENCE, "jti": Uuid::now_v7().to_string(),
        })
    }

    /// `claims` signed by `key` under `header` (with `kid` "k").
    fn signed(mut header: Header, claims: &serde_json::Value, key: &EncodingKey) -> String {
        header.kid = Some("k".to_owned());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn header_with_typ(typ: Option<&str>) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = typ.map(str::to_owned);
        header
    }

    #[tokio::test]
    async fn access_token_types_are_accepted_and_legacy_jwt_or_none_too() {
        let (verifier, key) = one_key_verifier();
        for typ in [
            Some("at+jwt"),
            Some("application/at+jwt"),
            Some("AT+JWT"),
            Some("JWT"),
            None,
        ] {
            let token = signed(header_with_typ(typ), &claims_json(), &key);
            assert!(verifier.verify(&token).await.is_ok(), "typ {typ:?}");
        }
    }

    #[tokio::test]
    async fn other_token_types_are_refused() {
        let (verifier, key) = one_key_verifier();
        for typ in ["evil", "JWE", "id+jwt", "", "jwt+at", "application/jwt"] {
            let token = signed(header_with_typ(Some(typ)), &claims_json(), &key);
            assert_eq!(
                verifier.verify(&token).await,
                Err(TokenError::WrongType),
                "typ {typ:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_header_with_crit_is_refused_whatever_it_names() {
        let (verifier, key) = one_key_verifier();
        let crit = |value: serde_json::Value| {
            let mut header = header_with_typ(Some(TOKEN_TYPE));
            header.extras.insert("crit", value);
            header
        };
        let cases = [
            (
                "a critical extension",
                crit(serde_json::json!(["exp"])),
                TokenError::CriticalHeader,
            ),
            (
                "an empty list",
                crit(serde_json::json!([])),
                TokenError::CriticalHeader,
            ),
            (
                "null",
                crit(serde_json::Value::Null),
                TokenError::CriticalHeader,
            ),
            (
                "not a list",
                crit(serde_json::json!("b64")),
                TokenError::Malformed,
            ),
        ];
        for (case, header, expected) in cases {
            let token = signed(header, &claims_json(), &key);
            assert_eq!(verifier.verify(&token).await, Err(expected), "{case}");
        }
        let mut header = header_with_typ(Some(TOKEN_TYPE));
        header.crit = Some(vec!["b64".to_owned()]);
        header.extras.insert("b64", false);
        assert_eq!(
            verifier.verify(&signed(header, &claims_json(), &key)).await,
            Err(TokenError::CriticalHeader),
            "crit as jsonwebtoken writes it"
        );
    }

    #[tokio::test]
    async fn lifetimes_beyond_the_maximum_are_refused() {
        let (verifier, key) = one_key_verifier();
        let now = unix_now();
        let with = |iat: u64, exp: u64| {
            let mut claims = claims_json();
            claims["iat"] = iat.into();
            claims["nbf"] = iat.min(now).into();
            claims["exp"] = exp.into();
            signed(header_with_typ(Some(TOKEN_TYPE)), &claims, &key)
        };
        let max = DEFAULT_MAX_LIFETIME.as_secs();
        let cases = [
            (
                "exp 2^62",
                with(now, 1 << 62),
                Err(TokenError::LifetimeTooLong),
            ),
            (
                "one second too long",
                with(now, now + max + 1),
                Err(TokenError::LifetimeTooLong),
            ),
            (
                "issued long ago, expiring soon",
                with(now - 2 * max, now + 60),
                Err(TokenError::LifetimeTooLong),
            ),
            (
                "iat an hour ahead",
                with(now + 3600, now + 3600 + 600),
                Err(TokenError::IssuedInFuture),
            ),
            (
                "iat beyond the leeway",
                with(now + LEEWAY_SECONDS + 5, now + 600),
                Err(TokenError::IssuedInFuture),
            ),
        ];
        for (case, token, expected) in cases {
            assert_eq!(verifier.verify(&token).await.map(drop), expected, "{case}");
            assert_eq!(
                verifier.verify(&token).await.map(drop),
                expected,
                "{case}, asked again"
            );
        }
        assert!(
            verifier.verified.read().unwrap().is_empty(),
            "no refused token is remembered"
        );

        for (case, token) in [
            ("exactly the maximum", with(now, now + max)),
            (
                "iat within the leeway",
                with(now + LEEWAY_SECONDS - 5, now + 600),
            ),
        ] {
            assert!(verifier.verify(&token).await.is_ok(), "{case}");
        }
    }

    #[tokio::test]
    async fn the_maximum_lifetime_is_a_setting() {
        let (verifier, key) = one_key_verifier();
        let verifier = verifier.with_max_lifetime(Duration::from_secs(300));
        let token = signed(header_with_typ(Some(TOKEN_TYPE)), &claims_json(), &key);
        assert_eq!(
            verifier.verify(&token).await,
            Err(TokenError::LifetimeTooLong),
            "600 seconds is more than 300"
        );
    }

    #[tokio::test]
    async fn a_token_without_iat_is_refused() {
        let (verifier, key) = one_key_verifier();
        let mut claims = claims_json();
        claims.as_object_mut().unwrap().remove("iat");
        let token = signed(header_with_typ(Some(TOKEN_TYPE)), &claims, &key);
        assert_eq!(verifier.verify(&token).await, Err(TokenError::Malformed));
    }
}
