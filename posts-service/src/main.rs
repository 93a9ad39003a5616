use clap::Parser;
use posts_service::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.common.log_format);
    let build = posts_service::build(&config);
    service_kit::serve_or_check(
        "posts-service",
        config.listen,
        config.common.health_check,
        build,
    )
    .await
}
