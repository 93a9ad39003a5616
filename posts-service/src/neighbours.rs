//! Owners and like counts, from auth-service and votes-service: one batched call to
//! each per request, issued together, whatever the number of posts.
//!
//! A neighbour that fails costs only what it would have added: the posts come
//! back without like counts, or without owners (except those remembered from
//! earlier answers), and those fields are absent, never made up. Each call gets
//! what is left of the caller's deadline and is retried once, after a short
//! random pause, when the neighbour was unavailable: both are reads.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use agora_proto::{
    auth::v1::{BatchGetUsersRequest, UserProfile, user_service_client::UserServiceClient},
    posts::v1 as proto,
    votes::v1::{CountVotesRequest, PostVotes, vote_service_client::VoteServiceClient},
};
use service_kit::hop::Hop;
use service_kit::{
    deadline::Deadline,
    fields::{distinct, timestamp},
    retry::read_once_more_if_unavailable,
};
use tonic::{Request, Response, Status, metadata::AsciiMetadataValue};
use uuid::Uuid;

use crate::posts::PostRow;

/// Owner profiles remembered, at most: enough for every author a busy instance
/// shows, small enough (about 100 bytes each) to never matter.
const MAX_REMEMBERED_OWNERS: usize = 10_000;

/// The services posts-service asks about each page.
#[derive(Clone)]
pub struct Neighbours {
    pub users: UserServiceClient<Hop>,
    pub votes: VoteServiceClient<Hop>,
    /// Profiles of owners seen lately. A profile (id and registration time) never
    /// changes, and a deleted user's posts go with them, so a remembered profile
    /// is never wrong: it stands in when auth-service cannot answer.
    pub owners: Arc<Mutex<HashMap<String, UserProfile>>>,
}

/// Who is asking and by when: what every call to a neighbour carries on.
pub struct Caller<'a> {
    /// The caller's own token, passed on: the neighbours check it themselves, and
    /// likes are the caller's.
    pub authorization: &'a AsciiMetadataValue,
    pub deadline: Deadline,
}

impl Neighbours {
    /// The posts as readers see them, with whatever the neighbours could tell.
    pub async fn describe(&self, rows: Vec<PostRow>, caller: &Caller<'_>) -> Vec<proto::Post> {
        if rows.is_empty() {
            return Vec::new();
        }
        let owner_ids: Vec<Uuid> = rows.iter().map(|row| row.owner_id).collect();
        let owner_ids: Vec<String> = distinct(&owner_ids).iter().map(Uuid::to_string).collect();
        let post_ids: Vec<String> = rows.iter().map(|row| row.id.to_string()).collect();

        let (owners, counts) = tokio::join!(
            self.owners(owner_ids, caller),
            read("votes-service", caller, || {
                let mut votes = self.votes.clone();
                let request = CountVotesRequest {
                    post_ids: post_ids.clone(),
                };
                let request = caller.request(request);
                async move { votes.count_votes(request).await }
            }),
        );
        let counts: HashMap<String, PostVotes> = counts
            .map(|counts| counts.into_inner().posts)
            .unwrap_or_default()
            .into_iter()
            .map(|votes| (votes.post_id.clone(), votes))
            .collect();

        rows.into_iter()
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
            .collect()
    }

    pub async fn describe_one(&self, row: PostRow, caller: &Caller<'_>) -> proto::Post {
        let mut posts = self.describe(vec![row], caller).await;
        posts.pop().expect("one row gives one post")
    }

    /// The public profiles of `ids`, from auth-service, or as remembered when it
    /// cannot answer.
    async fn owners(&self, ids: Vec<String>, caller: &Caller<'_>) -> HashMap<String, UserProfile> {
        let answer = read("auth-service", caller, || {
            let mut users = self.users.clone();
            // An owner deleted meanwhile must not fail the page.
            let request = caller.request(BatchGetUsersRequest {
                ids: ids.clone(),
                allow_missing: true,
            });
            async move { users.batch_get_users(request).await }
        })
        .await;
        let mut remembered = self.owners.lock().expect("owner cache lock poisoned");
        match answer {
            Ok(answer) => {
                if remembered.len() >= MAX_REMEMBERED_OWNERS {
                    remembered.clear();
                }
                // Only what anyone may see of a person: never the email.
                let profiles: HashMap<String, UserProfile> = answer
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
                remembered.extend(profiles.clone());
                profiles
            }
            Err(_) => ids
                .iter()
                .filter_map(|id| Some((id.clone(), remembered.get(id)?.clone())))
                .collect(),
        }
    }
}

impl Caller<'_> {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request.set_timeout(self.deadline.next_hop());
        request
    }
}

/// A read from a neighbour, tried once more if the neighbour was unavailable. A
/// failure is logged and returned; the caller leaves out what it would have
/// added.
async fn read<T, F, Fut>(
    neighbour: &'static str,
    caller: &Caller<'_>,
    call: F,
) -> Result<Response<T>, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Response<T>, Status>>,
{
    let outcome = read_once_more_if_unavailable(caller.deadline, call).await;
    if let Err(status) = &outcome {
        tracing::warn!(
            neighbour,
            code = ?status.code(),
            error = %status.message(),
            "neighbour failed; answering without what it adds"
        );
    }
    outcome
}
