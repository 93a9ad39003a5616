//! The Java client, `system-tests/java/AgoraClient.java`, against the all-in-one
//! gateway, built and run exactly as proto/README.md says: stubs from `buf
//! generate` with the Java lines of `buf.gen.yaml`, compiled by plain `javac`
//! against Debian's jars, no Maven. Run with `cargo test --workspace`, which builds
//! the gateway.

use system_tests::process::{
    Env, ScratchDatabase, all_in_one_gateway, in_proto_copy, on_ports, proto_readme_example,
    require_programs, require_tools, run_script,
};

/// Fails the test, naming what to install, when a jar of the README's classpath
/// (`jars="..."` in its Java example) is missing from /usr/share/java.
fn require_jars(example: &str) {
    let listed = example
        .split("jars=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the Java example lists its jars in jars=\"...\"");
    for jar in listed.split_whitespace() {
        let path = format!("/usr/share/java/{jar}.jar");
        assert!(
            std::path::Path::new(&path).is_file(),
            "{path} is needed for this test: install the Debian packages that \
             proto/README.md names for the Java client"
        );
    }
}

#[tokio::test]
async fn the_java_client_generated_from_the_protos_passes_against_the_gateway() {
    require_tools(&["java", "javac", "protoc", "buf"]);
    require_programs(&["grpc_java_plugin"]);
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, http_port) = all_in_one_gateway(&database.url, Env::new()).await;
    let client = on_ports(&proto_readme_example("java-client"), grpc_port, http_port);
    require_jars(&client);

    let root = std::env::temp_dir().join(format!("agora-java-{}", uuid::Uuid::now_v7()));
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../system-tests/java/AgoraClient.java"
    );
    let commands = format!(
        "mkdir -p ../system-tests/java && cp '{source}' ../system-tests/java/\n{stubs}\n{client}",
        stubs = proto_readme_example("stubs-java"),
    );
    let printed = run_script(&in_proto_copy(&root, &commands)).await;
    let _ = std::fs::remove_dir_all(&root);

    let passed = printed
        .lines()
        .filter(|line| line.starts_with("ok "))
        .count();
    assert_eq!(
        printed.lines().last(),
        Some(format!("java client: {passed} passed, 0 failed").as_str()),
        "the summary counts every check, and none failed:\n{printed}"
    );
    for check in [
        "ok   PostService/CreatePost:",
        "ok   VoteService/Vote ADD: like_count 1",
        "ok   PostService/ListPosts:",
        "ok   PostService/CreatePost invalid: INVALID_FIELDS with BadRequest naming post.title",
        "ok   PostService/GetPost unknown id: NOT_FOUND POST_NOT_FOUND",
    ] {
        assert!(
            printed.contains(check),
            "{check:?} missing from:\n{printed}"
        );
    }

    let status = gateway.terminate().await;
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    database.drop_now().await;
}
