//! Prometheus metrics from the real gateway binary: served at `METRICS_ADDR`,
//! apart from the API's ports, with calls by method and status (and the
//! facade's requests by route and status), the database
//! pool, the health of the services behind it, token verifications and password
//! hashing.

use system_tests::process::{ScratchDatabase, all_in_one_gateway, free_port};

/// The metrics page once `wanted` all appear in it (the pool and the upstreams
/// are sampled every few seconds), or the last one seen.
async fn metrics_with(url: &str, wanted: &[&str]) -> String {
    let mut page = String::new();
    for _ in 0..100 {
        page = reqwest::get(url)
            .await
            .expect("the metrics address answers")
            .text()
            .await
            .expect("a text page");
        if wanted.iter().all(|line| page.contains(line)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    page
}

#[tokio::test]
async fn the_gateway_serves_metrics_of_its_calls_pool_and_upstreams() {
    let database = ScratchDatabase::new();
    let metrics_port = free_port();
    let (gateway, grpc_port, http_port) = all_in_one_gateway(
        &database.url,
        vec![("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))],
    )
    .await;

    // Calls through the edge (Connect, so plain HTTP does): one with a token
    // that is no token, and a login of no one, which still hashes.
    let call = |method: &str, token: Option<&str>, body: &'static str| {
        let mut request = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{grpc_port}/{method}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let refused = call(
        "agora.posts.v1.PostService/GetPost",
        Some("x"),
        r#"{"id": "x"}"#,
    );
    assert_eq!(refused.await.unwrap().status(), 401);
    let login = call(
        "agora.auth.v1.AuthService/Login",
        None,
        r#"{"email": "nobody@example.com", "password": "correct horse battery"}"#,
    );
    assert_eq!(login.await.unwrap().status(), 401);

    // And one request to the facade, refused for its token.
    let facade = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http_port}/posts/x"))
        .bearer_auth("x")
        .send();
    assert_eq!(facade.await.unwrap().status(), 401);

    let wanted = [
        r#"http_requests_total{binary="gateway",method="GET",route="/posts/{id}",status="401"} 1"#,
        r#"http_request_duration_seconds_count{binary="gateway",method="GET",route="/posts/{id}"} 1"#,
        r#"rpc_calls_total{binary="gateway",role="edge",service="agora.posts.v1.PostService",method="GetPost",code="UNAUTHENTICATED"} 1"#,
        r#"rpc_duration_seconds_count{binary="gateway",role="edge",service="agora.posts.v1.PostService",method="GetPost"} 1"#,
        r#"db_pool_connections{binary="gateway",state="open"}"#,
        r#"db_pool_max_connections{binary="gateway"}"#,
        r#"db_pool_acquire_seconds_count{binary="gateway"}"#,
        r#"upstream_serving{binary="gateway",upstream="posts-service"} 1"#,
        r#"upstream_serving{binary="gateway",upstream="auth-service"} 1"#,
        r#"token_verifications_total{binary="gateway",outcome="TOKEN_MALFORMED"}"#,
        r#"rpc_calls_total{binary="gateway",role="edge",service="agora.auth.v1.AuthService",method="Login",code="UNAUTHENTICATED"} 1"#,
        // The edge's call to auth-service, as the caller counts it.
        r#"rpc_calls_total{binary="gateway",role="client",service="agora.auth.v1.AuthService",method="Login",code="UNAUTHENTICATED"} 1"#,
        r#"password_hash_seconds_count{binary="gateway"} 1"#,
        r#"password_hashes_admitted{binary="gateway"} 0"#,
    ];
    let page = metrics_with(&format!("http://127.0.0.1:{metrics_port}/metrics"), &wanted).await;
    gateway.terminate().await;
    database.drop_now().await;
    for line in wanted {
        assert!(page.contains(line), "{line} missing from:\n{page}");
    }
    assert!(
        page.contains("# TYPE rpc_duration_seconds histogram"),
        "latencies are a histogram:\n{page}"
    );
}
