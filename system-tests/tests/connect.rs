//! The Connect protocol at the gateway's gRPC port, spoken by hand over HTTP/1.1
//! as any HTTP client can: unary calls in JSON and binary, errors as HTTP
//! statuses with Connect's JSON, and streams of enveloped messages ending with
//! the call's status. The real clients (buf curl, connect-node) are driven in
//! `gateway/tests/connect_clients.rs`.

use agora_proto::posts::v1 as posts;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message as _;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use system_tests::{GatewayAddresses, PASSWORD, spawn_with_post};

/// A unary Connect call: its status, content type and body.
async fn unary(
    url: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("connect-protocol-version", "1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.expect("a body").to_vec();
    (status, content_type, body)
}

async fn unary_json(url: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    let (status, content_type, body) =
        unary(url, "application/json", &headers, body.to_owned()).await;
    assert_eq!(content_type, "application/json", "{url}");
    let json = serde_json::from_slice(&body).expect("a JSON body");
    (status, json)
}

/// The reason in a Connect error's `ErrorInfo`, as its `debug` shows it.
fn reason(error: &Value) -> &str {
    error["details"]
        .as_array()
        .and_then(|details| {
            details
                .iter()
                .find(|detail| detail["type"] == "google.rpc.ErrorInfo")
        })
        .and_then(|info| info["debug"]["reason"].as_str())
        .unwrap_or_else(|| panic!("an ErrorInfo in {error}"))
}

/// A message in Connect's envelope.
fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![flags];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The envelopes of a whole stream body: flags and message each.
fn envelopes(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut found = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "a cut envelope: {body:?}");
        let length = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        found.push((body[0], body[5..5 + length].to_vec()));
        body = &body[5 + length..];
    }
    found
}

/// The end-of-stream message of a finished stream, after its messages.
fn stream_end(body: &[u8]) -> (Vec<Vec<u8>>, Value) {
    let mut all = envelopes(body);
    let (flags, end) = all.pop().expect("an end-of-stream envelope");
    assert_eq!(flags, 0b10, "the last envelope ends the stream");
    assert!(all.iter().all(|(flags, _)| *flags == 0), "{all:?}");
    let end = serde_json::from_slice(&end).expect("the end is JSON");
    (all.into_iter().map(|(_, message)| message).collect(), end)
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn unary_calls_in_json_and_binary_answer_what_grpc_answers(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let GatewayAddresses { grpc, .. } = system.spawn_gateway(|_| {}).await;
    let get_post = format!("http://{grpc}/agora.posts.v1.PostService/GetPost");

    let (status, json) = unary_json(
        &get_post,
        Some(&alice.token),
        &json!({"id": post.id}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["post"]["title"], "Hello");
    assert_eq!(json["post"]["ownerId"], alice.id.as_str(), "lowerCamelCase");
    assert_eq!(json["post"]["likeCount"], "0", "int64 as a string");
    assert!(
        json["post"]["createTime"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z')),
        "a timestamp in RFC 3339: {json}"
    );

    // The same call in binary.
    let authorization = format!("Bearer {}", alice.token);
    let request = posts::GetPostRequest {
        id: post.id.clone(),
    };
    let (status, content_type, body) = unary(
        &get_post,
        "application/proto",
        &[("authorization", &authorization)],
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/proto")
    );
    let answer = posts::GetPostResponse::decode(body.as_slice()).expect("a GetPostResponse");
    assert_eq!(answer.post.expect("a post").title, "Hello");

    // A write, and a body that is empty (the empty message).
    let (status, json) = unary_json(
        &format!("http://{grpc}/agora.posts.v1.PostService/CreatePost"),
        Some(&alice.token),
        r#"{"post": {"title": "Over Connect", "content": "Hello"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["post"]["published"], true);
    let (status, json) = unary_json(
        &format!("http://{grpc}/agora.posts.v1.PostService/ListPosts"),
        Some(&alice.token),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["posts"].as_array().map(Vec::len), Some(2), "{json}");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn unary_errors_are_connect_errors_with_their_http_status(pool: PgPool) {
    let (system, alice, _) = spawn_with_post(pool).await;
    let GatewayAddresses { grpc, .. } = system.spawn_gateway(|_| {}).await;
    let url = |path: &str| format!("http://{grpc}/{path}");
    let get_post = url("agora.posts.v1.PostService/GetPost");
    let token = Some(alice.token.as_str());

    for (case, path, token, body, status, code, expected_reason) in [
        (
            "no token",
            "agora.posts.v1.PostService/GetPost",
            None,
            r#"{"id": "x"}"#,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "TOKEN_MISSING",
        ),
        (
            "an unknown post",
            "agora.posts.v1.PostService/GetPost",
            token,
            r#"{"id": "01900000-0000-7000-8000-000000000000"}"#,
            StatusCode::NOT_FOUND,
            "not_found",
            "POST_NOT_FOUND",
        ),
        (
            "a blank title",
            "agora.posts.v1.PostService/CreatePost",
            token,
            r#"{"post": {"title": " ", "content": "c"}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "INVALID_FIELDS",
        ),
        (
            "JSON cut short",
            "agora.posts.v1.PostService/GetPost",
            token,
            r#"{"id": "#,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "MALFORMED_REQUEST",
        ),
        (
            "a misspelt field",
            "agora.posts.v1.PostService/GetPost",
            token,
            r#"{"postId": "x"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "MALFORMED_REQUEST",
        ),
        (
            "an internal method",
            "agora.auth.v1.UserService/BatchGetUsers",
            token,
            "{}",
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
            "METHOD_NOT_FOUND",
        ),
        (
            "no such method",
            "agora.posts.v1.PostService/Nope",
            token,
            "{}",
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
            "METHOD_NOT_FOUND",
        ),
        (
            "a stream called as unary",
            "grpc.health.v1.Health/Watch",
            None,
            "{}",
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "MALFORMED_REQUEST",
        ),
    ] {
        let (got, error) = unary_json(&url(path), token, body).await;
        assert_eq!(got, status, "{case}: {error}");
        assert_eq!(error["code"], code, "{case}: {error}");
        assert_eq!(reason(&error), expected_reason, "{case}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: a message"
        );
    }
    let (_, error) = unary_json(&get_post, token, r#"{"postId": "x"}"#).await;
    assert!(
        error["message"].as_str().unwrap().contains("postId"),
        "the misspelt field is named: {error}"
    );

    // What the protocol itself refuses.
    let authorization = format!("Bearer {}", alice.token);
    for (case, headers) in [
        ("a compressed body", vec![("content-encoding", "gzip")]),
        (
            "a deadline that is no number",
            vec![("connect-timeout-ms", "soon")],
        ),
        (
            "a deadline of 11 digits",
            vec![("connect-timeout-ms", "12345678901")],
        ),
    ] {
        let mut headers = headers;
        headers.push(("authorization", &authorization));
        let (status, _, body) = unary(&get_post, "application/json", &headers, "{}").await;
        let error: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {error}");
        assert_eq!(reason(&error), "MALFORMED_REQUEST", "{case}");
    }
    let response = Client::new()
        .post(&get_post)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let accepted = response.headers()["accept-post"].to_str().unwrap();
    assert!(accepted.contains("application/json"), "{accepted}");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn streams_carry_enveloped_messages_and_end_with_the_status(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let GatewayAddresses { grpc, .. } = system.spawn_gateway(|_| {}).await;
    let url = |path: &str| format!("http://{grpc}/{path}");
    let authorization = format!("Bearer {}", alice.token);
    let stream = |path: &str, content_type: &'static str, body: Vec<u8>| {
        Client::new()
            .post(url(path))
            .header("content-type", content_type)
            .header("authorization", &authorization)
            .body(body)
            .send()
    };

    // A unary method as a stream, in binary: one message, then the end.
    let request = posts::GetPostRequest {
        id: post.id.clone(),
    };
    let response = stream(
        "agora.posts.v1.PostService/GetPost",
        "application/connect+proto",
        envelope(0, &request.encode_to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+proto"
    );
    let (messages, end) = stream_end(&response.bytes().await.unwrap());
    assert_eq!(messages.len(), 1);
    let answer = posts::GetPostResponse::decode(messages[0].as_slice()).unwrap();
    assert_eq!(answer.post.unwrap().id, post.id);
    assert!(end.get("error").is_none(), "{end}");

    // An error ends the stream, still with HTTP 200.
    let unknown = json!({"id": "01900000-0000-7000-8000-000000000000"}).to_string();
    let response = stream(
        "agora.posts.v1.PostService/GetPost",
        "application/connect+json",
        envelope(0, unknown.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (messages, end) = stream_end(&response.bytes().await.unwrap());
    assert!(messages.is_empty());
    assert_eq!(end["error"]["code"], "not_found", "{end}");
    assert_eq!(reason(&end["error"]), "POST_NOT_FOUND");

    // A request message that is not JSON for its type.
    let response = stream(
        "agora.posts.v1.PostService/GetPost",
        "application/connect+json",
        envelope(0, b"{\"id\": 7}"),
    )
    .await
    .unwrap();
    let (_, end) = stream_end(&response.bytes().await.unwrap());
    assert_eq!(reason(&end["error"]), "MALFORMED_REQUEST", "{end}");

    // Reflection's bidirectional stream, in JSON.
    let response = stream(
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "application/connect+json",
        envelope(0, br#"{"listServices": ""}"#),
    )
    .await
    .unwrap();
    let (messages, end) = stream_end(&response.bytes().await.unwrap());
    assert!(end.get("error").is_none(), "{end}");
    let listed: Value = serde_json::from_slice(&messages[0]).unwrap();
    let services: Vec<&str> = listed["listServicesResponse"]["service"]
        .as_array()
        .expect("a service list")
        .iter()
        .filter_map(|service| service["name"].as_str())
        .collect();
    assert!(
        services.contains(&"agora.posts.v1.PostService"),
        "{services:?}"
    );

    // A server stream: health's Watch sends the status, then waits for changes.
    let mut response = stream(
        "grpc.health.v1.Health/Watch",
        "application/connect+json",
        envelope(0, br#"{"service": ""}"#),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = Vec::new();
    while received.len() < 5
        || received.len() < 5 + received[1..5].iter().fold(0, |n, b| n * 256 + *b as usize)
    {
        let chunk = response.chunk().await.unwrap().expect("the first message");
        received.extend_from_slice(&chunk);
    }
    let (flags, message) = envelopes(&received).remove(0);
    assert_eq!(flags, 0);
    let status: Value = serde_json::from_slice(&message).unwrap();
    assert_eq!(status, json!({"status": "SERVING"}));
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn logins_over_connect_are_counted_per_client_address(pool: PgPool) {
    let (system, alice, _) = spawn_with_post(pool).await;
    let GatewayAddresses { grpc, .. } = system
        .spawn_gateway(|config| {
            config.trusted_proxies = service_kit::client_address::TrustedNetworks::loopback();
        })
        .await;
    let login = format!("http://{grpc}/agora.auth.v1.AuthService/Login");
    let attempt = |password: &'static str, client: &'static str| {
        let body = json!({"email": alice.email, "password": password}).to_string();
        let login = login.clone();
        async move {
            let (status, _, body) = unary(
                &login,
                "application/json",
                &[("x-forwarded-for", client)],
                body,
            )
            .await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };

    // An attacker's address fails until it is slowed down...
    let mut throttled = false;
    for _ in 0..10 {
        let (status, error) = attempt("wrong password", "203.0.113.9").await;
        if reason(&error) == "LOGIN_THROTTLED" {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            throttled = true;
            break;
        }
        assert_eq!(reason(&error), "INVALID_CREDENTIALS", "{error}");
    }
    assert!(throttled, "failed logins from one address are throttled");
    // ...while the owner, from another address, still logs in: the address
    // reached auth-service.
    let (status, answer) = attempt(PASSWORD, "198.51.100.4").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn reads_may_be_sent_as_get_and_writes_may_not(pool: PgPool) {
    let (system, alice, post) = spawn_with_post(pool).await;
    let GatewayAddresses { grpc, .. } = system.spawn_gateway(|_| {}).await;
    let authorization = format!("Bearer {}", alice.token);
    let get = |path: &str, query: Vec<(&str, String)>| {
        let mut url = url::Url::parse(&format!("http://{grpc}/{path}")).expect("a URL");
        url.query_pairs_mut().extend_pairs(query);
        Client::new()
            .get(url)
            .header("authorization", &authorization)
            .send()
    };

    let response = get(
        "agora.posts.v1.PostService/GetPost",
        vec![
            ("connect", "v1".into()),
            ("encoding", "json".into()),
            ("message", json!({"id": post.id}).to_string()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["post"]["id"], post.id.as_str());

    // Binary, in URL-safe base64 without padding.
    let request = posts::ListPostsRequest {
        page_size: 1,
        ..Default::default()
    };
    // URL-safe base64 without padding, as connect-es writes it.
    let encoded = URL_SAFE_NO_PAD.encode(request.encode_to_vec());
    let response = get(
        "agora.posts.v1.PostService/ListPosts",
        vec![
            ("encoding", "proto".into()),
            ("base64", "1".into()),
            ("message", encoded),
        ],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = posts::ListPostsResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(page.posts.len(), 1);

    // A write is no GET; an unknown method is what a POST of it would be.
    let response = get(
        "agora.posts.v1.PostService/DeletePost",
        vec![
            ("encoding", "json".into()),
            ("message", json!({"id": post.id}).to_string()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    let still_there = system.get_post(&alice, &post.id).await;
    assert!(still_there.is_ok(), "the refused GET deleted nothing");
    let response = get(
        "agora.posts.v1.PostService/Nope",
        vec![("encoding", "json".into())],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    let error: Value = response.json().await.unwrap();
    assert_eq!(reason(&error), "METHOD_NOT_FOUND");
}
