//! What auth-service does: register, log in, look users up, and forget request
//! ids once they expire.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use agora_proto::errors::ErrorReason;
use service_kit::{
    ApiError,
    client_address::{TrustedNetworks, X_FORWARDED_FOR},
    deadline::Deadline,
    error::both,
    fields::distinct,
};
use sqlx::{Connection as _, PgPool};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    password::{Normalization, Passwords},
    throttle::{LoginKeys, LoginThrottle, Slowed},
    tokens::{IssuedToken, TokenIssuer},
    users::{self, Credentials, EMAIL, Email, Password, USER_NOT_FOUND, User},
};

/// The one answer to every failed login, so it does not reveal which emails exist.
const BAD_CREDENTIALS: ApiError = ApiError::Refused {
    reason: ErrorReason::InvalidCredentials,
    message: "incorrect email or password",
};

/// Everything the RPCs share.
#[derive(Clone)]
pub struct Accounts {
    pub pool: PgPool,
    pub passwords: Passwords,
    pub issuer: Arc<TokenIssuer>,
    pub throttle: Arc<LoginThrottle>,
    /// Callers believed when they name the client (`x-forwarded-for`).
    pub trusted_callers: TrustedNetworks,
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
    pub async fn login(
        &self,
        email: &str,
        password: String,
        client: Option<IpAddr>,
        deadline: Deadline,
    ) -> Result<IssuedToken, ApiError> {
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
        let throttled_as = LoginKeys::new(&users::email_key(email), client);
        let counted = match self.throttle.check(&self.pool, &throttled_as).await? {
            Ok(counted) => counted,
            Err(too_early) => {
                let from = match too_early.slowed {
                    Slowed::Address => "from this address",
                    Slowed::Account => "for this email from this address",
                };
                // Whole seconds, rounded up, so a client that waits that long
                // is not refused again.
                let wait = too_early.wait;
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(ApiError::Throttled {
                    reason: ErrorReason::LoginThrottled,
                    message: format!("too many failed logins {from}; try again in {secs} s"),
                    retry_after: wait,
                });
            }
        };
        let credentials = {
            let mut conn = self.pool.acquire().await?;
            users::find_credentials(&mut conn, email).await?
        };
        let normalization = credentials
            .as_ref()
            .map_or(Normalization::CURRENT, |found| found.normalization);
        let typed = password.in_form(normalization).to_owned();
        let hash = credentials
            .as_ref()
            .map(|found| found.password_hash.clone());
        if !turn.verify(typed, hash).await? {
            self.throttle
                .record_failure(&self.pool, &throttled_as)
                .await?;
            return Err(BAD_CREDENTIALS);
        }
        self.throttle
            .record_success(&self.pool, &throttled_as, counted)
            .await?;
        let credentials = credentials.expect("a matching password implies a stored user");
        let user_id = credentials.user_id;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        if credentials.normalization != Normalization::CURRENT {
            self.rehash_later(credentials, password);
        }
        self.issuer.issue(user_id)
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
