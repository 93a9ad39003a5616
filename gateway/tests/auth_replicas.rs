//! The login throttle and the registration limit through the real binaries: a
//! gateway behind a trusted proxy (this test, on 127.0.0.1, sending
//! `x-forwarded-for`), two auth-service replicas over one database, and posts-
//! and votes-service. Failed logins are counted per client address and per
//! account across both replicas; the owner of an attacked email still logs in
//! from another address; registrations are limited per client address at the
//! gateway, over gRPC and HTTP alike.

use std::time::Duration;

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
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt as _;

const PASSWORD: &str = "correct horse battery";
const EMAIL: &str = "replicated@example.com";
/// Failed logins for one email before an address that failed is slowed.
const FREE_PER_ACCOUNT: u32 = 2;
/// Registrations per client address per hour.
const REGISTRATIONS: u32 = 2;
const ATTACKER: &str = "203.0.113.7";
const OWNER: &str = "198.51.100.20";

/// The split topology, with two auth-service replicas.
struct Deployment {
    processes: Vec<Process>,
    replicas: Vec<Channel>,
    edge: Channel,
    http: String,
    database: ScratchDatabase,
}

fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy()
}

impl Deployment {
    async fn start() -> Self {
        let database = ScratchDatabase::new();
        let db = || ("DATABASE_URL", database.url.clone());
        let mut processes = Vec::new();
        let mut replicas = Vec::new();
        let mut auth_urls = Vec::new();
        for _ in 0..2 {
            let address = loopback();
            let env = vec![
                db(),
                ("AUTH_LISTEN_ADDR", address.clone()),
                (
                    "LOGIN_FREE_FAILURES_PER_ACCOUNT",
                    FREE_PER_ACCOUNT.to_string(),
                ),
                // A delay that outlasts the test.
                ("LOGIN_DELAY_BASE_MS", "60000".to_owned()),
                // The gateway, on this host, is believed by default.
            ];
            processes.push(Process::start("auth-service", &env).await);
            replicas.push(channel(&address));
            auth_urls.push(format!("http://{address}"));
        }
        let auth_urls = auth_urls.join(",");
        let votes = loopback();
        let env = vec![
            db(),
            ("VOTES_LISTEN_ADDR", votes.clone()),
            ("AUTH_SERVICE_URL", auth_urls.clone()),
        ];
        processes.push(Process::start("votes-service", &env).await);
        let posts = loopback();
        let env = vec![
            db(),
            ("POSTS_LISTEN_ADDR", posts.clone()),
            ("AUTH_SERVICE_URL", auth_urls.clone()),
            ("VOTES_SERVICE_URL", format!("http://{votes}")),
        ];
        processes.push(Process::start("posts-service", &env).await);
        let (grpc, http) = (loopback(), loopback());
        let env = vec![
            ("GATEWAY_GRPC_ADDR", grpc.clone()),
            ("GATEWAY_HTTP_ADDR", http.clone()),
            ("AUTH_SERVICE_URL", auth_urls),
            ("POSTS_SERVICE_URL", format!("http://{posts}")),
            ("VOTES_SERVICE_URL", format!("http://{votes}")),
            ("TRUSTED_PROXIES", "127.0.0.1".to_owned()),
            (
                "REGISTRATIONS_PER_ADDRESS_PER_HOUR",
                REGISTRATIONS.to_string(),
            ),
        ];
        processes.push(Process::start("gateway", &env).await);
        Self {
            processes,
            replicas,
            edge: channel(&grpc),
            http: format!("http://{http}"),
            database,
        }
    }

    async fn stop(self) {
        // The gateway first, then what it calls.
        terminate_all(self.processes.into_iter().rev()).await;
        self.database.drop_now().await;
    }
}

/// `message` as the proxy forwards it for the client at `forwarded_for`.
fn from<T>(forwarded_for: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    request
}

async fn login(channel: &Channel, forwarded_for: &str, password: &str) -> Result<(), Status> {
    let request = LoginRequest {
        email: EMAIL.into(),
        password: password.into(),
    };
    AuthServiceClient::new(channel.clone())
        .login(from(forwarded_for, request))
        .await
        .map(drop)
}

async fn register(channel: &Channel, forwarded_for: &str, email: &str) -> Result<(), Status> {
    let request = CreateUserRequest {
        email: email.into(),
        password: PASSWORD.into(),
        request_id: String::new(),
    };
    UserServiceClient::new(channel.clone())
        .create_user(from(forwarded_for, request))
        .await
        .map(drop)
}

fn retry_delay(status: &Status, case: &str) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .unwrap_or_else(|| panic!("{case}: RetryInfo says when to try again: {status:?}"))
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a 429 says when to try again")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test]
async fn an_attacker_behind_the_proxy_is_throttled_across_replicas_and_the_owner_still_logs_in() {
    let deployment = Deployment::start().await;
    let edge = &deployment.edge;
    register(edge, OWNER, EMAIL).await.expect("registered");

    // Each guess goes to either replica; the count is shared.
    for guess in 1..=FREE_PER_ACCOUNT {
        let status = login(edge, ATTACKER, "a wrong guess").await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "guess {guess}: {status:?}"
        );
    }
    let refused = login(edge, ATTACKER, PASSWORD).await.unwrap_err();
    assert_reason(
        &refused,
        ErrorReason::LoginThrottled,
        "the attacker, at the edge",
    );
    assert!(retry_delay(&refused, "the edge") > Duration::from_secs(30));
    // Addresses the client wrote left of the one the proxy saw are its own
    // claims: the gateway takes the rightmost untrusted one.
    let spoofed = login(edge, &format!("{OWNER}, {ATTACKER}"), PASSWORD)
        .await
        .unwrap_err();
    assert_reason(
        &spoofed,
        ErrorReason::LoginThrottled,
        "a spoofed owner address",
    );
    for (replica, channel) in deployment.replicas.iter().enumerate() {
        let refused = login(channel, ATTACKER, PASSWORD).await.unwrap_err();
        assert_reason(
            &refused,
            ErrorReason::LoginThrottled,
            &format!("the attacker at replica {replica}"),
        );
    }
    let http = reqwest::Client::new();
    let form = format!("username={EMAIL}&password=correct+horse+battery");
    let post_login = |address: &str| {
        http.post(format!("{}/login", deployment.http))
            .header("x-forwarded-for", address)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
    };
    let response = post_login(ATTACKER).await.unwrap();
    assert_eq!(response.status(), 429, "the attacker over HTTP");
    assert!(retry_after(&response) > 30);

    login(edge, OWNER, PASSWORD)
        .await
        .expect("the owner, from an address that has not failed, over gRPC");
    let response = post_login(OWNER).await.unwrap();
    assert_eq!(response.status(), 200, "the owner over HTTP");

    deployment.stop().await;
}

#[tokio::test]
async fn registrations_over_the_limit_per_address_are_refused_at_the_gateway() {
    let deployment = Deployment::start().await;
    let edge = &deployment.edge;
    let crowd = "192.0.2.50";

    for n in 0..REGISTRATIONS {
        register(edge, crowd, &format!("user{n}@example.com"))
            .await
            .unwrap_or_else(|status| panic!("registration {n}: {status:?}"));
    }
    let refused = register(edge, crowd, "one-more@example.com")
        .await
        .unwrap_err();

    assert_reason(&refused, ErrorReason::RegistrationThrottled, "over gRPC");
    let wait = retry_delay(&refused, "over gRPC");
    assert!(
        wait > Duration::from_secs(25 * 60) && wait <= Duration::from_secs(30 * 60),
        "one registration back every half hour: {wait:?}"
    );
    let http = reqwest::Client::new();
    let post_user = |address: &str, email: &str| {
        http.post(format!("{}/users", deployment.http))
            .header("x-forwarded-for", address)
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
    };
    let response = post_user(crowd, "over-http@example.com").await.unwrap();
    assert_eq!(
        response.status(),
        429,
        "gRPC and HTTP count against one limit"
    );
    assert!(retry_after(&response) > 25 * 60);
    let response = post_user("192.0.2.51", "elsewhere@example.com")
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "another address registers");
    register(edge, "192.0.2.52", "grpc-elsewhere@example.com")
        .await
        .expect("another address registers over gRPC");

    deployment.stop().await;
}
