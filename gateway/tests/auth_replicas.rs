//! Two auth-service processes over one database share one count of failed
//! logins: guesses spread over the replicas are refused as soon as their sum
//! reaches the limit, at either replica.

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    errors::ErrorReason,
};
use system_tests::{
    assert_reason,
    process::{Process, ScratchDatabase, free_port, terminate_all},
};
use tonic::{Code, Status, transport::Channel};

const MAX_FAILURES: u32 = 4;
const PASSWORD: &str = "correct horse battery";

async fn login(channel: &Channel, password: &str) -> Result<(), Status> {
    AuthServiceClient::new(channel.clone())
        .login(LoginRequest {
            email: "replicated@example.com".into(),
            password: password.into(),
        })
        .await
        .map(drop)
}

#[tokio::test]
async fn failed_logins_spread_over_two_auth_service_replicas_share_one_count() {
    let database = ScratchDatabase::new();
    let mut replicas = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..2 {
        let address = format!("127.0.0.1:{}", free_port());
        let env = vec![
            ("DATABASE_URL", database.url.clone()),
            ("AUTH_LISTEN_ADDR", address.clone()),
            ("LOGIN_MAX_FAILURES", MAX_FAILURES.to_string()),
        ];
        replicas.push(Process::start("auth-service", &env).await);
        channels.push(
            Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect_lazy(),
        );
    }
    UserServiceClient::new(channels[0].clone())
        .create_user(CreateUserRequest {
            email: "replicated@example.com".into(),
            password: PASSWORD.into(),
            request_id: String::new(),
        })
        .await
        .expect("registered");

    // Half the allowance at each replica: neither alone reaches the limit.
    for attempt in 0..MAX_FAILURES as usize {
        let status = login(&channels[attempt % 2], "a wrong guess")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    for (replica, channel) in channels.iter().enumerate() {
        let refused = login(channel, PASSWORD).await.unwrap_err();
        assert_reason(
            &refused,
            ErrorReason::LoginThrottled,
            &format!("replica {replica}"),
        );
    }

    terminate_all(replicas).await;
    database.drop_now().await;
}
