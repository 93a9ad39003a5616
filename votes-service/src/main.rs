use clap::Parser;
use votes_service::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.log_format);
    service_kit::run_until_stopped("votes-service", votes_service::build(&config).await).await
}
