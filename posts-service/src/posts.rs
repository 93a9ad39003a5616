//! Posts: what makes a valid one, what an update changes, who may change it, and
//! their rows in `posts.posts`.
//!
//! Every read goes through `posts.visible_posts(viewer)`, the SQL function that
//! states once who may see which post (migration 0004); every change is one
//! statement whose `where` holds the ownership and etag checks. A create with a
//! request id (AIP-155) happens once: `posts.create_post_requests` remembers the
//! id for a day.

use agora_proto::errors::ErrorReason;
use service_kit::{ApiError, ConstraintExt, error::both, fields::TextRule, request_ids};
use sqlx::{Connection as _, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

/// A title: one line of at most 200 characters.
pub const TITLE: TextRule = TextRule {
    max_chars: 200,
    multiline: false,
};
/// A body: at most 10,000 characters; newline and tab allowed.
pub const CONTENT: TextRule = TextRule {
    max_chars: 10_000,
    multiline: true,
};

pub const POST_NOT_FOUND: ApiError = ApiError::Refused {
    reason: ErrorReason::PostNotFound,
    message: "post not found",
};

/// A stored post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub content: String,
    pub published: bool,
    pub create_time: OffsetDateTime,
    pub update_time: OffsetDateTime,
    pub revision: i64,
}

impl PostRow {
    /// The post's etag (AIP-154): its revision, which every change raises.
    pub fn etag(&self) -> String {
        self.revision.to_string()
    }
}

/// The revision an etag names. An etag this service never issued is a bad field,
/// not a stale one.
pub fn parse_etag(field: &str, etag: &str) -> Result<Option<i64>, ApiError> {
    match etag {
        "" => Ok(None),
        etag => etag
            .parse::<i64>()
            .ok()
            .filter(|revision| *revision > 0)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(field, "not an etag of this service")),
    }
}

/// A post to create, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost {
    pub title: String,
    pub content: String,
    pub published: bool,
}

impl NewPost {
    /// Title and content are required; `published` is true when absent. Bad
    /// fields are named as in a request's `post`.
    pub fn parse(title: &str, content: &str, published: Option<bool>) -> Result<Self, ApiError> {
        let (title, content) = both(
            TITLE.required("post.title", title),
            CONTENT.required("post.content", content),
        )?;
        Ok(Self {
            title,
            content,
            published: published.unwrap_or(true),
        })
    }
}

/// The changes an update makes; `None` leaves a field as it is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub title: Option<String>,
    pub content: Option<String>,
    pub published: Option<bool>,
}

/// Fields of a post that only the service sets; an update mask naming them is
/// not an error, and they do not change (AIP-203).
const OUTPUT_ONLY: &[&str] = &[
    "id",
    "create_time",
    "update_time",
    "owner_id",
    "owner",
    "like_count",
    "liked_by_caller",
    "etag",
];

impl Changes {
    /// What an update changes (AIP-134). Without a mask (or with an empty one):
    /// the fields set, that is a non-empty title or content and a present
    /// `published`. With `*`: everything, as a create would set it. Otherwise the
    /// fields named; a named `published` that is absent becomes false.
    pub fn parse(
        title: &str,
        content: &str,
        published: Option<bool>,
        mask: Option<&[String]>,
    ) -> Result<Self, ApiError> {
        let paths: Vec<&str> = match mask {
            Some(paths) if !paths.is_empty() => paths.iter().map(String::as_str).collect(),
            _ => {
                let set = [
                    ("title", !title.is_empty()),
                    ("content", !content.is_empty()),
                    ("published", published.is_some()),
                ];
                set.into_iter()
                    .filter(|(_, set)| *set)
                    .map(|(path, _)| path)
                    .collect()
            }
        };
        if paths.contains(&"*") {
            if paths.len() > 1 {
                return Err(ApiError::invalid(
                    "update_mask",
                    "`*` replaces the whole post and stands alone",
                ));
            }
            let post = NewPost::parse(title, content, published)?;
            return Ok(Self {
                title: Some(post.title),
                content: Some(post.content),
                published: Some(post.published),
            });
        }

        let mut changes = Self::default();
        let mut violations = Vec::new();
        for path in paths {
            let outcome = match path {
                "title" => TITLE
                    .required("post.title", title)
                    .map(|title| changes.title = Some(title)),
                "content" => CONTENT
                    .required("post.content", content)
                    .map(|content| changes.content = Some(content)),
                "published" => {
                    changes.published = Some(published.unwrap_or(false));
                    Ok(())
                }
                path if is_output_only(path) => Ok(()),
                other => Err(ApiError::invalid(
                    "update_mask",
                    format!("{other:?} is not a field of Post; use title, content, published or *"),
                )),
            };
            if let Err(ApiError::InvalidArgument(more)) = outcome {
                violations.extend(more);
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        if changes == Self::default() {
            return Err(ApiError::invalid(
                "update_mask",
                "nothing to change: set title, content or published, or name them here",
            ));
        }
        Ok(changes)
    }
}

fn is_output_only(path: &str) -> bool {
    let field = path.split('.').next().unwrap_or(path);
    OUTPUT_ONLY.contains(&field)
}

/// Creates the post for `owner_id`. With a `request_id`, only once (AIP-155): a
/// retry within [`request_ids::LIFETIME`] answers the post the first request
/// created as it is now (POST_NOT_FOUND once deleted), and the same id with
/// another title, content or `published` is REQUEST_ID_REUSED.
pub async fn create(
    conn: &mut PgConnection,
    owner_id: Uuid,
    post: &NewPost,
    request_id: Option<Uuid>,
) -> Result<PostRow, ApiError> {
    let id = Uuid::now_v7();
    let Some(request_id) = request_id else {
        let row = insert(conn, id, owner_id, post).await?;
        announce(conn).await;
        return Ok(row);
    };
    // The request row comes first, so that a concurrent retry waits on its key
    // until this transaction ends, and then finds it.
    let mut tx = conn.begin().await?;
    if claim_request(&mut tx, owner_id, request_id, id, post).await? {
        let row = insert(&mut tx, id, owner_id, post).await?;
        tx.commit().await?;
        announce(conn).await;
        return Ok(row);
    }
    let earlier = find_request(&mut tx, owner_id, request_id, post).await?;
    tx.rollback().await?;
    if !earlier.same_request {
        return Err(ApiError::refused(
            ErrorReason::RequestIdReused,
            "this request_id was used for a different request",
        ));
    }
    get(conn, earlier.post_id, owner_id).await
}

async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    owner_id: Uuid,
    post: &NewPost,
) -> Result<PostRow, ApiError> {
    sqlx::query_as!(
        PostRow,
        "insert into posts.posts (id, owner_id, title, content, published)
         select $1, $2, $3, $4, $5 where posts.announce_after_commit()
         returning id, owner_id, title, content, published, create_time, update_time, revision",
        id,
        owner_id,
        post.title,
        post.content,
        post.published
    )
    .fetch_one(conn)
    .await
    .on_constraint(|constraint| {
        (constraint == "posts_owner_id_fkey").then(ApiError::account_deleted)
    })
}

/// Records that `request_id` creates the post `post_id`, unless the owner used
/// the id within [`request_ids::LIFETIME`]: false then. Either way the request row
/// stays locked until the transaction ends, so it cannot vanish before
/// [`find_request`] reads it.
async fn claim_request(
    conn: &mut PgConnection,
    owner_id: Uuid,
    request_id: Uuid,
    post_id: Uuid,
    post: &NewPost,
) -> Result<bool, ApiError> {
    // An expired id is taken over here, not only by the purge, so it lives
    // exactly its lifetime. The digest is the one `find_request` compares.
    let claimed = sqlx::query_scalar!(
        "insert into posts.create_post_requests as earlier (owner_id, request_id, post_id, request_hash)
         values ($1, $2, $3,
                 sha256(convert_to(jsonb_build_array($4::text, $5::text, $6::boolean)::text, 'UTF8')))
         on conflict (owner_id, request_id) do update
            set post_id = excluded.post_id,
                request_hash = excluded.request_hash,
                create_time = excluded.create_time
          where earlier.create_time < now() - make_interval(secs => $7)
         returning post_id",
        owner_id,
        request_id,
        post_id,
        post.title,
        post.content,
        post.published,
        request_ids::LIFETIME.as_secs_f64()
    )
    .fetch_optional(conn)
    .await
    .on_constraint(|constraint| {
        (constraint == "create_post_requests_owner_id_fkey").then(ApiError::account_deleted)
    })?;
    Ok(claimed.is_some())
}

/// An earlier request with the same id, and whether it asked for the same post.
struct EarlierRequest {
    post_id: Uuid,
    same_request: bool,
}

async fn find_request(
    conn: &mut PgConnection,
    owner_id: Uuid,
    request_id: Uuid,
    post: &NewPost,
) -> Result<EarlierRequest, ApiError> {
    Ok(sqlx::query_as!(
        EarlierRequest,
        r#"select post_id,
                  request_hash = sha256(convert_to(
                      jsonb_build_array($3::text, $4::text, $5::boolean)::text, 'UTF8'))
                      as "same_request!"
             from posts.create_post_requests
            where owner_id = $1 and request_id = $2"#,
        owner_id,
        request_id,
        post.title,
        post.content,
        post.published
    )
    .fetch_one(conn)
    .await?)
}

/// Deletes the request ids older than [`request_ids::LIFETIME`]; how many.
pub async fn purge_expired_request_ids(conn: &mut PgConnection) -> Result<u64, ApiError> {
    let purged = sqlx::query!(
        "delete from posts.create_post_requests where create_time < now() - make_interval(secs => $1)",
        request_ids::LIFETIME.as_secs_f64()
    )
    .execute(conn)
    .await?;
    Ok(purged.rows_affected())
}

/// The post, if `viewer` may see it.
async fn find_visible(
    conn: &mut PgConnection,
    id: Uuid,
    viewer: Uuid,
) -> Result<Option<PostRow>, ApiError> {
    Ok(sqlx::query_as!(
        PostRow,
        r#"select id as "id!", owner_id as "owner_id!", title as "title!", content as "content!",
                  published as "published!", create_time as "create_time!",
                  update_time as "update_time!", revision as "revision!"
             from posts.visible_posts($2) where id = $1"#,
        id,
        viewer
    )
    .fetch_optional(conn)
    .await?)
}

/// The post, or POST_NOT_FOUND unless `viewer` may see it.
pub async fn get(conn: &mut PgConnection, id: Uuid, viewer: Uuid) -> Result<PostRow, ApiError> {
    find_visible(conn, id, viewer).await?.ok_or(POST_NOT_FOUND)
}

/// Applies `changes` if `caller` owns the post and, when `revision` is given, the
/// post is still at it; otherwise says why not.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    caller: Uuid,
    revision: Option<i64>,
    changes: &Changes,
) -> Result<PostRow, ApiError> {
    match update_owned(conn, id, caller, revision, changes).await? {
        Some(row) => {
            announce(conn).await;
            Ok(row)
        }
        None => Err(why_unchanged(conn, id, caller).await),
    }
}

/// Deletes the post and its likes if `caller` owns it and, when `revision` is
/// given, it is still at it; otherwise says why not.
pub async fn delete(
    conn: &mut PgConnection,
    id: Uuid,
    caller: Uuid,
    revision: Option<i64>,
) -> Result<(), ApiError> {
    match delete_owned(conn, id, caller, revision).await? {
        true => {
            announce(conn).await;
            Ok(())
        }
        false => Err(why_unchanged(conn, id, caller).await),
    }
}

/// Applies `changes` if `caller` owns the post and, when `revision` is given, the
/// post is still at it. `None` when not.
async fn update_owned(
    conn: &mut PgConnection,
    id: Uuid,
    caller: Uuid,
    revision: Option<i64>,
    changes: &Changes,
) -> Result<Option<PostRow>, ApiError> {
    Ok(sqlx::query_as!(
        PostRow,
        "update posts.posts
            set title = coalesce($4, title),
                content = coalesce($5, content),
                published = coalesce($6, published),
                update_time = now(),
                revision = revision + 1
          where id = $1 and owner_id = $2 and ($3::bigint is null or revision = $3)
            and posts.announce_after_commit()
         returning id, owner_id, title, content, published, create_time, update_time, revision",
        id,
        caller,
        revision,
        changes.title.as_deref(),
        changes.content.as_deref(),
        changes.published
    )
    .fetch_optional(conn)
    .await?)
}

/// Deletes the post, and by the cascade its likes, if `caller` owns it and, when
/// `revision` is given, it is still at it. False when not.
async fn delete_owned(
    conn: &mut PgConnection,
    id: Uuid,
    caller: Uuid,
    revision: Option<i64>,
) -> Result<bool, ApiError> {
    let deleted = sqlx::query!(
        "delete from posts.posts
          where id = $1 and owner_id = $2 and ($3::bigint is null or revision = $3)
            and posts.announce_after_commit()",
        id,
        caller,
        revision
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// See [`Outbox::announce`](service_kit::outbox::Outbox::announce).
async fn announce(conn: &mut PgConnection) {
    crate::feed::OUTBOX.announce(conn).await;
}

/// After a change by `caller` matched nothing: POST_NOT_FOUND when the post does
/// not exist or is someone else's draft, NOT_POST_OWNER when it is someone else's,
/// ETAG_MISMATCH when it is the caller's but has changed since.
async fn why_unchanged(conn: &mut PgConnection, id: Uuid, caller: Uuid) -> ApiError {
    match find_visible(conn, id, caller).await {
        Ok(None) => POST_NOT_FOUND,
        Ok(Some(post)) if post.owner_id != caller => ApiError::refused(
            ErrorReason::NotPostOwner,
            "only the owner may change this post",
        ),
        Ok(Some(_)) => ApiError::refused(
            ErrorReason::EtagMismatch,
            "the post has changed since this etag; read it again",
        ),
        Err(error) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|path| (*path).to_owned()).collect()
    }

    #[test]
    fn without_a_mask_the_fields_set_change() {
        let changes = Changes::parse("New", "", None, None).unwrap();
        assert_eq!(
            changes,
            Changes {
                title: Some("New".to_owned()),
                ..Changes::default()
            }
        );
        let changes = Changes::parse("", "", Some(false), Some(&[])).unwrap();
        assert_eq!(changes.published, Some(false), "an empty mask is no mask");
        assert!(
            Changes::parse("", "", None, None).is_err(),
            "nothing to change"
        );
    }

    #[test]
    fn a_star_replaces_the_post_and_publishes_unless_told_otherwise() {
        let changes = Changes::parse(" T ", "C", None, Some(&mask(&["*"]))).unwrap();
        assert_eq!(
            changes,
            Changes {
                title: Some("T".to_owned()),
                content: Some("C".to_owned()),
                published: Some(true),
            }
        );
        assert!(Changes::parse("T", "", None, Some(&mask(&["*"]))).is_err());
        assert!(Changes::parse("T", "C", None, Some(&mask(&["*", "title"]))).is_err());
    }

    #[test]
    fn named_fields_change_and_output_only_ones_are_ignored() {
        let changes = Changes::parse(
            "T",
            "ignored",
            None,
            Some(&mask(&["title", "published", "id"])),
        )
        .unwrap();
        assert_eq!(
            changes,
            Changes {
                title: Some("T".to_owned()),
                content: None,
                published: Some(false),
            }
        );
        assert!(Changes::parse("T", "", None, Some(&mask(&["nope"]))).is_err());
        assert!(
            Changes::parse("T", "", None, Some(&mask(&["like_count", "owner.id"]))).is_err(),
            "only output-only fields: nothing to change"
        );
    }

    #[test]
    fn etags_are_revisions() {
        assert_eq!(parse_etag("etag", "").unwrap(), None);
        assert_eq!(parse_etag("etag", "3").unwrap(), Some(3));
        for bad in ["0", "-1", "abc", "\"3\""] {
            assert!(parse_etag("etag", bad).is_err(), "{bad}");
        }
    }
}
