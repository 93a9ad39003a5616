//! Starts auth-service on a free port and talks to it like any client.

use std::net::SocketAddr;

use agora_proto::auth::v1::{
    self as proto, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
};
use auth_service::Config;
use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
use jsonwebtoken::EncodingKey;
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, transport::Channel};

pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub address: SocketAddr,
    pub users: UserServiceClient<Channel>,
    pub auth: AuthServiceClient<Channel>,
    pub pool: PgPool,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, Config::ephemeral()).await
}

pub async fn spawn_app_with(pool: PgPool, config: Config) -> TestApp {
    service_kit::telemetry::init_for_tests();
    let server = service_kit::service::build_with_pool(&config, pool.clone())
        .await
        .expect("auth-service builds");
    let address = server.local_addr();
    let (shutdown, stopped) = oneshot::channel();
    let server = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    TestApp {
        address,
        users: UserServiceClient::new(channel.clone()),
        auth: AuthServiceClient::new(channel),
        pool,
        shutdown,
        server,
    }
}

impl TestApp {
    /// Stops the server gracefully and waits until it has.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.server
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }

    pub async fn create_user(&self, email: &str, password: &str) -> Result<proto::User, Status> {
        let request = proto::CreateUserRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            request_id: String::new(),
        };
        let response = self.users.clone().create_user(request).await?;
        Ok(response.into_inner().user.expect("a created user"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<proto::LoginResponse, Status> {
        let request = proto::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        Ok(self.auth.clone().login(request).await?.into_inner())
    }

    /// A login on behalf of the client at `address`, as the gateway sends it
    /// (`x-forwarded-for`); believed when this test's address, loopback, is
    /// among TRUSTED_CALLERS, as it is by default.
    pub async fn login_from(
        &self,
        address: &str,
        email: &str,
        password: &str,
    ) -> Result<proto::LoginResponse, Status> {
        let mut request = Request::new(proto::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        });
        let address = address.parse().expect("an address is valid metadata");
        request.metadata_mut().insert("x-forwarded-for", address);
        Ok(self.auth.clone().login(request).await?.into_inner())
    }

    /// A new user and an access token for them.
    pub async fn signed_in_user(&self, email: &str) -> (proto::User, String) {
        let user = self
            .create_user(email, PASSWORD)
            .await
            .expect("registration succeeds");
        let token = self
            .login(email, PASSWORD)
            .await
            .expect("login succeeds")
            .access_token;
        (user, token)
    }

    pub async fn get_user(&self, id: &str, token: Option<&str>) -> Result<proto::User, Status> {
        let request = authorized(proto::GetUserRequest { id: id.to_owned() }, token);
        Ok(self
            .users
            .clone()
            .get_user(request)
            .await?
            .into_inner()
            .user
            .expect("a user"))
    }
}

/// Sessions and the calls that end them.
impl TestApp {
    pub async fn refresh(
        &self,
        refresh_token: &str,
    ) -> Result<proto::RefreshTokenResponse, Status> {
        self.refresh_from(None, refresh_token).await
    }

    /// A refresh on behalf of the client at `address`, as [`TestApp::login_from`].
    pub async fn refresh_from(
        &self,
        address: Option<&str>,
        refresh_token: &str,
    ) -> Result<proto::RefreshTokenResponse, Status> {
        let mut request = Request::new(proto::RefreshTokenRequest {
            refresh_token: refresh_token.to_owned(),
        });
        if let Some(address) = address {
            let address = address.parse().expect("an address is valid metadata");
            request.metadata_mut().insert("x-forwarded-for", address);
        }
        Ok(self.auth.clone().refresh_token(request).await?.into_inner())
    }

    /// Whose `access_token` is, as VerifyToken says.
    pub async fn verify(&self, access_token: &str) -> Result<proto::VerifyTokenResponse, Status> {
        let request = proto::VerifyTokenRequest {
            access_token: access_token.to_owned(),
        };
        Ok(self.auth.clone().verify_token(request).await?.into_inner())
    }

    /// Waits (at most 10 s) until VerifyToken refuses `access_token`, and
    /// returns the refusal.
    pub async fn refused_soon(&self, access_token: &str) -> Status {
        let started = std::time::Instant::now();
        loop {
            match self.verify(access_token).await {
                Err(status) => return status,
                Ok(_) if started.elapsed() > std::time::Duration::from_secs(10) => {
                    panic!("the token is still accepted after 10 s")
                }
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn list_sessions(&self, access_token: &str) -> Result<Vec<proto::Session>, Status> {
        let request = authorized(proto::ListSessionsRequest {}, Some(access_token));
        Ok(self
            .auth
            .clone()
            .list_sessions(request)
            .await?
            .into_inner()
            .sessions)
    }

    pub async fn logout(&self, access_token: &str) -> Result<(), Status> {
        let request = authorized(proto::LogoutRequest {}, Some(access_token));
        self.auth.clone().logout(request).await?;
        Ok(())
    }

    pub async fn logout_all(&self, access_token: &str) -> Result<i32, Status> {
        let request = authorized(proto::LogoutAllRequest {}, Some(access_token));
        Ok(self
            .auth
            .clone()
            .logout_all(request)
            .await?
            .into_inner()
            .ended_sessions)
    }

    pub async fn revoked_sessions(
        &self,
        since: Option<prost_types::Timestamp>,
    ) -> proto::ListRevokedSessionsResponse {
        self.auth
            .clone()
            .list_revoked_sessions(proto::ListRevokedSessionsRequest { since })
            .await
            .expect("ListRevokedSessions answers")
            .into_inner()
    }

    pub async fn change_password(
        &self,
        access_token: &str,
        current_password: &str,
        new_password: &str,
    ) -> Result<i32, Status> {
        let request = authorized(
            proto::ChangePasswordRequest {
                current_password: current_password.to_owned(),
                new_password: new_password.to_owned(),
            },
            Some(access_token),
        );
        Ok(self
            .users
            .clone()
            .change_password(request)
            .await?
            .into_inner()
            .ended_sessions)
    }

    pub async fn delete_user(
        &self,
        access_token: &str,
        id: &str,
        password: &str,
    ) -> Result<(), Status> {
        let request = authorized(
            proto::DeleteUserRequest {
                id: id.to_owned(),
                password: password.to_owned(),
            },
            Some(access_token),
        );
        self.users.clone().delete_user(request).await?;
        Ok(())
    }
}

impl TestApp {
    /// The published public keys.
    pub async fn jwks(&self) -> Vec<proto::Jwk> {
        self.auth
            .clone()
            .get_jwks(proto::GetJwksRequest {})
            .await
            .unwrap()
            .into_inner()
            .keys
    }
}

/// A fresh Ed25519 key that auth-service has never seen.
pub fn foreign_signing_key() -> EncodingKey {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let der = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_der()
    .unwrap();
    EncodingKey::from_ed_der(der.as_bytes())
}

/// `message` with `authorization: Bearer <token>` metadata, when a token is given.
pub fn authorized<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .expect("a token is valid metadata");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub use system_tests::{assert_bad_request, assert_reason};
