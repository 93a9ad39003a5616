//! Registered users: what makes a valid registration, and their rows in
//! `auth.users`; the request ids that make a registration happen once, in
//! `auth.create_user_requests`.

use agora_proto::{auth::v1 as proto, errors::ErrorReason};
use email_address::EmailAddress;
use service_kit::{
    ApiError, ConstraintExt,
    fields::{TextRule, timestamp},
    request_ids,
};
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

/// Records that `request_id` registers the user `user_id`, unless the id was
/// used within [`request_ids::LIFETIME`]: false then. Either way the request row
/// stays locked until the transaction ends, so it cannot vanish before
/// [`registered_by_request`] reads it. The user must be inserted in the same
/// transaction: the foreign key is checked at commit.
pub async fn claim_request(
    conn: &mut PgConnection,
    request_id: Uuid,
    user_id: Uuid,
) -> Result<bool, ApiError> {
    // An expired id is taken over here, not only by the purge, so it lives
    // exactly its lifetime.
    let claimed = sqlx::query_scalar!(
        "insert into auth.create_user_requests as earlier (request_id, user_id) values ($1, $2)
         on conflict (request_id) do update
            set user_id = excluded.user_id, create_time = excluded.create_time
          where earlier.create_time < now() - make_interval(secs => $3)
         returning user_id",
        request_id,
        user_id,
        request_ids::LIFETIME.as_secs_f64()
    )
    .fetch_optional(conn)
    .await?;
    Ok(claimed.is_some())
}

/// The user an earlier request with this id registered.
pub struct EarlierRegistration {
    pub user: User,
    pub password_hash: String,
    /// Whether its email is `email`, in any letter case.
    pub same_email: bool,
}

/// The user an earlier request with `request_id` registered, which
/// [`claim_request`] found and locked.
pub async fn registered_by_request(
    conn: &mut PgConnection,
    request_id: Uuid,
    email: &Email,
) -> Result<EarlierRegistration, ApiError> {
    let row = sqlx::query!(
        r#"select u.id, u.email, u.create_time, u.password_hash,
                  lower(u.email) = lower($2) as "same_email!"
             from auth.create_user_requests r join auth.users u on u.id = r.user_id
            where r.request_id = $1"#,
        request_id,
        email.as_str()
    )
    .fetch_one(conn)
    .await?;
    Ok(EarlierRegistration {
        user: User {
            id: row.id,
            email: row.email,
            create_time: row.create_time,
        },
        password_hash: row.password_hash,
        same_email: row.same_email,
    })
}

/// Deletes the request ids older than [`request_ids::LIFETIME`]; how many.
pub async fn purge_expired_request_ids(conn: &mut PgConnection) -> Result<u64, ApiError> {
    let purged = sqlx::query!(
        "delete from auth.create_user_requests where create_time < now() - make_interval(secs => $1)",
        request_ids::LIFETIME.as_secs_f64()
    )
    .execute(conn)
    .await?;
    Ok(purged.rows_affected())
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
