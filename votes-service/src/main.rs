use clap::Parser;
use votes_service::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.common.log_format);
    let build = votes_service::build(&config);
    service_kit::serve_or_check(
        "votes-service",
        config.listen,
        config.common.health_check,
        build,
    )
    .await
}
