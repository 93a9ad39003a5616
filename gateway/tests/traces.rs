//! Traces across the four binaries of the split topology: one HTTP request to
//! the facade (or one gRPC call to the edge) is one trace, with spans from the
//! gateway, posts-, auth- and votes-service and their SQL statements, exported
//! over OTLP to a collector; and the trace id in the JSON log lines.

use std::collections::HashSet;

use agora_proto::posts::v1::{GetPostRequest, post_service_client::PostServiceClient};
use serde_json::{Value, json};
use system_tests::{
    PASSWORD,
    otlp::{Collector, ReceivedSpan},
    process::{Process, ScratchDatabase, Topology, run, terminate_all},
};

const SERVICES: [&str; 4] = ["gateway", "posts-service", "auth-service", "votes-service"];

/// A W3C `traceparent` of a sampled trace of the caller's.
fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// Whether every service has sent its part of a GetPost: the edge's span and
/// each service's server span, with the statements they ran.
fn complete(spans: &[ReceivedSpan]) -> bool {
    SERVICES.iter().all(|service| {
        spans
            .iter()
            .any(|span| span.service == *service && span.kind == SERVER)
    }) && ["posts-service", "auth-service", "votes-service"]
        .iter()
        .all(|service| {
            spans
                .iter()
                .any(|span| span.service == *service && is_sql(span))
        })
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn is_sql(span: &ReceivedSpan) -> bool {
    span.attribute("db.system.name") == Some("postgresql")
}

/// One tree: every span's parent is in the trace, except the root's, which is
/// `root_parent` (the caller's span, or none).
fn assert_one_tree(spans: &[ReceivedSpan], root_parent: &str) {
    let ids: HashSet<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| !ids.contains(span.parent_span_id.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(roots[0].parent_span_id, root_parent, "{roots:#?}");
    assert_eq!(roots[0].service, "gateway", "{roots:#?}");
}

#[tokio::test]
async fn one_request_is_one_trace_across_the_four_binaries() {
    let collector = Collector::start().await;
    let database = ScratchDatabase::new();
    let topology = Topology::<1>::new(&database.url)
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .with("OTEL_BSP_SCHEDULE_DELAY", "100")
        .with("LOG_FORMAT", "json");
    let auth = Process::start("auth-service", &topology.auth_env()).await;
    let votes = Process::start("votes-service", &topology.votes_env()).await;
    let posts = Process::start("posts-service", &topology.posts_env(0)).await;
    let gateway = Process::start_keeping_default_log("gateway", &topology.gateway_env()).await;

    // Someone with a liked post, through the facade.
    let http = reqwest::Client::new();
    let facade = topology.http_url();
    let email = "alice@example.com";
    let signed_up = http
        .post(format!("{facade}/users"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 201);
    let token: Value = http
        .post(format!("{facade}/login"))
        .form(&[("username", email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let post: Value = http
        .post(format!("{facade}/posts"))
        .bearer_auth(&token)
        .json(&json!({"title": "traced", "content": "through every service"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let post_id = post["id"].as_str().unwrap().to_owned();
    let liked = http
        .post(format!("{facade}/vote"))
        .bearer_auth(&token)
        .json(&json!({"post_id": post_id, "dir": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(liked.status(), 201);

    // GET /posts/{id}: the gateway asks posts-service, which asks auth-service
    // for the owner and votes-service for the likes.
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let read = http
        .get(format!("{facade}/posts/{post_id}"))
        .bearer_auth(&token)
        .header("traceparent", traceparent(trace_id, caller_span))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let spans = collector.trace(trace_id, complete).await;
    assert_one_tree(&spans, caller_span);
    let root = spans
        .iter()
        .find(|span| span.parent_span_id == caller_span)
        .unwrap();
    assert_eq!(root.name, "GET /posts/{id}");
    assert_eq!(root.attribute("http.response.status_code"), Some("200"));
    for method in [
        "agora.posts.v1.PostService/GetPost",
        "agora.auth.v1.UserService/BatchGetUsers",
        "agora.votes.v1.VoteService/CountVotes",
    ] {
        let served: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|span| span.name == method && span.kind == SERVER)
            .collect();
        assert!(!served.is_empty(), "{method} served: {spans:#?}");
        for span in served {
            assert_eq!(
                span.attribute("rpc.grpc.status_code"),
                Some("0"),
                "{span:#?}"
            );
            // Its parent is the caller's client span of the same call.
            let caller = spans
                .iter()
                .find(|candidate| candidate.span_id == span.parent_span_id)
                .unwrap();
            assert_eq!((caller.kind, caller.name.as_str()), (CLIENT, method));
        }
    }
    let statement = spans.iter().find(|span| is_sql(span)).unwrap();
    assert!(
        statement
            .attribute("db.query.text")
            .is_some_and(|text| !text.is_empty()),
        "{statement:#?}"
    );

    // The gateway's line for that request carries the trace id.
    let lines = gateway.log_lines();
    let line = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["message"] == "http finished"
                && line["span"]["path"] == format!("/posts/{post_id}")
        })
        .unwrap_or_else(|| panic!("an access line: {lines:#?}"));
    assert_eq!(line["trace_id"], trace_id, "{line}");

    // A gRPC call with no trace of the caller's starts one at the edge.
    let mut posts_client = PostServiceClient::new(topology.edge());
    let mut request = tonic::Request::new(GetPostRequest {
        id: post_id.clone(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    posts_client.get_post(request).await.unwrap();
    let edge_span = wait_for_span(&collector, |span| {
        span.service == "gateway"
            && span.name == "agora.posts.v1.PostService/GetPost"
            && span.kind == SERVER
            && span.trace_id != trace_id
    })
    .await;
    assert_eq!(edge_span.parent_span_id, "", "the edge starts the trace");
    let spans = collector.trace(&edge_span.trace_id, complete).await;
    assert_one_tree(&spans, "");
    // The edge's line for that call names the trace it started.
    let lines = gateway.log_lines();
    let line = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["message"] == "rpc finished"
                && line["span"]["method"] == "/agora.posts.v1.PostService/GetPost"
        })
        .unwrap_or_else(|| panic!("an edge line: {lines:#?}"));
    assert_eq!(line["trace_id"], edge_span.trace_id.as_str(), "{line}");

    terminate_all([gateway, posts, votes, auth]).await;
    database.drop_now().await;
}

async fn wait_for_span(
    collector: &Collector,
    wanted: impl Fn(&ReceivedSpan) -> bool,
) -> ReceivedSpan {
    for _ in 0..200 {
        if let Some(span) = collector.spans().into_iter().find(|span| wanted(span)) {
            return span;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no such span among {:#?}", collector.spans());
}

#[tokio::test]
async fn an_exporter_other_than_otlp_over_grpc_stops_the_start_with_a_reason() {
    let database = ScratchDatabase::new();
    for (setting, value, reason) in [
        ("OTEL_TRACES_EXPORTER", "zipkin", "set it to otlp"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf",
            "set it to grpc",
        ),
    ] {
        let env = [
            ("DATABASE_URL", database.url.clone()),
            (setting, value.to_owned()),
        ];
        for binary in SERVICES {
            let (status, printed) = run(binary, &env, &[]).await;
            assert!(
                !status.success(),
                "{binary} with {setting}={value}: {printed}"
            );
            assert!(
                printed.contains(setting) && printed.contains(reason),
                "{binary} names {setting} and what to do: {printed}"
            );
        }
    }
    database.drop_now().await;
}
