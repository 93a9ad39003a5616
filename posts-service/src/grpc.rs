//! The gRPC adapter: unpack a request, validate it, call [`crate::posts`] or
//! [`crate::listing`], and describe the result with [`Neighbours`].

use access_token::caller;
use agora_proto::posts::v1::{self as proto, post_service_server::PostService};
use service_kit::{ApiError, error::both, fields::parse_id};
use sqlx::PgPool;
use tonic::{Request, Response, Status, metadata::AsciiMetadataValue};

use crate::{
    listing::{self, Query},
    neighbours::Neighbours,
    posts::{self, Changes},
};

pub struct PostApi {
    pub pool: PgPool,
    pub neighbours: Neighbours,
}

/// The caller's `authorization` metadata, to pass on to the neighbours.
fn authorization<T>(request: &Request<T>) -> Result<AsciiMetadataValue, Status> {
    request
        .metadata()
        .get("authorization")
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing access token"))
}

fn record(field: &str, value: impl std::fmt::Display) {
    tracing::Span::current().record(field, tracing::field::display(value));
}

#[tonic::async_trait]
impl PostService for PostApi {
    #[tracing::instrument(name = "PostService.CreatePost", skip_all, fields(user_id, post_id))]
    async fn create_post(
        &self,
        request: Request<proto::CreatePostRequest>,
    ) -> Result<Response<proto::CreatePostResponse>, Status> {
        let (caller, authorization) = (caller(&request)?, authorization(&request)?);
        record("user_id", caller.user_id);
        let request = request.into_inner();
        let (title, content) = both(
            posts::title(&request.title),
            posts::content(&request.content),
        )?;
        let row = posts::insert(
            &self.pool,
            caller.user_id,
            &title,
            &content,
            request.published.unwrap_or(true),
        )
        .await?;
        record("post_id", row.id);
        let post = self.neighbours.describe_one(row, &authorization).await?;
        Ok(Response::new(proto::CreatePostResponse {
            post: Some(post),
        }))
    }

    #[tracing::instrument(name = "PostService.GetPost", skip_all, fields(user_id, post_id))]
    async fn get_post(
        &self,
        request: Request<proto::GetPostRequest>,
    ) -> Result<Response<proto::GetPostResponse>, Status> {
        let (caller, authorization) = (caller(&request)?, authorization(&request)?);
        record("user_id", caller.user_id);
        let id = parse_id("id", &request.get_ref().id)?;
        record("post_id", id);
        let row = posts::find(&self.pool, id)
            .await?
            .filter(|row| row.visible_to(caller.user_id))
            .ok_or(ApiError::NotFound("post not found"))?;
        let post = self.neighbours.describe_one(row, &authorization).await?;
        Ok(Response::new(proto::GetPostResponse { post: Some(post) }))
    }

    #[tracing::instrument(name = "PostService.ListPosts", skip_all, fields(user_id, posts))]
    async fn list_posts(
        &self,
        request: Request<proto::ListPostsRequest>,
    ) -> Result<Response<proto::ListPostsResponse>, Status> {
        let (caller, authorization) = (caller(&request)?, authorization(&request)?);
        record("user_id", caller.user_id);
        let r = request.get_ref();
        let query = Query::parse(r.page_size, &r.page_token, r.skip, &r.search, &r.owner_id)?;
        let page = listing::list(&self.pool, caller.user_id, &query).await?;
        record("posts", page.posts.len());
        let posts = self.neighbours.describe(page.posts, &authorization).await?;
        Ok(Response::new(proto::ListPostsResponse {
            posts,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(name = "PostService.UpdatePost", skip_all, fields(user_id, post_id))]
    async fn update_post(
        &self,
        request: Request<proto::UpdatePostRequest>,
    ) -> Result<Response<proto::UpdatePostResponse>, Status> {
        let (caller, authorization) = (caller(&request)?, authorization(&request)?);
        record("user_id", caller.user_id);
        let request = request.into_inner();
        let id = parse_id("id", &request.id)?;
        record("post_id", id);
        let changes = changes(&request)?;
        let row = match posts::update_owned(&self.pool, id, caller.user_id, &changes).await? {
            Some(row) => row,
            None => {
                return Err(posts::why_not_owner(&self.pool, id, caller.user_id)
                    .await
                    .into());
            }
        };
        let post = self.neighbours.describe_one(row, &authorization).await?;
        Ok(Response::new(proto::UpdatePostResponse {
            post: Some(post),
        }))
    }

    #[tracing::instrument(name = "PostService.DeletePost", skip_all, fields(user_id, post_id))]
    async fn delete_post(
        &self,
        request: Request<proto::DeletePostRequest>,
    ) -> Result<Response<proto::DeletePostResponse>, Status> {
        let caller = caller(&request)?;
        record("user_id", caller.user_id);
        let id = parse_id("id", &request.get_ref().id)?;
        record("post_id", id);
        if !posts::delete_owned(&self.pool, id, caller.user_id).await? {
            return Err(posts::why_not_owner(&self.pool, id, caller.user_id)
                .await
                .into());
        }
        Ok(Response::new(proto::DeletePostResponse {}))
    }
}

/// What an update changes: without a mask, everything (PUT: title and content
/// required, `published` true when absent); with one, only the fields it names
/// (PATCH).
fn changes(request: &proto::UpdatePostRequest) -> Result<Changes, ApiError> {
    let Some(mask) = &request.update_mask else {
        let (title, content) = both(
            posts::title(&request.title),
            posts::content(&request.content),
        )?;
        return Ok(Changes {
            title: Some(title),
            content: Some(content),
            published: Some(request.published.unwrap_or(true)),
        });
    };
    if mask.paths.is_empty() {
        return Err(ApiError::invalid(
            "update_mask",
            "name at least one of title, content, published",
        ));
    }
    let mut changes = Changes::default();
    let mut violations = Vec::new();
    for path in &mask.paths {
        let outcome = match path.as_str() {
            "title" => posts::title(&request.title).map(|title| changes.title = Some(title)),
            "content" => {
                posts::content(&request.content).map(|content| changes.content = Some(content))
            }
            "published" => {
                changes.published = Some(request.published.unwrap_or(false));
                Ok(())
            }
            other => Err(ApiError::invalid(
                "update_mask",
                format!("unknown field {other:?}; use title, content or published"),
            )),
        };
        if let Err(ApiError::InvalidArgument(more)) = outcome {
            violations.extend(more);
        }
    }
    match violations.is_empty() {
        true => Ok(changes),
        false => Err(ApiError::InvalidArgument(violations)),
    }
}
