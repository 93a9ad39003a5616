//! The changes WatchPosts sends, read from posts-service's outbox
//! (`posts.post_events`) and from what votes-service publishes of its own
//! (`votes.like_count_changes`), between two snapshots.

use service_kit::{ApiError, outbox::Outbox};
use sqlx::{PgConnection, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    cursor::{Cursor, EventKey, Source},
    snapshot::Snapshot,
};

/// One change, with what a watcher's filters need to place it.
#[derive(Debug, Clone)]
pub struct Event {
    pub key: EventKey,
    pub time: OffsetDateTime,
    pub post_id: Uuid,
    /// `None` only in the deletion of a post deleted with its owner's account.
    pub owner_id: Option<Uuid>,
    pub change: Change,
}

#[derive(Debug, Clone)]
pub enum Change {
    Created(PostState),
    /// `before` is what the post showed before the change.
    Updated {
        after: PostState,
        before: Shown,
    },
    Deleted {
        before: Shown,
    },
    /// `now` is what the post shows as the change is read (it may have changed
    /// since the like; it has not been deleted).
    LikeCount {
        like_count: i64,
        now: Shown,
    },
}

/// What decides whether a post is in a watcher's view.
#[derive(Debug, Clone)]
pub struct Shown {
    /// `None` only in the deletion of a post deleted with its owner's account.
    pub title: Option<String>,
    pub published: bool,
}

/// A post as a change left it.
#[derive(Debug, Clone)]
pub struct PostState {
    pub title: String,
    pub content: String,
    pub published: bool,
    pub revision: i64,
    pub create_time: OffsetDateTime,
    pub update_time: OffsetDateTime,
}

impl PostState {
    pub fn shown(&self) -> Shown {
        Shown {
            title: Some(self.title.clone()),
            published: self.published,
        }
    }
}

/// The database's snapshot now: where a read up to now ends.
pub async fn current_snapshot(conn: &mut PgConnection) -> Result<Snapshot, ApiError> {
    let text: String = sqlx::query_scalar("select pg_current_snapshot()::text")
        .fetch_one(conn)
        .await?;
    text.parse()
        .map_err(|_| ApiError::Internal(format!("pg_current_snapshot() gave {text:?}").into()))
}

/// At most `limit` changes of the transactions `upto` sees and `after` does not,
/// after `last` (all of them when `None`), in key order. Changes to posts
/// deleted since are left out of the like counts (the deletion follows).
pub async fn between(
    conn: &mut PgConnection,
    after: &Snapshot,
    upto: &Snapshot,
    last: Option<EventKey>,
    limit: i64,
) -> Result<Vec<Event>, ApiError> {
    let last_time = last
        .map(|key| OffsetDateTime::from_unix_timestamp_nanos(i128::from(key.micros) * 1000))
        .transpose()
        .map_err(|error| ApiError::Internal(error.into()))?;
    let rows = sqlx::query(
        r#"
        with bounds as (select $1::text::pg_snapshot as after, $2::text::pg_snapshot as upto),
        changes as (
            select 0 as source, e.seq, e.event_time, e.kind, e.post_id, e.owner_id,
                   e.title, e.content, e.published, e.revision, e.create_time, e.update_time,
                   e.old_title, e.old_published, null::bigint as like_count
            from bounds b, posts.post_events e
            where e.xid >= pg_snapshot_xmin(b.after)
              and e.xid < pg_snapshot_xmax(b.upto)
              and not pg_visible_in_snapshot(e.xid, b.after)
              and pg_visible_in_snapshot(e.xid, b.upto)
            union all
            select 1, l.seq, l.event_time, 'likes', l.post_id, p.owner_id,
                   p.title, null, p.published, null, null, null,
                   null, null, l.like_count
            from bounds b
            cross join lateral votes.like_count_changes(b.after, b.upto) l
            -- Each post by its key: a few changes per read, whatever the
            -- number of posts (the limit keeps the planner from a hash join
            -- over all of them).
            cross join lateral (
                select owner_id, title, published from posts.posts where id = l.post_id limit 1
            ) p
        )
        select * from changes
        where $3::timestamptz is null
           or (event_time, source, seq) > ($3::timestamptz, $4::int, $5::bigint)
        order by event_time, source, seq
        limit $6
        "#,
    )
    .bind(after.to_string())
    .bind(upto.to_string())
    .bind(last_time)
    .bind(last.map(|key| key.source as i32))
    .bind(last.map(|key| key.seq))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(event).collect()
}

fn event(row: &PgRow) -> Result<Event, ApiError> {
    let time: OffsetDateTime = row.try_get("event_time")?;
    let source = match row.try_get::<i32, _>("source")? {
        0 => Source::Posts,
        _ => Source::Likes,
    };
    let kind: String = row.try_get("kind")?;
    let state = || -> Result<PostState, ApiError> {
        Ok(PostState {
            title: row.try_get("title")?,
            content: row.try_get("content")?,
            published: row.try_get("published")?,
            revision: row.try_get("revision")?,
            create_time: row.try_get("create_time")?,
            update_time: row.try_get("update_time")?,
        })
    };
    let before = || -> Result<Shown, ApiError> {
        Ok(Shown {
            title: row.try_get("old_title")?,
            published: row.try_get("old_published")?,
        })
    };
    let change = match kind.as_str() {
        "created" => Change::Created(state()?),
        "updated" => Change::Updated {
            after: state()?,
            before: before()?,
        },
        "deleted" => Change::Deleted { before: before()? },
        _ => Change::LikeCount {
            like_count: row.try_get("like_count")?,
            now: Shown {
                title: row.try_get("title")?,
                published: row.try_get("published")?,
            },
        },
    };
    Ok(Event {
        key: EventKey {
            micros: (time.unix_timestamp_nanos() / 1000) as i64,
            source,
            seq: row.try_get("seq")?,
        },
        time,
        post_id: row.try_get("post_id")?,
        owner_id: row.try_get("owner_id")?,
        change,
    })
}

/// Whether the changes after `cursor` are all still kept: the purges of both
/// outboxes deleted only transactions its `after` snapshot sees.
pub async fn still_kept(conn: &mut PgConnection, cursor: &Cursor) -> Result<bool, ApiError> {
    let kept: bool = sqlx::query_scalar(
        "select greatest((select through_xid from posts.post_events_purged),
                         votes.like_count_changes_purged_through())
                < pg_snapshot_xmin($1::text::pg_snapshot)",
    )
    .bind(cursor.after.to_string())
    .fetch_one(conn)
    .await?;
    Ok(kept)
}

/// posts-service's outbox.
pub const OUTBOX: Outbox = Outbox {
    events: "posts.post_events",
    purged: "posts.post_events_purged",
    announce: "posts.announce",
};
