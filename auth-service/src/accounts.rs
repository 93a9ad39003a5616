//! What auth-service does: register, log in and out, refresh sessions, change
//! passwords, delete accounts, look users up, and forget request ids and
//! sessions once they expire.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use access_token::{Caller, Revoked};
use agora_proto::errors::ErrorReason;
use service_kit::{
    ApiError,
    client_address::{TrustedNetworks, X_FORWARDED_FOR},
    deadline::Deadline,
    error::both,
    fields::{distinct, parse_id},
};
use sqlx::{Connection as _, PgPool};
use time::OffsetDateTime;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    password::{Normalization, Passwords, Turn},
    sessions::{
        self, Client, Ending, Lifetimes, MAX_SESSIONS_PER_USER, NewSession, RefreshToken, Session,
    },
    throttle::{Counted, LoginKeys, LoginThrottle, Slowed},
    tokens::{IssuedToken, TokenIssuer},
    users::{
        self, Credentials, EMAIL, Email, OwnCredentials, Password, USER_NOT_FOUND, User, UserLock,
    },
};

/// The one answer to every failed login, so it does not reveal which emails exist.
const BAD_CREDENTIALS: ApiError = ApiError::Refused {
    reason: ErrorReason::InvalidCredentials,
    message: "incorrect email or password",
};
/// A signed-in user's password was wrong.
const WRONG_PASSWORD: ApiError = ApiError::Refused {
    reason: ErrorReason::InvalidCredentials,
    message: "incorrect password",
};
const REFRESH_TOKEN_INVALID: ApiError = ApiError::Refused {
    reason: ErrorReason::RefreshTokenInvalid,
    message: "invalid refresh token, or its session has ended; log in again",
};
const REFRESH_TOKEN_EXPIRED: ApiError = ApiError::Refused {
    reason: ErrorReason::RefreshTokenExpired,
    message: "the session has expired; log in again",
};
const REFRESH_TOKEN_REUSED: ApiError = ApiError::Refused {
    reason: ErrorReason::RefreshTokenReused,
    message: "this refresh token was already used, so its session has ended; log in again",
};
const NOT_ACCOUNT_OWNER: ApiError = ApiError::Refused {
    reason: ErrorReason::NotAccountOwner,
    message: "you may delete only your own account",
};

/// What a login or a refresh hands the client.
pub struct SessionTokens {
    pub user_id: Uuid,
    pub access: IssuedToken,
    pub refresh_token: String,
    /// When the session expires unless refreshed before.
    pub refresh_expires_at: OffsetDateTime,
}

/// How a refresh token presented was found, when it did not refresh.
enum Refused {
    Invalid,
    Expired,
    Reused,
}

/// Everything the RPCs share.
#[derive(Clone)]
pub struct Accounts {
    pub pool: PgPool,
    pub passwords: Passwords,
    pub issuer: Arc<TokenIssuer>,
    pub throttle: Arc<LoginThrottle>,
    /// Callers believed when they name the client (`x-forwarded-for`).
    pub trusted_callers: TrustedNetworks,
    pub session_lifetimes: Lifetimes,
}

impl Accounts {
    /// Registers a user. With a `request_id`, only once (AIP-155): a retry within
    /// [`service_kit::request_ids::LIFETIME`] with the same email (in any letter case
    /// or compatibility form) and password answers the user the first request
    /// registered; the same id with another email or password is
    /// REQUEST_ID_REUSED. Hashing is refused at once when the hasher is too busy
    /// to finish before `deadline`.
    pub async fn register(
        &self,
        email: &str,
        password: String,
        request_id: Option<Uuid>,
        deadline: Deadline,
    ) -> Result<User, ApiError> {
        // Validate every field before the costly hash.
        let (email, password) = both(
            Email::parse("email", email),
            users::new_password("password", password),
        )?;
        let user = match request_id {
            None => {
                let password_hash = self
                    .passwords
                    .admit(deadline)?
                    .hash(password.normalized)
                    .await?;
                let mut conn = self.pool.acquire().await?;
                users::insert(&mut conn, Uuid::now_v7(), &email, &password_hash).await?
            }
            Some(request_id) => {
                self.register_once(request_id, &email, password, deadline)
                    .await?
            }
        };
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        Ok(user)
    }

    async fn register_once(
        &self,
        request_id: Uuid,
        email: &Email,
        password: Password,
        deadline: Deadline,
    ) -> Result<User, ApiError> {
        // Hashed before the transaction, which then holds its locks only briefly.
        let password_hash = self
            .passwords
            .admit(deadline)?
            .hash(password.normalized.clone())
            .await?;
        let earlier = {
            let mut conn = self.pool.acquire().await?;
            // The request row comes first, so that a concurrent retry waits on its
            // key until this transaction ends instead of failing on the email.
            let mut tx = conn.begin().await?;
            let id = Uuid::now_v7();
            if users::claim_request(&mut tx, request_id, id).await? {
                let user = users::insert(&mut tx, id, email, &password_hash).await?;
                tx.commit().await?;
                return Ok(user);
            }
            let earlier = users::registered_by_request(&mut tx, request_id, email).await?;
            tx.rollback().await?;
            earlier
        };
        // Checked against the stored hash, in the form it was made from, with the
        // connection handed back.
        let typed = password.in_form(earlier.password_normalization).to_owned();
        let same_request = earlier.same_email
            && self
                .passwords
                .admit(deadline)?
                .verify(typed, Some(earlier.password_hash))
                .await?;
        if !same_request {
            return Err(ApiError::refused(
                ErrorReason::RequestIdReused,
                "this request_id was used for a different request",
            ));
        }
        Ok(earlier.user)
    }

    /// The client a login is counted for: the caller, or the client a trusted
    /// caller names in `x-forwarded-for`. `peer` is `None` for a call made in
    /// this process (the gateway's all-in-one mode), which is believed.
    pub fn client(&self, peer: Option<IpAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        // A gateway left out of TRUSTED_CALLERS makes every client one: said
        // once, as that is a deployment mistake, not an attack.
        static SAID: AtomicBool = AtomicBool::new(false);
        if let Some(peer) = peer
            && !self.trusted_callers.contains(peer)
            && metadata.get(X_FORWARDED_FOR).is_some()
            && !SAID.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                %peer,
                "x-forwarded-for from a caller outside TRUSTED_CALLERS is ignored; \
                 its logins are counted for the caller's own address"
            );
        }
        self.trusted_callers.client(peer, metadata.as_ref())
    }

    /// Logs in, checking the password once, in the form the stored hash was made
    /// from; an unknown email checks its normalised form against a dummy hash
    /// with the current parameters, so it takes as long as a wrong password. A
    /// hash made from the password as typed is replaced after the answer.
    /// Failures are counted for the account and for `client`, the address the
    /// login came from (see [`crate::throttle`]).
    ///
    /// A successful login starts a session for `client`; past
    /// [`MAX_SESSIONS_PER_USER`], the user's least recently used one ends.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        client: Client,
        deadline: Deadline,
    ) -> Result<SessionTokens, ApiError> {
        // Only sizes are checked: a malformed address is simply not registered.
        let (email, password) = both(
            EMAIL.required("email", email),
            users::login_password("password", password),
        )?;
        let email = email.as_str();
        // A place for the hash first: a refusal then costs no query. The
        // failure count and the stored hash are read in this call's turn, so a
        // burst of logins queries one at a time, beside the reads of everyone
        // else, and takes its turns in the order it came.
        let turn = self.passwords.admit(deadline)?.turn().await?;
        // Failures are counted per account, whichever spelling of its email
        // they use, and per client address.
        let throttled_as = LoginKeys::new(&users::email_key(email), client.address);
        let counted = self.admitted_by_throttle(&throttled_as).await?;
        let credentials = {
            let mut conn = self.pool.acquire().await?;
            users::find_credentials(&mut conn, email).await?
        };
        if !self
            .password_matches(
                turn,
                credentials.as_ref(),
                &password,
                &throttled_as,
                counted,
            )
            .await?
        {
            return Err(BAD_CREDENTIALS);
        }
        let credentials = credentials.expect("a matching password implies a stored user");
        let user_id = credentials.user_id;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let tokens = self.start_session(&credentials, &client).await?;
        if credentials.normalization != Normalization::CURRENT {
            self.rehash_later(credentials, password);
        }
        Ok(tokens)
    }

    /// `Ok` unless the throttle says the call must wait: LOGIN_THROTTLED then,
    /// with the time to wait.
    async fn admitted_by_throttle(&self, keys: &LoginKeys) -> Result<Counted, ApiError> {
        let too_early = match self.throttle.check(&self.pool, keys).await? {
            Ok(counted) => return Ok(counted),
            Err(too_early) => too_early,
        };
        let from = match too_early.slowed {
            Slowed::Address => "from this address",
            Slowed::Account => "for this email from this address",
        };
        // Whole seconds, rounded up, so a client that waits that long is not
        // refused again.
        let wait = too_early.wait;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(ApiError::Throttled {
            reason: ErrorReason::LoginThrottled,
            message: format!("too many failed attempts {from}; try again in {secs} s"),
            retry_after: wait,
        })
    }

    /// Whether `password` matches `credentials` (checked once, in the form the
    /// stored hash was made from; without credentials against a dummy hash, in
    /// the same time), counting a failure or a success for `keys`.
    async fn password_matches(
        &self,
        turn: Turn,
        credentials: Option<&Credentials>,
        password: &Password,
        keys: &LoginKeys,
        counted: Counted,
    ) -> Result<bool, ApiError> {
        let normalization = credentials.map_or(Normalization::CURRENT, |found| found.normalization);
        let typed = password.in_form(normalization).to_owned();
        let hash = credentials.map(|found| found.password_hash.clone());
        if !turn.verify(typed, hash).await? {
            self.throttle.record_failure(&self.pool, keys).await?;
            return Ok(false);
        }
        self.throttle
            .record_success(&self.pool, keys, counted)
            .await?;
        Ok(true)
    }

    /// A new session for the user whose password was just checked, with its
    /// first tokens. The password must still be theirs when the session is
    /// stored: a password change or a deletion committed meanwhile wins
    /// (INVALID_CREDENTIALS). Beyond [`MAX_SESSIONS_PER_USER`], the least
    /// recently used sessions end, in the same transaction; the user's row stays
    /// locked until it commits, so concurrent logins count one after another.
    async fn start_session(
        &self,
        credentials: &Credentials,
        client: &Client,
    ) -> Result<SessionTokens, ApiError> {
        let user_id = credentials.user_id;
        // Signed before the transaction, which then holds its locks briefly.
        let access = self.issuer.issue(user_id, Uuid::now_v7())?;
        let refresh = RefreshToken::generate();
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let unchanged = users::lock_if_password_is(
            &mut tx,
            user_id,
            &credentials.password_hash,
            UserLock::Change,
        )
        .await?;
        if unchanged != Some(true) {
            return Err(BAD_CREDENTIALS);
        }
        let session = NewSession {
            id: access.session_id,
            user_id,
            client,
            refresh_hash: refresh.hash(),
            access_token_expire_time: access.expires_at.into(),
        };
        let refresh_expires_at =
            sessions::insert(&mut tx, &session, self.session_lifetimes).await?;
        let evicted = sessions::end(
            &mut tx,
            Ending::BeyondNewest {
                user_id,
                keep: MAX_SESSIONS_PER_USER,
            },
        )
        .await?;
        tx.commit().await?;
        if evicted > 0 {
            tracing::debug!(evicted, "ended the least recently used sessions");
        }
        Ok(SessionTokens {
            user_id,
            access,
            refresh_token: refresh.into_string(),
            refresh_expires_at,
        })
    }

    /// A new access token and a new refresh token for the session of
    /// `presented`, which is spent. A spent token presented again ends its
    /// session: someone else may hold a copy. Invalid and reused tokens count as
    /// failures of `client`'s address, whose throttle a refresh obeys.
    pub async fn refresh(
        &self,
        presented: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionTokens, ApiError> {
        let presented = presented.trim();
        if presented.is_empty() {
            return Err(ApiError::invalid("refresh_token", "required"));
        }
        let throttled_as = LoginKeys::address_only(client);
        self.admitted_by_throttle(&throttled_as).await?;
        let refused = match RefreshToken::parse(presented) {
            None => Refused::Invalid,
            Some(token) => match self.spend(&token).await? {
                Ok(tokens) => return Ok(tokens),
                Err(refused) => refused,
            },
        };
        Err(match refused {
            Refused::Invalid => {
                self.throttle
                    .record_failure(&self.pool, &throttled_as)
                    .await?;
                REFRESH_TOKEN_INVALID
            }
            Refused::Reused => {
                self.throttle
                    .record_failure(&self.pool, &throttled_as)
                    .await?;
                REFRESH_TOKEN_REUSED
            }
            Refused::Expired => REFRESH_TOKEN_EXPIRED,
        })
    }

    /// Spends `token` and issues the session's next tokens, in one transaction
    /// that locks the session first; or ends the session if the token was spent.
    async fn spend(
        &self,
        token: &RefreshToken,
    ) -> Result<Result<SessionTokens, Refused>, ApiError> {
        let hash = token.hash();
        let lifetimes = self.session_lifetimes;
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let Some(found) = sessions::find_by_refresh_token(&mut tx, &hash, lifetimes).await? else {
            return Ok(Err(Refused::Invalid));
        };
        tracing::Span::current().record("user_id", tracing::field::display(found.user_id));
        if !found.live {
            return Ok(Err(Refused::Expired));
        }
        if !sessions::spend(&mut tx, &hash).await? {
            sessions::end(
                &mut tx,
                Ending::One {
                    user_id: found.user_id,
                    session_id: found.session_id,
                },
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(
                session_id = %found.session_id,
                "a spent refresh token was presented again; its session has ended"
            );
            return Ok(Err(Refused::Reused));
        }
        let access = self.issuer.issue(found.user_id, found.session_id)?;
        let next = RefreshToken::generate();
        let refresh_expires_at = sessions::refreshed(
            &mut tx,
            found.session_id,
            &next.hash(),
            access.expires_at.into(),
            lifetimes,
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(SessionTokens {
            user_id: found.user_id,
            access,
            refresh_token: next.into_string(),
            refresh_expires_at,
        }))
    }

    /// Ends the caller's session; a session already ended, or a token naming
    /// none, ends nothing.
    pub async fn logout(&self, caller: Caller) -> Result<(), ApiError> {
        let Some(session_id) = caller.session_id else {
            return Ok(());
        };
        let mut conn = self.pool.acquire().await?;
        sessions::end(
            &mut conn,
            Ending::One {
                user_id: caller.user_id,
                session_id,
            },
        )
        .await?;
        revoke_callers_session(&mut conn, caller).await
    }

    /// Ends every session of the caller; how many.
    pub async fn logout_all(&self, caller: Caller) -> Result<u64, ApiError> {
        let mut conn = self.pool.acquire().await?;
        let ended = sessions::end(
            &mut conn,
            Ending::AllBut {
                user_id: caller.user_id,
                keep: None,
            },
        )
        .await?;
        revoke_callers_session(&mut conn, caller).await?;
        Ok(ended)
    }

    /// The caller's sessions that have not expired, most recently used first.
    pub async fn sessions(&self, caller: Caller) -> Result<Vec<Session>, ApiError> {
        let mut conn = self.pool.acquire().await?;
        sessions::list(&mut conn, caller.user_id, self.session_lifetimes).await
    }

    /// The sessions ended since `since` whose access tokens may be unexpired.
    pub async fn revoked_sessions(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Revoked, ApiError> {
        let mut conn = self.pool.acquire().await?;
        sessions::revoked_since(&mut conn, since).await
    }

    /// Changes the caller's password, given the current one, and ends every
    /// other session of theirs; how many. The current password is checked as a
    /// login's is: in a hashing turn, after the throttle, counted for the
    /// account and the client's address.
    pub async fn change_password(
        &self,
        caller: Caller,
        current_password: String,
        new_password: String,
        client: Option<IpAddr>,
        deadline: Deadline,
    ) -> Result<u64, ApiError> {
        let (current, new) = both(
            users::login_password("current_password", current_password),
            users::new_password("new_password", new_password),
        )?;
        let own = self
            .check_own_password(caller.user_id, &current, client, deadline)
            .await?;
        let new_hash = self.passwords.admit(deadline)?.hash(new.normalized).await?;
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // Another change that came first makes the password checked stale.
        if !users::replace_password(
            &mut tx,
            caller.user_id,
            &own.credentials.password_hash,
            &new_hash,
        )
        .await?
        {
            return Err(WRONG_PASSWORD);
        }
        let ended = sessions::end(
            &mut tx,
            Ending::AllBut {
                user_id: caller.user_id,
                keep: caller.session_id,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Deletes the caller's account, `id`, given its password. Its sessions end
    /// (their revocations are kept without the user id), its login failure
    /// count goes, and every row referring to the user goes with it through the
    /// foreign keys' cascades: request ids here, posts and likes elsewhere.
    pub async fn delete_account(
        &self,
        caller: Caller,
        id: &str,
        password: String,
        client: Option<IpAddr>,
        deadline: Deadline,
    ) -> Result<(), ApiError> {
        let (id, password) = both(
            parse_id("id", id),
            users::login_password("password", password),
        )?;
        if id != caller.user_id {
            return Err(NOT_ACCOUNT_OWNER);
        }
        let own = self
            .check_own_password(id, &password, client, deadline)
            .await?;
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        match users::lock_if_password_is(
            &mut tx,
            id,
            &own.credentials.password_hash,
            UserLock::Delete,
        )
        .await?
        {
            // Deleted meanwhile, by another call with the same password.
            None => return Ok(()),
            Some(false) => return Err(WRONG_PASSWORD),
            Some(true) => {}
        }
        // Locked, so none is refreshed meanwhile; recorded after the user's
        // deletion, which may take a while (their posts and likes), so that
        // each revocation's time is close to the commit (`sessions::AS_OF_LAG`).
        let ended = sessions::lock_all(&mut tx, id).await?;
        LoginThrottle::forget_account(&mut tx, &own.email).await?;
        users::delete(&mut tx, id).await?;
        sessions::record_revoked(&mut tx, &ended).await?;
        tx.commit().await?;
        tracing::info!(sessions = ended.len(), "account deleted");
        Ok(())
    }

    /// Checks the password of the signed-in user `user_id` as a login checks
    /// one (admission, throttle for their account and `client`, counted
    /// failures): WRONG_PASSWORD if it does not match.
    async fn check_own_password(
        &self,
        user_id: Uuid,
        password: &Password,
        client: Option<IpAddr>,
        deadline: Deadline,
    ) -> Result<OwnCredentials, ApiError> {
        let turn = self.passwords.admit(deadline)?.turn().await?;
        let own = {
            let mut conn = self.pool.acquire().await?;
            users::find_own_credentials(&mut conn, user_id).await?
        }
        .ok_or_else(ApiError::account_deleted)?;
        let throttled_as = LoginKeys::new(&users::email_key(&own.email), client);
        let counted = self.admitted_by_throttle(&throttled_as).await?;
        if !self
            .password_matches(
                turn,
                Some(&own.credentials),
                password,
                &throttled_as,
                counted,
            )
            .await?
        {
            return Err(WRONG_PASSWORD);
        }
        Ok(own)
    }

    /// Replaces a hash made from a password as typed with one of its normalised
    /// form, in the background, so the login that proved the password answers
    /// without waiting. The hash takes a place and a turn like any other, without a
    /// deadline; when the queue is full it is skipped, as the calls waiting come
    /// first, and the next login tries again. A password already in its normalised
    /// form keeps its hash, which is only marked.
    fn rehash_later(&self, credentials: Credentials, password: Password) {
        let passwords = self.passwords.clone();
        let pool = self.pool.clone();
        let work = async move {
            let Credentials {
                user_id,
                password_hash: old_hash,
                ..
            } = credentials;
            let new_hash = if password.typed == password.normalized {
                old_hash.clone()
            } else {
                let Ok(admission) = passwords.admit(Deadline::none()) else {
                    tracing::debug!("password hashing busy; rehash left to a later login");
                    return Ok(());
                };
                admission.hash(password.normalized).await?
            };
            let mut conn = pool.acquire().await?;
            users::replace_unnormalized_hash(&mut conn, user_id, &old_hash, &new_hash).await?;
            Ok::<_, ApiError>(())
        };
        let span = tracing::info_span!("auth.rehash_password");
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(error) = work.await {
                    tracing::warn!(error = %error, "rehashing a password failed");
                }
            },
            span,
        ));
    }

    pub async fn user(&self, id: Uuid) -> Result<User, ApiError> {
        let mut conn = self.pool.acquire().await?;
        users::find(&mut conn, id).await?.ok_or(USER_NOT_FOUND)
    }

    /// The users with `ids`, in that order, repeats included (AIP-231). An unknown
    /// id fails the whole call, unless `allow_missing` leaves it out.
    pub async fn users(&self, ids: &[Uuid], allow_missing: bool) -> Result<Vec<User>, ApiError> {
        let found = {
            let mut conn = self.pool.acquire().await?;
            users::find_many(&mut conn, &distinct(ids)).await?
        };
        let by_id: HashMap<Uuid, User> = found.into_iter().map(|user| (user.id, user)).collect();
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            match by_id.get(id) {
                Some(user) => users.push(user.clone()),
                None if allow_missing => {}
                None => return Err(USER_NOT_FOUND),
            }
        }
        Ok(users)
    }
}

/// Records the caller's session as ended, until the caller's token expires,
/// whether or not it had a row: a session started by a release from before
/// sessions were stored has none, and its logout must still refuse its token.
/// A revocation already recorded stays as it is.
async fn revoke_callers_session(
    conn: &mut sqlx::PgConnection,
    caller: Caller,
) -> Result<(), ApiError> {
    let Some(session_id) = caller.session_id else {
        return Ok(());
    };
    let expires_at = i64::try_from(caller.expires_at)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or_else(|| ApiError::internal("a verified token's expiry is out of range"))?;
    sessions::record_revoked(conn, &[(session_id, expires_at)]).await
}
