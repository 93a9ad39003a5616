//! What auth-service does: register, log in, look users up.

use std::{collections::HashMap, sync::Arc};

use agora_proto::errors::ErrorReason;
use service_kit::{ApiError, error::both, fields::distinct};
use sqlx::PgPool;
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
    pub async fn register(&self, email: &str, password: String) -> Result<User, ApiError> {
        // Validate every field before the costly hash.
        let (email, ()) = both(
            Email::parse("email", email),
            users::check_password("password", &password, MIN_PASSWORD_CHARS),
        )?;
        let password_hash = self.passwords.hash(password).await?;
        let mut conn = self.pool.acquire().await?;
        let user = users::insert(&mut conn, Uuid::now_v7(), &email, &password_hash).await?;
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        Ok(user)
    }

    pub async fn login(&self, email: &str, password: String) -> Result<IssuedToken, ApiError> {
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
        let credentials = {
            let mut conn = self.pool.acquire().await?;
            users::find_credentials(&mut conn, email).await?
        };
        let (user_id, hash) = credentials.unzip();
        if !self.passwords.verify(password, hash).await? {
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
