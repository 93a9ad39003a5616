//! Where a verifier learns which sessions have ended: auth-service over gRPC
//! (`AuthService/ListRevokedSessions`), or, inside auth-service, its own
//! database. A token of an ended session is refused (`TOKEN_REVOKED`) until it
//! would have expired anyway.

use std::{future::Future, pin::Pin, time::SystemTime};

use agora_proto::auth::v1::{self as proto, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::DEFAULT_MAX_LIFETIME;

/// Why the ended sessions could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("cannot fetch the ended sessions: {0}")]
pub struct RevocationSourceError(pub String);

/// Sessions that ended, as one fetch returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Each ended session, with when its last access token expires (after which
    /// it need not be remembered).
    pub sessions: Vec<(Uuid, SystemTime)>,
    /// What to ask from next time (`since`): it trails the source's clock, so
    /// that a session ended by a transaction still committing is not missed.
    pub as_of: SystemTime,
}

/// Supplies the sessions ended since a point in time (every one still relevant
/// when `since` is `None`). The same session may come more than once.
pub trait RevocationSource: Send + Sync + 'static {
    fn revoked_since(
        &self,
        since: Option<SystemTime>,
    ) -> Pin<Box<dyn Future<Output = Result<Revoked, RevocationSourceError>> + Send + '_>>;
}

/// The ended sessions that auth-service publishes through
/// `AuthService/ListRevokedSessions`; give it the channel [`crate::AuthServiceKeys`]
/// uses, so a verifier learns keys and revocations the same way.
pub struct AuthServiceRevocations {
    client: AuthServiceClient<Channel>,
}

impl AuthServiceRevocations {
    /// `channel` may be lazy: nothing is sent until the first fetch.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }
}

impl RevocationSource for AuthServiceRevocations {
    fn revoked_since(
        &self,
        since: Option<SystemTime>,
    ) -> Pin<Box<dyn Future<Output = Result<Revoked, RevocationSourceError>> + Send + '_>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let request = proto::ListRevokedSessionsRequest {
                since: since.map(Into::into),
            };
            let response = client
                .list_revoked_sessions(request)
                .await
                .map_err(|status| {
                    RevocationSourceError(format!("{:?}: {}", status.code(), status.message()))
                })?;
            revoked_from_proto(response.into_inner(), SystemTime::now())
        })
    }
}

/// The answer of `ListRevokedSessions`, read at `now`. A session id that is not
/// a UUID is skipped (no token naming it passes verification anyway); a session
/// without an expiry is remembered for the longest lifetime a token may have.
fn revoked_from_proto(
    response: proto::ListRevokedSessionsResponse,
    now: SystemTime,
) -> Result<Revoked, RevocationSourceError> {
    let as_of = response
        .as_of
        .ok_or_else(|| RevocationSourceError("an answer without as_of".to_owned()))?;
    let as_of = SystemTime::try_from(as_of)
        .map_err(|error| RevocationSourceError(format!("an invalid as_of: {error}")))?;
    let sessions = response
        .sessions
        .into_iter()
        .filter_map(|session| {
            let id = Uuid::parse_str(&session.id).ok()?;
            let expires = session
                .expire_time
                .and_then(|time| SystemTime::try_from(time).ok())
                .unwrap_or(now + DEFAULT_MAX_LIFETIME);
            Some((id, expires))
        })
        .collect();
    Ok(Revoked { sessions, as_of })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_answer_maps_to_sessions_and_as_of() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (ended, odd) = (Uuid::now_v7(), Uuid::now_v7());
        let expires = now + Duration::from_secs(900);
        let response = proto::ListRevokedSessionsResponse {
            sessions: vec![
                proto::RevokedSession {
                    id: ended.to_string(),
                    expire_time: Some(expires.into()),
                },
                proto::RevokedSession {
                    id: "not a uuid".to_owned(),
                    expire_time: Some(expires.into()),
                },
                proto::RevokedSession {
                    id: odd.to_string(),
                    expire_time: None,
                },
            ],
            as_of: Some((now - Duration::from_secs(5)).into()),
        };
        assert_eq!(
            revoked_from_proto(response, now).unwrap(),
            Revoked {
                sessions: vec![(ended, expires), (odd, now + DEFAULT_MAX_LIFETIME)],
                as_of: now - Duration::from_secs(5),
            },
            "the bad id skipped, the missing expiry the longest lifetime"
        );
    }

    #[test]
    fn an_answer_without_as_of_is_an_error() {
        let response = proto::ListRevokedSessionsResponse {
            sessions: vec![],
            as_of: None,
        };
        assert!(revoked_from_proto(response, SystemTime::now()).is_err());
    }
}
