//! Likes: rows of `votes.votes`, one per person and post.
//!
//! Every outcome is decided by one statement and the table's constraints, never by
//! a read followed by a write, so simultaneous votes cannot both succeed.

use agora_proto::errors::ErrorReason;
use service_kit::{ApiError, ConstraintExt, outbox::Outbox};
use sqlx::PgConnection;
use uuid::Uuid;

const POST_NOT_FOUND: ApiError = ApiError::Refused {
    reason: ErrorReason::PostNotFound,
    message: "post not found",
};

/// What a vote does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Add,
    Remove,
}

/// The likes of one post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostVotes {
    pub post_id: Uuid,
    pub like_count: i64,
    pub liked_by_caller: bool,
}

/// Adds or removes `user_id`'s like of `post_id`, and returns the post's like count
/// as the same statement saw it, so a successful like never reports zero.
pub async fn vote(
    conn: &mut PgConnection,
    post_id: Uuid,
    user_id: Uuid,
    direction: Direction,
) -> Result<i64, ApiError> {
    match direction {
        Direction::Add => add(conn, post_id, user_id).await,
        Direction::Remove => remove(conn, post_id, user_id).await,
    }
}

async fn add(conn: &mut PgConnection, post_id: Uuid, user_id: Uuid) -> Result<i64, ApiError> {
    // Only a post the voter may see can be liked: posts-service's read interface
    // says which (another person's draft is as if it did not exist). The foreign
    // key catches a post deleted meanwhile. The count (kept by a trigger, see
    // migration 0010) is read on the statement's snapshot, which does not hold
    // the new like: hence the sum.
    let outcome = sqlx::query!(
        r#"with added as (
               insert into votes.votes (post_id, user_id)
               select id, $2 from posts.visible_posts($2)
                where id = $1 and votes.announce_after_commit()
               returning post_id
           )
           select (select count(*) from added) as "added!",
                  coalesce((select like_count from votes.like_counts where post_id = $1), 0)
                    as "before!""#,
        post_id,
        user_id
    )
    .fetch_one(&mut *conn)
    .await
    .on_constraint(|constraint| match constraint {
        "votes_pkey" => Some(ApiError::refused(
            ErrorReason::AlreadyLiked,
            "you already like this post",
        )),
        "votes_post_id_fkey" | "like_counts_post_id_fkey" => Some(POST_NOT_FOUND),
        "votes_user_id_fkey" => Some(ApiError::account_deleted()),
        _ => None,
    })?;
    match outcome.added {
        0 => Err(POST_NOT_FOUND),
        added => {
            announce(conn).await;
            Ok(outcome.before + added)
        }
    }
}

async fn remove(conn: &mut PgConnection, post_id: Uuid, user_id: Uuid) -> Result<i64, ApiError> {
    let outcome = sqlx::query!(
        r#"with removed as (
               delete from votes.votes
                where post_id = $1 and user_id = $2 and votes.announce_after_commit()
               returning post_id
           )
           select (select count(*) from removed) as "removed!",
                  coalesce((select like_count from votes.like_counts where post_id = $1), 0)
                    as "before!""#,
        post_id,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    match outcome.removed {
        0 => Err(ApiError::refused(
            ErrorReason::NotLiked,
            "you do not like this post",
        )),
        removed => {
            announce(conn).await;
            Ok(outcome.before - removed)
        }
    }
}

/// votes-service's outbox.
const OUTBOX: Outbox = Outbox {
    events: "votes.like_count_events",
    purged: "votes.like_count_events_purged",
    announce: "votes.announce",
};

/// See [`Outbox::announce`].
async fn announce(conn: &mut PgConnection) {
    OUTBOX.announce(conn).await;
}

/// The like counts of `post_ids` and whether `user_id` likes each, in one query;
/// one entry per id, zero for posts without likes or that do not exist.
pub async fn count(
    conn: &mut PgConnection,
    post_ids: &[Uuid],
    user_id: Uuid,
) -> Result<Vec<PostVotes>, ApiError> {
    // Whether the caller likes each post: one primary-key look-up per post (a
    // lateral with a limit, which no plan turns into a scan of all the caller's
    // likes, however many).
    Ok(sqlx::query_as!(
        PostVotes,
        r#"select requested.id as "post_id!",
                  coalesce(counted.like_count, 0) as "like_count!",
                  coalesce(mine.liked, false) as "liked_by_caller!"
             from (select distinct id from unnest($1::uuid[]) as id) as requested
             left join votes.like_counts as counted on counted.post_id = requested.id
             left join lateral (select true as liked from votes.votes
                                 where post_id = requested.id and user_id = $2
                                 limit 1) as mine on true"#,
        post_ids,
        user_id
    )
    .fetch_all(conn)
    .await?)
}

/// Deletes the like-count changes (`votes.like_count_events`) older than
/// `retention`; `votes.like_count_changes_purged_through()` publishes the newest
/// transaction deleted, so that readers can tell a cursor from before it (see
/// [`Outbox::purge`]).
pub async fn purge_like_count_changes(
    conn: &mut PgConnection,
    retention: std::time::Duration,
) -> Result<u64, ApiError> {
    OUTBOX.purge(conn, retention).await
}
