//! The gateway's HTTP port as browsers and load balancers meet it: CORS on the
//! HTTP/JSON facade (and, from the same setting, on gRPC-Web and Connect), and health over
//! plain HTTP (`/livez`, `/readyz`).

use std::time::Duration;

use reqwest::{Client, Method, Response, StatusCode, header};
use serde_json::Value;
use sqlx::PgPool;
use system_tests::{Addresses, GatewayAddresses, spawn_system, spawn_system_at};

const ALLOWED: &str = "https://app.example";
const OTHER: &str = "https://evil.example";

fn header_of<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("an ASCII header"))
}

/// The comma-separated values of header `name`, lowercased.
fn list_of(response: &Response, name: &str) -> Vec<String> {
    header_of(response, name)
        .unwrap_or_default()
        .split(',')
        .map(|value| value.trim().to_ascii_lowercase())
        .filter(|value| !value.is_empty())
        .collect()
}

/// A browser's preflight for `method` with `headers` at `url`, from `origin`.
async fn preflight(url: &str, origin: &str, method: &str, headers: &str) -> Response {
    Client::new()
        .request(Method::OPTIONS, url)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .send()
        .await
        .expect("the gateway answers")
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn browsers_from_allowed_origins_may_call_the_facade_and_read_its_answers(pool: PgPool) {
    let system = spawn_system(pool).await;
    let GatewayAddresses { grpc, http } = system
        .spawn_gateway(|config| config.cors_allowed_origins = vec![ALLOWED.to_owned()])
        .await;
    let posts = format!("http://{http}/posts/");

    // Preflights of what a course front end sends.
    for method in ["GET", "POST", "PUT", "DELETE"] {
        let response = preflight(&posts, ALLOWED, method, "authorization,content-type").await;
        assert!(response.status().is_success(), "{method}: {response:?}");
        assert_eq!(
            header_of(&response, "access-control-allow-origin"),
            Some(ALLOWED),
            "{method}"
        );
        let methods = list_of(&response, "access-control-allow-methods");
        for expected in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
            assert!(
                methods.contains(&expected.to_ascii_lowercase()),
                "{method}: {expected} allowed in {methods:?}"
            );
        }
        let headers = list_of(&response, "access-control-allow-headers");
        for expected in ["authorization", "content-type"] {
            assert!(
                headers.contains(&expected.to_owned()),
                "{method}: {expected} in {headers:?}"
            );
        }
    }

    // The actual request: its answer (a 401 here) is readable, with the
    // headers a front end needs.
    let response = Client::new()
        .get(&posts)
        .header(header::ORIGIN, ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header_of(&response, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let exposed = list_of(&response, "access-control-expose-headers");
    for expected in ["retry-after", "www-authenticate"] {
        assert!(
            exposed.contains(&expected.to_owned()),
            "{expected} exposed in {exposed:?}"
        );
    }

    // Another origin gets no permission at all.
    let refused = preflight(&posts, OTHER, "POST", "authorization,content-type").await;
    assert_eq!(
        header_of(&refused, "access-control-allow-origin"),
        None,
        "a preflight from another origin"
    );
    let refused = Client::new()
        .get(&posts)
        .header(header::ORIGIN, OTHER)
        .send()
        .await
        .unwrap();
    let cors_headers: Vec<_> = refused
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert_eq!(
        cors_headers,
        Vec::<&header::HeaderName>::new(),
        "a call from another origin"
    );

    // gRPC-Web, from the same setting, keeps its own policy.
    let grpc_web = format!("http://{grpc}/agora.posts.v1.PostService/ListPosts");
    let response = preflight(&grpc_web, ALLOWED, "POST", "content-type,x-grpc-web").await;
    assert_eq!(
        header_of(&response, "access-control-allow-origin"),
        Some(ALLOWED),
        "gRPC-Web"
    );
    let headers = list_of(&response, "access-control-allow-headers");
    assert!(headers.contains(&"x-grpc-web".to_owned()), "{headers:?}");
    // Connect, as connect-web sends it.
    let response = preflight(
        &grpc_web,
        ALLOWED,
        "POST",
        "authorization,connect-protocol-version,connect-timeout-ms,content-type",
    )
    .await;
    assert_eq!(
        header_of(&response, "access-control-allow-origin"),
        Some(ALLOWED),
        "Connect"
    );
    let headers = list_of(&response, "access-control-allow-headers");
    for needed in [
        "connect-protocol-version",
        "connect-timeout-ms",
        "authorization",
    ] {
        assert!(
            headers.contains(&needed.to_owned()),
            "{needed}: {headers:?}"
        );
    }
    let refused = preflight(&grpc_web, OTHER, "POST", "content-type,x-grpc-web").await;
    assert_eq!(
        header_of(&refused, "access-control-allow-origin"),
        None,
        "gRPC-Web"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn any_origin_is_allowed_by_default(pool: PgPool) {
    let system = spawn_system(pool).await;
    let GatewayAddresses { http, .. } = system.spawn_gateway(|_| {}).await;

    let response = preflight(
        &format!("http://{http}/vote/"),
        OTHER,
        "POST",
        "content-type",
    )
    .await;

    assert_eq!(
        header_of(&response, "access-control-allow-origin"),
        Some("*")
    );
}

/// `/readyz`'s status and body once it answers `status`, or a panic naming what
/// it answered last. The gateway follows its upstreams every 5 seconds.
async fn readyz_once(http: std::net::SocketAddr, status: StatusCode) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = Client::new()
            .get(format!("http://{http}/readyz"))
            .send()
            .await
            .expect("the gateway answers");
        let answered = response.status();
        let body: Value = response.json().await.expect("a JSON body");
        if answered == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still answers {answered} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn readyz_says_whether_every_upstream_serves_and_livez_only_that_the_process_answers(
    pool: PgPool,
) {
    let system = spawn_system(pool.clone()).await;
    let GatewayAddresses { http, .. } = system.spawn_gateway(|_| {}).await;
    let live = || async {
        Client::new()
            .get(format!("http://{http}/livez"))
            .send()
            .await
            .expect("the gateway answers")
    };

    let response = live().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok");
    assert_eq!(readyz_once(http, StatusCode::OK).await["status"], "ok");

    // votes-service goes away: not ready, and it says which.
    let votes_address = system.votes.address;
    system.votes.stop().await;
    let body = readyz_once(http, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        body["not_serving"],
        serde_json::json!(["agora.votes.v1.VoteService"]),
        "{body}"
    );
    assert_eq!(live().await.status(), StatusCode::OK, "still alive");

    // And back, at the same address.
    let _again = spawn_system_at(
        pool,
        Addresses {
            votes: votes_address,
            ..Addresses::ephemeral()
        },
    )
    .await;
    readyz_once(http, StatusCode::OK).await;
}
