//! Registered users: what makes a valid registration, and their rows in
//! `auth.users`.

use agora_proto::auth::v1 as proto;
use email_address::EmailAddress;
use service_kit::{ApiError, ConstraintExt, fields::timestamp};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

pub const MAX_EMAIL_CHARS: usize = 254;
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Largest number of ids one `BatchGetUsers` may ask for.
pub const MAX_BATCH: usize = 100;

/// A user as other people may see it: no password hash.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub create_time: OffsetDateTime,
}

impl From<User> for proto::User {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email,
            create_time: Some(timestamp(user.create_time)),
        }
    }
}

/// A syntactically valid email address, trimmed.
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ApiError> {
        let email = raw.trim();
        check_email_size(field, email)?;
        let valid = EmailAddress::parse_with_options(email, Default::default())
            .is_ok_and(|address| address.domain().contains('.'));
        if !valid {
            return Err(ApiError::invalid(field, "not a valid email address"));
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that an email is given, not too long, and free of control characters.
pub fn check_email_size(field: &str, email: &str) -> Result<(), ApiError> {
    if email.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_EMAIL_CHARS} characters"),
        ));
    }
    // PostgreSQL text cannot hold a NUL; no address holds any control character.
    if email.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
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
        (constraint == "users_email_key").then_some(ApiError::AlreadyExists(
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

pub async fn find_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<User>, ApiError> {
    Ok(sqlx::query_as!(
        User,
        "select id, email, create_time from auth.users where id = any($1)",
        ids
    )
    .fetch_all(conn)
    .await?)
}
