#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::service::main::<posts_service::Config>().await
}
