//! The gRPC adapter: unpack a request, count it against the caller's [`Quotas`],
//! call [`crate::votes`], pack the answer.

use access_token::caller;
use agora_proto::votes::v1::{self as proto, VoteDirection, vote_service_server::VoteService};
use service_kit::{
    ApiError,
    fields::{distinct, parse_id, parse_ids},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    quotas::Quotas,
    votes::{self, Direction},
};

pub struct VoteApi {
    pub pool: PgPool,
    pub quotas: Quotas,
}

#[tonic::async_trait]
impl VoteService for VoteApi {
    #[tracing::instrument(name = "VoteService.Vote", skip_all, fields(user_id, post_id))]
    async fn vote(
        &self,
        request: Request<proto::VoteRequest>,
    ) -> Result<Response<proto::VoteResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let post_id = parse_id("post_id", &request.post_id)?;
        let direction = match VoteDirection::try_from(request.direction) {
            Ok(VoteDirection::Add) => Direction::Add,
            Ok(VoteDirection::Remove) => Direction::Remove,
            Ok(VoteDirection::Unspecified) | Err(_) => {
                return Err(ApiError::invalid(
                    "direction",
                    "must be VOTE_DIRECTION_ADD or VOTE_DIRECTION_REMOVE",
                )
                .into());
            }
        };
        let span = tracing::Span::current();
        span.record("user_id", tracing::field::display(caller.user_id));
        span.record("post_id", tracing::field::display(post_id));
        self.quotas.vote(caller.user_id)?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let like_count = votes::vote(&mut conn, post_id, caller.user_id, direction).await?;
        Ok(Response::new(proto::VoteResponse { like_count }))
    }

    #[tracing::instrument(name = "VoteService.CountVotes", skip_all, fields(posts))]
    async fn count_votes(
        &self,
        request: Request<proto::CountVotesRequest>,
    ) -> Result<Response<proto::CountVotesResponse>, Status> {
        let caller = caller(&request)?;
        let post_ids = distinct(&parse_ids("post_ids", &request.get_ref().post_ids)?);
        tracing::Span::current().record("posts", post_ids.len());
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let counts = votes::count(&mut conn, &post_ids, caller.user_id).await?;
        let posts = counts
            .into_iter()
            .map(|votes| proto::PostVotes {
                post_id: votes.post_id.to_string(),
                like_count: votes.like_count,
                liked_by_caller: votes.liked_by_caller,
            })
            .collect();
        Ok(Response::new(proto::CountVotesResponse { posts }))
    }
}
