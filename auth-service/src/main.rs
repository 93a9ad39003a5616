use auth_service::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.log_format);
    service_kit::run_until_stopped("auth-service", auth_service::build(&config).await).await
}
