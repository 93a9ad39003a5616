use std::process::ExitCode;

use clap::Parser;
use gateway::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.common.log_format);
    if config.common.health_check {
        return service_kit::check_health(config.grpc_listen).await;
    }
    let gateway = match gateway::build(&config).await {
        Ok(gateway) => gateway,
        Err(error) => {
            tracing::error!("gateway cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        grpc = %gateway.grpc_addr(),
        http = %format!("http://{}", gateway.http_addr()),
        docs = %format!("http://{}/docs", gateway.http_addr()),
        services = if gateway.is_embedded() { "embedded" } else { "upstream" },
        "gateway listening"
    );
    match gateway.run_until(service_kit::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gateway stopped with an error");
            ExitCode::FAILURE
        }
    }
}
