//! `/docs` in a real browser: headless Chromium loads the page from a gateway
//! process, runs Swagger UI from the assets the binary embeds (nothing from any
//! other origin), and renders every operation of `/openapi.json`.

use std::time::Duration;

use system_tests::browser::rendered_dom;
use system_tests::process::{Env, ScratchDatabase, all_in_one_gateway, require_tools};

/// How long Chromium may run the page's scripts, in virtual time: enough for
/// Swagger UI to fetch `/openapi.json` and render it.
const SCRIPT_BUDGET_MS: u32 = 10_000;

#[tokio::test]
async fn the_docs_page_renders_every_operation_from_the_binary_alone() {
    require_tools(&["chromium"]);
    let database = ScratchDatabase::new();
    let (gateway, _, http_port) = all_in_one_gateway(&database.url, Env::new()).await;

    let dom = tokio::time::timeout(
        Duration::from_secs(120),
        rendered_dom(
            format!("http://127.0.0.1:{http_port}/docs"),
            SCRIPT_BUDGET_MS,
        ),
    )
    .await
    .expect("chromium renders the page within two minutes");

    gateway.terminate().await;
    database.drop_now().await;
    // Swagger UI has run: the title, every tag and every path of the document.
    let expected = [
        "swagger-ui",
        "Agora",
        "Users",
        "Authentication",
        "Posts",
        "Vote",
        "Health",
        "/login",
        "/users/",
        "/users/{id}",
        "/posts/",
        "/posts/{id}",
        "/posts/stream",
        "/vote/",
        "/livez",
        "/readyz",
    ];
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|text| !dom.contains(text))
        .collect();
    assert!(
        missing.is_empty(),
        "the rendered page lacks {missing:?}; Swagger UI did not run or did not load /openapi.json:\n{dom}"
    );
    assert!(
        dom.contains("opblock"),
        "operations are rendered as Swagger UI blocks:\n{dom}"
    );
}
