//! What each call asks of PostgreSQL, statement for statement as the services ask
//! it (posts-service's `posts.rs` and `listing.rs`, auth-service's `users.rs`,
//! votes-service's `votes.rs`), sent straight through a pool of the services' size:
//! the ceiling no call through the services can pass. Like the services, each
//! statement takes a connection of its own, and the owner look-up and the like
//! counts run side by side, as posts-service asks its two neighbours at once.

use sqlx::{PgPool, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

pub async fn get_post(pool: &PgPool, post: Uuid, viewer: Uuid) -> Result<(), sqlx::Error> {
    let row = sqlx::query(
        "select id, owner_id, title, content, published, create_time, update_time, revision
           from posts.visible_posts($2) where id = $1",
    )
    .bind(post)
    .bind(viewer)
    .fetch_one(pool)
    .await?;
    describe(pool, vec![row.try_get("owner_id")?], vec![post], viewer).await
}

/// A page of `page_size` by offset, as the course API's `limit` and `skip` ask.
pub async fn list_posts(
    pool: &PgPool,
    viewer: Uuid,
    page_size: i64,
    skip: i64,
) -> Result<(), sqlx::Error> {
    // posts-service's statements for an unfiltered list (a page that skips
    // nothing straight from the index; one that skips, by ids first); one row
    // more than the page tells whether another page follows.
    let statement = if skip == 0 {
        r"select id, owner_id, title, content, published, create_time, update_time, revision
             from posts.visible_posts($1)
            where ($2::timestamptz is null or (create_time, id) < ($2, $3::uuid))
            order by create_time desc, id desc
            limit $4"
    } else {
        r"select id, owner_id, title, content, published, create_time, update_time, revision
             from posts.posts
            where id = any (array(
                    select id from posts.visible_posts($1)
                     where ($2::timestamptz is null or (create_time, id) < ($2, $3::uuid))
                     order by create_time desc, id desc
                     limit $4 offset $5))
            order by create_time desc, id desc"
    };
    let query = sqlx::query(statement)
        .bind(viewer)
        .bind(None::<OffsetDateTime>)
        .bind(None::<Uuid>)
        .bind(page_size + 1);
    let query = if skip == 0 { query } else { query.bind(skip) };
    let rows = query.fetch_all(pool).await?;
    let page = &rows[..rows.len().min(page_size as usize)];
    let mut owners = Vec::with_capacity(page.len());
    let mut posts = Vec::with_capacity(page.len());
    for row in page {
        let owner: Uuid = row.try_get("owner_id")?;
        if !owners.contains(&owner) {
            owners.push(owner);
        }
        posts.push(row.try_get("id")?);
    }
    describe(pool, owners, posts, viewer).await
}

pub async fn create_post(
    pool: &PgPool,
    owner: Uuid,
    title: &str,
    content: &str,
) -> Result<(), sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into posts.posts (id, owner_id, title, content, published) values ($1, $2, $3, $4, $5)
         returning id, owner_id, title, content, published, create_time, update_time, revision",
    )
    .bind(id)
    .bind(owner)
    .bind(title)
    .bind(content)
    .bind(true)
    .fetch_one(pool)
    .await?;
    describe(pool, vec![owner], vec![id], owner).await
}

/// A like and its removal: two calls, one statement each.
pub async fn vote_pair(pool: &PgPool, post: Uuid, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with added as (
             insert into votes.votes (post_id, user_id)
             select id, $2 from posts.visible_posts($2) where id = $1
             returning post_id
         )
         select (select count(*) from added) as added,
                coalesce((select like_count from votes.like_counts where post_id = $1), 0) as before",
    )
    .bind(post)
    .bind(user)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "with removed as (
             delete from votes.votes where post_id = $1 and user_id = $2 returning post_id
         )
         select (select count(*) from removed) as removed,
                coalesce((select like_count from votes.like_counts where post_id = $1), 0) as before",
    )
    .bind(post)
    .bind(user)
    .fetch_one(pool)
    .await?;
    Ok(())
}

/// A login's SQL, not its argon2id hash, which dominates it: the failure counts
/// of the account and the client address (none, for the seeded users, so
/// nothing to reset after the success) and the look-up.
pub async fn login(pool: &PgPool, email: &str) -> Result<(), sqlx::Error> {
    let window = auth_service::AuthSettings::default().login_failure_window();
    sqlx::query(
        "select key, failures, extract(epoch from now() - last_failure)::float8
           from auth.login_failures
          where key in ($1, $2) and last_failure > now() - make_interval(secs => $3)",
    )
    .bind(format!("account:{}", auth_service::email_key(email)))
    .bind("address:127.0.0.1")
    .bind(window.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    sqlx::query(
        "select id, password_hash, password_normalization from auth.users
          where (auth.email_key(email) = auth.email_key($1) and not email_lookalike)
             or (email_lookalike and email = $1)
          order by email_lookalike desc
          limit 1",
    )
    .bind(email)
    .fetch_optional(pool)
    .await?;
    Ok(())
}

/// What posts-service asks its neighbours for each answer: the owners from
/// auth-service and the like counts from votes-service, one batch each.
async fn describe(
    pool: &PgPool,
    owners: Vec<Uuid>,
    posts: Vec<Uuid>,
    viewer: Uuid,
) -> Result<(), sqlx::Error> {
    let owners = sqlx::query("select id, email, create_time from auth.users where id = any($1)")
        .bind(owners)
        .fetch_all(pool);
    let counts = sqlx::query(
        "select requested.id, coalesce(counted.like_count, 0), coalesce(mine.liked, false)
           from (select distinct id from unnest($1::uuid[]) as id) as requested
           left join votes.like_counts as counted on counted.post_id = requested.id
           left join lateral (select true as liked from votes.votes
                               where post_id = requested.id and user_id = $2
                               limit 1) as mine on true",
    )
    .bind(posts)
    .bind(viewer)
    .fetch_all(pool);
    tokio::try_join!(owners, counts)?;
    Ok(())
}
