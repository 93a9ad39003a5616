#[tokio::main]
async fn main() -> std::process::ExitCode {
    auth_service::main().await
}
