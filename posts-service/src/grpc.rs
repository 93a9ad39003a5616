//! The gRPC adapter: unpack a request, count it against the caller's [`Quotas`],
//! call [`crate::posts`] or [`crate::listing`], and describe the result with
//! [`Neighbours`].

use access_token::caller;
use agora_proto::posts::v1::{self as proto, post_service_server::PostService};
use service_kit::{
    ApiError,
    deadline::Deadline,
    fields::{parse_id, parse_request_id},
};
use sqlx::{PgPool, Postgres, pool::PoolConnection};
use tonic::{Request, Response, Status, metadata::AsciiMetadataValue};

use crate::{
    feed::{Feed, WatchStream},
    listing::{self, Query},
    neighbours::{Caller, Neighbours},
    posts::{self, Changes, NewPost, parse_etag},
    quotas::Quotas,
};

pub struct PostApi {
    pub pool: PgPool,
    pub neighbours: Neighbours,
    pub quotas: Quotas,
    pub feed: Feed,
}

impl PostApi {
    /// A connection for one request's statements, given back before the
    /// neighbours are asked.
    async fn connection(&self) -> Result<PoolConnection<Postgres>, ApiError> {
        Ok(self.pool.acquire().await?)
    }
}

/// The caller's `authorization` metadata, to pass on to the neighbours.
fn authorization<T>(request: &Request<T>) -> Result<AsciiMetadataValue, Status> {
    request
        .metadata()
        .get("authorization")
        .cloned()
        .ok_or_else(|| access_token::TokenError::Missing.into())
}

/// What the neighbours are told of the call: the caller's token and deadline.
fn neighbour_caller<'a, T>(
    request: &Request<T>,
    authorization: &'a AsciiMetadataValue,
) -> Caller<'a> {
    Caller {
        authorization,
        deadline: Deadline::of(request.metadata()),
    }
}

/// The request's `post`, which every method that takes one requires.
fn required_post(post: Option<proto::Post>) -> Result<proto::Post, ApiError> {
    post.ok_or_else(|| ApiError::invalid("post", "required"))
}

fn record(field: &str, value: impl std::fmt::Display) {
    tracing::Span::current().record(field, tracing::field::display(value));
}

#[tonic::async_trait]
impl PostService for PostApi {
    type WatchPostsStream = WatchStream;

    #[tracing::instrument(name = "PostService.WatchPosts", skip_all, fields(user_id))]
    async fn watch_posts(
        &self,
        request: Request<proto::WatchPostsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = caller(&request)?;
        record("user_id", caller.user_id);
        let headers = request.metadata().clone().into_headers();
        let token = access_token::bearer_token(&headers)?.to_owned();
        let r = request.get_ref();
        let filter = listing::parse_filter(&r.search, &r.owner_id)?;
        let stream = self.feed.watch(caller, token, &r.cursor, filter).await?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(name = "PostService.CreatePost", skip_all, fields(user_id, post_id))]
    async fn create_post(
        &self,
        request: Request<proto::CreatePostRequest>,
    ) -> Result<Response<proto::CreatePostResponse>, Status> {
        let (caller, authorization) = (caller(&request)?, authorization(&request)?);
        let neighbour = neighbour_caller(&request, &authorization);
        record("user_id", caller.user_id);
        let request = request.into_inner();
        let post = required_post(request.post)?;
        let request_id = parse_request_id("request_id", &request.request_id)?;
        let new = NewPost::parse(&post.title, &post.content, post.published)?;
        self.quotas.create_post(caller.user_id)?;
        let row = posts::create(
            &mut *self.connection().await?,
            caller.user_id,
            &new,
            request_id,
        )
        .await?;
        record("post_id", row.id);
        let post = self.neighbours.describe_one(row, &neighbour).await;
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
        let neighbour = neighbour_caller(&request, &authorization);
        record("user_id", caller.user_id);
        let id = parse_id("id", &request.get_ref().id)?;
        record("post_id", id);
        let row = posts::get(&mut *self.connection().await?, id, caller.user_id).await?;
        let post = self.neighbours.describe_one(row, &neighbour).await;
        Ok(Response::new(proto::GetPostResponse { post: Some(post) }))
    }

    #[tracing::instrument(name = "PostService.ListPosts", skip_all, fields(user_id, posts))]
    async fn list_posts(
        &self,
        request: Request<proto::ListPostsRequest>,
    ) -> Result<Response<proto::ListPostsResponse>, Status> {
        let (caller, authorization) = (caller(&request)?, authorization(&request)?);
        let neighbour = neighbour_caller(&request, &authorization);
        record("user_id", caller.user_id);
        let r = request.get_ref();
        let query = Query::parse(r.page_size, &r.page_token, r.skip, &r.search, &r.owner_id)?;
        self.quotas.list(caller.user_id, &query)?;
        let page = listing::list(&mut *self.connection().await?, caller.user_id, &query).await?;
        record("posts", page.posts.len());
        let posts = self.neighbours.describe(page.posts, &neighbour).await;
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
        let neighbour = neighbour_caller(&request, &authorization);
        record("user_id", caller.user_id);
        let request = request.into_inner();
        let post = required_post(request.post)?;
        let id = parse_id("post.id", &post.id)?;
        record("post_id", id);
        let revision = parse_etag("post.etag", &post.etag)?;
        let mask = request
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.as_slice());
        let changes = Changes::parse(&post.title, &post.content, post.published, mask)?;
        let row = posts::update(
            &mut *self.connection().await?,
            id,
            caller.user_id,
            revision,
            &changes,
        )
        .await?;
        let post = self.neighbours.describe_one(row, &neighbour).await;
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
        let request = request.get_ref();
        let id = parse_id("id", &request.id)?;
        record("post_id", id);
        let revision = parse_etag("etag", &request.etag)?;
        posts::delete(&mut *self.connection().await?, id, caller.user_id, revision).await?;
        Ok(Response::new(proto::DeletePostResponse {}))
    }
}
