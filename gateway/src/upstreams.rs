//! The services behind the gateway: one reused HTTP/2 channel to each.

use agora_proto::{
    auth::v1::{auth_service_client::AuthServiceClient, user_service_client::UserServiceClient},
    posts::v1::post_service_client::PostServiceClient,
    votes::v1::vote_service_client::VoteServiceClient,
};
use tonic::transport::Channel;

/// Where each upstream service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrls {
    pub auth: String,
    pub posts: String,
    pub votes: String,
}

/// A channel to each upstream. Channels connect lazily, reconnect by themselves and
/// multiplex every call; cloning one is cheap and shares the connection.
#[derive(Clone)]
pub struct Upstreams {
    pub auth: Channel,
    pub posts: Channel,
    pub votes: Channel,
}

impl Upstreams {
    pub fn connect(urls: &UpstreamUrls) -> Result<Self, UpstreamError> {
        let channel = |service: &'static str, url: &str| {
            service_kit::client::lazy_channel(url).map_err(|source| UpstreamError {
                service,
                url: url.to_owned(),
                source,
            })
        };
        Ok(Self {
            auth: channel("auth-service", &urls.auth)?,
            posts: channel("posts-service", &urls.posts)?,
            votes: channel("votes-service", &urls.votes)?,
        })
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.auth.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.auth.clone())
    }

    pub fn posts(&self) -> PostServiceClient<Channel> {
        PostServiceClient::new(self.posts.clone())
    }

    pub fn votes(&self) -> VoteServiceClient<Channel> {
        VoteServiceClient::new(self.votes.clone())
    }
}

/// An upstream URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{service} URL {url:?} is not usable: {source}")]
pub struct UpstreamError {
    service: &'static str,
    url: String,
    source: tonic::transport::Error,
}
