//! Connect with the clients people use, against the real gateway binary: the
//! README's `buf curl` and curl session, `buf curl` with reflection over a
//! Connect stream, and clients generated with protoc-gen-es
//! (`system-tests/node/`): connect-node and connect-web in Node.js, and
//! connect-web in headless Chromium, from a page on another origin.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use system_tests::browser::rendered_dom;
use system_tests::process::{
    Env, ScratchDatabase, all_in_one_gateway, free_port, on_ports, readme_example, require_tools,
    run_script,
};
use tokio::sync::OnceCell;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway is in the workspace")
        .to_owned()
}

/// `system-tests/node/`, with its code generated and its browser bundle built
/// (once for this file's tests, which share its `gen/`).
async fn node_client() -> PathBuf {
    static BUILT: OnceCell<PathBuf> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            require_tools(&["buf", "node", "npm"]);
            let folder = repository_root().join("system-tests/node");
            assert!(
                folder
                    .join("node_modules/@connectrpc/connect-node")
                    .is_dir(),
                "run `npm ci` in {} first (bash .ci/run does)",
                folder.display()
            );
            run_script(&format!(
                "cd {} && npm run --silent generate && npm run --silent bundle",
                folder.display()
            ))
            .await;
            folder
        })
        .await
        .clone()
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
        "buf curl --http2-prior-knowledge --timeout 2s -d '{{\"service\": \"\"}}' \
         http://127.0.0.1:{grpc_port}/grpc.health.v1.Health/Watch || true"
    ))
    .await;
    assert!(watched.contains("\"status\": \"SERVING\""), "{watched}");

    let node = run_script(&format!(
        "cd {} && node agora_client.mjs http://127.0.0.1:{grpc_port}",
        node_client.display()
    ))
    .await;
    assert!(
        node.contains("connect-es client: 40 passed, 0 failed"),
        "the generated connect-es client:\n{node}"
    );

    gateway.terminate().await;
    database.drop_now().await;
}

#[tokio::test]
async fn connect_web_in_a_browser_calls_the_gateway_from_another_origin() {
    require_tools(&["chromium", "python3"]);
    let node_client = node_client().await;
    let database = ScratchDatabase::new();
    let (gateway, grpc_port, _) = all_in_one_gateway(&database.url, Env::new()).await;
    // The page's own origin: another port, so every call is cross-origin and
    // passes the gateway's CORS (any origin by default).
    let page_port = free_port();
    let mut page_server = tokio::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(page_port.to_string())
        .arg("--directory")
        .arg(&node_client)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 serves the page");
    while tokio::net::TcpStream::connect(("127.0.0.1", page_port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dom = tokio::time::timeout(
        Duration::from_secs(120),
        rendered_dom(
            format!(
                "http://127.0.0.1:{page_port}/browser.html?gateway=http://127.0.0.1:{grpc_port}"
            ),
            20_000,
        ),
    )
    .await
    .expect("chromium runs the page within two minutes");

    let _ = page_server.kill().await;
    gateway.terminate().await;
    database.drop_now().await;
    assert!(
        dom.contains("connect-web in a browser: 30 passed, 0 failed"),
        "the page's checks:\n{dom}"
    );
}
