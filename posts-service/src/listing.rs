//! Listing posts: newest first, filtered, paged by opaque tokens (AIP-158) or by
//! offset (the course API's `limit` and `skip`).

use agora_proto::MAX_PAGE_SIZE;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use service_kit::{
    ApiError,
    fields::{TextRule, parse_optional_id},
};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::posts::PostRow;

pub const DEFAULT_PAGE_SIZE: i64 = 10;
/// A search: one line of at most 100 characters, matched as given.
pub const SEARCH: TextRule = TextRule {
    max_chars: 100,
    multiline: false,
};

/// Which posts to list; validated from a `ListPostsRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Case-insensitive substring of the title.
    pub search: Option<String>,
    pub owner_id: Option<Uuid>,
}

/// Where a page starts: after the post `(create_time, id)` of the previous page, or
/// after `skip` posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    After(Cursor),
    Skip(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub create_time: OffsetDateTime,
    pub id: Uuid,
}

/// What a page token holds: the position, and the filter it was issued for, so a
/// token cannot be replayed against another query.
#[derive(Debug, Serialize, Deserialize)]
struct PageToken {
    after: Cursor,
    filter: Filter,
}

/// A validated `ListPosts` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub filter: Filter,
    pub start: Start,
    pub page_size: i64,
}

impl Query {
    pub fn parse(
        page_size: i32,
        page_token: &str,
        skip: i32,
        search: &str,
        owner_id: &str,
    ) -> Result<Self, ApiError> {
        let page_size = match i64::from(page_size) {
            size if size < 0 => return Err(ApiError::invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE as i64),
        };
        let filter = parse_filter(search, owner_id)?;
        let start = match (page_token, skip) {
            (_, skip) if skip < 0 => return Err(ApiError::invalid("skip", "must not be negative")),
            ("", skip) => Start::Skip(skip.into()),
            (_, 0) => Start::After(decode_token(page_token, &filter)?),
            (_, _) => {
                return Err(ApiError::invalid(
                    "skip",
                    "cannot be combined with page_token",
                ));
            }
        };
        Ok(Self {
            filter,
            start,
            page_size,
        })
    }
}

/// The filters of a `ListPostsRequest` (and of a `WatchPostsRequest`).
pub fn parse_filter(search: &str, owner_id: &str) -> Result<Filter, ApiError> {
    SEARCH.check("search", search)?;
    Ok(Filter {
        search: Some(search).filter(|s| !s.is_empty()).map(str::to_owned),
        owner_id: parse_optional_id("owner_id", owner_id)?,
    })
}

/// A page of posts and, when more follow, the token for the next one.
pub struct Page {
    pub posts: Vec<PostRow>,
    pub next_page_token: String,
}

/// How many of the newest posts (after the cursor) a search looks through in
/// order before it asks the title index instead: a common word fills a page
/// within a few dozen, and walking in order needs no sort; a rare one would
/// make the walk read the whole table.
const SEARCH_WALK_ROWS: i64 = 200;

/// The trigram index serves a search holding a word (letters and digits) at
/// least this long: other searches give it no trigram to look up, so they are
/// always walked in order.
const TRIGRAM_MIN_CHARS: usize = 3;

/// The most matches the trigram index is asked for. Fewer are all of them, and
/// sorting them is cheap; this many mean a word common in older posts, which a
/// walk in order finds sooner.
const TRIGRAM_MATCHES_AT_MOST: i64 = 1_000;

/// The posts `caller` may see that match `query`: published ones and the caller's
/// own drafts, newest first. Each case has a statement whose plan does not
/// depend on the values bound (so PostgreSQL's generic plans, used once a
/// prepared statement has run a few times, are as good as its custom ones):
///
/// - no filter: the first page, or one after a token, straight from
///   `posts_listing_idx`'s walk; with a `skip`, the page's ids from that index
///   alone, however many rows it passes over, then the page's rows by id (an id
///   array: a join here would be planned, generically, for any number of rows);
/// - an owner: that owner's index;
/// - a search: the newest posts walked in order, at most [`SEARCH_WALK_ROWS`] of
///   them, their titles read from `posts_listing_idx` too; if they do not fill
///   the page, the trigram index finds every match and only those are sorted;
///   if it cannot (no word of [`TRIGRAM_MIN_CHARS`] in the search, or more than
///   [`TRIGRAM_MATCHES_AT_MOST`] matches), the walk goes on, in the index alone.
pub async fn list(conn: &mut PgConnection, caller: Uuid, query: &Query) -> Result<Page, ApiError> {
    let (after, skip) = match &query.start {
        Start::After(cursor) => (Some(*cursor), 0),
        Start::Skip(skip) => (None, *skip),
    };
    // One row more than the page tells whether another page follows.
    let limit = query.page_size + 1;
    let (created_before, id_before) = (
        after.map(|cursor| cursor.create_time),
        after.map(|cursor| cursor.id),
    );
    let owner = query.filter.owner_id;
    let mut posts = match query.filter.search.as_deref() {
        None => match owner {
            // From the top or after a token: the rows straight from the index
            // walk, the cheapest for a page that skips nothing.
            None if skip == 0 => {
                sqlx::query_as!(
                    PostRow,
                    r#"select id as "id!", owner_id as "owner_id!", title as "title!",
                              content as "content!", published as "published!",
                              create_time as "create_time!", update_time as "update_time!",
                              revision as "revision!"
                         from posts.visible_posts($1)
                        where ($2::timestamptz is null or (create_time, id) < ($2, $3::uuid))
                        order by create_time desc, id desc
                        limit $4"#,
                    caller,
                    created_before,
                    id_before,
                    limit
                )
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as!(
                    PostRow,
                    r#"select id, owner_id, title, content, published, create_time,
                              update_time, revision
                         from posts.posts
                        where id = any (array(
                                select id from posts.visible_posts($1)
                                 where ($2::timestamptz is null or (create_time, id) < ($2, $3::uuid))
                                 order by create_time desc, id desc
                                 limit $4 offset $5))
                        order by create_time desc, id desc"#,
                    caller,
                    created_before,
                    id_before,
                    limit,
                    skip
                )
                .fetch_all(&mut *conn)
                .await?
            }
            Some(owner) => {
                sqlx::query_as!(
                    PostRow,
                    r#"select id as "id!", owner_id as "owner_id!", title as "title!",
                              content as "content!", published as "published!",
                              create_time as "create_time!", update_time as "update_time!",
                              revision as "revision!"
                         from posts.visible_posts($1)
                        where owner_id = $2
                          and ($3::timestamptz is null or (create_time, id) < ($3, $4::uuid))
                        order by create_time desc, id desc
                        limit $5 offset $6"#,
                    caller,
                    owner,
                    created_before,
                    id_before,
                    limit,
                    skip
                )
                .fetch_all(&mut *conn)
                .await?
            }
        },
        Some(search) => {
            let pattern = format!("%{}%", escape_like(search));
            let trigram = search
                .split(|c: char| !c.is_alphanumeric())
                .any(|word| word.chars().count() >= TRIGRAM_MIN_CHARS);
            // One statement, three ways, each run only when the one before
            // could not fill the page (PostgreSQL skips a branch whose
            // one-time filter is false, and a CTE no one reads):
            // 1. `walked`: the newest posts in order, at most
            //    SEARCH_WALK_ROWS, titles from the index: common words;
            // 2. `indexed`: the trigram index, if the search is long enough,
            //    and if it finds under TRIGRAM_MATCHES_AT_MOST matches in all
            //    (every one is then sorted): rare words;
            // 3. the newest posts in order without a bound, titles still from
            //    the index: short searches, and words common in old posts but
            //    not in the newest.
            sqlx::query_as!(
                PostRow,
                r#"select id, owner_id, title, content, published, create_time,
                          update_time, revision
                     from posts.posts
                    where id = any (array(
                      with walked as materialized (
                               select id, create_time
                                 from (select id, create_time, title
                                         from posts.visible_posts($1)
                                        where ($2::uuid is null or owner_id = $2)
                                          and ($3::timestamptz is null
                                               or (create_time, id) < ($3, $4::uuid))
                                        order by create_time desc, id desc
                                        limit $5::bigint) as newest
                                where title ilike $6 escape '\'
                                order by create_time desc, id desc
                                limit $7::bigint + $8::bigint),
                           indexed as materialized (
                               select id, create_time from posts.visible_posts($1)
                                where title ilike $6 escape '\'
                                  and ($2::uuid is null or owner_id = $2)
                                  and ($3::timestamptz is null
                                       or (create_time, id) < ($3, $4::uuid))
                                limit $9::bigint),
                           found as (
                               select id, create_time from walked
                                where (select count(*) from walked) = $7::bigint + $8::bigint
                               union all
                               select id, create_time from indexed
                                where $10::boolean
                                  and (select count(*) from walked) < $7::bigint + $8::bigint
                                  and (select count(*) from indexed) < $9::bigint
                               union all
                               (select id, create_time from posts.visible_posts($1)
                                 where (select count(*) from walked) < $7::bigint + $8::bigint
                                   and (not $10::boolean
                                        or (select count(*) from indexed) >= $9::bigint)
                                   and title ilike $6 escape '\'
                                   and ($2::uuid is null or owner_id = $2)
                                   and ($3::timestamptz is null
                                        or (create_time, id) < ($3, $4::uuid))
                                 order by create_time desc, id desc
                                 limit $7::bigint + $8::bigint))
                      select id from found
                       order by create_time desc, id desc
                       limit $7::bigint offset $8::bigint))
                    order by create_time desc, id desc"#,
                caller,
                owner,
                created_before,
                id_before,
                SEARCH_WALK_ROWS,
                pattern,
                limit,
                skip,
                TRIGRAM_MATCHES_AT_MOST,
                trigram
            )
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let next_page_token = if posts.len() as i64 > query.page_size {
        posts.truncate(query.page_size as usize);
        let last = posts.last().expect("a full page has a last post");
        encode_token(
            Cursor {
                create_time: last.create_time,
                id: last.id,
            },
            &query.filter,
        )
    } else {
        String::new()
    };
    Ok(Page {
        posts,
        next_page_token,
    })
}

/// `text` with the LIKE wildcards `%` and `_`, and the escape `\`, matching
/// themselves.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn encode_token(after: Cursor, filter: &Filter) -> String {
    let token = PageToken {
        after,
        filter: filter.clone(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("a page token serializes"))
}

fn decode_token(token: &str, filter: &Filter) -> Result<Cursor, ApiError> {
    let invalid = || ApiError::invalid("page_token", "not a page token of this query");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.filter != *filter {
        return Err(invalid());
    }
    Ok(token.after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_match_themselves() {
        assert_eq!(escape_like("100%_off\\now"), "100\\%\\_off\\\\now");
        assert_eq!(escape_like("plain"), "plain");
    }

    #[test]
    fn page_sizes_default_and_cap() {
        let size = |n| Query::parse(n, "", 0, "", "").map(|q| q.page_size);
        assert_eq!(size(0).unwrap(), 10);
        assert_eq!(size(7).unwrap(), 7);
        assert_eq!(size(1000).unwrap(), 100);
        assert!(size(-1).is_err());
    }

    #[test]
    fn page_tokens_round_trip_only_for_their_query() {
        let cursor = Cursor {
            create_time: OffsetDateTime::now_utc(),
            id: Uuid::now_v7(),
        };
        let filter = Filter {
            search: Some("rust".to_owned()),
            owner_id: None,
        };
        let token = encode_token(cursor, &filter);

        let query = Query::parse(5, &token, 0, "rust", "").unwrap();
        assert_eq!(query.start, Start::After(cursor));
        assert!(
            Query::parse(5, &token, 0, "go", "").is_err(),
            "another search"
        );
        assert!(Query::parse(5, &token, 3, "rust", "").is_err(), "with skip");
        assert!(Query::parse(5, "garbage", 0, "rust", "").is_err());
    }
}
