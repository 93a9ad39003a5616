use auth_service::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(config.log_format);
    let server = match auth_service::build(&config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "auth-service cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %server.local_addr(), "auth-service listening");
    if let Err(error) = server.run_until_stopped().await {
        tracing::error!(%error, "auth-service stopped with an error");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
