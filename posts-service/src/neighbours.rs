//! Owners and like counts, from auth-service and votes-service: one batched call to
//! each per request, issued together, whatever the number of posts.

use std::collections::HashMap;

use agora_proto::{
    auth::v1::{BatchGetUsersRequest, UserProfile, user_service_client::UserServiceClient},
    posts::v1 as proto,
    votes::v1::{CountVotesRequest, PostVotes, vote_service_client::VoteServiceClient},
};
use service_kit::{
    ApiError,
    fields::{distinct, timestamp},
};
use tonic::{Code, Request, Status, metadata::AsciiMetadataValue, transport::Channel};
use uuid::Uuid;

use crate::posts::PostRow;

/// The services posts-service asks about each page.
#[derive(Clone)]
pub struct Neighbours {
    pub users: UserServiceClient<Channel>,
    pub votes: VoteServiceClient<Channel>,
}

impl Neighbours {
    /// The posts as readers see them. `authorization` is the caller's own token,
    /// passed on: the neighbours check it themselves, and likes are the caller's.
    pub async fn describe(
        &self,
        rows: Vec<PostRow>,
        authorization: &AsciiMetadataValue,
    ) -> Result<Vec<proto::Post>, ApiError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let owner_ids: Vec<Uuid> = rows.iter().map(|row| row.owner_id).collect();
        let owner_ids = distinct(&owner_ids).iter().map(Uuid::to_string).collect();
        let post_ids = rows.iter().map(|row| row.id.to_string()).collect();

        let mut users = self.users.clone();
        let mut votes = self.votes.clone();
        let (owners, counts) = tokio::try_join!(
            async {
                // An owner deleted meanwhile must not fail the page.
                let batch = BatchGetUsersRequest {
                    ids: owner_ids,
                    allow_missing: true,
                };
                let request = with_authorization(batch, authorization);
                users
                    .batch_get_users(request)
                    .await
                    .map_err(|status| unavailable("auth-service", status))
            },
            async {
                let request = with_authorization(CountVotesRequest { post_ids }, authorization);
                votes
                    .count_votes(request)
                    .await
                    .map_err(|status| unavailable("votes-service", status))
            },
        )?;
        // Only what anyone may see of a person: never the email.
        let owners: HashMap<String, UserProfile> = owners
            .into_inner()
            .users
            .into_iter()
            .map(|user| {
                let profile = UserProfile {
                    id: user.id.clone(),
                    create_time: user.create_time,
                };
                (user.id, profile)
            })
            .collect();
        let counts: HashMap<String, PostVotes> = counts
            .into_inner()
            .posts
            .into_iter()
            .map(|votes| (votes.post_id.clone(), votes))
            .collect();

        Ok(rows
            .into_iter()
            .map(|row| {
                let id = row.id.to_string();
                let owner_id = row.owner_id.to_string();
                let votes = counts.get(&id);
                proto::Post {
                    owner: owners.get(&owner_id).cloned(),
                    like_count: votes.map(|votes| votes.like_count),
                    liked_by_caller: votes.map(|votes| votes.liked_by_caller),
                    etag: row.etag(),
                    id,
                    owner_id,
                    title: row.title,
                    content: row.content,
                    published: Some(row.published),
                    create_time: Some(timestamp(row.create_time)),
                    update_time: Some(timestamp(row.update_time)),
                }
            })
            .collect())
    }

    pub async fn describe_one(
        &self,
        row: PostRow,
        authorization: &AsciiMetadataValue,
    ) -> Result<proto::Post, ApiError> {
        let mut posts = self.describe(vec![row], authorization).await?;
        Ok(posts.pop().expect("one row gives one post"))
    }
}

fn with_authorization<T>(message: T, authorization: &AsciiMetadataValue) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

/// A neighbour's failure, seen from posts-service's caller.
fn unavailable(what: &'static str, status: Status) -> ApiError {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Unknown => ApiError::Unavailable {
            what,
            source: Box::new(status),
        },
        _ => ApiError::internal(status),
    }
}
