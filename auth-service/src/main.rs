#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::service::main::<auth_service::Config>().await
}
