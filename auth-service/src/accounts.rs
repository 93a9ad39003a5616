//! What auth-service does: register, log in, look users up, and forget request
//! ids once they expire.

use std::{collections::HashMap, sync::Arc};

use agora_proto::errors::ErrorReason;
use service_kit::{ApiError, deadline::Deadline, error::both, fields::distinct};
use sqlx::{Connection as _, PgPool};
use uuid::Uuid;

use crate::{
    password::Passwords,
    throttle::LoginThrottle,
    tokens::{IssuedToken, TokenIssuer},
    users::{self, EMAIL, Email, MIN_PASSWORD_CHARS, USER_NOT_FOUND, User},
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
}

impl Accounts {
    /// Registers a user. With a `request_id`, only once (AIP-155): a retry within
    /// [`service_kit::request_ids::LIFETIME`] with the same email (in any letter case) and
    /// password answers the user the first request registered; the same id with
    /// another email or password is REQUEST_ID_REUSED. Hashing is refused at once
    /// when the hasher is too busy to finish before `deadline`.
    pub async fn register(
        &self,
        email: &str,
        password: String,
        request_id: Option<Uuid>,
        deadline: Deadline,
    ) -> Result<User, ApiError> {
        // Validate every field before the costly hash.
        let (email, ()) = both(
            Email::parse("email", email),
            users::check_password("password", &password, MIN_PASSWORD_CHARS),
        )?;
        let user = match request_id {
            None => {
                let password_hash = self.passwords.admit(deadline)?.hash(password).await?;
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
        password: String,
        deadline: Deadline,
    ) -> Result<User, ApiError> {
        // Hashed before the transaction, which then holds its locks only briefly.
        let password_hash = self
            .passwords
            .admit(deadline)?
            .hash(password.clone())
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
        // Checked against the stored hash, with the connection handed back.
        let same_request = earlier.same_email
            && self
                .passwords
                .admit(deadline)?
                .verify(password, Some(earlier.password_hash))
                .await?;
        if !same_request {
            return Err(ApiError::refused(
                ErrorReason::RequestIdReused,
                "this request_id was used for a different request",
            ));
        }
        Ok(earlier.user)
    }

    pub async fn login(
        &self,
        email: &str,
        password: String,
        deadline: Deadline,
    ) -> Result<IssuedToken, ApiError> {
        // Only sizes are checked: a malformed address is simply not registered.
        let (email, ()) = both(
            EMAIL.required("email", email),
            users::check_password("password", &password, 1),
        )?;
        let email = email.as_str();
        if let Err(wait) = self.throttle.check(email) {
            return Err(ApiError::Throttled {
                reason: ErrorReason::LoginThrottled,
                message: format!(
                    "too many failed logins for this email; try again in {} seconds",
                    wait.as_secs().max(1)
                ),
                retry_after: wait,
            });
        }
        // A place for the hash first: a refusal then costs no query. The stored
        // hash is read in this call's turn, so a burst of logins queries one at a
        // time, beside the reads of everyone else.
        let turn = self.passwords.admit(deadline)?.turn().await?;
        let credentials = {
            let mut conn = self.pool.acquire().await?;
            users::find_credentials(&mut conn, email).await?
        };
        let (user_id, hash) = credentials.unzip();
        if !turn.verify(password, hash).await? {
            self.throttle.record_failure(email);
            return Err(BAD_CREDENTIALS);
        }
        self.throttle.record_success(email);
        let user_id = user_id.expect("a matching password implies a stored user");
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        self.issuer.issue(user_id)
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
