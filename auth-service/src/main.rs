use auth_service::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.common.log_format);
    let build = auth_service::build(&config);
    service_kit::serve_or_check(
        "auth-service",
        config.listen,
        config.common.health_check,
        build,
    )
    .await
}
