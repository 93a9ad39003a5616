//! Connect with the clients people use, against the real gateway binary: the
//! README's `buf curl` and curl session, `buf curl` with reflection over a
//! Connect stream, and a client generated with protoc-gen-es run with
//! connect-node and connect-web's fetch transport (`system-tests/node/`).

use std::path::{Path, PathBuf};

use system_tests::process::{
    Env, ScratchDatabase, all_in_one_gateway, on_ports, readme_example, require_tools, run_script,
};

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway is in the workspace")
        .to_owned()
}

#[tokio::test]
async fn buf_curl_curl_and_connect_es_clients_speak_connect_to_the_gateway() {
    require_tools(&["buf", "jq", "curl", "node", "npm"]);
    let node_client = repository_root().join("system-tests/node");
    assert!(
        node_client
            .join("node_modules/@connectrpc/connect-node")
            .is_dir(),
        "run `npm ci` in {} first (bash .ci/run does)",
        node_client.display()
    );
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, http_port) = all_in_one_gateway(&database.url, Env::new()).await;

    // The README's session, from the repository's root (`--schema proto`).
    let session = run_script(&format!(
        "cd {}\n{}",
        repository_root().display(),
        on_ports(&readme_example("connect"), grpc_port, http_port)
    ))
    .await;
    for expected in [
        "\"email\": \"dave@example.com\"",
        "\"title\":\"Over Connect\"",
        "\"code\":\"not_found\"",
        "\"reason\":\"POST_NOT_FOUND\"",
    ] {
        assert!(
            session.contains(expected),
            "{expected} in the README's Connect session:\n{session}"
        );
    }
    assert!(
        session.contains("\"posts\": ["),
        "buf curl --schema lists the posts:\n{session}"
    );

    // Reflection over Connect shows only the public API.
    let methods = run_script(&format!(
        "buf curl --list-methods http://127.0.0.1:{grpc_port}"
    ))
    .await;
    assert!(
        methods.contains("agora.posts.v1.PostService/GetPost"),
        "{methods}"
    );
    assert!(!methods.contains("BatchGetUsers"), "{methods}");
    // A server stream, ended by buf curl's own timeout after the first message.
    let watched = run_script(&format!(
        "buf curl --timeout 2s -d '{{\"service\": \"\"}}' \
         http://127.0.0.1:{grpc_port}/grpc.health.v1.Health/Watch || true"
    ))
    .await;
    assert!(watched.contains("\"status\": \"SERVING\""), "{watched}");

    let node = run_script(&format!(
        "cd {} && npm run --silent generate && node agora_client.mjs http://127.0.0.1:{grpc_port}",
        node_client.display()
    ))
    .await;
    assert!(
        node.contains("connect-es client: 30 passed, 0 failed"),
        "the generated connect-es client:\n{node}"
    );

    gateway.terminate().await;
    database.drop_now().await;
}
