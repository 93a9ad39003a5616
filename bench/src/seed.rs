//! The scratch database: created and migrated the way the services do it, then
//! filled with the course workload by a few set-based statements, so seeding takes
//! seconds even in a debug build.
//!
//! Ids are fixed functions of a number (user `n`, post `n`), so callers need no
//! look-up: user `n` is `00000000-0000-4000-8000-<n in hex>`, post `n` is
//! `00000001-0000-4000-8000-<n in hex>`.

use std::error::Error;

use argon2::{Argon2, PasswordHasher as _};
use service_kit::DatabaseArgs;
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgConnectOptions};
use uuid::Uuid;

pub const USERS: u64 = 1_000;
pub const POSTS: u64 = 10_000;
/// Post `p` is liked by users `(p + 100 k) % 1000` for `k` in `0..10`: ten
/// distinct users, exactly those with `n % 100 == p % 100`.
const LIKES_PER_POST: u64 = 10;
const LIKERS_STRIDE: u64 = USERS / LIKES_PER_POST;
/// Every seeded user's password.
pub const PASSWORD: &str = "correct horse battery";

const USER_IDS: u128 = 0x0000_0000_0000_4000_8000_0000_0000_0000;
const POST_IDS: u128 = 0x0000_0001_0000_4000_8000_0000_0000_0000;

pub fn user_id(n: u64) -> Uuid {
    Uuid::from_u128(USER_IDS | u128::from(n % USERS))
}

pub fn post_id(n: u64) -> Uuid {
    Uuid::from_u128(POST_IDS | u128::from(n % POSTS))
}

pub fn email(n: u64) -> String {
    format!("user{}@bench.example", n % USERS)
}

/// A post that user `n` does not like yet (see [`LIKES_PER_POST`]), a different
/// one for each of the first hundred users.
pub fn unliked_post(n: u64) -> Uuid {
    post_id((n % LIKERS_STRIDE) * LIKERS_STRIDE + (n + 1) % LIKERS_STRIDE)
}

/// A database of its own on the server, dropped by [`Scratch::drop`].
pub struct Scratch {
    admin: PgConnectOptions,
    name: String,
    pub url: String,
}

impl Scratch {
    /// Creates and migrates the scratch database; the pool has the size every
    /// service's pool has.
    pub async fn create(admin_url: &str) -> Result<(Self, PgPool), Box<dyn Error>> {
        let admin: PgConnectOptions = admin_url.parse()?;
        let name = format!("agora_bench_{}", Uuid::now_v7().simple());
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&name);
        let url = url.to_string();
        let pool = service_kit::database::connect(&DatabaseArgs::new(url.as_str())).await?;
        Ok((Self { admin, name, url }, pool))
    }

    pub async fn drop(self) {
        drop_database(&self.admin, &self.name).await;
    }
}

/// Drops database `name` on the server of `admin`, whoever is connected; says
/// so when it cannot.
pub async fn drop_database(admin: &PgConnectOptions, name: &str) {
    let dropped = async {
        let mut conn = PgConnection::connect_with(admin).await?;
        let drop = format!("drop database if exists {name} with (force)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
    };
    if let Err(error) = dropped.await {
        eprintln!("could not drop the database {name}: {error}");
    }
}

/// Users `0..count`, `user<n>@bench.example`, all with one real argon2id hash
/// of [`PASSWORD`], so logins verify as they would in production.
pub async fn insert_users(conn: &mut PgConnection, count: u64) -> Result<(), Box<dyn Error>> {
    let hash = Argon2::default()
        .hash_password(PASSWORD.as_bytes())
        .map_err(|error| format!("hashing the password: {error}"))?
        .to_string();
    sqlx::query(
        "insert into auth.users (id, email, password_hash, password_normalization)
         select ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                'user' || n || '@bench.example', $2, 'nfkc'
           from generate_series(0, $1 - 1) as n",
    )
    .bind(count as i64)
    .bind(hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// 1,000 users, 10,000 published posts spread over them (newest first: post 0),
/// and 100,000 likes. On a connection of its own: the services' pool stops any
/// statement after 3 seconds, and these take longer in a debug build.
pub async fn seed(url: &str) -> Result<(), Box<dyn Error>> {
    let mut conn = PgConnection::connect(url).await?;
    insert_users(&mut conn, USERS).await?;
    let (users, posts) = (USERS as i64, POSTS as i64);
    sqlx::query(
        "insert into posts.posts (id, owner_id, title, content, create_time, update_time)
         select ('00000001-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                ('00000000-0000-4000-8000-' || lpad(to_hex(n % $2), 12, '0'))::uuid,
                'Post ' || n, repeat('Some words. ', 40),
                now() - make_interval(secs => n), now() - make_interval(secs => n)
           from generate_series(0, $1 - 1) as n",
    )
    .bind(posts)
    .bind(users)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "insert into votes.votes (post_id, user_id)
         select ('00000001-0000-4000-8000-' || lpad(to_hex(p), 12, '0'))::uuid,
                ('00000000-0000-4000-8000-' || lpad(to_hex((p + $3 * k) % $2), 12, '0'))::uuid
           from generate_series(0, $1 - 1) as p, generate_series(0, $4 - 1) as k",
    )
    .bind(posts)
    .bind(users)
    .bind(LIKERS_STRIDE as i64)
    .bind(LIKES_PER_POST as i64)
    .execute(&mut conn)
    .await?;
    // Fresh statistics, so the planner sees the real sizes from the first call.
    sqlx::raw_sql("analyze auth.users, posts.posts, votes.votes")
        .execute(&mut conn)
        .await?;
    Ok(())
}
