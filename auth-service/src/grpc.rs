//! The gRPC adapters: unpack a request, call [`Accounts`], pack the answer.

use std::sync::Arc;

use access_token::{Revoked, TokenVerifier, caller, jwk_to_proto};
use agora_proto::auth::v1::{
    self as proto, auth_service_server::AuthService, user_service_server::UserService,
};
use service_kit::{
    ApiError,
    deadline::Deadline,
    fields::{parse_id, parse_ids, parse_request_id, timestamp},
};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    accounts::{Accounts, SessionTokens},
    keys::KeyRing,
    sessions::{Client, Session},
};

/// The client a call came from, as `Accounts::client` finds it.
fn client_address<T>(accounts: &Accounts, request: &Request<T>) -> Option<std::net::IpAddr> {
    let peer = request.remote_addr().map(|address| address.ip());
    accounts.client(peer, request.metadata())
}

/// The `user-agent` the client sent, if it is text.
fn user_agent(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
}

/// The parts of a login's or a refresh's answer.
struct Issued {
    user_id: String,
    access_token: String,
    expires_in: prost_types::Duration,
    expire_time: prost_types::Timestamp,
    session_id: String,
    refresh_token: String,
    refresh_token_expire_time: prost_types::Timestamp,
}

impl TryFrom<SessionTokens> for Issued {
    type Error = ApiError;

    fn try_from(tokens: SessionTokens) -> Result<Self, ApiError> {
        let SessionTokens {
            user_id,
            access,
            refresh_token,
            refresh_expires_at,
        } = tokens;
        Ok(Self {
            user_id: user_id.to_string(),
            access_token: access.token,
            expires_in: prost_types::Duration::try_from(access.expires_in)
                .map_err(ApiError::internal)?,
            expire_time: access.expires_at.into(),
            session_id: access.session_id.to_string(),
            refresh_token,
            refresh_token_expire_time: timestamp(refresh_expires_at),
        })
    }
}

fn session_to_proto(session: Session, current: Option<uuid::Uuid>) -> proto::Session {
    proto::Session {
        id: session.id.to_string(),
        create_time: Some(timestamp(session.create_time)),
        last_use_time: Some(timestamp(session.last_use_time)),
        expire_time: Some(timestamp(session.expire_time)),
        client: session.client().describe(),
        current: current == Some(session.id),
    }
}

pub struct UserApi {
    pub accounts: Accounts,
}

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(name = "UserService.CreateUser", skip_all, fields(user_id))]
    async fn create_user(
        &self,
        request: Request<proto::CreateUserRequest>,
    ) -> Result<Response<proto::CreateUserResponse>, Status> {
        let deadline = Deadline::of(request.metadata());
        let proto::CreateUserRequest {
            email,
            password,
            request_id,
        } = request.into_inner();
        let request_id = parse_request_id("request_id", &request_id)?;
        let user = self
            .accounts
            .register(&email, password, request_id, deadline)
            .await?;
        Ok(Response::new(proto::CreateUserResponse {
            user: Some(user.into()),
        }))
    }

    #[tracing::instrument(name = "UserService.GetUser", skip_all, fields(caller_id, user_id))]
    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::GetUserResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("caller_id", tracing::field::display(caller.user_id));
        let id = parse_id("id", &request.get_ref().id)?;
        tracing::Span::current().record("user_id", tracing::field::display(id));
        let user = self.accounts.user(id).await?;
        Ok(Response::new(proto::GetUserResponse {
            user: Some(user.seen_by(caller.user_id)),
        }))
    }

    #[tracing::instrument(name = "UserService.ChangePassword", skip_all, fields(user_id))]
    async fn change_password(
        &self,
        request: Request<proto::ChangePasswordRequest>,
    ) -> Result<Response<proto::ChangePasswordResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user_id));
        let deadline = Deadline::of(request.metadata());
        let client = client_address(&self.accounts, &request);
        let proto::ChangePasswordRequest {
            current_password,
            new_password,
        } = request.into_inner();
        let ended = self
            .accounts
            .change_password(caller, current_password, new_password, client, deadline)
            .await?;
        Ok(Response::new(proto::ChangePasswordResponse {
            ended_sessions: saturating_i32(ended),
        }))
    }

    #[tracing::instrument(name = "UserService.DeleteUser", skip_all, fields(user_id))]
    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Result<Response<proto::DeleteUserResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user_id));
        let deadline = Deadline::of(request.metadata());
        let client = client_address(&self.accounts, &request);
        let proto::DeleteUserRequest { id, password } = request.into_inner();
        self.accounts
            .delete_account(caller, &id, password, client, deadline)
            .await?;
        Ok(Response::new(proto::DeleteUserResponse {}))
    }

    #[tracing::instrument(name = "UserService.BatchGetUsers", skip_all)]
    async fn batch_get_users(
        &self,
        request: Request<proto::BatchGetUsersRequest>,
    ) -> Result<Response<proto::BatchGetUsersResponse>, Status> {
        caller(&request)?;
        let request = request.get_ref();
        let ids = parse_ids("ids", &request.ids)?;
        let users = self.accounts.users(&ids, request.allow_missing).await?;
        Ok(Response::new(proto::BatchGetUsersResponse {
            users: users.into_iter().map(Into::into).collect(),
        }))
    }
}

pub struct AuthApi {
    pub accounts: Accounts,
    pub keys: Arc<KeyRing>,
    pub verifier: Arc<TokenVerifier>,
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(name = "AuthService.Login", skip_all, fields(user_id))]
    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        let deadline = Deadline::of(request.metadata());
        let client = Client::new(
            user_agent(request.metadata()),
            client_address(&self.accounts, &request),
        );
        let proto::LoginRequest { email, password } = request.into_inner();
        let issued = Issued::try_from(
            self.accounts
                .login(&email, password, client, deadline)
                .await?,
        )?;
        Ok(Response::new(proto::LoginResponse {
            access_token: issued.access_token,
            token_type: "bearer".to_owned(),
            expires_in: Some(issued.expires_in),
            expire_time: Some(issued.expire_time),
            session_id: issued.session_id,
            refresh_token: issued.refresh_token,
            refresh_token_expire_time: Some(issued.refresh_token_expire_time),
            user_id: issued.user_id,
        }))
    }

    #[tracing::instrument(name = "AuthService.RefreshToken", skip_all, fields(user_id))]
    async fn refresh_token(
        &self,
        request: Request<proto::RefreshTokenRequest>,
    ) -> Result<Response<proto::RefreshTokenResponse>, Status> {
        let client = client_address(&self.accounts, &request);
        let issued = Issued::try_from(
            self.accounts
                .refresh(&request.get_ref().refresh_token, client)
                .await?,
        )?;
        Ok(Response::new(proto::RefreshTokenResponse {
            access_token: issued.access_token,
            token_type: "bearer".to_owned(),
            expires_in: Some(issued.expires_in),
            expire_time: Some(issued.expire_time),
            session_id: issued.session_id,
            refresh_token: issued.refresh_token,
            refresh_token_expire_time: Some(issued.refresh_token_expire_time),
            user_id: issued.user_id,
        }))
    }

    #[tracing::instrument(name = "AuthService.Logout", skip_all, fields(user_id))]
    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user_id));
        self.accounts.logout(caller).await?;
        Ok(Response::new(proto::LogoutResponse {}))
    }

    #[tracing::instrument(name = "AuthService.LogoutAll", skip_all, fields(user_id))]
    async fn logout_all(
        &self,
        request: Request<proto::LogoutAllRequest>,
    ) -> Result<Response<proto::LogoutAllResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user_id));
        let ended = self.accounts.logout_all(caller).await?;
        Ok(Response::new(proto::LogoutAllResponse {
            ended_sessions: saturating_i32(ended),
        }))
    }

    #[tracing::instrument(name = "AuthService.ListSessions", skip_all, fields(user_id))]
    async fn list_sessions(
        &self,
        request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user_id));
        let sessions = self.accounts.sessions(caller).await?;
        Ok(Response::new(proto::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|session| session_to_proto(session, caller.session_id))
                .collect(),
        }))
    }

    #[tracing::instrument(name = "AuthService.ListRevokedSessions", skip_all)]
    async fn list_revoked_sessions(
        &self,
        request: Request<proto::ListRevokedSessionsRequest>,
    ) -> Result<Response<proto::ListRevokedSessionsResponse>, Status> {
        let since = request
            .into_inner()
            .since
            .map(|since| {
                std::time::SystemTime::try_from(since)
                    .map(time::OffsetDateTime::from)
                    .map_err(|_| ApiError::invalid("since", "not a valid timestamp"))
            })
            .transpose()?;
        let Revoked { sessions, as_of } = self.accounts.revoked_sessions(since).await?;
        Ok(Response::new(proto::ListRevokedSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|(id, expire_time)| proto::RevokedSession {
                    id: id.to_string(),
                    expire_time: Some(expire_time.into()),
                })
                .collect(),
            as_of: Some(as_of.into()),
        }))
    }

    #[tracing::instrument(name = "AuthService.VerifyToken", skip_all, fields(user_id))]
    async fn verify_token(
        &self,
        request: Request<proto::VerifyTokenRequest>,
    ) -> Result<Response<proto::VerifyTokenResponse>, Status> {
        let token = request.get_ref().access_token.trim();
        if token.is_empty() {
            return Err(ApiError::invalid("access_token", "required").into());
        }
        let caller = self.verifier.verify(token).await?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user_id));
        let expire_time = prost_types::Timestamp {
            seconds: caller.expires_at as i64,
            nanos: 0,
        };
        Ok(Response::new(proto::VerifyTokenResponse {
            user_id: caller.user_id.to_string(),
            token_id: caller.token_id.to_string(),
            expire_time: Some(expire_time),
            session_id: caller
                .session_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "AuthService.GetJwks", skip_all)]
    async fn get_jwks(
        &self,
        _: Request<proto::GetJwksRequest>,
    ) -> Result<Response<proto::GetJwksResponse>, Status> {
        let keys = self
            .keys
            .current()
            .published(std::time::SystemTime::now())
            .keys
            .iter()
            .filter_map(jwk_to_proto)
            .collect();
        Ok(Response::new(proto::GetJwksResponse { keys }))
    }
}

/// A count for an `int32` field.
fn saturating_i32(count: u64) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}
