//! The services behind the gateway: one reused HTTP/2 channel to each, spread over
//! its replicas.

use agora_proto::{
    auth::v1::{auth_service_client::AuthServiceClient, user_service_client::UserServiceClient},
    posts::v1::post_service_client::PostServiceClient,
    votes::v1::vote_service_client::VoteServiceClient,
};
use service_kit::client::{SettingError, Upstream};
use service_kit::hop::Hop;

/// Where each upstream service listens: each a URL, a comma-separated list of
/// them, or a URL whose host is a DNS name (see `service_kit::client`); with
/// `https://`, over TLS with the process's upstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrls {
    pub auth: String,
    pub posts: String,
    pub votes: String,
}

/// Each upstream's replicas behind one channel. Channels connect lazily, reconnect
/// by themselves, multiplex every call and send none to a replica that is down;
/// cloning one is cheap and shares the connections.
#[derive(Clone)]
pub struct Upstreams {
    pub auth: Upstream,
    pub posts: Upstream,
    pub votes: Upstream,
}

impl Upstreams {
    pub fn connect(urls: &UpstreamUrls) -> Result<Self, UpstreamError> {
        let upstream = |service: &'static str, url: &str| {
            service_kit::client::upstream(url).map_err(|source| UpstreamError { service, source })
        };
        Ok(Self {
            auth: upstream("auth-service", &urls.auth)?,
            posts: upstream("posts-service", &urls.posts)?,
            votes: upstream("votes-service", &urls.votes)?,
        })
    }

    pub fn users(&self) -> UserServiceClient<Hop> {
        UserServiceClient::new(self.auth.hop())
    }

    pub fn auth(&self) -> AuthServiceClient<Hop> {
        AuthServiceClient::new(self.auth.hop())
    }

    pub fn posts(&self) -> PostServiceClient<Hop> {
        PostServiceClient::new(self.posts.hop())
    }

    pub fn votes(&self) -> VoteServiceClient<Hop> {
        VoteServiceClient::new(self.votes.hop())
    }
}

/// An upstream setting, or the TLS files it needs, that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {source}")]
pub struct UpstreamError {
    service: &'static str,
    source: SettingError,
}
