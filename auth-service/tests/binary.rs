//! The `auth-service` binary itself. The whole system's binaries are driven end to end
//! in `gateway/tests/e2e.rs`.

#[tokio::test]
async fn health_check_fails_when_nothing_listens() {
    system_tests::process::assert_health_check_fails_when_nothing_listens(
        "auth-service",
        "AUTH_LISTEN_ADDR",
    )
    .await;
}

#[tokio::test]
async fn a_busy_port_is_reported() {
    system_tests::process::assert_a_busy_port_is_reported("auth-service", "AUTH_LISTEN_ADDR").await;
}
