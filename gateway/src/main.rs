use std::process::ExitCode;

use clap::Parser;
use gateway::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.common.log_format);
    let build = gateway::build(&config);
    service_kit::serve_or_check(
        "gateway",
        config.grpc_listen,
        config.common.health_check,
        build,
    )
    .await
}
