//! Registered users: what makes a valid registration, and their rows in
//! `auth.users`.

use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use email_address::EmailAddress;
use service_kit::{ApiError, ConstraintExt, fields::TextRule, fields::timestamp};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// An email address: at most 254 characters (RFC 5321), on one line.
pub const EMAIL: TextRule = TextRule {
    max_chars: 254,
    multiline: false,
};
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// A stored user: no password hash.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub create_time: OffsetDateTime,
}

impl User {
    /// The user as `caller` may see them: the email is the user's own business.
    pub fn seen_by(self, caller: Uuid) -> proto::User {
        let own = self.id == caller;
        let mut user = proto::User::from(self);
        if !own {
            user.email.clear();
        }
        user
    }
}

/// The whole user, email included: for the user themself, and for other
/// services (`BatchGetUsers`).
impl From<User> for proto::User {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email,
            create_time: Some(timestamp(user.create_time)),
        }
    }
}

pub const USER_NOT_FOUND: ApiError = ApiError::Refused {
    reason: ErrorReason::UserNotFound,
    message: "user not found",
};

/// A syntactically valid email address, trimmed.
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ApiError> {
        let email = EMAIL.required(field, raw)?;
        let valid = EmailAddress::parse_with_options(&email, Default::default())
            .is_ok_and(|address| address.domain().contains('.'));
        if !valid {
            return Err(ApiError::invalid(field, "not a valid email address"));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a password's length before any hashing work, so an oversized one costs
/// nothing. `min` is 1 for logins (any stored password is at least 8 long anyway).
pub fn check_password(field: &str, password: &str, min: usize) -> Result<(), ApiError> {
    // More bytes than 4 per allowed character cannot be within the limit.
    let too_long =
        password.len() > MAX_PASSWORD_CHARS * 4 || password.chars().count() > MAX_PASSWORD_CHARS;
    if too_long {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    if password.chars().count() < min {
        return Err(match min {
            1 => ApiError::invalid(field, "required"),
            _ => ApiError::invalid(field, format!("at least {min} characters")),
        });
    }
    Ok(())
}

/// Stores a new user; ALREADY_EXISTS if the email is taken in any letter case.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    email: &Email,
    password_hash: &str,
) -> Result<User, ApiError> {
    sqlx::query_as!(
        User,
        "insert into auth.users (id, email, password_hash) values ($1, $2, $3)
         returning id, email, create_time",
        id,
        email.as_str(),
        password_hash
    )
    .fetch_one(conn)
    .await
    .on_constraint(|constraint| {
        (constraint == "users_email_key").then_some(ApiError::refused(
            ErrorReason::EmailAlreadyRegistered,
            "a user with this email already exists",
        ))
    })
}

/// The id and password hash of the user with this email, in any letter case.
pub async fn find_credentials(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<(Uuid, String)>, ApiError> {
    let row = sqlx::query!(
        "select id, password_hash from auth.users where lower(email) = lower($1)",
        email
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| (row.id, row.password_hash)))
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<User>, ApiError> {
    Ok(sqlx::query_as!(
        User,
        "select id, email, create_time from auth.users where id = $1",
        id
    )
    .fetch_optional(conn)
    .await?)
}

/// The users with these ids, in no particular order; unknown ids are left out.
pub async fn find_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<User>, ApiError> {
    Ok(sqlx::query_as!(
        User,
        "select id, email, create_time from auth.users where id = any($1)",
        ids
    )
    .fetch_all(conn)
    .await?)
}
