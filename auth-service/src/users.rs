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
use unicode_normalization::UnicodeNormalization as _;
use uuid::Uuid;

use crate::password::{self, Normalization};

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

/// `email` as `auth.email_key` (migration 0006) keys it: NFKC, case folded by
/// upper then lower case, NFKC again. The database's key decides uniqueness and
/// look-ups; this one, computed without a query, keys the login throttle, so
/// that look-alike spellings of one email share its count of failures. Rust's
/// and ICU's Unicode tables may differ on characters new to one of them, which
/// only splits a count.
pub fn email_key(email: &str) -> String {
    let folded = email
        .nfkc()
        .collect::<String>()
        .to_uppercase()
        .to_lowercase();
    folded.nfkc().collect()
}

/// Input longer than this many bytes is refused before any other work, so an
/// oversized password costs nothing: room for [`MAX_PASSWORD_CHARS`] characters
/// even fully decomposed (a Hangul syllable is three 3-byte jamo in NFD).
const MAX_PASSWORD_BYTES: usize = MAX_PASSWORD_CHARS * 9;

/// A password as typed and in the form new hashes are made from.
pub struct Password {
    pub typed: String,
    pub normalized: String,
}

impl Password {
    /// The form a hash made from `normalization` is checked with.
    pub fn in_form(&self, normalization: Normalization) -> &str {
        match normalization {
            Normalization::None => &self.typed,
            Normalization::Nfkc => &self.normalized,
        }
    }
}

/// A new password: its length, in characters (code points, as NIST SP 800-63B
/// counts them), is that of its normalised form, the one hashed, so the same
/// password composed or decomposed is equally long.
pub fn new_password(field: &str, typed: String) -> Result<Password, ApiError> {
    let password = normalize_within_limit(field, typed)?;
    let chars = password.normalized.chars().count();
    if chars > MAX_PASSWORD_CHARS {
        return Err(too_long(field));
    }
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(password)
}

/// A password to log in with: refused only when no registration could have
/// accepted it in either form (hashes made before normalisation were of the
/// password as typed, limited as typed), so the answer says nothing about the
/// account.
pub fn login_password(field: &str, typed: String) -> Result<Password, ApiError> {
    let password = normalize_within_limit(field, typed)?;
    if password.typed.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    let fits = |text: &str| text.chars().count() <= MAX_PASSWORD_CHARS;
    if !fits(&password.typed) && !fits(&password.normalized) {
        return Err(too_long(field));
    }
    Ok(password)
}

fn normalize_within_limit(field: &str, typed: String) -> Result<Password, ApiError> {
    if typed.len() > MAX_PASSWORD_BYTES {
        return Err(too_long(field));
    }
    let normalized = password::normalize(&typed).into_owned();
    Ok(Password { typed, normalized })
}

fn too_long(field: &str) -> ApiError {
    ApiError::invalid(field, format!("at most {MAX_PASSWORD_CHARS} characters"))
}

/// Stores a new user, with a hash of the [`Normalization::CURRENT`] form of their
/// password; ALREADY_EXISTS if the email is taken in any letter case or
/// compatibility form (`auth.email_key`, migration 0006).
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    email: &Email,
    password_hash: &str,
) -> Result<User, ApiError> {
    sqlx::query_as!(
        User,
        "insert into auth.users (id, email, password_hash, password_normalization)
         values ($1, $2, $3, $4)
         returning id, email, create_time",
        id,
        email.as_str(),
        password_hash,
        Normalization::CURRENT.as_str()
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
    pub password_normalization: Normalization,
    /// Whether its email is `email`, in any letter case or compatibility form.
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
        r#"select u.id, u.email, u.create_time, u.password_hash, u.password_normalization,
                  auth.email_key(u.email) = auth.email_key($2) as "same_email!"
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
        password_normalization: Normalization::from_stored(&row.password_normalization),
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

/// What a login checks a password against.
pub struct Credentials {
    pub user_id: Uuid,
    pub password_hash: String,
    pub normalization: Normalization,
}

/// The credentials of the user with this email, in any letter case or
/// compatibility form; or of the look-alike account registered before migration
/// 0006 whose stored email is exactly `email`, which is found by nothing else.
pub async fn find_credentials(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<Credentials>, ApiError> {
    // At most one row of each kind: the indexes users_email_key and
    // users_lookalike_email_key. The exact match is the more precise.
    let row = sqlx::query!(
        "select id, password_hash, password_normalization from auth.users
          where (auth.email_key(email) = auth.email_key($1) and not email_lookalike)
             or (email_lookalike and email = $1)
          order by email_lookalike desc
          limit 1",
        email
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| Credentials {
        user_id: row.id,
        password_hash: row.password_hash,
        normalization: Normalization::from_stored(&row.password_normalization),
    }))
}

/// Replaces the user's password hash `old_hash`, made from the password as typed,
/// with `new_hash`, made from its normalised form; false if the hash has changed
/// meanwhile (the user is gone, or another login rehashed it first).
pub async fn replace_unnormalized_hash(
    conn: &mut PgConnection,
    user_id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, ApiError> {
    let replaced = sqlx::query!(
        "update auth.users set password_hash = $3, password_normalization = $4
          where id = $1 and password_hash = $2 and password_normalization = $5",
        user_id,
        old_hash,
        new_hash,
        Normalization::CURRENT.as_str(),
        Normalization::None.as_str()
    )
    .execute(conn)
    .await?;
    Ok(replaced.rows_affected() == 1)
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

/// A user's email and what their password is checked against.
pub struct OwnCredentials {
    pub email: String,
    pub credentials: Credentials,
}

/// The credentials of the user with this id.
pub async fn find_own_credentials(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<OwnCredentials>, ApiError> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "select email, password_hash, password_normalization from auth.users where id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map(|(email, password_hash, normalization)| OwnCredentials {
            email,
            credentials: Credentials {
                user_id: id,
                password_hash,
                normalization: Normalization::from_stored(&normalization),
            },
        }),
    )
}

/// How [`lock_if_password_is`] locks the user's row.
#[derive(Debug, Clone, Copy)]
pub enum UserLock {
    /// Against changes and deletion, until the transaction ends: for a new
    /// session. Rows referring to the user (posts, likes) are written meanwhile.
    Change,
    /// Against everything: for deleting the user.
    Delete,
}

/// Locks the user's row until the transaction ends, if their password hash is
/// still `password_hash`, the one just checked: `Some(false)` if it has changed
/// meanwhile (the password was changed), `None` if the user is gone. A password
/// change or a deletion committed while a password was checked thus wins.
pub async fn lock_if_password_is(
    conn: &mut PgConnection,
    id: Uuid,
    password_hash: &str,
    lock: UserLock,
) -> Result<Option<bool>, ApiError> {
    let sql = match lock {
        UserLock::Change => {
            "select password_hash = $2 from auth.users where id = $1 for no key update"
        }
        UserLock::Delete => "select password_hash = $2 from auth.users where id = $1 for update",
    };
    Ok(sqlx::query_scalar(sql)
        .bind(id)
        .bind(password_hash)
        .fetch_optional(conn)
        .await?)
}

/// Replaces the user's password hash `old_hash` with `new_hash`, of the
/// [`Normalization::CURRENT`] form; false if the hash is no longer `old_hash`
/// (another change came first) or the user is gone.
pub async fn replace_password(
    conn: &mut PgConnection,
    id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, ApiError> {
    let replaced = sqlx::query(
        "update auth.users set password_hash = $3, password_normalization = $4
          where id = $1 and password_hash = $2",
    )
    .bind(id)
    .bind(old_hash)
    .bind(new_hash)
    .bind(Normalization::CURRENT.as_str())
    .execute(conn)
    .await?;
    Ok(replaced.rows_affected() == 1)
}

/// Deletes the user. Their sessions, refresh tokens and request ids go with
/// them, as do their posts and likes in the other services' schemas: every
/// foreign key to `auth.users` cascades.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, ApiError> {
    let deleted = sqlx::query("delete from auth.users where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}
