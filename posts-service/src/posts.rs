//! Posts: what makes a valid one, and their rows in `posts.posts`.

use service_kit::ApiError;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CONTENT_CHARS: usize = 10_000;

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
}

impl PostRow {
    /// Whether `caller` may see the post: drafts are their owner's alone.
    pub fn visible_to(&self, caller: Uuid) -> bool {
        self.published || self.owner_id == caller
    }
}

/// A title: trimmed, 1 to 200 characters, no control characters.
pub fn title(raw: &str) -> Result<String, ApiError> {
    text("title", raw, MAX_TITLE_CHARS, |c| c.is_control())
}

/// A body: trimmed, 1 to 10,000 characters, no control characters but newline and tab.
pub fn content(raw: &str) -> Result<String, ApiError> {
    text("content", raw, MAX_CONTENT_CHARS, |c| {
        c.is_control() && c != '\n' && c != '\t'
    })
}

fn text(
    field: &str,
    raw: &str,
    max_chars: usize,
    forbidden: impl Fn(char) -> bool,
) -> Result<String, ApiError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    if text.chars().count() > max_chars {
        return Err(ApiError::invalid(
            field,
            format!("at most {max_chars} characters"),
        ));
    }
    if text.chars().any(forbidden) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}

/// The changes an update makes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Changes {
    pub title: Option<String>,
    pub content: Option<String>,
    pub published: Option<bool>,
}

pub async fn insert(
    pool: &PgPool,
    owner_id: Uuid,
    title: &str,
    content: &str,
    published: bool,
) -> Result<PostRow, ApiError> {
    Ok(sqlx::query_as!(
        PostRow,
        "insert into posts.posts (id, owner_id, title, content, published) values ($1, $2, $3, $4, $5)
         returning id, owner_id, title, content, published, create_time, update_time",
        Uuid::now_v7(),
        owner_id,
        title,
        content,
        published
    )
    .fetch_one(pool)
    .await?)
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<PostRow>, ApiError> {
    Ok(sqlx::query_as!(
        PostRow,
        "select id, owner_id, title, content, published, create_time, update_time from posts.posts where id = $1",
        id
    )
    .fetch_optional(pool)
    .await?)
}

/// Applies `changes` if `caller` owns the post. `None` when no such post is the
/// caller's; [`why_not_owner`] tells why.
pub async fn update_owned(
    pool: &PgPool,
    id: Uuid,
    caller: Uuid,
    changes: &Changes,
) -> Result<Option<PostRow>, ApiError> {
    Ok(sqlx::query_as!(
        PostRow,
        "update posts.posts
            set title = coalesce($3, title),
                content = coalesce($4, content),
                published = coalesce($5, published),
                update_time = now()
          where id = $1 and owner_id = $2
         returning id, owner_id, title, content, published, create_time, update_time",
        id,
        caller,
        changes.title.as_deref(),
        changes.content.as_deref(),
        changes.published
    )
    .fetch_optional(pool)
    .await?)
}

/// Deletes the post, and by the cascade its likes, if `caller` owns it. False when
/// no such post is the caller's; [`why_not_owner`] tells why.
pub async fn delete_owned(pool: &PgPool, id: Uuid, caller: Uuid) -> Result<bool, ApiError> {
    let deleted = sqlx::query!(
        "delete from posts.posts where id = $1 and owner_id = $2",
        id,
        caller
    )
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// After a change by `caller` matched nothing: NOT_FOUND when the post does not
/// exist or is someone else's draft, PERMISSION_DENIED when it is someone else's.
pub async fn why_not_owner(pool: &PgPool, id: Uuid, caller: Uuid) -> ApiError {
    match find(pool, id).await {
        Ok(Some(post)) if post.visible_to(caller) => {
            ApiError::PermissionDenied("only the owner may change this post")
        }
        Ok(_) => ApiError::NotFound("post not found"),
        Err(error) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_contents_are_trimmed_and_bounded_in_characters() {
        assert_eq!(title("  Hello  ").unwrap(), "Hello");
        assert!(
            title(&"é".repeat(200)).is_ok(),
            "200 two-byte characters fit"
        );
        assert!(title(&"é".repeat(201)).is_err());
        assert!(content(&"界".repeat(10_000)).is_ok());
        assert!(content(&"界".repeat(10_001)).is_err());
        assert_eq!(
            content(" line one\n\tline two ").unwrap(),
            "line one\n\tline two"
        );
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\0b", "a\u{7}b", "a\rb", "a\u{1b}[31mb"] {
            assert!(content(bad).is_err(), "{bad:?} in content");
            assert!(title(bad).is_err(), "{bad:?} in title");
        }
        assert!(title("a\nb").is_err(), "no newline in a title");
        assert!(title("a\tb").is_err(), "no tab in a title");
        for blank in ["", "   ", "\n\t"] {
            assert!(
                title(blank).is_err() && content(blank).is_err(),
                "{blank:?}"
            );
        }
    }
}
