//! Pages in a real browser: headless Chromium (Debian's `chromium`), for the
//! tests of what browsers meet (`/docs`, connect-web across origins).

/// The DOM Chromium renders at `url` once the page's scripts have run for
/// `script_budget_ms` of virtual time (network waits included).
pub async fn rendered_dom(url: String, script_budget_ms: u32) -> String {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--disable-extensions",
                // Nothing but the page: no update checks or sync, which a
                // closed network refuses.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--virtual-time-budget={script_budget_ms}"),
                "--dump-dom",
                &url,
            ])
            .output()
    })
    .await
    .expect("the chromium task")
    .expect("chromium runs (`apt-get install -y chromium`)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("a UTF-8 DOM")
}
