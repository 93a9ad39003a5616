#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_kit::service::main::<votes_service::Config>().await
}
