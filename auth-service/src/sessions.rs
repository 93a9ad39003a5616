//! Login sessions and their refresh tokens (`auth.sessions`,
//! `auth.refresh_tokens`), and the sessions that ended while access tokens of
//! theirs may be unexpired (`auth.revoked_sessions`), which token verifiers
//! learn through `ListRevokedSessions` or, in this service, [`StoredRevocations`].
//!
//! A session lives until it ends (a logout, a password change, a spent refresh
//! token presented again, the account deleted, or a login past the user's
//! [`MAX_SESSIONS_PER_USER`]), which deletes its row and records its revocation
//! in the same statement; or until it expires, [`Lifetimes::idle`] after its last
//! use or [`Lifetimes::max_age`] after its login, after which the purge deletes
//! it. An expired session needs no revocation: its refresh token is refused, and
//! its last access token expires on its own.
//!
//! Each refresh spends the token presented and issues the next. The spent ones
//! stay while the session does, so that one presented again (someone else has a
//! copy) ends the session: OAuth 2.0 Security BCP (RFC 9700, 4.14.2).

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    time::{Duration, SystemTime},
};

use access_token::{RevocationSource, RevocationSourceError, Revoked};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand_core::{OsRng, RngCore as _};
use service_kit::ApiError;
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// The most sessions a user has: a login beyond ends the least recently used.
pub const MAX_SESSIONS_PER_USER: i64 = 100;
/// The longest user agent kept with a session, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;
/// How far the `as_of` of [`revoked_since`] trails the database's clock: a
/// session ended by a statement that ran just before a listing, in a
/// transaction that commits just after it, is still listed next time.
/// Revocations are recorded right before their transaction commits, and
/// those transactions are short.
pub const AS_OF_LAG: Duration = Duration::from_secs(5);
/// How long a revocation is kept and listed past its last access token's
/// expiry: verifiers tolerate some clock skew on `exp`.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// How long a session lasts without ending.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Since its last login or refresh.
    pub idle: Duration,
    /// Since its login, however often refreshed.
    pub max_age: Duration,
}

/// A refresh token as the client holds it: `agrt_` and 32 random bytes in
/// base64url without padding. The prefix lets secret scanners and people tell
/// what it is; only its SHA-256 is stored.
pub struct RefreshToken(String);

impl RefreshToken {
    const PREFIX: &'static str = "agrt_";
    /// 32 bytes in base64url without padding.
    const ENCODED_LEN: usize = 43;

    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        Self(format!(
            "{}{}",
            Self::PREFIX,
            URL_SAFE_NO_PAD.encode(secret)
        ))
    }

    /// A token of the right shape; anything else was never issued, and costs
    /// no query.
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(Self::PREFIX)?;
        let shaped = encoded.len() == Self::ENCODED_LEN
            && encoded
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        shaped.then(|| Self(text.to_owned()))
    }

    /// What is stored: SHA-256, as the token is a 256-bit random secret that no
    /// one can guess, so a slow password hash would add nothing.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The client that started a session, as it described itself.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub user_agent: String,
    pub address: Option<IpAddr>,
}

impl Client {
    /// `user_agent` trimmed, without control characters, and cut to
    /// [`MAX_USER_AGENT_CHARS`].
    pub fn new(user_agent: Option<&str>, address: Option<IpAddr>) -> Self {
        let user_agent = user_agent
            .unwrap_or_default()
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT_CHARS)
            .collect::<String>()
            .trim_end()
            .to_owned();
        Self {
            user_agent,
            address,
        }
    }

    /// `<user agent> from <address>`, or what is known of them.
    pub fn describe(&self) -> String {
        match (self.user_agent.as_str(), self.address) {
            ("", None) => String::new(),
            ("", Some(address)) => address.to_string(),
            (agent, None) => agent.to_owned(),
            (agent, Some(address)) => format!("{agent} from {address}"),
        }
    }
}

/// A session to store, with its first refresh token.
pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub client: &'a Client,
    pub refresh_hash: [u8; 32],
    pub access_token_expire_time: OffsetDateTime,
}

/// Stores a new session and its first refresh token; when that token expires
/// unless refreshed.
pub async fn insert(
    conn: &mut PgConnection,
    session: &NewSession<'_>,
    lifetimes: Lifetimes,
) -> Result<OffsetDateTime, ApiError> {
    let expire_time = sqlx::query_scalar(
        "insert into auth.sessions
             (id, user_id, user_agent, client_address, access_token_expire_time)
         values ($1, $2, $3, $4::text::inet, $5)
         returning least(last_use_time + make_interval(secs => $6),
                         create_time + make_interval(secs => $7))",
    )
    .bind(session.id)
    .bind(session.user_id)
    .bind(&session.client.user_agent)
    .bind(session.client.address.map(|address| address.to_string()))
    .bind(session.access_token_expire_time)
    .bind(lifetimes.idle.as_secs_f64())
    .bind(lifetimes.max_age.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("insert into auth.refresh_tokens (hash, session_id) values ($1, $2)")
        .bind(&session.refresh_hash[..])
        .bind(session.id)
        .execute(conn)
        .await?;
    Ok(expire_time)
}

/// The session a refresh token belongs to, spent or not.
#[derive(Debug, sqlx::FromRow)]
pub struct Presented {
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// Neither idle too long nor too old.
    pub live: bool,
}

/// The session of the refresh token with this hash, locked until the
/// transaction ends, so that a refresh, a logout and a reuse of one session
/// happen one after another (and always lock the session before its tokens,
/// as deleting it does).
pub async fn find_by_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8; 32],
    lifetimes: Lifetimes,
) -> Result<Option<Presented>, ApiError> {
    Ok(sqlx::query_as(
        "select s.id as session_id, s.user_id,
                s.last_use_time > now() - make_interval(secs => $2)
                and s.create_time > now() - make_interval(secs => $3) as live
           from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id
          where t.hash = $1
            for update of s",
    )
    .bind(&hash[..])
    .bind(lifetimes.idle.as_secs_f64())
    .bind(lifetimes.max_age.as_secs_f64())
    .fetch_optional(conn)
    .await?)
}

/// Spends the refresh token with this hash: false if it was spent already. One
/// statement decides, so of two concurrent refreshes with one token exactly one
/// spends it.
pub async fn spend(conn: &mut PgConnection, hash: &[u8; 32]) -> Result<bool, ApiError> {
    let spent = sqlx::query(
        "update auth.refresh_tokens set spent_time = now() where hash = $1 and spent_time is null",
    )
    .bind(&hash[..])
    .execute(conn)
    .await?;
    Ok(spent.rows_affected() == 1)
}

/// Records a refresh of `session_id`: its next refresh token and the expiry of
/// the access token just issued; when the new refresh token expires unless
/// refreshed.
pub async fn refreshed(
    conn: &mut PgConnection,
    session_id: Uuid,
    next_hash: &[u8; 32],
    access_token_expire_time: OffsetDateTime,
    lifetimes: Lifetimes,
) -> Result<OffsetDateTime, ApiError> {
    sqlx::query("insert into auth.refresh_tokens (hash, session_id) values ($1, $2)")
        .bind(&next_hash[..])
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar(
        "update auth.sessions
            set last_use_time = now(), access_token_expire_time = $2
          where id = $1
         returning least(last_use_time + make_interval(secs => $3),
                         create_time + make_interval(secs => $4))",
    )
    .bind(session_id)
    .bind(access_token_expire_time)
    .bind(lifetimes.idle.as_secs_f64())
    .bind(lifetimes.max_age.as_secs_f64())
    .fetch_one(conn)
    .await?)
}

/// Which sessions [`end`] ends.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// One session, if it is the user's.
    One { user_id: Uuid, session_id: Uuid },
    /// Every session of the user but `keep`.
    AllBut { user_id: Uuid, keep: Option<Uuid> },
    /// The user's least recently used sessions beyond the newest `keep`.
    BeyondNewest { user_id: Uuid, keep: i64 },
}

/// The statement of [`end`] for the sessions `filter` selects: `$1` the user,
/// `$2` a session, `$3` how many to keep, `$4` [`EXPIRY_MARGIN`].
macro_rules! ending_sessions_where {
    ($filter:literal) => {
        concat!(
            "with ended as (
                 delete from auth.sessions where ",
            $filter,
            "
                 returning id, access_token_expire_time
             ), revoked as (
                 insert into auth.revoked_sessions (session_id, revoke_time, expire_time)
                 select id, clock_timestamp(), access_token_expire_time from ended
                  where access_token_expire_time > now() - make_interval(secs => $4)
                 on conflict (session_id) do nothing
             )
             select count(*) from ended"
        )
    };
}

/// Ends sessions: deletes them, with their refresh tokens, and records the
/// revocation of those whose last access token may be unexpired, in one
/// statement; how many ended.
pub async fn end(conn: &mut PgConnection, ending: Ending) -> Result<u64, ApiError> {
    let (user_id, session, keep) = match ending {
        Ending::One {
            user_id,
            session_id,
        } => (user_id, Some(session_id), None),
        Ending::AllBut { user_id, keep } => (user_id, keep, None),
        Ending::BeyondNewest { user_id, keep } => (user_id, None, Some(keep)),
    };
    let sql = match ending {
        Ending::One { .. } => ending_sessions_where!("user_id = $1 and id = $2"),
        Ending::AllBut { .. } => ending_sessions_where!("user_id = $1 and id is distinct from $2"),
        Ending::BeyondNewest { .. } => ending_sessions_where!(
            "id in (select id from auth.sessions where user_id = $1
                     order by last_use_time desc, id desc offset $3)"
        ),
    };
    let ended: i64 = sqlx::query_scalar(sql)
        .bind(user_id)
        .bind(session)
        .bind(keep)
        .bind(EXPIRY_MARGIN.as_secs_f64())
        .fetch_one(conn)
        .await?;
    Ok(ended as u64)
}

/// Every session of the user, locked, with its last access token's expiry: for
/// an account about to be deleted, whose sessions then go with it, and
/// [`record_revoked`] after that.
pub async fn lock_all(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<(Uuid, OffsetDateTime)>, ApiError> {
    Ok(sqlx::query_as(
        "select id, access_token_expire_time from auth.sessions where user_id = $1 for update",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}

/// Records sessions as ended (those whose last access token may be
/// unexpired): what [`end`] does, for sessions already deleted.
pub async fn record_revoked(
    conn: &mut PgConnection,
    sessions: &[(Uuid, OffsetDateTime)],
) -> Result<(), ApiError> {
    let (ids, expire_times): (Vec<Uuid>, Vec<OffsetDateTime>) = sessions.iter().copied().unzip();
    sqlx::query(
        "insert into auth.revoked_sessions (session_id, revoke_time, expire_time)
         select id, clock_timestamp(), expire_time
           from unnest($1::uuid[], $2::timestamptz[]) as ended (id, expire_time)
          where expire_time > now() - make_interval(secs => $3)
         on conflict (session_id) do nothing",
    )
    .bind(ids)
    .bind(expire_times)
    .bind(EXPIRY_MARGIN.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// A session as its user sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct Session {
    pub id: Uuid,
    pub create_time: OffsetDateTime,
    pub last_use_time: OffsetDateTime,
    pub expire_time: OffsetDateTime,
    pub user_agent: String,
    pub client_address: Option<String>,
}

impl Session {
    pub fn client(&self) -> Client {
        Client {
            user_agent: self.user_agent.clone(),
            address: self
                .client_address
                .as_deref()
                .and_then(|address| address.parse().ok()),
        }
    }
}

/// The user's sessions that have not expired, most recently used first.
pub async fn list(
    conn: &mut PgConnection,
    user_id: Uuid,
    lifetimes: Lifetimes,
) -> Result<Vec<Session>, ApiError> {
    Ok(sqlx::query_as(
        "select id, create_time, last_use_time,
                least(last_use_time + make_interval(secs => $2),
                      create_time + make_interval(secs => $3)) as expire_time,
                user_agent, host(client_address) as client_address
           from auth.sessions
          where user_id = $1
            and last_use_time > now() - make_interval(secs => $2)
            and create_time > now() - make_interval(secs => $3)
          order by last_use_time desc, id desc",
    )
    .bind(user_id)
    .bind(lifetimes.idle.as_secs_f64())
    .bind(lifetimes.max_age.as_secs_f64())
    .fetch_all(conn)
    .await?)
}

/// The sessions ended since `since` (all of them when `None`) whose last access
/// token has not expired, or did less than [`EXPIRY_MARGIN`] ago; and the time
/// to ask from next, [`AS_OF_LAG`] behind the database's clock.
pub async fn revoked_since(
    conn: &mut PgConnection,
    since: Option<OffsetDateTime>,
) -> Result<Revoked, ApiError> {
    // Read first: whatever commits after it, the next call lists.
    let as_of: OffsetDateTime = sqlx::query_scalar("select now() - make_interval(secs => $1)")
        .bind(AS_OF_LAG.as_secs_f64())
        .fetch_one(&mut *conn)
        .await?;
    let sessions: Vec<(Uuid, OffsetDateTime)> = sqlx::query_as(
        "select session_id, expire_time from auth.revoked_sessions
          where expire_time > now() - make_interval(secs => $2)
            and ($1::timestamptz is null or revoke_time >= $1)",
    )
    .bind(since)
    .bind(EXPIRY_MARGIN.as_secs_f64())
    .fetch_all(conn)
    .await?;
    Ok(Revoked {
        sessions: sessions
            .into_iter()
            .map(|(id, expire_time)| (id, SystemTime::from(expire_time)))
            .collect(),
        as_of: as_of.into(),
    })
}

/// Deletes the sessions past their idle timeout or their longest lifetime
/// (their refresh tokens with them), and the revocations whose access tokens
/// have all expired ([`EXPIRY_MARGIN`] ago); how many rows of both.
pub async fn purge(conn: &mut PgConnection, lifetimes: Lifetimes) -> Result<u64, ApiError> {
    let expired = sqlx::query(
        "delete from auth.sessions
          where last_use_time <= now() - make_interval(secs => $1)
             or create_time <= now() - make_interval(secs => $2)",
    )
    .bind(lifetimes.idle.as_secs_f64())
    .bind(lifetimes.max_age.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    let forgotten = sqlx::query(
        "delete from auth.revoked_sessions where expire_time <= now() - make_interval(secs => $1)",
    )
    .bind(EXPIRY_MARGIN.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(expired.rows_affected() + forgotten.rows_affected())
}

/// The ended sessions as this service's own token verifier learns them: from
/// the database, as `ListRevokedSessions` answers other services.
pub struct StoredRevocations(pub PgPool);

impl RevocationSource for StoredRevocations {
    fn revoked_since(
        &self,
        since: Option<SystemTime>,
    ) -> Pin<Box<dyn Future<Output = Result<Revoked, RevocationSourceError>> + Send + '_>> {
        Box::pin(async move {
            let failed = |error: &dyn std::fmt::Display| RevocationSourceError(error.to_string());
            let mut conn = self.0.acquire().await.map_err(|error| failed(&error))?;
            revoked_since(&mut conn, since.map(OffsetDateTime::from))
                .await
                .map_err(|error| failed(&error))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_prefixed_random_base64url_and_parse_back() {
        let token = RefreshToken::generate().into_string();
        assert!(token.starts_with("agrt_"), "{token}");
        assert_eq!(token.len(), 5 + 43);
        assert_ne!(token, RefreshToken::generate().into_string());

        let parsed = RefreshToken::parse(&token).expect("its own shape");
        assert_eq!(parsed.hash(), RefreshToken(token.clone()).hash());
        for bad in [
            "",
            "agrt_",
            &token[5..],
            &token[..token.len() - 1],
            &format!("{token}A"),
            &format!("agrt_{}", "=".repeat(43)),
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_client_is_described_by_its_trimmed_user_agent_and_address() {
        let address = Some("192.0.2.1".parse().unwrap());
        let cases = [
            (Some(" app/1.0 \u{7}"), address, "app/1.0 from 192.0.2.1"),
            (None, address, "192.0.2.1"),
            (Some("app/1.0"), None, "app/1.0"),
            (Some("  "), None, ""),
        ];
        for (agent, address, described) in cases {
            assert_eq!(Client::new(agent, address).describe(), described);
        }
        let long = "x".repeat(1000);
        assert_eq!(
            Client::new(Some(&long), None).user_agent.chars().count(),
            MAX_USER_AGENT_CHARS
        );
    }
}
