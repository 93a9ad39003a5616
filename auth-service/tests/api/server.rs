//! What every Agora server offers: health, reflection, limits.

use agora_proto::auth::v1 as proto;
use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

use auth_service::Config;
use futures::stream::FuturesUnordered;

use crate::helpers::{PASSWORD, spawn_app, spawn_app_with};

fn channel(address: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy()
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn health_follows_the_database(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut health = HealthClient::new(channel(app.address));
    for service in ["", "agora.auth.v1.UserService", "agora.auth.v1.AuthService"] {
        let mut watch = health
            .watch(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    app.pool.close().await;

    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(
        next.status(),
        ServingStatus::NotServing,
        "health reports the lost database"
    );
}

/// The sorted service names that reflection version `$version` lists.
macro_rules! list_services {
    ($version:ident, $address:expr) => {{
        use $version::{
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = $version::ServerReflectionRequest {
            message_request: Some(MessageRequest::ListServices(String::new())),
            ..Default::default()
        };
        let mut client =
            $version::server_reflection_client::ServerReflectionClient::new(channel($address));
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap();
        let MessageResponse::ListServicesResponse(list) = answer else {
            panic!("not a service list: {answer:?}");
        };
        let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        names
    }};
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn reflection_lists_exactly_the_services_served(pool: PgPool) {
    let app = spawn_app(pool).await;
    let expected = vec![
        "agora.auth.v1.AuthService",
        "agora.auth.v1.UserService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];

    assert_eq!(list_services!(v1alpha, app.address), expected, "v1alpha");
    assert_eq!(list_services!(v1, app.address), expected, "v1");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn oversized_messages_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;

    let request = proto::CreateUserRequest {
        email: "big@example.com".to_owned(),
        password: "x".repeat(2 << 20),
        request_id: String::new(),
    };
    let status = app.users.clone().create_user(request).await.unwrap_err();

    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn shutdown_lets_calls_in_flight_finish(pool: PgPool) {
    // One hash at a time: the registrations queue up inside the server.
    let config = Config {
        auth: auth_service::AuthSettings {
            password_hashing_concurrency: 1,
            ..Default::default()
        },
        ..Config::ephemeral()
    };
    let app = spawn_app_with(pool, config).await;
    let mut registrations = FuturesUnordered::new();
    for i in 0..4 {
        let mut users = app.users.clone();
        let request = proto::CreateUserRequest {
            email: format!("user{i}@example.com"),
            password: PASSWORD.to_owned(),
            request_id: String::new(),
        };
        registrations.push(tokio::spawn(
            async move { users.create_user(request).await },
        ));
    }
    // When the first answer arrives, the other three were sent long ago and wait
    // for the hasher.
    registrations
        .next()
        .await
        .unwrap()
        .unwrap()
        .expect("the first registration");
    let pool = app.pool.clone();

    app.stop().await;

    while let Some(result) = registrations.next().await {
        result
            .unwrap()
            .expect("a call in flight at shutdown still completes");
    }
    let count: i64 = sqlx::query_scalar("select count(*) from auth.users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 4);
}
