//! The gRPC adapters: unpack a request, call [`Accounts`], pack the answer.

use std::sync::Arc;

use access_token::{TokenVerifier, caller, jwk_to_proto};
use agora_proto::auth::v1::{
    self as proto, auth_service_server::AuthService, user_service_server::UserService,
};
use service_kit::{
    ApiError,
    deadline::Deadline,
    fields::{parse_id, parse_ids, parse_request_id},
};
use tonic::{Request, Response, Status};

use crate::{accounts::Accounts, keys::KeyRing};

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
        let peer = request.remote_addr().map(|address| address.ip());
        let client = self.accounts.client(peer, request.metadata());
        let proto::LoginRequest { email, password } = request.into_inner();
        let issued = self
            .accounts
            .login(&email, password, client, deadline)
            .await?;
        let expires_in =
            prost_types::Duration::try_from(issued.expires_in).map_err(ApiError::internal)?;
        Ok(Response::new(proto::LoginResponse {
            access_token: issued.token,
            token_type: "bearer".to_owned(),
            expires_in: Some(expires_in),
            expire_time: Some(issued.expires_at.into()),
            session_id: issued.session_id.to_string(),
            refresh_token: String::new(),
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
