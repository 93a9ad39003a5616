use clap::Parser;
use posts_service::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.log_format);
    service_kit::run_until_stopped("posts-service", posts_service::build(&config).await).await
}
