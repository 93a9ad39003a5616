//! `/posts/` and `/posts/{id}`: list, read, create, replace, patch and delete,
//! onto posts-service's PostService, in the course's JSON shapes.

use std::collections::HashMap;

use agora_proto::posts::v1 as posts;
use axum::{Json, extract::State, http::StatusCode};
use prost_types::FieldMask;
use serde::{Deserialize, Serialize};
use service_kit::{deadline::Deadline, retry::read_once_more_if_unavailable};
use utoipa::{IntoParams, ToSchema};

use super::{
    Facade,
    errors::{ErrorBody, HttpError, ValidationErrorBody},
    extract::{Bearer, JsonBody, PathId, Query, present},
    users::{UserOut, rfc3339},
};

const UPSTREAM: &str = "posts-service";

/// A post as the course shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostOut {
    #[schema(format = "uuid")]
    pub id: String,
    pub title: String,
    pub content: String,
    /// False for a draft, which only its owner can see.
    pub published: bool,
    #[schema(format = "date-time")]
    pub created_at: String,
    #[schema(format = "uuid")]
    pub owner_id: String,
    /// The author; `null` when auth-service cannot be reached and the author is
    /// not one seen lately (`owner_id` is always there).
    pub owner: Option<UserOut>,
}

/// A post and its like count, as the course's `GET /posts/` answers (note the
/// capital `Post`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PostWithVotes {
    #[serde(rename = "Post")]
    pub post: PostOut,
    /// How many people like the post; `null` when votes-service cannot be reached
    /// and the count is unknown (never a made-up zero).
    pub votes: Option<i64>,
}

impl PostOut {
    /// The course's shape of `post`; `emails` holds the owners whose email the
    /// facade shows.
    fn from_proto(post: posts::Post, emails: &HashMap<String, String>) -> Result<Self, HttpError> {
        Ok(Self::with_votes(post, emails)?.post)
    }

    pub(super) fn with_votes(
        post: posts::Post,
        emails: &HashMap<String, String>,
    ) -> Result<PostWithVotes, HttpError> {
        let owner = match post.owner {
            Some(owner) => Some(UserOut {
                created_at: rfc3339(UPSTREAM, owner.create_time)?,
                email: emails.get(&owner.id).cloned(),
                id: owner.id,
            }),
            None => None,
        };
        let out = PostOut {
            created_at: rfc3339(UPSTREAM, post.create_time)?,
            owner,
            id: post.id,
            title: post.title,
            content: post.content,
            published: post
                .published
                .ok_or_else(|| HttpError::incomplete_answer(UPSTREAM, "published"))?,
            owner_id: post.owner_id,
        };
        Ok(PostWithVotes {
            post: out,
            votes: post.like_count,
        })
    }
}

impl Facade {
    /// The emails of the posts' owners, by owner id, when the facade shows them:
    /// those remembered, and the others from auth-service. Without auth-service
    /// the posts are still answered, their unremembered owners without an email.
    async fn owner_emails(
        &self,
        bearer: &Bearer,
        posts: &[posts::Post],
    ) -> HashMap<String, String> {
        if !self.show_emails {
            return HashMap::new();
        }
        let mut emails = HashMap::new();
        let mut unknown = Vec::new();
        {
            let remembered = self
                .owner_emails
                .lock()
                .expect("owner emails lock poisoned");
            for post in posts {
                match remembered.get(&post.owner_id) {
                    Some(email) => {
                        emails.insert(post.owner_id.clone(), email.clone());
                    }
                    None if !unknown.contains(&post.owner_id) => {
                        unknown.push(post.owner_id.clone())
                    }
                    None => {}
                }
            }
        }
        if unknown.is_empty() {
            return emails;
        }
        match self.users_with_emails(bearer, unknown).await {
            Ok(users) => {
                let mut remembered = self
                    .owner_emails
                    .lock()
                    .expect("owner emails lock poisoned");
                if remembered.len() >= super::MAX_REMEMBERED_EMAILS {
                    remembered.clear();
                }
                for user in users {
                    remembered.insert(user.id.clone(), user.email.clone());
                    emails.insert(user.id, user.email);
                }
            }
            Err(error) => {
                tracing::warn!(detail = %error.detail, "answering posts without some owner emails");
            }
        }
        emails
    }

    /// One post in the course's shape.
    async fn post_out(
        &self,
        bearer: &Bearer,
        post: Option<posts::Post>,
    ) -> Result<PostOut, HttpError> {
        let post = post.ok_or_else(|| HttpError::incomplete_answer(UPSTREAM, "a post"))?;
        let emails = self.owner_emails(bearer, std::slice::from_ref(&post)).await;
        PostOut::from_proto(post, &emails)
    }
}

/// The body of `POST /posts/` and `PUT /posts/{id}`. Other fields, such as an `id`
/// or `owner_id`, are ignored: the id comes from the path, the owner from the token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PostCreate {
    /// Trimmed; no control characters.
    #[schema(example = "Hello, Agora", min_length = 1, max_length = 200)]
    pub title: String,
    /// Trimmed; no control characters but newline and tab.
    #[schema(example = "My first post.", min_length = 1, max_length = 10000)]
    pub content: String,
    /// Whether others can see the post.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, default = true)]
    pub published: Option<bool>,
}

/// The body of `PATCH /posts/{id}`: the fields to change, at least one.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(min_properties = 1)]
pub struct PostPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 10000)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub published: Option<bool>,
}

/// The course's paging and search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct ListParams {
    /// How many posts to return (at most 100; 0 returns none).
    #[param(default = 10, minimum = 0)]
    pub limit: i32,
    /// How many posts to pass over first.
    #[param(default = 0, minimum = 0)]
    pub skip: i32,
    /// Only posts whose title contains this, ignoring case.
    #[param(default = "")]
    pub search: String,
}

impl Default for ListParams {
    fn default() -> Self {
        Self {
            limit: 10,
            skip: 0,
            search: String::new(),
        }
    }
}

fn upstream_error(status: tonic::Status) -> HttpError {
    HttpError::from_status(UPSTREAM, &status)
}

/// List published posts and your drafts, newest first, with like counts.
#[utoipa::path(
    get,
    path = "/posts/",
    operation_id = "list_posts",
    tag = "Posts",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of posts", body = [PostWithVotes]),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 422, description = "A negative limit or skip, or a search over 100 characters", body = ValidationErrorBody),
    ),
)]
pub async fn list(
    bearer: Bearer,
    State(facade): State<Facade>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<PostWithVotes>>, HttpError> {
    // The course's `limit=0` is an empty page; to the gRPC API 0 means the default.
    if params.limit == 0 {
        return Ok(Json(Vec::new()));
    }
    let request = posts::ListPostsRequest {
        page_size: params.limit,
        skip: params.skip,
        search: params.search,
        ..Default::default()
    };
    let response = read_once_more_if_unavailable(Deadline::none(), || {
        let mut posts = facade.upstreams.posts();
        let request = bearer.request(request.clone());
        async move { posts.list_posts(request).await }
    })
    .await
    .map_err(upstream_error)?;
    let posts = response.into_inner().posts;
    let emails = facade.owner_emails(&bearer, &posts).await;
    let page = posts
        .into_iter()
        .map(|post| PostOut::with_votes(post, &emails))
        .collect::<Result<_, _>>()?;
    Ok(Json(page))
}

/// Read one post with its like count.
#[utoipa::path(
    get,
    path = "/posts/{id}",
    operation_id = "get_post",
    tag = "Posts",
    params(("id" = String, Path, format = Uuid, description = "The post's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The post", body = PostWithVotes),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 404, description = "No such post, or another person's draft", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ValidationErrorBody),
    ),
)]
pub async fn get(
    bearer: Bearer,
    State(facade): State<Facade>,
    PathId(id): PathId,
) -> Result<Json<PostWithVotes>, HttpError> {
    let response = read_once_more_if_unavailable(Deadline::none(), || {
        let mut posts = facade.upstreams.posts();
        let request = bearer.request(posts::GetPostRequest { id: id.clone() });
        async move { posts.get_post(request).await }
    })
    .await
    .map_err(upstream_error)?;
    let post = response
        .into_inner()
        .post
        .ok_or_else(|| HttpError::incomplete_answer(UPSTREAM, "a post"))?;
    let emails = facade
        .owner_emails(&bearer, std::slice::from_ref(&post))
        .await;
    Ok(Json(PostOut::with_votes(post, &emails)?))
}

/// Write a post; you are its owner.
#[utoipa::path(
    post,
    path = "/posts/",
    operation_id = "create_post",
    tag = "Posts",
    request_body = PostCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = PostOut),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 422, description = "Malformed body, or an empty or too long title or content", body = ValidationErrorBody),
    ),
)]
pub async fn create(
    bearer: Bearer,
    State(facade): State<Facade>,
    JsonBody(body): JsonBody<PostCreate>,
) -> Result<(StatusCode, Json<PostOut>), HttpError> {
    let request = posts::CreatePostRequest {
        post: Some(posts::Post {
            title: body.title,
            content: body.content,
            published: body.published,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let response = facade
        .upstreams
        .posts()
        .create_post(bearer.request(request))
        .await
        .map_err(upstream_error)?;
    let post = facade.post_out(&bearer, response.into_inner().post).await?;
    Ok((StatusCode::CREATED, Json(post)))
}

/// Replace a post's title, content and visibility (published unless `false`).
#[utoipa::path(
    put,
    path = "/posts/{id}",
    operation_id = "replace_post",
    tag = "Posts",
    params(("id" = String, Path, format = Uuid, description = "The post's id")),
    request_body = PostCreate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The post as stored", body = PostOut),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not your post", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 422, description = "Malformed id or body, or an empty or too long title or content", body = ValidationErrorBody),
    ),
)]
pub async fn replace(
    bearer: Bearer,
    State(facade): State<Facade>,
    PathId(id): PathId,
    JsonBody(body): JsonBody<PostCreate>,
) -> Result<Json<PostOut>, HttpError> {
    // `*`: the service replaces the post, publishing it unless told otherwise.
    let request = posts::UpdatePostRequest {
        post: Some(posts::Post {
            id,
            title: body.title,
            content: body.content,
            published: body.published,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["*".to_owned()],
        }),
    };
    update(&facade, &bearer, request).await
}

/// Change only the fields given.
#[utoipa::path(
    patch,
    path = "/posts/{id}",
    operation_id = "update_post",
    tag = "Posts",
    params(("id" = String, Path, format = Uuid, description = "The post's id")),
    request_body = PostPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The post as stored", body = PostOut),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not your post", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 422, description = "Malformed id or body, no field given, or an empty or too long title or content", body = ValidationErrorBody),
    ),
)]
pub async fn patch(
    bearer: Bearer,
    State(facade): State<Facade>,
    PathId(id): PathId,
    JsonBody(body): JsonBody<PostPatch>,
) -> Result<Json<PostOut>, HttpError> {
    // The mask names exactly the fields present; an empty one is the service's to refuse.
    let paths = [
        ("title", body.title.is_some()),
        ("content", body.content.is_some()),
        ("published", body.published.is_some()),
    ]
    .into_iter()
    .filter(|(_, given)| *given)
    .map(|(path, _)| path.to_owned())
    .collect();
    let request = posts::UpdatePostRequest {
        post: Some(posts::Post {
            id,
            title: body.title.unwrap_or_default(),
            content: body.content.unwrap_or_default(),
            published: body.published,
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths }),
    };
    update(&facade, &bearer, request).await
}

async fn update(
    facade: &Facade,
    bearer: &Bearer,
    request: posts::UpdatePostRequest,
) -> Result<Json<PostOut>, HttpError> {
    let response = facade
        .upstreams
        .posts()
        .update_post(bearer.request(request))
        .await
        .map_err(upstream_error)?;
    let post = facade.post_out(bearer, response.into_inner().post).await?;
    Ok(Json(post))
}

/// Delete a post and its likes.
#[utoipa::path(
    delete,
    path = "/posts/{id}",
    operation_id = "delete_post",
    tag = "Posts",
    params(("id" = String, Path, format = Uuid, description = "The post's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not your post", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ValidationErrorBody),
    ),
)]
pub async fn delete(
    bearer: Bearer,
    State(facade): State<Facade>,
    PathId(id): PathId,
) -> Result<StatusCode, HttpError> {
    facade
        .upstreams
        .posts()
        .delete_post(bearer.request(posts::DeletePostRequest {
            id,
            etag: String::new(),
        }))
        .await
        .map_err(upstream_error)?;
    Ok(StatusCode::NO_CONTENT)
}
